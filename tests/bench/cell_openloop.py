"""One cell process for the executor overload benchmark over DDS: the cell's arbiter and an
open-loop load generator composed in one process (as a cell host runs them).

python cell_openloop.py --model M --size S --schedule F.json --out R.json
    --ros-args -r __ns:=/line1/cellN -p autostart:=true ...
F.json: {"t0": monotonic start (s, the host's CLOCK_MONOTONIC, shared by the cell processes),
"priority": SCHED_FIFO priority of the process (0: none), "generator_priority": of the generator
thread, "deadline_s": {"0": 0.05, ...},
"arrivals": [[t, priority], ...]}. The process first probes until the path works (writes R.json.ready),
then waits for t0 and publishes each request at t0 + t (its birth; the deadline counts from there),
and writes every request with its times: birth, how late the generator was, send and receive on
both clocks, the executor's arrival stamp and split (queue, batch wait, compute, modelled compute).
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
from cellos_common.nodes.base import Wakeup, spin_nodes
from cellos_common.nodes.convert_time import time_to_s
from cellos_inference.nodes.arbiter_node import ArbiterNode
from cellos_inference.nodes.convert_inference import make_request
from cellos_interfaces.msg import InferenceRequest, InferenceResult

from executor_load import realtime_thread, sleep_until


class OpenLoopTask(Node):
    def __init__(self, a, plan, stop: Wakeup):
        super().__init__('load_task')
        self.a, self.plan, self.stop = a, plan, stop
        self.line_id, self.cell_id = split_cell_ns(self.get_namespace())
        self.image = np.random.default_rng(0).standard_normal((1, 3, a.size, a.size)).astype(np.float32)
        self.pub = self.create_publisher(InferenceRequest, 'arbiter/request', qos.inference())
        self.create_subscription(InferenceResult, 'arbiter/result', self.on_result, qos.inference())
        self.lock = threading.Lock()
        self.rows: dict[int, dict] = {}
        self.ready = threading.Event()
        self.create_timer(0.3, self.probe)
        # the executor's own answers too (the arbiter's forward id -> ours): a request the arbiter
        # answered TIMEOUT still gets the executor's split when its late answer comes
        self.forwarded: dict[int, int] = {}
        self.create_subscription(InferenceResult, 'inference/result', self.on_executor_result, qos.inference())

    def watch(self, arbiter) -> None:
        submit = arbiter.policy.submit

        def watched(**kw):
            adm = submit(**kw)
            if adm.pending is not None:
                with self.lock:
                    self.forwarded[adm.pending.forward_id] = kw['request_id']
            return adm
        arbiter.policy.submit = watched

    def on_executor_result(self, msg: InferenceResult) -> None:
        now_w = time.time()
        with self.lock:
            row = self.rows.get(self.forwarded.pop(msg.request_id, -1))
            if row is not None:
                row['executor'] = {'status': int(msg.status), 'recv_w': now_w, 'queue_ms': msg.queue_ms,
                                   'batch_wait_ms': msg.batch_wait_ms, 'compute_ms': msg.compute_ms,
                                   'estimate_ms': msg.estimate_ms, 'exec_received_w': time_to_s(msg.received),
                                   'reason': msg.reason[:120]}

    def send(self, rid: int, prio: int, deadline_mono: float) -> None:
        now_m, now_w = time.monotonic(), time.time()
        self.pub.publish(make_request(request_id=rid, line_id=self.line_id, cell_id=self.cell_id, task='bench',
                                      model=self.a.model, priority=prio,
                                      deadline_s=now_w + (deadline_mono - now_m), inputs={'image': self.image}))

    def probe(self) -> None:
        if not self.ready.is_set():
            with self.lock:
                self.rows[0] = {}
            self.send(0, 1, time.monotonic() + 2.0)

    def generate(self) -> None:
        # the camera that triggers the requests: above every thread of the cell and the executor, so
        # a request is born on time (a generator behind its schedule is a bench defect, not a miss)
        realtime_thread(self.plan.get('generator_priority', 0))
        t0 = self.plan['t0']
        for i, (t, prio) in enumerate(self.plan['arrivals'], start=1):
            birth = t0 + t
            sleep_until(birth)
            late = time.monotonic() - birth
            deadline = birth + self.plan['deadline_s'][str(prio)]
            with self.lock:
                self.rows[i] = {'prio': prio, 'birth': birth, 'late_ms': 1e3 * late, 'deadline': deadline,
                                'sent_w': time.time()}
            self.send(i, prio, deadline)
        time.sleep(self.a.drain_s)
        self.stop.poke()

    def on_result(self, msg: InferenceResult) -> None:
        now_m, now_w = time.monotonic(), time.time()
        with self.lock:
            row = self.rows.get(msg.request_id)
            if row is None or 'status' in row:
                return
            if msg.request_id == 0:
                if msg.status == 0 and not self.ready.is_set():
                    self.ready.set()
                    open(self.a.out + '.ready', 'w').close()
                    threading.Thread(target=self.generate, daemon=True).start()
                return
            row.update(status=int(msg.status), done=now_m, recv_w=now_w, queue_ms=msg.queue_ms,
                       batch_wait_ms=msg.batch_wait_ms, compute_ms=msg.compute_ms, estimate_ms=msg.estimate_ms,
                       exec_received_w=time_to_s(msg.received), exec_stamp_w=time_to_s(msg.header.stamp),
                       reason=msg.reason[:120])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True)
    ap.add_argument('--size', type=int, required=True)
    ap.add_argument('--schedule', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--drain-s', type=float, default=2.0)
    args, ros_args = ap.parse_known_args()
    with open(args.schedule) as f:
        plan = json.load(f)
    # the whole cell process real-time (threads made from here on inherit it: DDS, the spin thread,
    # the generator): its Python threads share one lock, and one at normal priority holding it
    # would hold up the rest behind every other process of the machine
    sys.setswitchinterval(0.0005)   # as every cellos node process (main_for): <= 0.5 ms wait for the GIL
    refusal = realtime_thread(plan.get('priority', 0))
    rclpy.init(args=['cell_openloop', *ros_args], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = Wakeup()
    arbiter, task = ArbiterNode(), OpenLoopTask(args, plan, stop)
    if refusal:
        arbiter.get_logger().warning(refusal)
    if not arbiter.bring_up():
        raise SystemExit('arbiter did not come up')
    task.watch(arbiter)
    try:
        spin_nodes([arbiter, task], executor='single', wake=stop)
    finally:
        with task.lock:
            rows = {k: v for k, v in task.rows.items() if k}
        tmp = args.out + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({'rows': rows, 'transport': arbiter.counts if hasattr(arbiter, 'counts') else {}}, f)
        os.replace(tmp, args.out)
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
