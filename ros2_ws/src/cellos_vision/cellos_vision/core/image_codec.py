"""sensor_msgs/Image fields <-> numpy, without ROS imports (what cv_bridge does, where it is not
installed), with an explicit error for every kind of bad frame.

Supported encodings: mono8, bgr8, rgb8 (REP-104 names). ``decode`` returns the pixels in the
encoding's own channel order; ``to_bgr`` turns them into the BGR/mono array the vision core uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNELS = {'mono8': 1, 'bgr8': 3, 'rgb8': 3}
MAX_SIDE = 16384


class BadFrame(ValueError):
    """A frame that cannot be used. ``kind``: empty | encoding | size."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImageFields:
    """The sensor_msgs/Image fields that carry pixels."""

    height: int
    width: int
    encoding: str
    step: int
    data: bytes
    is_bigendian: bool = False


def check(height: int, width: int, encoding: str, step: int, data_len: int) -> int:
    """Validate an Image header against its data length; return the channel count."""
    if height == 0 or width == 0 or data_len == 0:
        raise BadFrame('empty', f'empty frame ({width}x{height}, {data_len} bytes)')
    if encoding not in CHANNELS:
        raise BadFrame('encoding', f"unsupported encoding {encoding[:32]!r} (supported: {', '.join(CHANNELS)})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise BadFrame('size', f'frame {width}x{height} larger than {MAX_SIDE} per side')
    channels = CHANNELS[encoding]
    row = width * channels
    if step < row:
        raise BadFrame('size', f'step {step} < width*channels {row} for {encoding} {width}x{height}')
    if data_len != step * height:
        raise BadFrame('size', f'data has {data_len} bytes, header says {step}*{height}={step * height}')
    return channels


def decode(fields: ImageFields) -> np.ndarray:
    """Image fields -> uint8 array H x W (mono8) or H x W x 3 (bgr8/rgb8), a copy."""
    channels = check(fields.height, fields.width, fields.encoding, fields.step, len(fields.data))
    flat = np.frombuffer(fields.data, np.uint8).reshape(fields.height, fields.step)
    rows = flat[:, :fields.width * channels]
    shape = (fields.height, fields.width) if channels == 1 else (fields.height, fields.width, 3)
    return rows.reshape(shape).copy()


def encode(image: np.ndarray, encoding: str) -> ImageFields:
    """uint8 array in the encoding's channel order -> Image fields (tightly packed rows)."""
    if encoding not in CHANNELS:
        raise BadFrame('encoding', f"unsupported encoding {encoding!r} (supported: {', '.join(CHANNELS)})")
    if image is None or image.size == 0:
        raise BadFrame('empty', 'empty image')
    if image.dtype != np.uint8:
        raise BadFrame('encoding', f'dtype {image.dtype} cannot be {encoding} (uint8 only)')
    channels = CHANNELS[encoding]
    got = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else -1)
    if got != channels:
        raise BadFrame('size', f'array shape {image.shape} does not fit {encoding} ({channels} channel(s))')
    h, w = image.shape[:2]
    return ImageFields(h, w, encoding, w * channels, np.ascontiguousarray(image).tobytes())


def to_bgr(image: np.ndarray, encoding: str) -> np.ndarray:
    """Decoded pixels -> what the vision core takes: mono stays H x W, colour becomes BGR."""
    if encoding == 'rgb8':
        return np.ascontiguousarray(image[..., ::-1])
    if encoding in ('bgr8', 'mono8'):
        return image
    raise BadFrame('encoding', f"unsupported encoding {encoding!r} (supported: {', '.join(CHANNELS)})")
