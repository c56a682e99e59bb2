"""Records a line from outside the coordinator, as its own process: every cell's raw cycle
reports and every line state, with this process's receive time (time.time_ns()). Started by
the timing benchmarks and the multi-host test (inside a network namespace, where the test's
own process may not speak DDS), it writes everything to a JSON file when it gets SIGINT or
SIGTERM, or after --duration seconds.

python recorder.py --line /hline --cells cell_01,cell_02 --out rec.json [--duration 60] [--status s.json]

--status: the latest line state, rewritten twice a second, for a test that waits on it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time

import rclpy
from cellos_interfaces.msg import CellCycle, LineState
from rclpy.node import Node

from cellos_common.nodes import qos
from cellos_common.nodes.base import make_executor

CYCLE_FIELDS = ('cycle_index', 'cycle_start_ns', 'intended_start_ns', 'period_ns', 'state', 'locked',
                'missed_cycles', 'thread_priority', 'realtime_refused', 'session')
CELL_FIELDS = ('state', 'locked', 'lost_count', 'relock_count', 'clock_offset_ms', 'clock_skew_ppm',
               'schedule_offset_ms', 'phase_error_p99_ms', 'missed_cycles', 'thread_priority',
               'realtime_refused')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--line', required=True)
    ap.add_argument('--cells', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--duration', type=float, default=600.0)
    ap.add_argument('--status', default='')
    args, _ = ap.parse_known_args()   # (--ros-args from the test fixture)
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = Node('cellos_recorder')
    lock = threading.Lock()
    cycles = {c: [] for c in args.cells.split(',')}
    states = []

    def on_cycle(cell, m):
        t = time.time_ns()
        with lock:
            cycles[cell].append([t, *(getattr(m, f) for f in CYCLE_FIELDS)])

    def on_state(m):
        t = time.time_ns()
        cells = {c.cell_id: {f: getattr(c, f) for f in CELL_FIELDS} for c in m.cells}
        with lock:
            states.append({'t': t, 'cells_known': m.cells_known, 'cells_locked': m.cells_locked,
                           'cells_lost': m.cells_lost, 'thread_priority': m.thread_priority,
                           'realtime_refused': m.realtime_refused, 'cells': cells})

    for c in cycles:
        node.create_subscription(CellCycle, f'{args.line}/{c}/timing/cycle', lambda m, c=c: on_cycle(c, m),
                                 qos.cycle_watch())
    node.create_subscription(LineState, f'{args.line}/line_state', on_state, qos.latched_state())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ex = make_executor('events')
    ex.add_node(node)
    end = time.monotonic() + args.duration
    open(args.out + '.ready', 'w').close()
    next_status = 0.0
    while not stop.is_set() and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.1)
        if args.status and time.monotonic() >= next_status:
            next_status = time.monotonic() + 0.5
            with lock:
                latest = states[-1] if states else None
            with open(args.status + '.tmp', 'w') as f:
                json.dump(latest, f)
            os.replace(args.status + '.tmp', args.status)
    with lock:
        data = {'fields': ['recv_ns', *CYCLE_FIELDS], 'cycles': cycles, 'states': states}
    with open(args.out + '.tmp', 'w') as f:
        json.dump(data, f)
    os.replace(args.out + '.tmp', args.out)
    ex.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == '__main__':
    main()
