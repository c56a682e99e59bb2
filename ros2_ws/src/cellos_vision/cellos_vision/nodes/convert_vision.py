"""The one place converting vision messages <-> core types: sensor_msgs/Image <-> numpy
(cv_bridge where installed, cellos_vision.core.image_codec where not), Inspection and VisionDrift.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from cellos_vision.core import image_codec
from cellos_vision.core.image_codec import BadFrame, ImageFields
from cellos_vision.core.inspection import Decision, DriftStatus
from cellos_interfaces.msg import Inspection, VisionDrift

try:  # a ROS 2 distro ships cv_bridge; the PyPI wheels do not
    from cv_bridge import CvBridge as _CvBridge
    _bridge = _CvBridge()
except ImportError:  # pragma: no cover - depends on the install
    _bridge = None

IMAGE_BACKEND = 'cv_bridge' if _bridge is not None else 'image_codec'


def image_to_array(msg: Image) -> np.ndarray:
    """Image -> uint8 H x W (mono) or H x W x 3 BGR. Raises BadFrame (kind, message)."""
    # the same checks either way, so a bad frame gives the same reason with or without cv_bridge
    image_codec.check(msg.height, msg.width, msg.encoding, msg.step, len(msg.data))
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


def feedback_from_msg(msg: Inspection) -> tuple[int, str]:
    """A downstream station's finding: (part id, class it found)."""
    found = msg.ground_truth_class if msg.has_ground_truth else msg.defect_class
    return int(msg.part_id), found


def drift_msg(status: DriftStatus, *, stamp, line_id: str, cell_id: str, model_id: str, threshold: float,
              switches: int) -> VisionDrift:
    msg = VisionDrift(line_id=line_id, cell_id=cell_id, state=int(status.state), hold=status.hold, model_id=model_id,
                      confidence_threshold=float(threshold), ks=float(status.ks),
                      mean_confidence_drop=float(status.mean_drop),
                      mismatch_rate=float(status.mismatch_rate),
                      switches=int(switches), reason=status.reason)
    msg.header.stamp = stamp
    return msg


__all__ = ['BadFrame', 'IMAGE_BACKEND', 'image_to_array', 'array_to_image', 'inspection_msg',
           'feedback_from_msg', 'drift_msg']
