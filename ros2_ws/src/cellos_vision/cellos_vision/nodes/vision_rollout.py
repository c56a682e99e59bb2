"""A cell's vision in a model rollout and in human review (used by the vision node).

With ``rollout_task`` set (e.g. inspection), the cell asks the executor for ``<task>@serving``:
production, or the candidate where this cell is a canary cell; the executor decides per request,
so a rollback reaches the next request at once. It follows the executor's roles on
``aliases_topic`` and, while there is a candidate, sends a ``shadow_share`` of its frames to
the other model (the candidate, or production on a canary cell) as task ``<task>_shadow`` at
BACKGROUND priority through the cell's arbiter. A shadow answer never becomes a verdict: it is
published on vision/shadow, compared with the verdict served for the part and with the part's
truth, and counted in the figures sent on /<line>/rollout/stats after every candidate decision.
When production changes (a promotion or a rollback of production), the drift monitor learns a
new reference on the new model.

Verdicts a person should look at (UNDECIDED, or decided below ``review_below_confidence``) go with
their frame to the line's review queue on /<line>/review/submit.

  <aliases_topic>        ModelAliases   in    the executor's roles
  arbiter/request        InferenceRequest out shadow requests (task <task>_shadow, background)
  vision/shadow          Inspection     out   the shadow model's verdict on a part (never served)
  /<line>/rollout/stats  RolloutStats   out   figures on the candidate
  /<line>/review/submit  ReviewItem     out   verdicts for review, with the frame
"""
from __future__ import annotations

import time

from cellos_common.core.params import ParamSpec
from cellos_common.nodes import qos
from cellos_inference.core.inference_types import Priority, Status
from cellos_inference.core.model_aliases import CANDIDATE, PRODUCTION, SERVING, Mode, role_ref
from cellos_inference.nodes.convert_inference import make_request
from cellos_inference.nodes.convert_rollout import alias_from_msg, stats_msg
from cellos_interfaces.msg import Inspection, ModelAliases, ReviewItem, RolloutStats
from cellos_vision.core.inspection import Verdict, decide, undecided
from cellos_vision.core.rollout_stats import CandidateTracker, ShadowSampler
from cellos_vision.core.vision_pipeline import InFlight
from cellos_vision.nodes.convert_vision import array_to_image, inspection_msg

SHADOW_SUFFIX = '_shadow'
SHADOW_REQUEST_BASE = 1 << 40   # shadow request ids never meet the cell's inspection ids
STATS_PERIOD_S = 1.0

PARAMS = [
    ParamSpec('rollout_task', '', "executor task whose roles choose the model: requests name <task>@serving "
              '(production, or the candidate on canary cells) and a share of frames goes to the other model '
              'in shadow; empty: the model parameter, no rollout', read_only=True),
    ParamSpec('aliases_topic', '/gpu0/executor/aliases', "the executor's roles (ModelAliases)", read_only=True),
    ParamSpec('shadow_share', 0.25, 'share of frames the shadow model also sees (background priority)',
              min=0.0, max=1.0),
    ParamSpec('shadow_max_in_flight', 2, 'shadow requests awaiting results; beyond: the frame is skipped',
              min=1, max=64),
    ParamSpec('shadow_deadline_ms', 1000.0, 'deadline of a shadow request (background work may wait)',
              min=1.0, max=60000.0, unit='ms'),
    ParamSpec('rollout_window', 200, 'candidate decisions the rollout figures cover', min=10, max=100000,
              read_only=True),
    ParamSpec('review', True, 'send UNDECIDED and low-confidence verdicts with their frame to the review queue'),
    ParamSpec('review_below_confidence', 0.8, 'decided verdicts below this top-class probability are reviewed '
              'too (0: only UNDECIDED ones)', min=0.0, max=1.0),
]


