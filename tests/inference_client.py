"""Test/benchmark side of a cell's tasks: send InferenceRequests, collect InferenceResults."""
from __future__ import annotations

import threading
import time

from cellos_common.core.cell_names import split_cell_ns
from cellos_common.nodes import qos
from cellos_inference.nodes.convert_inference import make_request
from cellos_interfaces.msg import InferenceRequest, InferenceResult


class CellClient:
    """Publishes on ``<ns>/<request_leaf>`` and records results from ``<ns>/<result_leaf>``
    with their arrival time, keyed by (task, request_id).
    """

    def __init__(self, probe, ns: str, request_leaf='arbiter/request', result_leaf='arbiter/result'):
        self.probe, self.ns = probe, ns
        self.cell_ns = ns.strip('/')
        self.lock = threading.Lock()
        self.results: dict = {}
        self.sent: dict = {}
        self.duplicates = 0
        self.pub = probe.node.create_publisher(InferenceRequest, f'{ns}/{request_leaf}', qos.inference())
        probe.subscribe(InferenceResult, f'{ns}/{result_leaf}', qos.inference(), callback=self._on)
        self.next_id = 0

    def _on(self, msg):
        with self.lock:
            key = (msg.task, msg.request_id)
            self.duplicates += key in self.results
            self.results[key] = (time.time(), msg)

    def send(self, model, inputs, *, task='inspection', priority=1, deadline_s=2.0, cell_ns=None,
             request_id=None) -> tuple:
        """``cell_ns``: the cell the request names (line_id/cell_id), default the client's own."""
        if request_id is None:
            self.next_id += 1
            request_id = self.next_id
        deadline = time.time() + deadline_s
        line_id, cell_id = split_cell_ns(self.cell_ns if cell_ns is None else cell_ns)
        msg = make_request(request_id=request_id, line_id=line_id, cell_id=cell_id,
                           task=task, model=model, priority=priority, deadline_s=deadline, inputs=inputs)
        key = (task, request_id)
        with self.lock:
            self.sent[key] = (time.time(), deadline)
        self.pub.publish(msg)
        return key

    def send_msg(self, msg, task='inspection') -> tuple:
        """Publish a request built by the caller (malformed on purpose, or huge); tracked like send."""
        key = (task, msg.request_id)
        with self.lock:
            self.sent[key] = (time.time(), time.time() + 60.0)
        self.pub.publish(msg)
        return key

    def result(self, key, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if key in self.results:
                    return self.results[key][1]
            time.sleep(0.005)
        raise AssertionError(f'{self.ns}: no result for {key} within {timeout} s')

    def answered(self) -> int:
        with self.lock:
            return sum(1 for k in self.sent if k in self.results)
