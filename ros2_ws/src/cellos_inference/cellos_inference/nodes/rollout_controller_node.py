"""A line's model rollout controller (namespace /<line>, node name rollout_controller): adds up the
cells' figures on a task's candidate and rolls it back, or promotes it, through the executor's
services when the thresholds say so (cellos_inference.core.rollout_policy).

  rollout/stats             RolloutStats   in   each cell's figures, after every candidate decision
  <executor>/aliases        ModelAliases   in   the executor's roles: figures of another candidate are ignored
  <executor>/rollback, /promote  RolloutStep  client  with the reason (the figures) and the candidate's id,
                                                so a step never acts on a candidate it did not judge

It acts on the message that crosses a threshold, so a bad candidate on canary is rolled back
before the canary cell's next cycle: the executor resolves each request's role when it arrives.
Each step is in the audit as the executor's ModelRegistryChange and OperatorAction, with
operator_name 'rollout_controller' and the figures as the reason.
"""
from __future__ import annotations

import time

from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_common.nodes.diagnostics import OK, WARN, DiagReport
from cellos_inference.core.rollout_policy import Judgement, Thresholds, judge, merge
from cellos_inference.nodes.convert_rollout import alias_from_msg, stats_from_msg
from cellos_interfaces.msg import ModelAliases, RolloutStats
from cellos_interfaces.srv import RolloutStep

OPERATOR = 'rollout_controller'
RETRY_S = 2.0


