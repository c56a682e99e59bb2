"""What line_runner leaves and shows: a fresh log folder per run (earlier ones kept, bounded),
composed mode's log in a file, and a live line whose counts are the summary's.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cellos_bringup import runner


def test_each_run_gets_a_fresh_log_folder_and_the_last_runs_are_kept(tmp_path):
    line = tmp_path / 'log' / 'line'
    assert runner.fresh_log_dir(line) is None and line.is_dir()
    kept = []
    for i in range(runner.KEEP_RUNS + 2):
        (line / 'cell_0{i}.log'.format(i=i)).write_text(f'run {i}')
        os.utime(line, (time.time() - 3600 + i, time.time() - 3600 + i))   # distinct dates
        kept.append(runner.fresh_log_dir(line))
        assert list(line.iterdir()) == []
    earlier = sorted(p.name for p in line.parent.glob('line.*'))
    assert len(earlier) == runner.KEEP_RUNS
    assert earlier == sorted(p.name for p in kept[-runner.KEEP_RUNS:])   # the newest ones
    assert (kept[-1] / f'cell_0{runner.KEEP_RUNS + 1}.log').read_text() == f'run {runner.KEEP_RUNS + 1}'


def test_composed_mode_logs_go_to_the_file_and_the_runners_own_text_to_the_terminal(tmp_path):
    log = tmp_path / 'composed.log'
    code = ('import os, sys\n'
            'from cellos_bringup.runner import log_to_file\n'
            f'log_to_file(__import__("pathlib").Path({str(log)!r}))\n'
            'os.write(2, b"a node logs\\n")\n'
            'print("cellos: the runner says", file=sys.stderr)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert log.read_text() == 'a node logs\n'
    assert out.stderr == 'cellos: the runner says\n'


def test_the_live_line_counts_what_the_summary_counts():
    msg = pytest.importorskip('cellos_interfaces.msg', reason='cellos_interfaces is built by colcon')
    from cellos_bringup.line_monitor import LineMonitor, cells_text
    cells = [msg.CellPhase(cell_id='cell_01', locked=True, lost_count=2),
             msg.CellPhase(cell_id='cell_02', locked=True, held=True, lost_count=3),
             msg.CellPhase(cell_id='cell_03', state=msg.CellPhase.STATE_LOST, lost_count=1)]
    state = msg.LineState(cells=cells, cells_known=3, cells_locked=2, cells_lost=1, period_ms=50.0)
    assert cells_text(state, 3) == 'cells 2/3 locked, 1 held | lost 6 times, 1 now'
    per_cell = {c.cell_id: {'state': s, 'locked': c.locked, 'held': c.held, 'lock_time_s': 0.5,
                            'phase_error_p50_ms': 0.1, 'phase_error_p99_ms': 1.0, 'jitter_p99_ms': 2.0,
                            'clock_offset_ms': 30.0, 'schedule_offset_ms': 12.5, 'lost': c.lost_count,
                            'relocked': 1, 'cycles': 100}
                for c, s in zip(cells, ('locked', 'held', 'lost'))}
    text = LineMonitor.format_summary({
        'line': 'line1', 'cells': 3, 'cells_locked': 2, 'cells_held': 1, 'lost_events': 6, 'all_locked_after_s': None,
        'period_ms': 50.0, 'floor_p99_ms': 2.0, 'phase_p50_ms': 0.1, 'phase_p99_ms': 1.0, 'ratio_to_floor': 0.5,
        'per_cell': per_cell, 'flow': None})
    assert 'at the end 2/3 cells locked, 1 held; never all 3 locked together; cells lost 6 times' in text
    header = next(line for line in text.splitlines() if line.startswith('cell '))
    assert 'clock offset ms' in header and 'sched offset ms' in header and 'lost' in header
    row = next(line for line in text.splitlines() if line.startswith('cell_02'))
    assert row.split()[1] == 'held' and '30.000' in row and '12.500' in row
    for word in ('locked', 'held', 'lost', 'in buffers', 'in work', 'sched offset', 'clock offset'):
        assert word in runner.LEGEND
