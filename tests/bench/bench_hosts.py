"""BENCH hosts: four cell hosts (network namespaces on a bridge, tests/netns.py) whose clocks
are 250 ms off and drift 50 ppm (libfaketime: +/-250 ms, +/-50 ppm), a line server with the
coordinator on the true clock, 50 Hz. Each host's link is cut for 3 s in turn and restored.

offset_err_ms / skew_err_ppm: the largest error of the coordinator's estimates against the
hosts' fake clocks at the end; detect_ms: cut -> first line state saying the cell is lost
(p50 and max over the cuts: the recorder's receive time, the state is published at once);
relock_cycles: the largest count of cycles from a cell's first report after its restore to
its first locked one; false_lost: lost events no cut explains once the line ran (all locked,
settled); startup_lost: losses while the processes started (printed apart).
"""
from __future__ import annotations

import statistics

import pytest

import hosts_line
from netns import HostClock, unavailable

WHY = unavailable()
pytestmark = pytest.mark.skipif(bool(WHY), reason=WHY or 'available')

HZ, CUT_S = 50.0, 3.0
CELLS = {f'cell_0{i}': f'h{i}' for i in range(1, 5)}
CLOCKS = {'h1': HostClock(0.250, 50.0), 'h2': HostClock(-0.250, -50.0),
          'h3': HostClock(0.250, -50.0), 'h4': HostClock(-0.250, 50.0)}


def test_bench_hosts(tmp_path):
    run = hosts_line.run(tmp_path, CELLS, CLOCKS, list(CLOCKS), hz=HZ, cut_s=CUT_S)
    assert not run.leftovers, run.leftovers
    off_err = max(abs(run.after['cells'][c]['clock_offset_ms']
                      - CLOCKS[h].offset_ns(run.after['t'], run.start_ns[c]) / 1e6) for c, h in CELLS.items())
    skew_err = max(abs(run.after['cells'][c]['clock_skew_ppm'] - CLOCKS[h].skew_ppm) for c, h in CELLS.items())
    detect = [k.detect_ms for k in run.cuts if k.detect_ms is not None]
    relock = [k.relock_cycles for k in run.cuts if k.relock_cycles is not None]
    missed = len(run.cuts) - len(detect)
    print(f'\nBENCH hosts hosts={len(CELLS)} offset_ms=250 skew_ppm=50 offset_err_ms={off_err:.3f} '
          f'skew_err_ppm={skew_err:.1f} cut_s={CUT_S:g} '
          f'detect_ms={max(detect, default=-1):.0f} detect_p50_ms={statistics.median(detect) if detect else -1:.0f} '
          f'relock_cycles={max(relock) if len(relock) == len(run.cuts) else -1} false_lost={run.false_lost()} '
          f'startup_lost={run.startup_lost()} '
          f'undetected={missed} others_kept_lock={int(all(k.others_locked for k in run.cuts))} '
          f'(cuts {len(run.cuts)}, one per host; hz {HZ:g}; detect_ms is the max over the cuts)')
