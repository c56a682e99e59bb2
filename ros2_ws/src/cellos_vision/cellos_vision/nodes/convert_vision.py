"""The one place converting vision messages <-> core types: sensor_msgs/Image <-> numpy
(cv_bridge where installed, cellos_vision.core.image_codec where not), Inspection and VisionDrift,
and the one place checking every message vision takes in: a camera frame (``check_image``), an
inference result (``result_from_msg``), a downstream finding (``feedback_from_msg``) and a cycle
tick (``tick_from_msg``). A message that fails raises BadMessage with the reason (the node counts
it as refused and goes on); a result that answers one of this cell's requests but cannot be used
comes back with ``problem`` set, so that inspection is UNDECIDED with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sensor_msgs.msg import Image

from cellos_vision.core import image_codec
from cellos_vision.core.image_codec import BadFrame, ImageFields
from cellos_vision.core.inspection import Decision, DriftStatus, logits_from_bytes
from cellos_inference.core.inference_types import Status
from cellos_interfaces.msg import CellCycle, InferenceResult, Inspection, VisionDrift

MAX_TEXT = 256        # characters of an id, a class or a task name vision takes from a message
MAX_OUTPUTS = 8       # output tensors of a result
CYCLE_STATES = (CellCycle.STATE_STARTING, CellCycle.STATE_LOCKING, CellCycle.STATE_LOCKED,
                CellCycle.STATE_FREE_RUNNING, CellCycle.STATE_HELD)


class BadMessage(ValueError):
    """A message vision refuses, with the reason."""


def _text(value: str, what: str) -> str:
    if len(value) > MAX_TEXT:
        raise BadMessage(f'{what} is {len(value)} characters long (at most {MAX_TEXT})')
    return value


def _same_cell(msg, line_id: str, cell_id: str, what: str) -> None:
    """A message naming a cell must name this one (an empty id: not said)."""
    if (msg.line_id and msg.line_id != line_id) or (msg.cell_id and msg.cell_id != cell_id):
        raise BadMessage(f'{what} for {msg.line_id[:64]}/{msg.cell_id[:64]}, this is {line_id}/{cell_id}')


try:  # a ROS 2 distro ships cv_bridge; the PyPI wheels do not
    from cv_bridge import CvBridge as _CvBridge
    _bridge = _CvBridge()
except ImportError:  # pragma: no cover - depends on the install
    _bridge = None

IMAGE_BACKEND = 'cv_bridge' if _bridge is not None else 'image_codec'


def check_image(msg: Image) -> None:
    """A camera frame's header against its data (BadFrame: kind and reason)."""
    image_codec.check(msg.height, msg.width, msg.encoding, msg.step, len(msg.data))


def image_to_array(msg: Image) -> np.ndarray:
    """Image -> uint8 H x W (mono) or H x W x 3 BGR. Raises BadFrame (kind, message)."""
    # the same checks either way, so a bad frame gives the same reason with or without cv_bridge
    check_image(msg)
    if _bridge is not None:
        pixels = _bridge.imgmsg_to_cv2(msg, desired_encoding='passthrough')
    else:
        pixels = image_codec.decode(ImageFields(msg.height, msg.width, msg.encoding, msg.step,
                                                bytes(msg.data), bool(msg.is_bigendian)))
    return image_codec.to_bgr(pixels, msg.encoding)


