"""A node's high-rate subscriptions, spun apart from its services and timers.

rclpy's executors rebuild their wait set from every entity of their nodes at each wake-up, and
rmw_wait attaches to and detaches from each of them. A lifecycle node carries some 20 services
(lifecycle, parameters, its own) besides its timers: on the executor host, its
MultiThreadedExecutor took 0.6 of a core, most of it inside rcl_wait, to take in 70 requests/s
(bench executor_overhead). An ``Intake`` holds a plain node with nothing but the subscriptions
given to it (no parameter services, no rosout), spun by a SingleThreadedExecutor on a supervised
thread of the owner, as ros2_control's controller_manager runs its update loop apart from its
services. Its callbacks run behind the owner's boundary (a fault is counted, the thread goes on).

    self.intake = Intake(self, 'executor_intake')          # configure
    self.intake.subscribe(Msg, '/line1/cell_01/inference/request', self._on_request, qos.inference())
    self.intake.start()
    self.intake.close()                                     # cleanup
"""
from __future__ import annotations

import threading

from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


class Intake:
    def __init__(self, owner, name: str, thread_setup=None):
        """``owner``: a cellos node (Boundary); ``thread_setup()`` runs first on the intake thread."""
        self.owner, self.name = owner, name
        self.node = Node(name, namespace=owner.get_namespace(), context=owner.context,
                         start_parameter_services=False, enable_rosout=False)
        self._executor = SingleThreadedExecutor(context=owner.context)
        self._executor.add_node(self.node)
        self._thread_setup = thread_setup
        self._closing = threading.Event()
        self._thread = owner.supervise(name, self._spin)

    def subscribe(self, msg_type, topic: str, callback, qos, raw: bool = False):
        """``raw``: the callback gets the serialized message (bytes), to check before it is deserialized."""
        return self.node.create_subscription(msg_type, topic, self.owner._guarded(f'topic {topic}', callback), qos,
                                             raw=raw)

    def unsubscribe(self, sub) -> None:
        self.node.destroy_subscription(sub)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the thread and destroy the node; False if the thread did not stop in time."""
        self._closing.set()
        self._executor.wake()
        stopped = self._thread.stop(timeout=timeout)
        self._executor.remove_node(self.node)
        self._executor.shutdown(timeout_sec=timeout)
        self.node.destroy_node()
        return stopped

    def _spin(self, stop: threading.Event) -> None:
        if self._thread_setup is not None:
            self._thread_setup()
        try:
            while not (stop.is_set() or self._closing.is_set()):
                self._executor.spin_once(timeout_sec=0.25)
        except ExternalShutdownException:
            pass
        stop.wait()   # the process is going down (rclpy shut down) or close() is under way
