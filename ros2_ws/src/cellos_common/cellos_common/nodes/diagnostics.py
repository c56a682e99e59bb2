"""/diagnostics for every cellos node: diagnostic_updater where importable, else the same
DiagnosticArray content (REP-107 levels, hardware id, key values) from a small publisher.

One ``Diagnostics`` per node lifetime: ``start()`` at configure, ``stop()`` at cleanup, so a
node can be configured, cleaned up and configured again. Status names carry the node's fully
qualified name ('/line1/cell_01/timing: cycle'): every cell runs a node named 'timing'.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from cellos_common.nodes import qos

try:  # a real ROS 2 distro ships diagnostic_updater; the PyPI wheels do not
    import diagnostic_updater as _du
except ImportError:  # pragma: no cover - depends on the install
    _du = None

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN,
                          DiagnosticStatus.ERROR, DiagnosticStatus.STALE)


@dataclass
class DiagReport:
    level: bytes
    message: str
    values: dict = field(default_factory=dict)


def _fmt(v) -> str:
    return f'{v:.3f}' if isinstance(v, float) else str(v)


class Diagnostics:
    """``add(task, fn)`` where fn() returns a DiagReport; published at 1 Hz while started."""

    def __init__(self, node, hardware_id: str, period_s: float = 1.0):
        self._node = node
        self._hardware_id = hardware_id
        self._period_s = period_s
        self.prefix = node.get_fully_qualified_name()
        self._tasks: list[tuple[str, Callable[[], DiagReport]]] = []
        self._updater = None
        self._pub = self._timer = None

    @property
    def backend(self) -> str:
        return 'diagnostic_updater' if _du is not None else 'builtin'

    @property
    def started(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        if self.started:
            return
        if _du is None:
            self._pub = self._node.create_publisher(DiagnosticArray, '/diagnostics', qos.diagnostics())
            self._timer = self._node.create_timer(self._period_s, self.publish)
        elif self._updater is None:
            # the Updater declares diagnostic_updater.period (and .use_fqn) on the node and creates
            # its publisher and timer: constructed once per node, never again
            self._updater = _du.Updater(self._node, period=self._period_s)
            self._updater.setHardwareID(self._hardware_id)
            # the prefix its publish() puts before each task name (diagnostics >= 3.2 / 4.0: every
            # Jazzy and Kilted release); its own use_fqn form is '//name' for a node in '/'
            self._updater.node_name = self.prefix
            self._timer = self._updater.timer
        else:
            # after a cleanup: the same Updater gets a new publisher and timer (its public attributes)
            self._updater.publisher = self._node.create_publisher(
                DiagnosticArray, '/diagnostics', qos.diagnostics())
            self._updater.timer = self._timer = self._node.create_timer(self._updater.period, self._updater.update)

    def stop(self) -> None:
        """Cleanup: no timer, no publisher, no task left on the node."""
        if self._updater is not None:
            with self._updater.lock:
                self._updater.tasks.clear()
            if self._updater.timer is not None:
                self._node.destroy_timer(self._updater.timer)
                self._node.destroy_publisher(self._updater.publisher)
                self._updater.timer = self._updater.publisher = None
        elif self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._node.destroy_publisher(self._pub)
            self._pub = None
        self._timer = None
        self._tasks.clear()

    def add(self, task: str, fn: Callable[[], DiagReport]) -> None:
        if self._updater is not None:
            def run(stat, fn=fn):
                r = fn()
                stat.summary(r.level, r.message)
                for k, v in r.values.items():
                    stat.add(k, _fmt(v))
                return stat
            self._updater.add(task, run)
        else:
            self._tasks.append((task, fn))

    def status(self) -> list[DiagnosticStatus]:
        out = []
        for task, fn in self._tasks:
            r = fn()
            out.append(DiagnosticStatus(
                level=r.level, name=f'{self.prefix}: {task}', message=r.message,
                hardware_id=self._hardware_id,
                values=[KeyValue(key=k, value=_fmt(v)) for k, v in r.values.items()]))
        return out

    def publish(self) -> None:
        if self._pub is None or not self._tasks:
            return
        msg = DiagnosticArray()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.status = self.status()
        self._pub.publish(msg)
