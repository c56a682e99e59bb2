"""What the audit recorder of a line records: one row per topic, by scope.

  scope  cell    <line ns>/<cell>/<name>, for every cell of the line (listed or discovered)
         line    <line ns>/<name>
         shared  an absolute topic the recorder is given (executor, site feed, audit events)
  qos    reliable | latched (transient local state) | event (transient local, depth 100: a
         restarted recorder gets the recent ones again) | best_effort
  keep   all | no_tensors (InferenceResult without its output tensors) | decimated (a phase
         correction is kept when its command or reason changes, else one per cell per period)

Recording a new kind of audit record (model rollout steps, review decisions) is one more row
here and, for a new message type, its .msg in cellos_interfaces.
"""
from __future__ import annotations

from dataclasses import dataclass

IFACE = 'cellos_interfaces/msg/'


@dataclass(frozen=True)
class TopicRule:
    name: str
    type: str
    scope: str
    qos: str
    keep: str = 'all'


CELL_TOPICS = (
    TopicRule('vision/inspection', IFACE + 'Inspection', 'cell', 'reliable'),
    TopicRule('arbiter/result', IFACE + 'InferenceResult', 'cell', 'reliable', keep='no_tensors'),
    TopicRule('energy/gate', IFACE + 'GateState', 'cell', 'latched'),
    TopicRule('vision/drift', IFACE + 'VisionDrift', 'cell', 'latched'),
    TopicRule('timing/correction', IFACE + 'PhaseCorrection', 'cell', 'best_effort', keep='decimated'),
)
LINE_TOPICS = (
    TopicRule('line_state', IFACE + 'LineState', 'line', 'latched'),
)
# shared topics: parameter name of the recorder -> rule (the rule's name is the default topic)
SHARED_TOPICS = {
    'executor_status_topic': TopicRule('/gpu0/executor/status', IFACE + 'ExecutorStatus', 'shared', 'reliable'),
    'registry_topic': TopicRule('/gpu0/executor/registry', IFACE + 'ModelRegistryChange', 'shared', 'event'),
    'feed_topic': TopicRule('/site/energy_feed', IFACE + 'EnergySignal', 'shared', 'latched'),
    'operator_action_topic': TopicRule('/audit/operator_action', IFACE + 'OperatorAction', 'shared', 'event'),
}
# types a recording may hold twice: latched state repeated at the start of each split, events
# delivered again to a restarted recorder; readers drop the repeats (same topic, publish time, bytes)
REPEATED_TYPES = frozenset(r.type for r in (*CELL_TOPICS, *LINE_TOPICS, *SHARED_TOPICS.values())
                           if r.qos in ('latched', 'event'))
DISCOVERY_SUFFIX = 'vision/inspection'   # a cell of the line is found by this topic


def cell_topic(line_ns: str, cell: str, rule: TopicRule) -> str:
    return f'{line_ns.rstrip("/")}/{cell}/{rule.name}'


def line_topic(line_ns: str, rule: TopicRule) -> str:
    return f'{line_ns.rstrip("/")}/{rule.name}'


def split_cell_topic(topic: str) -> tuple[str, str, str] | None:
    """'/line1/cell_01/vision/inspection' -> ('line1', 'cell_01', 'vision/inspection'); None when the
    topic is no cell topic of the table.
    """
    for rule in CELL_TOPICS:
        suffix = '/' + rule.name
        if topic.endswith(suffix):
            parts = topic[:-len(suffix)].strip('/').split('/')
            if len(parts) >= 2:
                return '/'.join(parts[:-1]), parts[-1], rule.name
    return None


class Decimator:
    """Keeps a sample when its signature (e.g. command and reason) changes, or ``period_ns`` after
    the last one kept for the same key.
    """

    def __init__(self, period_ns: int):
        self.period_ns = int(period_ns)
        self._last: dict = {}
        self.kept = 0
        self.dropped = 0

    def keep(self, key, signature, t_ns: int) -> bool:
        last = self._last.get(key)
        if last is None or last[1] != signature or t_ns - last[0] >= self.period_ns:
            self._last[key] = (t_ns, signature)
            self.kept += 1
            return True
        self.dropped += 1
        return False
