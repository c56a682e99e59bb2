"""Vision of one cell (namespace /<line>/<cell>): on each cycle tick capture a frame,
preprocess it, submit it through the cell's arbiter, and publish the inspection and an
annotated image.

  timing/cycle        CellCycle         in   tick (trigger=cycle); HELD cycles start no work
  camera/image        sensor_msgs/Image in   frames (source=topic), camera_in QoS
  arbiter/request     InferenceRequest  out  to the cell's arbiter
  arbiter/result      InferenceResult   in   exactly one per request
  vision/inspection   Inspection        out  one per captured frame, UNDECIDED with a reason
                                             when no trustworthy model answer exists
  vision/annotated    sensor_msgs/Image out  frame with verdict and confidence, for RViz
  vision/feedback     Inspection        in   downstream findings on this cell's parts (drift)
  vision/drift        VisionDrift       out  drift monitor state; hold=true while revalidating
  vision/reset_drift  std_srvs/Trigger  srv  back to the primary model, learn a new reference

Every message taken in is checked in convert_vision; a bad one is refused and counted (the
'boundary' diagnostics), a result that answers a request but cannot be used makes that
inspection UNDECIDED with the reason. The drift monitor's state (hold, learned reference,
switches) is kept in a SQLite file (drift_store), so a restarted vision node holds where it held
and judges new confidences against the reference it learned before, not one relearned on what
may already be drifted data. (Not re-derived from the latched vision/drift: that sample lives in
this node's own writer, and dies with it.)
"""
from __future__ import annotations

import threading
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from cellos_vision.core import vision_preprocess as vp
from cellos_inference.core.inference_types import Priority, Status
from cellos_vision.core.inspection import (Decision, DriftBounds, DriftMonitor, DriftState, ModelMeta,
                                           Verdict, decide, undecided)
from cellos_common.core.cell_names import split_cell_ns
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.core.state_store import StateStore, StoreError, store_path
from cellos_vision.core.vision_pipeline import Capture, InFlight, SyntheticSource, VideoSource
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_inference.nodes.convert_inference import make_request
from cellos_vision.nodes.convert_vision import (IMAGE_BACKEND, BadFrame, BadMessage, array_to_image, check_image,
                                                drift_msg, feedback_from_msg, image_to_array, inspection_msg,
                                                result_from_msg, tick_from_msg)
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, DiagReport
from cellos_interfaces.msg import CellCycle, InferenceRequest, InferenceResult, Inspection, VisionDrift

