"""A test-side rclpy node: subscribe, record, call services, from plain test code."""
from __future__ import annotations

import threading
from collections import defaultdict

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


class Probe:
    def __init__(self, name: str = 'cellos_test_probe'):
        self.context = rclpy.Context()
        # its output is the test's: no log file in ROS_LOG_DIR
        rclpy.init(context=self.context, args=[name, '--ros-args', '--disable-external-lib-logs'])
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.messages: dict[str, list] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, msg_type, topic: str, qos, key: str | None = None, callback=None):
        key = key or topic

        def on_msg(msg):
            with self.lock:
                self.messages[key].append(msg)
            if callback:
                callback(msg)
        return self.node.create_subscription(msg_type, topic, on_msg, qos)

    def received(self, key: str) -> list:
        with self.lock:
            return list(self.messages[key])

    def clear(self, key: str) -> None:
        with self.lock:
            self.messages[key].clear()

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f'service {name} not available after {timeout} s')
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                raise AssertionError(f'service {name} did not answer in {timeout} s')
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self):
        self._stop.set()
        self._thread.join()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
