"""Audit recorder of one line (namespace /<line>, node name audit_recorder): records what the
line decides and why to a rosbag2-compatible MCAP bag under ``output_dir`` (core.audit_topics
lists the topics; core.bag_writer writes them).

One recorder per line, not per host: an audit answers for a line's parts, and a line's cells,
executor and site feed may run on several hosts; a per-host recording would scatter one part's
decision over several files to be merged. The recorder is a plain DDS subscriber and may run on
any host that sees the line (typically the coordinator's).

Messages are recorded as they arrived (serialized CDR, no decoding), except inference results
(output tensors dropped: the verdict, status, times and energy are what the audit needs) and
phase corrections (decimated: every change of command or reason, else one per cell per
``correction_period_s``). Subscriptions exist from ``configure``; what arrives before
``activate`` is kept (bounded) and written at activation, so the recorder misses nothing of a
line brought up together with it.
"""
from __future__ import annotations

import re
import socket
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from rclpy.serialization import serialize_message

from cellos_audit.core.audit_topics import (CELL_TOPICS, LINE_TOPICS, SHARED_TOPICS, Decimator, TopicRule,
                                            cell_topic, line_topic)
from cellos_audit.core.bag_metadata import qos_profile
from cellos_audit.core.bag_writer import COMPRESSION, BagWriter
from cellos_audit.core.message_definitions import DefinitionError, full_text
from cellos_audit.core.retention import enforce_budget, recordings_size
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, DiagReport
import cellos_interfaces.msg

# every type a row of audit_topics names: a new row needs no edit here
MESSAGE_CLASSES = {r.type.rsplit('/', 1)[-1]: getattr(cellos_interfaces.msg, r.type.rsplit('/', 1)[-1])
                   for r in (*CELL_TOPICS, *LINE_TOPICS, *SHARED_TOPICS.values())}
PREROLL = 20000   # messages kept between configure and activate


def _load_msg(package: str, name: str) -> str:
    return (Path(get_package_share_directory(package)) / 'msg' / f'{name}.msg').read_text()


