"""A cell's inspection pipeline without ROS: frame sources, and the bookkeeping of requests in
flight so every captured frame ends in exactly one inspection (a result, or UNDECIDED).

Sources return a ``Capture``: the frame (BGR / mono uint8) or an ``error`` that becomes an
UNDECIDED verdict with that reason. The topic source lives in the node (it is a subscription).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from cellos_vision.core.synthetic_camera import SyntheticCamera


@dataclass
class Capture:
    image: np.ndarray | None
    part_id: int
    ground_truth: str | None = None    # class, when the source knows it (synthetic)
    capture_ms: float = 0.0
    error: str = ''                    # non-empty: no usable frame, and why

    @property
    def ok(self) -> bool:
        return not self.error and self.image is not None

    @cached_property
    def sha256(self) -> str:
        """Digest of the frame as captured (frame_sha256); '' without a frame."""
        return frame_sha256(self.image) if self.image is not None else ''


def frame_sha256(image: np.ndarray) -> str:
    """sha256 (hex) of a frame's pixel bytes in row-major order (uint8 H x W x 3 BGR or H x W mono):
    the input a decision was made on, as the audit records it. Anyone holding the frame recomputes it
    with ``hashlib.sha256(np.ascontiguousarray(image).tobytes())``.
    """
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


class SyntheticSource:
    def __init__(self, seed: int, width: int, height: int, defect_rate: float, drift: float):
        self.camera = SyntheticCamera(seed, width=width, height=height, defect_rate=defect_rate,
                                      drift=drift)

    def set_drift(self, drift: float) -> None:
        self.camera.set_drift(drift)

    def capture(self) -> Capture:
        t0 = time.perf_counter()
        frame = self.camera.next()
        return Capture(frame.image, frame.part_id, frame.defect_class,
                       1e3 * (time.perf_counter() - t0))

    def close(self) -> None:
        pass


class VideoSource:
    """cv2.VideoCapture on a device index ('0'), a file or a stream URL. Never raises on a
    failed read: the capture carries the error, and a closed source is reopened at most every
    ``reopen_s``. Files restart from the beginning when ``loop``.
    """

    def __init__(self, uri: str, loop: bool = True, reopen_s: float = 2.0):
        self.uri = uri
        self.loop = loop
        self.reopen_s = reopen_s
        self._cap = None
        self._last_open = -1e9
        self._count = 0
        self._open()

    def _open(self) -> None:
        import cv2
        self._last_open = time.monotonic()
        target = int(self.uri) if self.uri.strip().isdigit() else self.uri
        cap = cv2.VideoCapture(target)
        self._cap = cap if cap.isOpened() else None

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def capture(self) -> Capture:
        import cv2
        t0 = time.perf_counter()
        self._count += 1
        if self._cap is None:
            if time.monotonic() - self._last_open >= self.reopen_s:
                self._open()
            if self._cap is None:
                return Capture(None, self._count, error=f'video source {self.uri!r} not open')
        ok, image = self._cap.read()
        if not ok and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        ms = 1e3 * (time.perf_counter() - t0)
        if not ok or image is None:
            self._cap.release()
            self._cap = None
            return Capture(None, self._count, capture_ms=ms,
                           error=f'video source {self.uri!r}: no frame (end of stream or device lost)')
        return Capture(image, self._count, capture_ms=ms)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


@dataclass
class Pending:
    request_id: int
    capture: Capture
    preprocess_ms: float
    model_id: str
    threshold: float
    submitted: float          # monotonic s
    expires: float            # monotonic s: deadline + grace
    stamp: object = None      # the node's capture stamp, carried through untouched


@dataclass
class InFlight:
    """Requests submitted and not yet answered. ``expire`` hands back those whose deadline
    (plus grace) has passed, so the node can publish them as UNDECIDED (late).
    """

    max_in_flight: int = 4
    _pending: dict[int, Pending] = field(default_factory=dict)
    _next_id: int = 1
    late_results: int = 0

    def __len__(self) -> int:
        return len(self._pending)

    def full(self) -> bool:
        return len(self._pending) >= self.max_in_flight

    def add(self, capture: Capture, preprocess_ms: float, model_id: str, threshold: float,
            now: float, timeout_s: float, stamp=None) -> Pending:
        if self.full():
            raise RuntimeError('in-flight limit reached')
        p = Pending(self._next_id, capture, preprocess_ms, model_id, threshold, now, now + timeout_s, stamp)
        self._pending[p.request_id] = p
        self._next_id += 1
        return p

    def resolve(self, request_id: int) -> Pending | None:
        """The pending entry for a result, or None (unknown, or already expired: counted late)."""
        p = self._pending.pop(request_id, None)
        if p is None:
            self.late_results += 1
        return p

    def expire(self, now: float) -> list[Pending]:
        late = [p for p in self._pending.values() if now >= p.expires]
        for p in late:
            del self._pending[p.request_id]
        return late

    def drain(self) -> list[Pending]:
        out = list(self._pending.values())
        self._pending.clear()
        return out