PARAMS = [
    ParamSpec('source', 'synthetic', 'frame source', choices=('synthetic', 'video', 'topic'), read_only=True),
    ParamSpec('trigger', 'cycle', "what starts an inspection: the cell's cycle tick, a local timer "
              '(no timing node), or every frame arriving on the image topic',
              choices=('cycle', 'timer', 'frame'), read_only=True),
    ParamSpec('inspect_every', 1, 'inspect on every n-th cycle (cycle_index % n == 0)', min=1, max=10000),
    ParamSpec('timer_rate_hz', 10.0, 'inspection rate with trigger=timer', min=0.1, max=1000.0,
              unit='Hz', read_only=True),
    ParamSpec('synthetic_seed', 1, 'synthetic camera seed (frames are a function of seed and index)',
              min=0, max=2**31 - 1, read_only=True),
    ParamSpec('synthetic_width', 160, 'synthetic frame width', min=64, max=4096, unit='px', read_only=True),
    ParamSpec('synthetic_height', 120, 'synthetic frame height', min=48, max=4096, unit='px', read_only=True),
    ParamSpec('synthetic_defect_rate', 0.5, 'fraction of synthetic parts with a defect', min=0.0, max=1.0),
    ParamSpec('synthetic_drift', 0.0, 'synthetic light/defect statistics shift (0 nominal, 1 strong); '
              'settable at run time to provoke model drift', min=0.0, max=1.0),
    ParamSpec('synthetic_feedback', False, 'feed synthetic ground truth to the drift monitor as if a '
              'downstream station had re-inspected every part'),
    ParamSpec('video_uri', '0', 'VideoCapture target: device index, file path or stream URL', read_only=True),
    ParamSpec('video_loop', True, 'restart a video file at its end'),
    ParamSpec('image_topic', 'camera/image', 'Image topic with source=topic (relative: in the cell namespace)',
              read_only=True),
    ParamSpec('model', 'inspection_cnn', 'primary model: executor model name/id; its metadata JSON '
              '(<model>.json among the shipped models unless model_meta is set) gives classes and input',
              read_only=True),
    ParamSpec('model_meta', '', 'path of the primary model metadata JSON; empty: the shipped <model>.json',
              read_only=True),
    ParamSpec('fallback_model', '', 'model used after drift; empty: keep the primary with '
              'fallback_confidence_threshold', read_only=True),
    ParamSpec('fallback_model_meta', '', 'metadata JSON of the fallback model; empty: shipped <fallback_model>.json',
              read_only=True),
    ParamSpec('confidence_threshold', 0.7, 'top-class probability needed for PASS/FAIL; below: UNDECIDED',
              min=0.0, max=1.0),
    ParamSpec('fallback_confidence_threshold', 0.8, 'threshold in use after drift (stricter than '
              'confidence_threshold)', min=0.0, max=1.0),
    ParamSpec('deadline_ms', 150.0, 'request deadline after capture (sent to the arbiter)', min=1.0,
              max=60000.0, unit='ms'),
    ParamSpec('result_grace_ms', 50.0, 'wait past the deadline before calling a request late', min=0.0,
              max=60000.0, unit='ms'),
    ParamSpec('max_in_flight', 4, 'requests awaiting results; beyond: UNDECIDED (busy)', min=1, max=256),
    ParamSpec('annotate', True, 'publish the annotated image'),
    ParamSpec('drift_enabled', True, 'watch confidence and feedback, switch to the fallback on drift'),
    ParamSpec('drift_reference_size', 60, 'confidences in the reference window', min=1, max=100000, read_only=True),
    ParamSpec('drift_window_size', 30, 'recent confidences compared with the reference', min=1, max=100000,
              read_only=True),
    ParamSpec('drift_max_ks', 0.45, 'one-sided KS statistic (recent confidences below the reference) counted as drift',
              min=0.0, max=1.0, read_only=True),
    ParamSpec('drift_max_mean_drop', 0.12, 'mean confidence drop counted as drift', min=0.0, max=1.0, read_only=True),
    ParamSpec('drift_feedback_window', 30, 'downstream feedback outcomes kept', min=1, max=100000, read_only=True),
    ParamSpec('drift_min_feedback', 10, 'feedback outcomes needed to judge the mismatch rate', min=1,
              max=100000, read_only=True),
    ParamSpec('drift_max_mismatch', 0.15, 'downstream mismatch rate counted as drift', min=0.0, max=1.0,
              read_only=True),
    ParamSpec('drift_revalidate_samples', 20, 'fallback inspections before the hold can be released',
              min=1, max=100000, read_only=True),
    ParamSpec('drift_revalidate_min_confidence', 0.7, "fallback's mean confidence needed to release",
              min=0.0, max=1.0, read_only=True),
    ParamSpec('drift_store', '', "SQLite file keeping the drift monitor's state across restarts ('{ns}': "
              "this node's namespace, line1_cell_01; relative: to the working directory); empty: in memory, "
              'lost on a restart', read_only=True),
]

DRIFT_PARAMS = ('reference_size', 'window_size', 'max_ks', 'max_mean_drop', 'feedback_window',
                'min_feedback', 'max_mismatch', 'revalidate_samples', 'revalidate_min_confidence')