class AuditRecorderNode(CellosNode):
    SPIN = 'single'    # no callback blocks; writes are appends to memory, flushed by a timer
    PARAMS = [
        ParamSpec('line_id', '', "line recorded (names the recording); empty: the last part of the node's namespace",
                  read_only=True),
        ParamSpec('line_namespace', '', "namespace of the line's nodes; empty: the node's namespace",
                  read_only=True),
        ParamSpec('cells', [], "the line's cells (e.g. ['cell_01', 'cell_02']): subscribed at configure; others "
                  'are discovered', read_only=True, item=str),
        ParamSpec('discover_cells', True, 'also record every cell of the line that appears in the graph'),
        ParamSpec('discovery_period_s', 1.0, 'graph scan period for new cells', min=0.1, max=60.0, unit='s'),
        ParamSpec('output_dir', 'log/audit', 'folder of the recordings; relative: to the working directory '
                  '(the workspace when started by make run)', read_only=True),
        ParamSpec('bag_name', '', "this recording's folder under output_dir; empty: '<line>_<UTC time>'. A "
                  'folder that exists is continued (a restarted recorder appends splits)', read_only=True),
        ParamSpec('split_max_mb', 64.0, 'start a new split file at this size', min=0.1, max=1e6, unit='MB'),
        ParamSpec('split_max_s', 600.0, 'start a new split file at this age', min=1.0, max=86400.0 * 7, unit='s'),
        ParamSpec('disk_budget_mb', 2048.0, "all of this line's recordings under output_dir; the oldest splits "
                  'are deleted beyond it (logged, and noted in the recording)', min=1.0, max=1e9, unit='MB'),
        ParamSpec('flush_period_s', 0.5, 'hand what arrived to the operating system this often: the most a '
                  'SIGKILL of the recorder can lose', min=0.05, max=10.0, unit='s'),
        ParamSpec('correction_period_s', 1.0, 'phase corrections kept per cell (every change of command or '
                  'reason is kept too)', min=0.0, max=3600.0, unit='s'),
        ParamSpec('compression', 'lz4', 'chunk compression (rosbag2 and Foxglove read all three)',
                  choices=tuple(COMPRESSION), read_only=True),
        ParamSpec('fsync', True, 'fsync each split file when it is closed', read_only=True),
        *[ParamSpec(key, rule.name, f'{rule.type.rsplit("/", 1)[-1]} topic recorded (absolute; empty: none)',
                    read_only=True) for key, rule in SHARED_TOPICS.items()],
    ]

    def __init__(self, **kwargs):
        super().__init__('audit_recorder', **kwargs)
        self.writer: BagWriter | None = None
        self._subs: dict[str, object] = {}
        self._cells: set[str] = set()
        self._definitions: dict[str, str] = {}
        self._preroll: deque = deque(maxlen=PREROLL)
        self._preroll_dropped = 0
        self._errors: deque = deque(maxlen=5)
        self._deleted = 0
        self._recorder_timers = []

    def check_params(self, p) -> None:
        if p.disk_budget_mb < 2 * p.split_max_mb:
            raise ParameterError(f'disk_budget_mb ({p.disk_budget_mb:g}) must hold two splits '
                                 f'(split_max_mb {p.split_max_mb:g}): the one written and the last closed')

    # -- lifecycle ----------------------------------------------------------------------------
    def configure(self) -> None:
        p = self.params
        ns = self.get_namespace().rstrip('/')
        self.line_ns = (p.line_namespace or ns).rstrip('/')
        self.line_id = p.line_id or self.line_ns.rsplit('/', 1)[-1] or 'line'
        self.root = Path(p.output_dir).resolve()
        name = p.bag_name or f'{self.line_id}_{datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")}'
        if '/' in name or name in ('.', '..'):
            raise ParameterError(f"bag_name '{name}' must be a plain folder name")
        self.prefix = f'{self.line_id}_'
        self.writer = BagWriter(
            self.root / name, name, split_max_bytes=int(p.split_max_mb * 1e6), split_max_s=p.split_max_s,
            compression=p.compression, ros_distro='kilted', fsync=p.fsync,
            custom={'cellos_line': self.line_id, 'recorder': self.get_fully_qualified_name()},
            file_metadata={'line': self.line_id, 'line_namespace': self.line_ns,
                           'recorder': self.get_fully_qualified_name(), 'host': socket.gethostname(),
                           'flush_period_s': p.flush_period_s, 'correction_period_s': p.correction_period_s})
        log = self.get_logger()
        for rep in self.writer.reindexed:
            log.warning(f'continuing recording {self.writer.folder}: {rep.path.name} has {rep.messages} messages'
                        + (f', {rep.problem}' if rep.problem else ''))
        log.info(f'recording line {self.line_id} ({self.line_ns}) to {self.writer.folder}/ '
                 f'(splits of {p.split_max_mb:g} MB / {p.split_max_s:g} s, budget {p.disk_budget_mb:g} MB, '
                 f'flush every {p.flush_period_s:g} s)')
        self._apply_budget()
        self._decimator = Decimator(int(p.correction_period_s * 1e9))
        for rule in LINE_TOPICS:
            self._subscribe(line_topic(self.line_ns, rule), rule)
        for key, rule in SHARED_TOPICS.items():
            if getattr(p, key):
                self._subscribe(getattr(p, key), rule)
        for cell in p.cells:
            self._add_cell(cell)
        self._cell_topic = re.compile('^' + re.escape(self.line_ns) + r'/([A-Za-z0-9_]+)/('
                                      + '|'.join(re.escape(r.name) for r in CELL_TOPICS) + ')$')
        self._recorder_timers = [self.create_timer(p.flush_period_s, self._flush)]
        if p.discover_cells:
            self._recorder_timers.append(self.create_timer(p.discovery_period_s, self._discover))
        self.diagnostics.add('recording', self._diag)

    def activate(self) -> None:
        while self._preroll:
            self._write(*self._preroll.popleft())
        self.writer.flush()

    def deactivate(self) -> None:
        self.writer.flush()

    def cleanup(self) -> None:
        for t in self._recorder_timers:
            self.destroy_timer(t)
        self._recorder_timers = []
        for sub in self._subs.values():
            self.destroy_subscription(sub)
        self._subs.clear()
        self._cells.clear()
        while self._preroll:   # configured, never activated: still on disk
            self._write(*self._preroll.popleft())
        self.writer.close()
        self.get_logger().info(f'recording closed: {self.writer.folder}/ ({self.writer.messages} messages, '
                               f'{self.writer.splits} split(s) this run)')

    # -- subscriptions --------------------------------------------------------------------------
    def _add_cell(self, cell: str) -> None:
        if cell in self._cells:
            return
        self._cells.add(cell)
        for rule in CELL_TOPICS:
            self._subscribe(cell_topic(self.line_ns, cell, rule), rule, cell)

    def _discover(self) -> None:
        for name, _types in self.get_topic_names_and_types():
            m = self._cell_topic.match(name)
            if m and m.group(1) not in self._cells:
                self.get_logger().info(f'cell {m.group(1)} found: recording it')
                self._add_cell(m.group(1))

    def _subscribe(self, topic: str, rule: TopicRule, cell: str = '') -> None:
        cls = MESSAGE_CLASSES[rule.type.rsplit('/', 1)[-1]]
        profile = (qos.audit_event() if rule.qos == 'event'
                   else qos.recorder(reliable=rule.qos != 'best_effort', latched=rule.qos == 'latched'))
        latched = rule.qos == 'latched'
        if rule.keep == 'all':
            def on_message(data, info, topic=topic):
                self._receive(topic, rule.type, data, info, latched)
            self._subs[topic] = self.create_subscription(cls, topic, on_message, profile, raw=True)
        elif rule.keep == 'no_tensors':
            def on_result(msg, info, topic=topic):
                msg.outputs = []
                self._receive(topic, rule.type, serialize_message(msg), info, latched)
            self._subs[topic] = self.create_subscription(cls, topic, on_result, profile)
        elif rule.keep == 'decimated':
            def on_correction(msg, info, topic=topic):
                if self._decimator.keep(topic, (msg.command, msg.reason), time.time_ns()):
                    self._receive(topic, rule.type, serialize_message(msg), info, latched)
            self._subs[topic] = self.create_subscription(cls, topic, on_correction, profile)
        else:
            raise ValueError(f'unknown keep rule {rule.keep!r}')

    # -- recording ------------------------------------------------------------------------------
    def _receive(self, topic: str, type_name: str, data: bytes, info, latched: bool) -> None:
        # log time: when the recorder takes the message, so a file's order is its time order (as
        # rosbag2 records); publish time: the publisher's DDS source timestamp
        log_time = time.time_ns()
        item = (topic, type_name, bytes(data), log_time, info.get('source_timestamp') or log_time, latched)
        if not self.active:
            if len(self._preroll) == self._preroll.maxlen:
                self._preroll_dropped += 1
            self._preroll.append(item)
            return
        self._write(*item)

    def _write(self, topic, type_name, data, log_time, publish_time, latched) -> None:
        if not self.writer.has_topic(topic):
            try:
                definition = self._definitions.get(type_name) or full_text(type_name, _load_msg)
            except DefinitionError as e:
                self._errors.append(str(e))
                self.get_logger().error(f'{topic}: {e}: not recorded', throttle_duration_sec=10.0)
                return
            self._definitions[type_name] = definition
            offered, type_hash = self._offered(topic)
            self.writer.add_topic(topic, type_name, definition, offered, type_hash, latched)
        self.writer.write(topic, data, log_time, publish_time)

    def _offered(self, topic: str) -> tuple[list, str]:
        """The publishers' QoS, as ros2 bag play needs it to publish the topic back the same way."""
        profiles, type_hash = [], ''
        for info in self.get_publishers_info_by_topic(topic):
            q = info.qos_profile
            profiles.append(qos_profile(
                reliable=q.reliability.name.lower() == 'reliable',
                transient_local=q.durability.name.lower() == 'transient_local', depth=q.depth,
                deadline_ns=q.deadline.nanoseconds, lifespan_ns=q.lifespan.nanoseconds,
                lease_ns=q.liveliness_lease_duration.nanoseconds))
            type_hash = type_hash or str(info.topic_type_hash or '')
        return profiles, type_hash

    def _flush(self) -> None:
        if not self.active:
            return
        try:
            why = self.writer.flush()
        except OSError as e:
            self._errors.append(f'write failed: {e}')
            self.get_logger().error(f'recording: write failed: {e}', throttle_duration_sec=5.0)
            return
        if why:
            self.get_logger().info(f'new split {self.writer.current.name} ({why})')
            self._apply_budget()

    def _apply_budget(self) -> None:
        p = self.params
        deleted = enforce_budget(self.root, self.prefix, int(p.disk_budget_mb * 1e6), self.writer.current)
        if not deleted:
            return
        self._deleted += len(deleted)
        self.writer.forget({d.name for d in deleted if d.parent == self.writer.folder})
        for d in deleted:
            self.get_logger().warning(f'disk budget {p.disk_budget_mb:g} MB: deleted {d}')
        self.writer.note('cellos_audit.retention', {'deleted': ','.join(str(d) for d in deleted),
                                                    'budget_mb': str(p.disk_budget_mb)})

    def _diag(self) -> DiagReport:
        w = self.writer
        values = {'folder': str(w.folder), 'split': w.current.name, 'messages': w.messages, 'splits': w.splits,
                  'split_bytes': w.size_bytes(), 'cells': ','.join(sorted(self._cells)),
                  'corrections_dropped': self._decimator.dropped, 'preroll_dropped': self._preroll_dropped,
                  'deleted_by_budget': self._deleted,
                  'recordings_mb': round(recordings_size(self.root, self.prefix) / 1e6, 2)}
        if self._errors:
            return DiagReport(ERROR, self._errors[-1], values)
        if self._preroll_dropped:
            return DiagReport(WARN, f'{self._preroll_dropped} message(s) lost before activation', values)
        return DiagReport(OK, f'{w.messages} messages in {w.folder.name}', values)


def main(args=None):
    return main_for(AuditRecorderNode, args)
