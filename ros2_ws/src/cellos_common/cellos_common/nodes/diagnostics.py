"""/diagnostics for every cellos node: diagnostic_updater where importable, else the same
DiagnosticArray content (REP-107 levels, hardware id, key values) from a small publisher.
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
    """``add(task, fn)`` where fn() returns a DiagReport; published at 1 Hz."""

    def __init__(self, node, hardware_id: str, period_s: float = 1.0):
        self._node = node
        self._hardware_id = hardware_id
        self._tasks: list[tuple[str, Callable[[], DiagReport]]] = []
        if _du is not None:
            self._updater = _du.Updater(node, period=period_s)
            self._updater.setHardwareID(hardware_id)
            self._pub = self._timer = None
        else:
            self._updater = None
            self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', qos.diagnostics())
            self._timer = node.create_timer(period_s, self.publish)

    @property
    def backend(self) -> str:
        return 'diagnostic_updater' if self._updater is not None else 'builtin'

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
        prefix = self._node.get_name()
        for task, fn in self._tasks:
            r = fn()
            out.append(DiagnosticStatus(
                level=r.level, name=f'{prefix}: {task}', message=r.message,
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

    def destroy(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._node.destroy_publisher(self._pub)
        self._tasks.clear()