class VisionRollout:
    def __init__(self, node, *, callback_group, on_production_changed):
        self.node = node
        p = node.params
        self.task = p.rollout_task
        self.shadow_task = self.task + SHADOW_SUFFIX
        self.cell_ns = f'{node.line_id}/{node.cell_id}'
        self.on_production_changed = on_production_changed
        self.aliases = None
        self.sampler = ShadowSampler(p.shadow_share)
        self.shadow = InFlight(p.shadow_max_in_flight, _next_id=SHADOW_REQUEST_BASE)
        self.tracker = CandidateTracker(p.rollout_window)
        self.reviews_sent = 0
        self._last_stats = 0.0
        line = f'/{node.line_id}'
        self.review_pub = node.create_publisher(ReviewItem, f'{line}/review/submit', qos.audit_event())
        self._entities = []
        if self.task:
            self.shadow_pub = node.create_publisher(Inspection, 'vision/shadow', qos.status())
            self.stats_pub = node.create_publisher(RolloutStats, f'{line}/rollout/stats', qos.status())
            self._entities = [
                node.create_subscription(ModelAliases, p.aliases_topic, self._on_aliases, qos.latched_state(),
                                         callback_group=callback_group),
                node.create_timer(STATS_PERIOD_S, self._periodic_stats, callback_group=callback_group)]

    def destroy(self) -> None:
        for e in self._entities:
            if hasattr(e, 'cancel'):
                e.cancel()
                self.node.destroy_timer(e)
            else:
                self.node.destroy_subscription(e)
        self.node.destroy_publisher(self.review_pub)
        if self.task:
            self.node.destroy_publisher(self.shadow_pub)
            self.node.destroy_publisher(self.stats_pub)

    # -- roles ------------------------------------------------------------------------------
    def model_ref(self, model: str) -> str:
        """What the cell asks for its verdicts: <task>@serving in a rollout, else ``model``."""
        return role_ref(self.task, SERVING) if self.task else model

    def _on_aliases(self, msg: ModelAliases) -> None:
        mine = next((a for a in msg.aliases if a.task == self.task), None)
        new = alias_from_msg(mine) if mine is not None else None
        old, self.aliases = self.aliases, new
        cand = new.candidate.id if new is not None else ''
        if cand != self.tracker.candidate_id:
            self.tracker.reset(cand)
            self.sampler = ShadowSampler(self.node.params.shadow_share)
        prod_before = old.production.id if old is not None else ''
        prod_now = new.production.id if new is not None else ''
        if prod_before and prod_now and prod_now != prod_before:
            self.on_production_changed(f'{self.task} production {prod_before[:12]} -> {prod_now[:12]} '
                                       f'({new.reason or "no reason given"})')
        self.node.get_logger().info(
            f'{self.task}: production {new.production.describe() if new else "(none)"}'
            + (f', candidate {new.candidate.describe()} in {new.mode.name.lower()}'
               + (' serving this cell' if self._serving_candidate() else '') if new and new.candidate else ''))

    def _serving_candidate(self) -> bool:
        a = self.aliases
        return bool(a and a.candidate and a.mode == Mode.CANARY and self.cell_ns in a.canary_cells)

    # -- shadow -----------------------------------------------------------------------------
    def after_submit(self, capture, tensor: dict, threshold: float, stamp) -> None:
        """After the cell's own request for a frame: maybe the same frame to the shadow model."""
        a = self.aliases
        if not self.task or a is None or not a.candidate or not self.sampler.take():
            return
        if self.shadow.full():
            self.tracker.shadow_skipped += 1
            return
        role = PRODUCTION if self._serving_candidate() else CANDIDATE
        p = self.node.params
        pending = self.shadow.add(capture, 0.0, role_ref(self.task, role), threshold, time.monotonic(),
                                  p.shadow_deadline_ms / 1e3, stamp)
        self.tracker.watch(capture.part_id)
        self.tracker.truth(capture.part_id, capture.ground_truth or '')
        self.tracker.shadow_sent += 1
        deadline_s = self.node.get_clock().now().nanoseconds * 1e-9 + p.shadow_deadline_ms / 1e3
        self.node.request_pub.publish(make_request(
            request_id=pending.request_id, line_id=self.node.line_id, cell_id=self.node.cell_id,
            task=self.shadow_task, model=pending.model_id, priority=Priority.BACKGROUND,
            deadline_s=deadline_s, inputs=tensor, stamp=stamp))

    def on_result(self, result, model_id: str, compute_ms: float) -> bool:
        """Takes the shadow task's results (True; ``result``: convert_vision's ResultView); the
        cell's own are not its business (False).
        """
        if not self.task or result.task != self.shadow_task:
            return False
        pending = self.shadow.resolve(result.request_id)
        if pending is None:
            return True
        if result.status != Status.OK or result.problem:   # gated, late at background priority, refused,
            self.tracker.shadow_skipped += 1                 # unusable: not the model's doing
            return True
        meta = self.node.primary
        outputs = result.outputs
        logits = outputs.get(meta.output_name, next(iter(outputs.values())) if len(outputs) == 1 else None)
        decision = (decide(logits, meta.classes, pending.threshold, model_id, meta.ok_class) if logits is not None
                    else undecided(f'shadow result has no output {meta.output_name!r}', model_id))
        inference_ms = 1e3 * (time.monotonic() - pending.submitted)
        self.shadow_pub.publish(inspection_msg(
            decision, stamp=pending.stamp, frame_id=self.node.frame_id, line_id=self.node.line_id,
            cell_id=self.node.cell_id, part_id=pending.capture.part_id, capture_ms=pending.capture.capture_ms,
            preprocess_ms=0.0, inference_ms=inference_ms, ground_truth=pending.capture.ground_truth,
            frame_sha256=pending.capture.sha256, request_id=pending.request_id))
        self._record(pending.capture.part_id, decision, model_id, compute_ms)
        return True

    def expire(self) -> None:
        for _ in self.shadow.expire(time.monotonic()):
            self.tracker.shadow_skipped += 1

    # -- the cell's own verdicts ------------------------------------------------------------------
    def on_served(self, capture, decision, msg) -> None:
        """The cell's verdict on a part from result ``msg`` (any status)."""
        a = self.aliases
        if not self.task or a is None or not a.candidate:
            return
        if msg.model_id == a.candidate.id:   # canary: the candidate serves this cell
            self.tracker.watch(capture.part_id)
            self.tracker.truth(capture.part_id, capture.ground_truth or '')
        if msg.status == Status.OK:
            self._record(capture.part_id, decision, msg.model_id, msg.compute_ms)

    def on_truth(self, part_id: int, defect_class: str) -> None:
        """A part's truth learnt later (an operator's review, a downstream station)."""
        self.tracker.truth(part_id, defect_class)

    def _record(self, part_id: int, decision, model_id: str, compute_ms: float) -> None:
        a = self.aliases
        if a is not None and a.candidate and model_id == a.candidate.id:
            self.tracker.candidate(part_id, decision, compute_ms)
            self.publish_stats()
        else:   # what serves the part: production, or the fallback after drift
            self.tracker.production(part_id, decision)

    def publish_stats(self) -> None:
        a = self.aliases
        if a is None or not a.candidate:
            return
        self._last_stats = time.monotonic()
        self.stats_pub.publish(stats_msg(
            self.tracker.figures(), line_id=self.node.line_id, cell_id=self.node.cell_id, task=self.task,
            production_id=a.production.id, candidate_id=a.candidate.id, mode=int(a.mode),
            candidate_serving=self._serving_candidate(), stamp=self.node.get_clock().now().to_msg()))

    def _periodic_stats(self) -> None:
        if time.monotonic() - self._last_stats >= STATS_PERIOD_S:
            self.publish_stats()

    # -- review -------------------------------------------------------------------------------------
    def review(self, capture, inspection: Inspection, model_content_id: str = '') -> None:
        p = self.node.params
        if not p.review or capture.image is None:
            return
        if inspection.verdict == Verdict.UNDECIDED:
            why = 'undecided'
        elif inspection.confidence < p.review_below_confidence:
            why = 'low_confidence'
        else:
            return
        self.review_pub.publish(ReviewItem(
            why=why, inspection=inspection, model_content_id=model_content_id,
            frame=array_to_image(capture.image, inspection.header.stamp, self.node.frame_id)))
        self.reviews_sent += 1

    def diagnostics(self) -> dict:
        a = self.aliases
        f = self.tracker.figures()
        return {'rollout_task': self.task or '(none)',
                'production': a.production.describe() if a else '(not heard)',
                'candidate': (f'{a.candidate.describe()} {a.mode.name.lower()}'
                              + (' serving this cell' if self._serving_candidate() else '')) if a and a.candidate
                else '(none)',
                'candidate figures': f.summary(), 'shadow sent/skipped': f'{f.shadow_sent}/{f.shadow_skipped}',
                'reviews sent': self.reviews_sent}