class RolloutControllerNode(CellosNode):
    SPIN = 'single'
    PARAMS = [
        ParamSpec('executor', '/gpu0/executor', "the executor whose roles this line's cells use", read_only=True),
        ParamSpec('task', 'inspection', 'the task whose candidate is judged', read_only=True),
        ParamSpec('auto_rollback', True, 'roll a candidate back when a threshold is crossed'),
        ParamSpec('auto_promote', False, 'promote a candidate that stays within every threshold over '
                  'promote_min_samples decisions (else an operator promotes: <executor>/promote)'),
        ParamSpec('min_accuracy', 0.9, "candidate's decided verdicts right where the truth is known",
                  min=0.0, max=1.0),
        ParamSpec('min_agreement', 0.7, 'same verdict and class as the verdict served, on parts both decided',
                  min=0.0, max=1.0),
        ParamSpec('latency_slo_ms', 50.0, "candidate's compute time p95 at the executor; 0: not judged",
                  min=0.0, max=60000.0, unit='ms'),
        ParamSpec('max_undecided_rate', 0.3, 'share of UNDECIDED candidate verdicts', min=0.0, max=1.0),
        ParamSpec('max_accuracy_drop', 0.02, "promotion: accuracy at least production's on the same parts "
                  'minus this', min=0.0, max=1.0),
        ParamSpec('rollback_min_samples', 10, 'candidate decisions before a rollback is judged', min=1, max=100000),
        ParamSpec('promote_min_samples', 200, 'candidate decisions before a promotion is judged', min=1,
                  max=1000000),
        ParamSpec('confidence_z', 2.0, 'Wilson bound of the rollback test (2: about 95 %)', min=0.1, max=10.0),
        ParamSpec('stale_s', 10.0, "a cell's figures older than this are left out", min=0.5, max=3600.0, unit='s'),
    ]

    def __init__(self, **kwargs):
        super().__init__('rollout_controller', **kwargs)

    def check_params(self, p) -> None:
        if p.promote_min_samples < p.rollback_min_samples:
            raise ParameterError('promote_min_samples must be >= rollback_min_samples')

    def _thresholds(self) -> Thresholds:
        p = self.params
        return Thresholds(min_accuracy=p.min_accuracy, min_agreement=p.min_agreement,
                          latency_slo_ms=p.latency_slo_ms, max_undecided_rate=p.max_undecided_rate,
                          max_accuracy_drop=p.max_accuracy_drop, rollback_min_samples=p.rollback_min_samples,
                          promote_min_samples=p.promote_min_samples, z=p.confidence_z)

    def configure(self) -> None:
        p = self.params
        self.aliases = None
        self.cells: dict[str, tuple[float, object, object]] = {}   # cell -> (received, figures, message)
        self.judgement = Judgement('wait', 'no candidate')
        self.acted: dict[str, str] = {}     # candidate id -> what was asked for it
        self._in_flight = None
        self._failed_at = 0.0
        self.steps = 0
        self._rollback = self.create_client(RolloutStep, f'{p.executor}/rollback')
        self._promote = self.create_client(RolloutStep, f'{p.executor}/promote')
        self._entities = [
            self.create_subscription(RolloutStats, 'rollout/stats', self._on_stats, qos.status()),
            self.create_subscription(ModelAliases, f'{p.executor}/aliases', self._on_aliases, qos.latched_state())]
        self.diagnostics.add('rollout', self._diag)

    def cleanup(self) -> None:
        for e in self._entities:
            self.destroy_subscription(e)
        self.destroy_client(self._rollback)
        self.destroy_client(self._promote)

    def _on_aliases(self, msg: ModelAliases) -> None:
        mine = next((a for a in msg.aliases if a.task == self.params.task), None)
        self.aliases = alias_from_msg(mine) if mine is not None else None
        cand = self.aliases.candidate.id if self.aliases else ''
        self.cells = {c: v for c, v in self.cells.items() if v[2].candidate_id == cand}
        if not cand:
            self.judgement = Judgement('wait', 'no candidate')

    def _on_stats(self, msg: RolloutStats) -> None:
        if msg.task != self.params.task:
            return
        now = time.monotonic()
        self.cells[f'{msg.line_id}/{msg.cell_id}'] = (now, stats_from_msg(msg), msg)
        a = self.aliases
        if not self.active or a is None or not a.candidate or msg.candidate_id != a.candidate.id:
            return
        fresh = [(f, m) for t, f, m in self.cells.values()
                 if m.candidate_id == a.candidate.id and now - t <= self.params.stale_s]
        figures = merge(f for f, _ in fresh)
        self.judgement = judge(figures, self._thresholds())
        self._act(a.candidate, msg, figures)

    def _act(self, candidate, trigger: RolloutStats, figures) -> None:
        p = self.params
        action = self.judgement.action
        if action == 'wait' or (action == 'rollback' and not p.auto_rollback) or \
                (action == 'promote' and not p.auto_promote):
            return
        if self._in_flight is not None or candidate.id in self.acted or time.monotonic() - self._failed_at < RETRY_S:
            return
        client = self._rollback if action == 'rollback' else self._promote
        if not client.service_is_ready():
            self.get_logger().error(f'{action} of {candidate.describe()} wanted ({self.judgement.reason}) but '
                                    f'{client.srv_name} is not available')
            self._failed_at = time.monotonic()
            return
        reason = (f'auto {action} by {self.get_fully_qualified_name()}: {self.judgement.reason}; trigger '
                  f'{trigger.line_id}/{trigger.cell_id} part {trigger.last_part_id}')
        self.get_logger().warning(f'{candidate.describe()}: {reason}')
        req = RolloutStep.Request(task=p.task, reason=reason, operator_name=OPERATOR, expected_id=candidate.id)
        self._in_flight = (action, candidate.id)
        client.call_async(req).add_done_callback(self._done)

    def _done(self, future) -> None:
        action, cand = self._in_flight
        self._in_flight = None
        try:
            resp = future.result()
        except Exception as e:   # the service vanished mid-call
            resp = None
            why = f'{type(e).__name__}: {e}'
        if resp is not None and resp.success:
            self.acted[cand] = action
            self.steps += 1
            self.get_logger().info(resp.message)
            return
        self._failed_at = time.monotonic()
        self.get_logger().error(f'{action} of {cand[:12]} refused: {resp.message if resp is not None else why}')

    def _diag(self) -> DiagReport:
        a = self.aliases
        values = {'candidate': a.candidate.describe() if a and a.candidate else '(none)',
                  'production': a.production.describe() if a else '(not heard)',
                  'judgement': f'{self.judgement.action}: {self.judgement.reason}', 'steps taken': self.steps,
                  'cells reporting': len(self.cells)}
        if self.judgement.action == 'rollback' and not self.params.auto_rollback:
            return DiagReport(WARN, f'candidate should be rolled back: {self.judgement.reason}', values)
        return DiagReport(OK, f'{self.judgement.action}: {self.judgement.reason}', values)


def main(args=None):
    return main_for(RolloutControllerNode, args)
