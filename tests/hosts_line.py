"""A line whose cells run on hosts of their own (tests/netns.py), with links cut and restored:
shared by the multi-host system test and the hosts benchmark.

The line server (the outside recorder, started first, and the coordinator, SCHED_FIFO 70)
runs on the true clock;
each cell host runs one timing node (cycle thread SCHED_FIFO 80) under its own clock. For each
host in ``cuts``, in turn: its switch port goes down for ``cut_s``, comes back, and the line is
given time to lock again. Everything the test and the benchmark judge is returned, measured
from the recorder's receive times (true clock) and the hosts' logs.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO, executable, wait_for
from netns import Hosts

LOST = 10   # CellPhase.STATE_LOST


@dataclass
class Cut:
    host: str
    cell: str
    t_cut: int
    t_restore: int = 0
    detect_ms: float | None = None   # cut -> first line state saying the cell is lost
    relock_cycles: int | None = None  # first report after the restore -> first report locked
    others_locked: bool = True       # every other cell locked while the link was down
    relocked: bool = False


@dataclass
class HostsRun:
    cells: dict
    before: dict
    after: dict
    rec: dict
    cuts: list[Cut] = field(default_factory=list)
    logs: dict = field(default_factory=dict)
    start_ns: dict = field(default_factory=dict)
    leftovers: list = field(default_factory=list)

    def lost_counts(self) -> dict:
        return {c: self.after['cells'][c]['lost_count'] - self.before['cells'][c]['lost_count'] for c in self.cells}

    def false_lost(self) -> int:
        """Lost events once the line ran (all locked and settled) that no cut explains (one per
        cut of the cell's host).
        """
        cut_count = {c: sum(1 for k in self.cuts if k.cell == c) for c in self.cells}
        return sum(max(0, n - cut_count[c]) for c, n in self.lost_counts().items())

    def startup_lost(self) -> int:
        """Lost events while the processes started (before the line settled): a cell whose own
        cycle thread stalls then is truly silent, and says so in its log.
        """
        return sum(v['lost_count'] for v in self.before['cells'].values())


def _status(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run(tmp_path: Path, cells: dict, clocks: dict, cuts: list[str], *, hz: float = 50.0, cut_s: float = 3.0,
        settle_s: float = 4.0, domain: int = 42) -> HostsRun:
    """``cells``: cell id -> host name; ``clocks``: host -> netns.HostClock."""
    line, period_ms = '/hline', 1e3 / hz
    host_of = {h: c for c, h in cells.items()}
    env = {'ROS_DOMAIN_ID': str(domain), 'PYTHONUNBUFFERED': '1'}
    hosts_names = ['server', *dict.fromkeys(cells.values())]
    with Hosts(hosts_names, clocks, env, tmp_path) as hosts:
        out, st = tmp_path / 'rec.json', tmp_path / 'status.json'
        hosts.start('recorder', 'server', [sys.executable, str(REPO / 'tests' / 'recorder.py'), '--line', line,
                                           '--cells', ','.join(cells), '--out', str(out), '--status', str(st)])
        wait_for(lambda: Path(str(out) + '.ready').exists(), 60.0, what='the recorder up')
        hosts.start('coordinator', 'server', [
            executable('coordinator_node'), '--ros-args', '-r', f'__ns:={line}', '-p', 'autostart:=true',
            '-p', f'period_ms:={period_ms}', '-p', 'thread_priority:=70', '-p', f"cells:=[{','.join(cells)}]"],
            node=True)
        for cell, host in cells.items():
            hosts.start(cell, host, [
                executable('timing_node'), '--ros-args', '-r', f'__ns:={line}/{cell}', '-p', 'autostart:=true',
                '-p', f'period_ms:={period_ms}', '-p', 'thread_priority:=80'], node=True)

        def locked():
            s = _status(st)
            return s and all(s['cells'].get(c, {}).get('locked') for c in cells)
        wait_for(locked, 90.0, what=f'the {len(cells)} cells locked across hosts')
        time.sleep(settle_s)   # offset and rate estimates settle
        before = _status(st)
        done = []
        for host in cuts:
            cell = host_of[host]
            hosts.cut(host)
            # the link is down once `ip` returns: stamped before, its start-up (a fork and exec,
            # 2 ms here and up to 290 ms on a busy machine) counted as detection time
            k = Cut(host, cell, time.time_ns())
            others_ok = True
            while time.time_ns() - k.t_cut < cut_s * 1e9:
                time.sleep(0.25)
                s = _status(st)
                if s and s['t'] > k.t_cut + 0.5e9:
                    others_ok &= all(s['cells'][c]['locked'] for c in cells if c != cell)
            k.others_locked = others_ok
            hosts.restore(host)
            k.t_restore = time.time_ns()
            try:
                wait_for(locked, 20.0, what=f'{cell} locked again after its link came back')
                k.relocked = True
            except AssertionError:
                pass
            time.sleep(1.0)
            done.append(k)
        time.sleep(2.0)
        after = _status(st)
        hosts.stop('recorder', timeout=30.0)
        rec = json.loads(out.read_text())
        logs = {c: hosts.log(c) for c in [*cells, 'coordinator']}
        start_ns = {c: hosts.start_ns(c) for c in cells}
    run_ = HostsRun(cells, before, after, rec, done, logs, start_ns, hosts.leftovers())
    fields = rec['fields']
    for k in done:
        k.detect_ms = next(((s['t'] - k.t_cut) / 1e6 for s in rec['states']
                            if s['t'] > k.t_cut and s['cells'][k.cell]['state'] == LOST), None)
        rows = [dict(zip(fields, r)) for r in rec['cycles'][k.cell] if r[0] > k.t_restore]
        if rows:
            first = rows[0]['cycle_index']
            k.relock_cycles = next((r['cycle_index'] - first for r in rows if r['locked']), None)
    return run_
