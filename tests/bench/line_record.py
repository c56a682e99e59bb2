"""Shared by the timing benchmarks: the outside recorder (tests/recorder.py) of cycle reports and
line states, phase figures from its raw stamps, a process's CPU time, and a CPU load.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cellos_line.core.phase_stats import PhaseFigures, figures
from conftest import wait_for

TESTS = Path(__file__).resolve().parents[1]


def start_recorder(processes, key: str, line: str, cells, out: Path, duration: float = 600.0):
    processes.start(key, sys.executable, extra_args=[
        str(TESTS / 'recorder.py'), '--line', line, '--cells', ','.join(cells), '--out', str(out),
        '--duration', str(duration)])
    wait_for(lambda: Path(str(out) + '.ready').exists(), 120.0, what='the recorder up')


def stop_recorder(processes, key: str, out: Path) -> dict:
    processes.stop(key, timeout=30.0)
    return load(out)


def load(out: Path) -> dict:
    data = json.loads(Path(out).read_text())
    names = data['fields']
    data['rows'] = {c: [dict(zip(names, r)) for r in rs] for c, rs in data['cycles'].items()}
    return data


def locked_rows(rec: dict, t0: int, t1: int, cells=None) -> dict:
    """cell -> cycle reports received in [t0, t1) (recorder clock) that the cell reports locked."""
    return {c: [r for r in rs if t0 <= r['recv_ns'] < t1 and r['locked']]
            for c, rs in rec['rows'].items() if cells is None or c in cells}


def phase_figures(rows: dict, offsets_ns: dict | None = None, to_true=None) -> PhaseFigures:
    """Floor (every cycle's |actual - intended|) and inter-cell phase of the given rows;
    ``to_true(cell, cell_ns)``: a cell's stamp on the true clock (hosts with their own clocks).
    """
    conv = to_true or (lambda c, t: t)
    stamps = {c: {r['cycle_index']: conv(c, r['cycle_start_ns']) for r in rs} for c, rs in rows.items()}
    jitter = {c: [r['cycle_start_ns'] - r['intended_start_ns'] for r in rs] for c, rs in rows.items()}
    return figures(stamps, jitter, offsets_ns)


def last_state(rec: dict, before_ns: int | None = None) -> dict | None:
    states = [s for s in rec['states'] if before_ns is None or s['t'] < before_ns]
    return states[-1] if states else None


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def realtime_cpu_seconds(pids) -> float:
    """user + system CPU time of the SCHED_FIFO / SCHED_RR threads of these processes: what the
    kernel's real-time throttling counts (at most 95 % of each core by default; past it, or when
    normal tasks starve, real-time threads are held back for up to 50 ms).
    """
    total = 0
    for pid in pids:
        for stat in Path(f'/proc/{pid}/task').glob('*/stat'):
            try:
                fields = stat.read_text().rsplit(')', 1)[1].split()
            except OSError:
                continue    # the thread ended
            if int(fields[38]) in (os.SCHED_FIFO, os.SCHED_RR):
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf('SC_CLK_TCK')


LOAD = '''
import time, numpy as np
a = np.random.default_rng(0).standard_normal((160, 160))
while True:
    for _ in range(20):
        a = np.tanh(a @ a.T / 160.0)
    s = 0
    for i in range(20000):
        s += i * i
'''


class CpuLoad:
    """``n`` processes that keep a core each busy at normal priority: numpy (native code) and
    plain Python in turn, as a vision pipeline and an inference executor alternate.
    """

    def __init__(self, n: int = 2):
        env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
        self.procs = [subprocess.Popen([sys.executable, '-c', LOAD], env=env, start_new_session=True)
                      for _ in range(n)]
        time.sleep(0.5)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
