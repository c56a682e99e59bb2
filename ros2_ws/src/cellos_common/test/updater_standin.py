"""What ``diagnostic_updater.Updater(node, period)`` does to a node, for the tests that need it
where the distro package cannot be installed (the PyPI ROS wheels do not ship it).

Written from the package's Python source (ros/diagnostics, branches ros2-jazzy and ros2):
the constructor creates a publisher on /diagnostics, *declares* the parameter
'diagnostic_updater.period' (a second Updater on the same node raises
ParameterAlreadyDeclaredException), creates its timer, and declares
'diagnostic_updater.use_fqn' unless it exists; ``publish`` prefixes each status name with
``node_name``; ``add`` publishes a 'starting up' status at once; ``tasks`` and ``lock`` come
from its DiagnosticTaskVector base. Only what cellos relies on is reproduced.
"""
from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


class _Status(DiagnosticStatus):
    def summary(self, level, message):
        self.level, self.message = level, message

    def add(self, key, value):
        self.values.append(KeyValue(key=key, value=str(value)))


class Updater:
    def __init__(self, node, period=1.0):
        self.tasks = []
        self.lock = threading.Lock()
        self.node = node
        self.publisher = node.create_publisher(DiagnosticArray, '/diagnostics', 1)
        self.period_parameter = 'diagnostic_updater.period'
        self._period = node.declare_parameter(self.period_parameter, period).value
        self.timer = node.create_timer(self._period, self.update)
        self.hwid = ''
        if node.has_parameter('diagnostic_updater.use_fqn'):
            use_fqn = node.get_parameter('diagnostic_updater.use_fqn').value
        else:
            use_fqn = node.declare_parameter('diagnostic_updater.use_fqn', False).value
        self.node_name = ('/'.join([node.get_namespace(), node.get_name()]) if use_fqn
                          else node.get_name())
        self.published: list[DiagnosticArray] = []

    @property
    def period(self):
        return self._period

    def setHardwareID(self, hwid):
        self.hwid = hwid

    def add(self, name, fn):
        with self.lock:
            self.tasks.append((name, fn))
            stat = _Status(name=name, level=DiagnosticStatus.OK, message='Node starting up')
            self.publish([stat])

    def update(self):
        with self.lock:
            out = []
            for name, fn in self.tasks:
                stat = _Status(name=name, level=DiagnosticStatus.ERROR, message='No message was set',
                               hardware_id=self.hwid)
                out.append(fn(stat))
        self.publish(out)

    def publish(self, statuses):
        msg = DiagnosticArray()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        for stat in statuses:
            stat.name = self.node_name + ': ' + stat.name
            msg.status.append(DiagnosticStatus(name=stat.name, level=stat.level, message=stat.message,
                                               hardware_id=stat.hardware_id, values=stat.values))
        self.published.append(msg)
        self.publisher.publish(msg)
