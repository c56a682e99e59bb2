"""A hostile client in a process of its own: sends oversized InferenceRequests to a cell, through
its arbiter and straight to the executor, and records how each was answered.

python flood_sender.py --cell line1/cell1 --mb 52 --count 4 --go GO --out F.json
    [--ros-args ...]
Once both request topics have a subscriber it writes F.json.ready, waits for the file GO, then
sends ``count`` requests of ``mb`` MB, alternating arbiter/request and inference/request, each
after the previous one was answered (or 10 s passed). F.json: [[topic, seconds to the answer or
null, status, reason], ...].
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np
import rclpy
from rclpy.node import Node

from cellos_common.core.cell_names import split_cell_ns
from cellos_common.nodes import qos
from cellos_inference.nodes.convert_inference import make_request
from cellos_interfaces.msg import InferenceRequest, InferenceResult

ANSWER_S = 10.0


class FloodSender(Node):
    def __init__(self, cell: str):
        super().__init__('flood_sender')
        self.line_id, self.cell_id = split_cell_ns(cell)
        self.results: dict[int, InferenceResult] = {}
        self.answered = threading.Condition()
        self.paths = []
        for request, result in (('arbiter/request', 'arbiter/result'), ('inference/request', 'inference/result')):
            pub = self.create_publisher(InferenceRequest, f'/{cell}/{request}', qos.inference())
            self.create_subscription(InferenceResult, f'/{cell}/{result}', self.on_result, qos.inference())
            self.paths.append((request, pub))

    def on_result(self, msg: InferenceResult) -> None:
        with self.answered:
            self.results[msg.request_id] = msg
            self.answered.notify_all()

    def matched(self) -> bool:
        return all(pub.get_subscription_count() > 0 for _, pub in self.paths)

    def flood(self, mb: float, count: int) -> list:
        huge = {'x': np.zeros((1, 4, int(mb * (1 << 20)) // 16), np.float32)}
        out = []
        for i in range(count):
            topic, pub = self.paths[i % len(self.paths)]
            rid = 500 + i
            msg = make_request(request_id=rid, line_id=self.line_id, cell_id=self.cell_id, task='inspection',
                               model='affine', priority=1, deadline_s=time.time() + 5, inputs=huge, max_bytes=1 << 40)
            msg.header.stamp = self.get_clock().now().to_msg()
            t0 = time.monotonic()
            pub.publish(msg)
            with self.answered:
                self.answered.wait_for(lambda: rid in self.results, ANSWER_S)
                r = self.results.get(rid)
            out.append([topic, time.monotonic() - t0 if r else None,
                        int(r.status) if r else None, r.reason if r else ''])
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--cell', required=True)
    ap.add_argument('--mb', type=float, default=52.0)
    ap.add_argument('--count', type=int, default=4)
    ap.add_argument('--go', required=True)
    ap.add_argument('--out', required=True)
    args, ros_args = ap.parse_known_args()
    rclpy.init(args=['flood_sender', *ros_args])
    node = FloodSender(args.cell)
    spin = threading.Thread(target=rclpy.spin, args=(node,), daemon=True)
    spin.start()
    end = time.monotonic() + 30.0
    while not node.matched() and time.monotonic() < end:
        time.sleep(0.05)
    open(args.out + '.ready', 'w').close()
    while not os.path.exists(args.go) and time.monotonic() < end + 30.0:
        time.sleep(0.02)
    rows = node.flood(args.mb, args.count)
    with open(args.out + '.tmp', 'w') as f:
        json.dump(rows, f)
    os.replace(args.out + '.tmp', args.out)
    rclpy.try_shutdown()


if __name__ == '__main__':
    main()
