"""BENCH audit: the audit recorder on the whole line, and what a SIGKILL of it loses.

1. The line as `make run` starts it (4 cells at 20 Hz: timing, vision, arbiter, energy gate;
   executor; site feed; plant; coordinator), RUN_S seconds with the recorder, then as long
   without it (--without audit). decisions: inspections the cells published (the synthetic
   camera numbers each cell's parts 1, 2, 3 ..., one inspection per part, so the highest part id
   counts them; the runner's own subscriber checks the count); recorded: distinct (cell, part)
   in the recording; missing = decisions - recorded. mb_per_min: recording size per minute.
   phase p99: the runner's inter-cell phase error; rate: inspections per second, line-wide.
2. The recorder alone with a publisher of 4 cells' inspections and results at 20 Hz each:
   SIGKILLed KILLS times at random points of its flush cycle, restarted each time on the same
   bag. kill_loss_s: the largest gap between the kill and the newest message of the killed
   file; every killed file must open.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from cellos_audit.core import lineage
from cellos_audit.core.recording_reader import FileReport, iter_file, recording_files
from conftest import REPO, wait_for
from line_record import cpu_seconds

RUN_S = 30
CELLS = 4
KILLS = 3
PUBLISHER = r'''
import sys, time, numpy as np, rclpy
from cellos_common.nodes import qos
from cellos_inference.nodes.convert_inference import array_to_tensor
from cellos_interfaces.msg import InferenceResult, Inspection
rclpy.init()
node = rclpy.create_node('bench_publisher')
cells = [f'cell_{i + 1:02d}' for i in range(int(sys.argv[1]))]
insp = {c: node.create_publisher(Inspection, f'/line1/{c}/vision/inspection', qos.status()) for c in cells}
res = {c: node.create_publisher(InferenceResult, f'/line1/{c}/arbiter/result', qos.inference()) for c in cells}
part, t = 0, time.monotonic()
while rclpy.ok():
    part += 1
    for c in cells:
        logits = array_to_tensor('logits', np.zeros((1, 5), np.float32))
        res[c].publish(InferenceResult(request_id=part, status=0, compute_ms=1.0, batch_size=1, energy_wh=1e-4,
                                       energy_source='model', outputs=[logits]))
        insp[c].publish(Inspection(cell_id=c, part_id=part, request_id=part, confidence=0.9, frame_sha256='0' * 64))
    t += 0.05
    time.sleep(max(0.0, t - time.monotonic()))
'''


def run_line(tmp: Path, with_audit: bool) -> dict:
    name = 'with' if with_audit else 'without'
    summary = tmp / f'summary_{name}.json'
    env = {**os.environ, 'CELLOS_LOG_DIR': str(tmp / f'logs_{name}'), 'CELLOS_AUDIT_DIR': str(tmp / 'audit')}
    cmd = [sys.executable, '-m', 'cellos_bringup.runner', '--cells', str(CELLS), '--duration', str(RUN_S),
           '--period-ms', '50', '--summary-json', str(summary)] + ([] if with_audit else ['--without', 'audit'])
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_S + 150)
    assert proc.returncode == 0 and summary.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(summary.read_text())


def count_decisions(summary: dict) -> tuple[int, int, float]:
    bag = Path(summary['audit']['recording'])
    audit = lineage.load([bag])
    parts: dict[str, set] = {}
    for d in audit.decisions:
        parts.setdefault(d.cell, set()).add(d.part_id)
    seen = {c.rsplit('/', 1)[-1]: v['inspected'] for c, v in summary['inspection'].items()}
    decisions = sum(max(max(parts.get(c, {0})), seen.get(c, 0)) for c in set(parts) | set(seen))
    recorded = sum(len(p) for p in parts.values())
    size = sum(f.stat().st_size for f in recording_files([bag]))
    minutes = (max(d.time_ns for d in audit.decisions) - min(d.time_ns for d in audit.decisions)) / 60e9
    return decisions, recorded, size / 1e6 / minutes


def kill_loss(processes, tmp: Path, cpu: list) -> float:
    params = {'autostart': True, 'cells': [f'cell_{i + 1:02d}' for i in range(CELLS)],
              'output_dir': str(tmp / 'kill'), 'bag_name': 'line1_kill', 'discover_cells': False}
    publisher = subprocess.Popen([sys.executable, '-c', PUBLISHER, str(CELLS)], start_new_session=True)
    losses = []
    try:
        for i in range(KILLS):
            key = f'recorder{i}'
            processes.start(key, 'audit_recorder_node', namespace='/line1', params=params)
            split = tmp / 'kill' / 'line1_kill' / f'line1_kill_{i}.mcap'
            wait_for(lambda: split.exists() and any(True for _ in iter_file(split)), 30.0, what=f'{key} recording')
            if i == 0:    # the recorder's CPU share at 160 messages/s, steady state
                c0, w0 = cpu_seconds(processes.procs[key].pid), time.monotonic()
                time.sleep(3.0)
                cpu.append((cpu_seconds(processes.procs[key].pid) - c0) / (time.monotonic() - w0))
            time.sleep(2.0 + random.random())
            t_kill = time.time()
            processes.kill(key)
            report = FileReport(split)
            newest = max(r.log_time for r in iter_file(split, report)) / 1e9
            assert report.messages > 0 and not report.complete
            losses.append(t_kill - newest)
    finally:
        os.killpg(publisher.pid, signal.SIGKILL)
        publisher.wait()
    assert len(recording_files([tmp / 'kill' / 'line1_kill'])) == KILLS
    return max(losses)


def test_bench_audit(processes, tmp_path):
    t0 = time.perf_counter()
    with_audit = run_line(tmp_path, True)
    without = run_line(tmp_path, False)
    decisions, recorded, mb_per_min = count_decisions(with_audit)
    cpu: list = []
    loss = kill_loss(processes, tmp_path, cpu)

    def rate(s):
        return sum(v['inspected'] for v in s['inspection'].values()) / RUN_S
    print(f"\naudit: line of {CELLS} cells at 20 Hz, {RUN_S} s each way; recording {with_audit['audit']['recording']} "
          f"({with_audit['audit']['mb']} MB); {time.perf_counter() - t0:.0f} s wall")
    print(f'BENCH audit decisions={decisions} recorded={recorded} missing={decisions - recorded} '
          f'mb_per_min={mb_per_min:.2f} phase_p99_with_ms={with_audit["phase_p99_ms"]:.3f} '
          f'phase_p99_without_ms={without["phase_p99_ms"]:.3f} rate_with_hz={rate(with_audit):.1f} '
          f'rate_without_hz={rate(without):.1f} kill_loss_s={loss:.3f} recorder_cpu_160msg_s={cpu[0]:.3f}')
    assert decisions > 0 and recorded <= decisions