VERDICT_NAMES = {Verdict.PASS: 'PASS', Verdict.FAIL: 'FAIL', Verdict.UNDECIDED: 'UNDECIDED'}


class VisionNode(CellosNode):
    SPIN = 'single'    # no callback blocks
    PARAMS = PARAMS

    def __init__(self, **kwargs):
        super().__init__('vision', **kwargs)
        self._lock = threading.Lock()
        self._source = None
        self._in_flight = InFlight()
        self._counts = {v: 0 for v in Verdict}
        self._last_reason = ''
        self._last_cycle = None
        self._latest_frame: Image | None = None
        self._frame_seq = 0
        self._topic_part = 0
        self._verdicts_by_part: dict[int, str] = {}
        self._entities = []
        self._warned: dict[str, tuple[float, int]] = {}
        self._store: StateStore | None = None
        self._store_problem = ''

    def _warn(self, part_id: int, reason: str) -> None:
        """One log line per kind of reason per second; repeats are counted, not dropped silently."""
        key = reason.split(':')[0]
        now = time.monotonic()
        last, skipped = self._warned.get(key, (-1e9, 0))
        if now - last < 1.0:
            self._warned[key] = (last, skipped + 1)
            return
        more = f' (+{skipped} more like it in the last second)' if skipped else ''
        self.get_logger().warning(f'part {part_id}: {reason}{more}')
        self._warned[key] = (now, 0)

    # -- parameters -----------------------------------------------------------------------
    def check_params(self, p) -> None:
        if p.trigger == 'frame' and p.source != 'topic':
            raise ParameterError("trigger 'frame' needs source 'topic'")
        if p.drift_min_feedback > p.drift_feedback_window:
            raise ParameterError('drift_min_feedback must be <= drift_feedback_window')

    def on_params_changed(self, p) -> None:
        if isinstance(self._source, SyntheticSource):
            self._source.set_drift(p.synthetic_drift)
            self._source.camera.defect_rate = p.synthetic_defect_rate
        self._in_flight.max_in_flight = p.max_in_flight

    # -- lifecycle ------------------------------------------------------------------------
    def configure(self) -> None:
        p = self.params
        self.line_id, self.cell_id = split_cell_ns(self.get_namespace())
        if not self.line_id:
            raise ParameterError(f"vision runs in its cell's namespace /<line>/<cell>, not {self.get_namespace()}")
        self.frame_id = self.get_namespace()
        self.primary = ModelMeta.load(p.model_meta or p.model)
        self.fallback = (ModelMeta.load(p.fallback_model_meta or p.fallback_model)
                         if p.fallback_model else None)
        if self.fallback is not None and self.fallback.classes != self.primary.classes:
            raise ParameterError(f'fallback classes {self.fallback.classes} differ from the '
                                 f'primary {self.primary.classes}')
        self.spec = vp.PreprocessSpec.from_meta(self.primary.raw)
        if self.fallback is not None and vp.PreprocessSpec.from_meta(self.fallback.raw) != self.spec:
            raise ParameterError('fallback model expects another input than the primary')
        self.drift = DriftMonitor(DriftBounds(**{k: getattr(p, f'drift_{k}') for k in DRIFT_PARAMS}))
        self._restore_drift(p)
        self._in_flight = InFlight(p.max_in_flight)

        if p.source == 'synthetic':
            self._source = SyntheticSource(p.synthetic_seed, p.synthetic_width, p.synthetic_height,
                                           p.synthetic_defect_rate, p.synthetic_drift)
        elif p.source == 'video':
            self._source = VideoSource(p.video_uri, p.video_loop)
            if not self._source.is_open:
                self.get_logger().error(f'video source {p.video_uri!r} did not open; retrying, '
                                        'inspections are UNDECIDED until it does')
        else:
            self._source = None

        group = MutuallyExclusiveCallbackGroup()
        self.request_pub = self.create_publisher(InferenceRequest, 'arbiter/request', qos.inference())
        self.inspection_pub = self.create_publisher(Inspection, 'vision/inspection', qos.status())
        self.annotated_pub = self.create_publisher(Image, 'vision/annotated', qos.image_out())
        self.drift_pub = self.create_publisher(VisionDrift, 'vision/drift', qos.latched_state())
        self._entities = [
            self.create_subscription(InferenceResult, 'arbiter/result', self._on_result, qos.inference(),
                                     callback_group=group),
            self.create_subscription(Inspection, 'vision/feedback', self._on_feedback, qos.status(),
                                     callback_group=group),
            self.create_timer(0.02, self._expire, callback_group=group),
        ]
        self._reset_srv = self.create_service(Trigger, 'vision/reset_drift', self._on_reset_drift,
                                              callback_group=group)
        if p.source == 'topic':
            self._entities.append(self.create_subscription(
                Image, p.image_topic, self._on_image, qos.camera_in(), callback_group=group))
        if p.trigger == 'cycle':
            self._entities.append(self.create_subscription(
                CellCycle, 'timing/cycle', self._on_cycle, qos.cycle_report(),
                callback_group=group))
        elif p.trigger == 'timer':
            self._entities.append(self.create_timer(1.0 / p.timer_rate_hz, self._inspect, callback_group=group))
        self.diagnostics.add('inspection', self._diag_inspection)
        self.diagnostics.add('drift', self._diag_drift)
        self._publish_drift()
        self.get_logger().info(
            f'cell {self.line_id}/{self.cell_id}: source={p.source} trigger={p.trigger} model={p.model} '
            f'fallback={p.fallback_model or "(stricter threshold)"} input={self.spec.width}x{self.spec.height} '
            f'{self.spec.color} images via {IMAGE_BACKEND}')

    def cleanup(self) -> None:
        for e in self._entities:
            if hasattr(e, 'cancel'):
                e.cancel()
                self.destroy_timer(e)
            else:
                self.destroy_subscription(e)
        self._entities = []
        if self._store is not None:
            self._store.close()
            self._store = None
        self.destroy_service(self._reset_srv)
        for pub in (self.request_pub, self.inspection_pub, self.annotated_pub, self.drift_pub):
            self.destroy_publisher(pub)
        if self._source is not None:
            self._source.close()
            self._source = None

    def deactivate(self) -> None:
        for pending in self._in_flight.drain():
            self._publish(pending.capture, undecided('shutting down: result not awaited', pending.model_id),
                          pending.preprocess_ms, 1e3 * (time.monotonic() - pending.submitted), pending.stamp,
                          pending.request_id)

    # -- model in use ---------------------------------------------------------------------
    def _model(self) -> tuple[str, ModelMeta, float]:
        p = self.params
        if self.drift.state in (DriftState.REVALIDATING, DriftState.FALLBACK):
            if self.fallback is not None:
                return p.fallback_model, self.fallback, p.fallback_confidence_threshold
            return p.model, self.primary, p.fallback_confidence_threshold
        return p.model, self.primary, p.confidence_threshold

    # -- ticks ----------------------------------------------------------------------------
    def _on_cycle(self, msg: CellCycle) -> None:
        try:
            cycle, held = tick_from_msg(msg, self.line_id, self.cell_id)
        except BadMessage as e:
            self.reject('timing/cycle', str(e))
            return
        if not self.active or cycle == self._last_cycle:
            return
        self._last_cycle = cycle
        if cycle % self.params.inspect_every:
            return
        # a held cell starts no work, except the inspections that revalidate its fallback
        if held and self.drift.state != DriftState.REVALIDATING:
            return
        self._inspect()

    def _on_image(self, msg: Image) -> None:
        try:
            check_image(msg)
        except BadFrame as e:
            self.reject('camera/image', f'bad frame ({e.kind}): {e}')
        with self._lock:   # a bad frame is still the latest: its inspection says why it is UNDECIDED
            self._latest_frame = msg
            self._frame_seq += 1
        if self.params.trigger == 'frame' and self.active:
            self._inspect()

    def _capture_topic(self) -> Capture:
        t0 = time.perf_counter()
        with self._lock:
            msg, self._latest_frame = self._latest_frame, None
        self._topic_part += 1
        if msg is None:
            return Capture(None, self._topic_part, error='bad frame: no frame received since the last inspection')
        try:
            image = image_to_array(msg)
        except BadFrame as e:
            return Capture(None, self._topic_part, capture_ms=1e3 * (time.perf_counter() - t0),
                           error=f'bad frame ({e.kind}): {e}')
        return Capture(image, self._topic_part, capture_ms=1e3 * (time.perf_counter() - t0))

    def _inspect(self) -> None:
        if not self.active:
            return
        p = self.params
        stamp = self.get_clock().now()
        capture = self._source.capture() if self._source is not None else self._capture_topic()
        model, meta, threshold = self._model()
        if not capture.ok:
            self._warn(capture.part_id, capture.error)
            self._publish(capture, undecided(capture.error, model), 0.0, 0.0, stamp.to_msg())
            return
        t0 = time.perf_counter()
        try:
            tensor = vp.preprocess(capture.image, self.spec)
        except ValueError as e:
            reason = f'bad frame: {e}'
            self._warn(capture.part_id, reason)
            self._publish(capture, undecided(reason, model), 0.0, 0.0, stamp.to_msg())
            return
        preprocess_ms = 1e3 * (time.perf_counter() - t0)
        if self._in_flight.full():
            self._publish(capture, undecided(f'busy: {len(self._in_flight)} requests in flight', model),
                          preprocess_ms, 0.0, stamp.to_msg())
            return
        timeout_s = (p.deadline_ms + p.result_grace_ms) / 1e3
        pending = self._in_flight.add(capture, preprocess_ms, model, threshold, time.monotonic(),
                                      timeout_s, stamp.to_msg())
        deadline_s = stamp.nanoseconds * 1e-9 + p.deadline_ms / 1e3
        self.request_pub.publish(make_request(
            request_id=pending.request_id, line_id=self.line_id, cell_id=self.cell_id, task='inspection', model=model,
            priority=Priority.CRITICAL, deadline_s=deadline_s, inputs={meta.input_name: tensor},
            stamp=stamp.to_msg()))

    # -- results --------------------------------------------------------------------------
    def _on_result(self, msg: InferenceResult) -> None:
        try:
            result = result_from_msg(msg, self.line_id, self.cell_id)
        except BadMessage as e:
            self.reject('arbiter/result', str(e))
            return
        if result.task and result.task != 'inspection':
            return
        pending = self._in_flight.resolve(result.request_id)
        if pending is None:
            self.get_logger().debug(f'result #{result.request_id} arrived after its inspection was '
                                    'published as late, or was not ours: ignored')
            return
        inference_ms = 1e3 * (time.monotonic() - pending.submitted)
        meta = self.fallback if (self.fallback is not None and pending.model_id == self.params.fallback_model) \
            else self.primary
        if result.problem:
            self.reject('arbiter/result', result.problem)
            decision = undecided(f'bad result: {result.problem}', pending.model_id)
        elif result.status != Status.OK:
            decision = undecided(f'{result.status.name.lower()}: {result.reason or "no reason given"}',
                                 pending.model_id)
            self._warn(pending.capture.part_id, decision.reason)
        else:
            outputs = result.outputs
            logits = outputs.get(meta.output_name)
            if logits is None and len(outputs) == 1:
                logits = next(iter(outputs.values()))
            if logits is None:
                decision = undecided(f'result has no output {meta.output_name!r} ({sorted(outputs)})',
                                     pending.model_id)
            else:
                decision = decide(logits, meta.classes, pending.threshold, pending.model_id, meta.ok_class)
        self._publish(pending.capture, decision, pending.preprocess_ms, inference_ms, pending.stamp,
                      pending.request_id)
        if self.params.drift_enabled and decision.defect_class:
            self._observe_drift(decision)
            if self.params.synthetic_feedback and pending.capture.ground_truth is not None:
                self._feedback(decision.defect_class, pending.capture.ground_truth)

    def _expire(self) -> None:
        for pending in self._in_flight.expire(time.monotonic()):
            waited = 1e3 * (time.monotonic() - pending.submitted)
            reason = f'late: no result {waited:.0f} ms after submit (deadline {self.params.deadline_ms:.0f} ms)'
            self._warn(pending.capture.part_id, reason)
            self._publish(pending.capture, undecided(reason, pending.model_id), pending.preprocess_ms,
                          waited, pending.stamp, pending.request_id)

    def _publish(self, capture: Capture, decision: Decision, preprocess_ms: float,
                 inference_ms: float, stamp, request_id: int = 0) -> None:
        self._counts[decision.verdict] += 1
        if decision.reason:
            self._last_reason = decision.reason
        self.inspection_pub.publish(inspection_msg(
            decision, stamp=stamp, frame_id=self.frame_id, line_id=self.line_id, cell_id=self.cell_id,
            part_id=capture.part_id,
            capture_ms=capture.capture_ms, preprocess_ms=preprocess_ms, inference_ms=inference_ms,
            ground_truth=capture.ground_truth, frame_sha256=capture.sha256, request_id=request_id))
        if decision.defect_class:
            self._verdicts_by_part[capture.part_id] = decision.defect_class
            if len(self._verdicts_by_part) > 1000:
                self._verdicts_by_part.pop(next(iter(self._verdicts_by_part)))
        if self.params.annotate:
            lines = [f'part {capture.part_id}  {decision.defect_class or "-"} {decision.confidence:.2f}',
                     decision.model_id]
            if decision.reason:
                lines.append(decision.reason[:48])
            image = vp.annotate(capture.image, VERDICT_NAMES[decision.verdict], lines)
            self.annotated_pub.publish(array_to_image(image, stamp, self.frame_id))

    # -- drift ----------------------------------------------------------------------------
    def _on_feedback(self, msg: Inspection) -> None:
        try:
            part_id, found = feedback_from_msg(msg, self.line_id, self.cell_id, self.primary.classes)
        except BadMessage as e:
            self.reject('vision/feedback', str(e))
            return
        ours = self._verdicts_by_part.get(part_id)
        if ours is None or not found or not self.params.drift_enabled:
            return
        self._feedback(ours, found)

    def _feedback(self, ours: str, found: str) -> None:
        before = self.drift.state
        self.drift.feedback(ours, found)
        self._after_drift(before)

    def _observe_drift(self, decision: Decision) -> None:
        before = self.drift.state
        self.drift.observe(decision)
        self._after_drift(before)

    def _after_drift(self, before: DriftState) -> None:
        status = self.drift.status()
        if status.state != before:
            model, _, threshold = self._model()
            text = (f'drift monitor {before.name} -> {status.state.name}'
                    f'{": " + status.reason if status.reason else ""}; model {model} '
                    f'threshold {threshold:.2f}{" (holding)" if status.hold else ""}')
            if status.hold:   # rclpy wants one severity per call site
                self.get_logger().warning(text)
            else:
                self.get_logger().info(text)
            self._save_drift()
            self._publish_drift()

    def _on_reset_drift(self, request, response):
        before = self.drift.state
        self.drift.reset()
        self._save_drift()
        self.get_logger().info(f'drift monitor reset by request ({before.name} -> LEARNING): '
                               f'back to {self.params.model}')
        self._publish_drift()
        response.success = True
        response.message = f'was {before.name}; now LEARNING on {self.params.model}'
        return response

    def _drift_key(self) -> dict:
        """What a kept drift state belongs to: another primary model or other bounds void it."""
        return {'model': self.primary.model_id, 'bounds': {k: getattr(self.params, f'drift_{k}') for k in DRIFT_PARAMS}}

    def _restore_drift(self, p) -> None:
        try:
            self._store = StateStore(store_path(p.drift_store, self.get_namespace()))
            saved = self._store.get('drift')
        except StoreError as e:
            raise ParameterError(str(e)) from None
        if not self._store.durable:
            self.get_logger().warning('drift state in memory only (drift_store is empty): a restart '
                                      'relearns the reference and drops a hold')
            return
        if saved is None:
            self.get_logger().info(f'drift state kept in {self._store.path}')
            return
        if not isinstance(saved, dict) or saved.get('key') != self._drift_key():
            self.get_logger().warning(f'drift state in {self._store.path} was kept for another model or other '
                                      'drift parameters: learning a new reference')
            return
        try:
            self.drift.restore(saved['monitor'])
        except (KeyError, TypeError, ValueError) as e:
            self.get_logger().error(f'drift state in {self._store.path} not usable ({e}): learning a new reference')
            return
        status = self.drift.status()
        self.get_logger().warning(f'drift state restored from {self._store.path}: {status.state.name}'
                                  f'{" (holding)" if status.hold else ""}, {self.drift.switches} switch(es)'
                                  f'{": " + status.reason if status.reason else ""}')

    def _save_drift(self) -> None:
        if self._store is None:
            return
        try:
            self._store.put('drift', {'key': self._drift_key(), 'monitor': self.drift.record()})
            self._store_problem = ''
        except (StoreError, ValueError) as e:
            self._store_problem = f'drift state not kept: {e}'
            self.fault('drift store', self._store_problem)

    def _publish_drift(self) -> None:
        model, _, threshold = self._model()
        self.drift_pub.publish(drift_msg(self.drift.status(), stamp=self.get_clock().now().to_msg(),
                                         line_id=self.line_id, cell_id=self.cell_id, model_id=model,
                                         threshold=threshold,
                                         switches=self.drift.switches))

    # -- diagnostics ----------------------------------------------------------------------
    def _diag_inspection(self) -> DiagReport:
        c = self._counts
        total = sum(c.values())
        values = {'pass': c[Verdict.PASS], 'fail': c[Verdict.FAIL], 'undecided': c[Verdict.UNDECIDED],
                  'in_flight': len(self._in_flight), 'late_results': self._in_flight.late_results,
                  'last_reason': self._last_reason, 'image_backend': IMAGE_BACKEND}
        if total and c[Verdict.UNDECIDED] == total:
            return DiagReport(ERROR, f'every inspection undecided: {self._last_reason}', values)
        if total and c[Verdict.UNDECIDED] > 0.1 * total:
            return DiagReport(WARN, f'{c[Verdict.UNDECIDED]}/{total} undecided', values)
        return DiagReport(OK, f'{total} inspections', values)

    def _diag_drift(self) -> DiagReport:
        s = self.drift.status()
        model, _, threshold = self._model()
        values = {'state': s.state.name, 'model': model, 'threshold': threshold, 'ks': s.ks,
                  'mean_drop': s.mean_drop, 'mismatch_rate': s.mismatch_rate,
                  'switches': self.drift.switches}
        if self._store is not None:
            values['store'] = self._store.path if self._store.durable else 'memory (not kept on restart)'
        if self._store_problem:
            return DiagReport(ERROR, self._store_problem, values)
        if s.hold:
            return DiagReport(WARN, f'revalidating hold: {s.reason}', values)
        if s.state == DriftState.FALLBACK:
            return DiagReport(WARN, f'running on fallback: {s.reason}', values)
        return DiagReport(OK, s.reason or 'nominal', values)


def main(args=None):
    return main_for(VisionNode, args)