def array_to_image(pixels: np.ndarray, stamp, frame_id: str = '') -> Image:
    """uint8 BGR (H x W x 3) or mono (H x W) -> Image (bgr8 / mono8)."""
    encoding = 'mono8' if pixels.ndim == 2 else 'bgr8'
    if _bridge is not None:
        msg = _bridge.cv2_to_imgmsg(np.ascontiguousarray(pixels), encoding=encoding)
    else:
        f = image_codec.encode(pixels, encoding)
        msg = Image(height=f.height, width=f.width, encoding=f.encoding, step=f.step,
                    is_bigendian=0, data=f.data)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def inspection_msg(decision: Decision, *, stamp, frame_id: str, line_id: str, cell_id: str, part_id: int,
                   capture_ms: float, preprocess_ms: float, inference_ms: float,
                   ground_truth: str | None, frame_sha256: str = '', request_id: int = 0) -> Inspection:
    msg = Inspection(line_id=line_id, cell_id=cell_id, part_id=int(part_id), verdict=int(decision.verdict),
                     defect_class=decision.defect_class, confidence=float(decision.confidence),
                     model_id=decision.model_id, reason=decision.reason,
                     capture_ms=float(capture_ms), preprocess_ms=float(preprocess_ms),
                     inference_ms=float(inference_ms), has_ground_truth=ground_truth is not None,
                     ground_truth_class=ground_truth or '', frame_sha256=frame_sha256,
                     request_id=int(request_id))
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def feedback_from_msg(msg: Inspection, line_id: str, cell_id: str, classes) -> tuple[int, str]:
    """A downstream station's finding on one of this cell's parts: (part id, class it found).
    BadMessage for another cell's part or a class the model does not know.
    """
    _same_cell(msg, line_id, cell_id, 'feedback')
    found = _text(msg.ground_truth_class if msg.has_ground_truth else msg.defect_class, 'class')
    if found not in classes:
        raise BadMessage(f'feedback class {found[:64]!r} is not one of the model\'s {list(classes)}')
    return int(msg.part_id), found


@dataclass(frozen=True)
class ResultView:
    """An InferenceResult as vision takes it."""

    request_id: int
    task: str
    status: Status | None         # None: a status value vision does not know
    reason: str
    outputs: dict = field(default_factory=dict)   # name -> float64 array
    problem: str = ''             # why this answer cannot be used ('' when it can)


def result_from_msg(msg: InferenceResult, line_id: str, cell_id: str) -> ResultView:
    """BadMessage for a result not for this cell; otherwise the view, with ``problem`` set when
    the status is unknown or an output cannot be decoded (unknown dtype, wrong byte length...).
    """
    _same_cell(msg, line_id, cell_id, 'result')
    task = _text(msg.task, 'task')
    reason = msg.reason[:MAX_TEXT]
    try:
        status = Status(msg.status)
    except ValueError:
        return ResultView(msg.request_id, task, None, reason, problem=f'unknown result status {msg.status}')
    if status != Status.OK:
        return ResultView(msg.request_id, task, status, reason)
    if len(msg.outputs) > MAX_OUTPUTS:
        return ResultView(msg.request_id, task, status, reason,
                          problem=f'result has {len(msg.outputs)} outputs (at most {MAX_OUTPUTS})')
    outputs = {}
    for t in msg.outputs:
        try:
            name = _text(t.name, 'output name')
            outputs[name] = logits_from_bytes(t.dtype, tuple(t.shape), memoryview(t.data).cast('B'))
        except ValueError as e:
            return ResultView(msg.request_id, task, status, reason,
                              problem=f'bad output {t.name[:64]!r}: {e}')
    return ResultView(msg.request_id, task, status, reason, outputs)


def tick_from_msg(msg: CellCycle, line_id: str, cell_id: str) -> tuple[int, bool]:
    """A cycle tick of this cell's timing node: (cycle index, held)."""
    _same_cell(msg, line_id, cell_id, 'cycle report')
    if msg.state not in CYCLE_STATES:
        raise BadMessage(f'cycle report state {msg.state} is not one of {list(CYCLE_STATES)}')
    return int(msg.cycle_index), msg.state == CellCycle.STATE_HELD


def drift_msg(status: DriftStatus, *, stamp, line_id: str, cell_id: str, model_id: str, threshold: float,
              switches: int) -> VisionDrift:
    msg = VisionDrift(line_id=line_id, cell_id=cell_id, state=int(status.state), hold=status.hold, model_id=model_id,
                      confidence_threshold=float(threshold), ks=float(status.ks),
                      mean_confidence_drop=float(status.mean_drop),
                      mismatch_rate=float(status.mismatch_rate),
                      switches=int(switches), reason=status.reason)
    msg.header.stamp = stamp
    return msg


__all__ = ['BadFrame', 'BadMessage', 'IMAGE_BACKEND', 'ResultView', 'check_image', 'image_to_array',
           'array_to_image', 'inspection_msg', 'feedback_from_msg', 'result_from_msg', 'tick_from_msg', 'drift_msg']
