"""One cell process for the executor benchmark: the cell's arbiter and a closed-loop task
composed in one process (as a cell host runs them), requests over DDS to the executor.

python cell_load.py --model M --size S --window W --control DIR --go NAME --out F.json
    --ros-args -r __ns:=/line1/cellN -p autostart:=true ...
The task probes until the path works, then writes F.json.ready and keeps ``window``
requests in flight while DIR/NAME exists (the benchmark closes the gate to time ONNX Runtime
alone in between; a number written in the file replaces ``window``); DIR/stop ends it. Writes
every result received: send/receive wall time, status, the executor's queue / batch-wait /
compute split and its arrival and publish stamps (the per-request breakdown).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.node import Node

from cellos_common.core.cell_names import split_cell_ns
from cellos_common.nodes import qos
from cellos_inference.nodes.arbiter_node import ArbiterNode
from cellos_common.nodes.base import Wakeup, spin_nodes
from cellos_common.nodes.convert_time import time_to_s
from cellos_inference.nodes.convert_inference import make_request
from cellos_interfaces.msg import InferenceRequest, InferenceResult


class LoadTask(Node):
    def __init__(self, a, stop: Wakeup):
        super().__init__('load_task')
        self.a, self.stop = a, stop
        self.go, self.end = os.path.join(a.control, a.go), os.path.join(a.control, 'stop')
        self.line_id, self.cell_id = split_cell_ns(self.get_namespace())
        self.image = np.random.default_rng(0).standard_normal((1, 3, a.size, a.size)).astype(np.float32)
        self.pub = self.create_publisher(InferenceRequest, 'arbiter/request', qos.inference())
        self.create_subscription(InferenceResult, 'arbiter/result', self.on_result, qos.inference())
        self.sent, self.records, self.next_id = {}, [], 0
        self.lock = threading.Lock()
        self.ready = False
        self.t_limit = time.time() + a.max_s
        self.create_timer(0.2, self.kick)
        self.create_timer(0.01, self.top_up)

    def send(self):
        self.next_id += 1
        now = time.time()
        self.sent[self.next_id] = now
        self.pub.publish(make_request(request_id=self.next_id, line_id=self.line_id, cell_id=self.cell_id,
                                      task='inspection',
                                      model=self.a.model, priority=1, deadline_s=now + 5.0,
                                      inputs={'image': self.image}))

    def kick(self):
        with self.lock:
            if not self.ready:             # probe until the path works
                if not self.sent or time.time() - max(self.sent.values()) > 2.0:
                    self.send()
            elif os.path.exists(self.end) or time.time() > self.t_limit:
                self.stop.poke()

    def window(self) -> int:
        """0 while the gate is closed; else the number in the gate file, or --window."""
        try:
            with open(self.go) as f:
                text = f.read().strip()
        except OSError:
            return 0
        return int(text) if text.isdigit() else self.a.window

    def top_up(self):
        with self.lock:
            if self.ready:
                window = self.window()
                while len(self.sent) < window:
                    self.send()

    def on_result(self, msg):
        now = time.time()
        with self.lock:
            sent = self.sent.pop(msg.request_id, None)
            if sent is None:
                return
            if not self.ready:
                self.ready = True
                open(self.a.out + '.ready', 'w').close()
                return
            self.records.append((sent, now, msg.status, msg.queue_ms, msg.batch_wait_ms,
                                 msg.compute_ms, msg.batch_size, time_to_s(msg.received),
                                 time_to_s(msg.header.stamp)))
            if len(self.sent) < self.window():
                self.send()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True)
    ap.add_argument('--size', type=int, required=True)
    ap.add_argument('--window', type=int, default=4)
    ap.add_argument('--control', required=True, help='folder with the go / stop files')
    ap.add_argument('--go', default='go', help='name of this cell\'s gate file in the control folder')
    ap.add_argument('--max-s', type=float, default=90.0, help='give up after this long')
    ap.add_argument('--out', required=True)
    ap.add_argument('--executor', default='single', choices=('single', 'multi'),
                    help='rclpy executor of the cell process (its callbacks never block)')
    args, ros_args = ap.parse_known_args()
    sys.setswitchinterval(0.0005)   # as every cellos node process (main_for): <= 0.5 ms wait for the GIL
    rclpy.init(args=['cell_load', *ros_args], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = Wakeup()
    arbiter, task = ArbiterNode(), LoadTask(args, stop)
    if not arbiter.bring_up():
        raise SystemExit('arbiter did not come up')
    try:
        spin_nodes([arbiter, task], executor=args.executor, wake=stop)
    finally:
        with open(args.out, 'w') as f:
            json.dump({'records': task.records}, f)
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
