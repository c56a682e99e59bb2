"""Camera frame -> model input tensor (OpenCV), and back for annotation.

The model's input contract (size, colour, normalisation, layout) is read from the model's
metadata JSON (``inspection_cnn.json``), so the training script, the accuracy test and the
vision node all preprocess through ``preprocess`` here with the same spec.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessSpec:
    width: int = 80
    height: int = 60
    color: str = 'gray'        # gray | bgr | rgb: channel content the model expects
    mean: float = 0.5          # on pixel / 255
    std: float = 0.25
    layout: str = 'NCHW'

    def __post_init__(self):
        if self.width < 8 or self.height < 8:
            raise ValueError(f'model input {self.width}x{self.height} too small')
        if self.color not in ('gray', 'bgr', 'rgb'):
            raise ValueError(f"color {self.color!r} not one of gray, bgr, rgb")
        if self.layout != 'NCHW':
            raise ValueError(f'layout {self.layout!r}: only NCHW is supported')
        if not self.std > 0:
            raise ValueError(f'std {self.std} must be > 0')

    @property
    def channels(self) -> int:
        return 1 if self.color == 'gray' else 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @classmethod
    def from_meta(cls, meta: Mapping) -> 'PreprocessSpec':
        """From a model metadata dict (its ``input`` entry)."""
        inp = meta['input']
        return cls(width=int(inp['width']), height=int(inp['height']), color=str(inp['color']),
                   mean=float(inp['mean']), std=float(inp['std']), layout=str(inp['layout']))

    def to_meta(self) -> dict:
        return {'width': self.width, 'height': self.height, 'color': self.color,
                'mean': self.mean, 'std': self.std, 'layout': self.layout,
                'dtype': 'float32', 'shape': ['N', *self.shape]}


def _convert_color(bgr: np.ndarray, color: str) -> np.ndarray:
    if bgr.ndim == 2:
        return bgr if color == 'gray' else cv2.cvtColor(
            bgr, cv2.COLOR_GRAY2BGR if color == 'bgr' else cv2.COLOR_GRAY2RGB)
    if color == 'gray':
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return bgr if color == 'bgr' else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """One BGR (H x W x 3) or mono (H x W) uint8 frame -> float32 tensor 1 x C x H x W."""
    if image is None or image.size == 0:
        raise ValueError('empty image')
    if image.dtype != np.uint8:
        raise ValueError(f'image dtype {image.dtype}: expected uint8')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f'image shape {image.shape}: expected H x W or H x W x 3')
    pixels = _convert_color(image, spec.color)
    resized = cv2.resize(pixels, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    x = (resized.astype(np.float32) * np.float32(1.0 / 255.0) - np.float32(spec.mean)) \
        * np.float32(1.0 / spec.std)
    if x.ndim == 2:
        x = x[None]
    else:
        x = np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(x[None], dtype=np.float32)


def preprocess_batch(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """N frames -> N x C x H x W float32."""
    if len(images) == 0:
        return np.zeros((0, *spec.shape), np.float32)
    return np.concatenate([preprocess(im, spec) for im in images], axis=0)


def to_image(tensor: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Inverse of ``preprocess`` up to resizing: 1 x C x H x W (or C x H x W) -> uint8 BGR/mono
    at model resolution: what the model saw, for display next to the frame.
    """
    x = np.asarray(tensor, np.float32)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f'to_image takes one tensor, got batch of {x.shape[0]}')
        x = x[0]
    if x.shape != spec.shape:
        raise ValueError(f'tensor shape {x.shape} does not match spec {spec.shape}')
    pixels = np.clip((x * spec.std + spec.mean) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    pixels = pixels[0] if spec.channels == 1 else np.transpose(pixels, (1, 2, 0))
    if spec.color == 'rgb':
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return pixels


def model_to_frame(point_xy: tuple[float, float], spec: PreprocessSpec,
                   frame_size: tuple[int, int]) -> tuple[float, float]:
    """A point in model-input pixels -> the same point in frame pixels (frame_size = (w, h))."""
    fw, fh = frame_size
    return point_xy[0] * fw / spec.width, point_xy[1] * fh / spec.height


# -- annotation ------------------------------------------------------------------------------

VERDICT_COLORS_BGR = {'PASS': (60, 200, 60), 'FAIL': (40, 40, 230), 'UNDECIDED': (0, 200, 240)}


def annotate(image: np.ndarray | None, verdict: str, lines: Sequence[str],
             blank_size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A BGR copy of the frame with a verdict-coloured border and text lines drawn on it.

    A missing/bad frame (None, empty) is replaced by a grey canvas of ``blank_size`` (w, h),
    so an undecided verdict is still visible in RViz.
    """
    if image is None or image.size == 0 or image.dtype != np.uint8 or image.ndim not in (2, 3):
        canvas = np.full((blank_size[1], blank_size[0], 3), 90, np.uint8)
    elif image.ndim == 2 or image.shape[2] == 1:
        canvas = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 3:
        canvas = image.copy()
    else:
        canvas = np.full((blank_size[1], blank_size[0], 3), 90, np.uint8)
    color = VERDICT_COLORS_BGR.get(verdict, (255, 255, 255))
    h, w = canvas.shape[:2]
    border = max(2, min(w, h) // 60)
    cv2.rectangle(canvas, (0, 0), (w - 1, h - 1), color, border)
    scale = max(0.3, min(w, h) / 400.0)
    thick = max(1, int(round(scale * 2)))
    y = border + int(16 * scale) + 4
    for i, text in enumerate([verdict, *lines]):
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.rectangle(canvas, (border + 1, y - th - 3), (border + 5 + tw, y + base), (0, 0, 0), -1)
        cv2.putText(canvas, text, (border + 3, y), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    color if i == 0 else (255, 255, 255), thick, cv2.LINE_AA)
        y += th + base + 6
    return canvas
