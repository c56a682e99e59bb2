"""Synthetic conveyor camera: machined parts on a moving belt, rendered with OpenCV.

Every frame is a pure function of ``(seed, index, settings)``: the same camera gives the same
frame for the same index, in any order, so training sets, held-out sets and test runs are
reproducible by seed. Each frame carries its ground truth (part id, part kind, class).

Classes: ``ok`` and the defects ``scratch`` (bright straight line: tool mark), ``spot``
(dark blob: stain/pitting), ``missing_hole`` (one hole of the part's pattern not drilled),
``crack`` (dark jagged line running in from the part's edge).

``drift`` in [0, 1] shifts the statistics the way a real line drifts: the light gets dimmer
and less even, noise rises, and defects get fainter and more frequent. A model trained at
drift 0 loses confidence as drift grows, which is what the drift monitor has to notice.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ('ok', 'scratch', 'spot', 'missing_hole', 'crack')
PART_KINDS = ('plate', 'washer', 'bracket')


@dataclass(frozen=True)
class Frame:
    image: np.ndarray          # H x W x 3, uint8, BGR
    index: int                 # frame index within this camera's sequence
    part_id: int
    part_kind: str
    defect_class: str          # ground truth: one of CLASSES

    @property
    def is_ok(self) -> bool:
        return self.defect_class == 'ok'


class SyntheticCamera:
    """A deterministic conveyor camera.

    defect_rate: fraction of parts with a defect (defect types equally likely).
    drift: 0 = nominal, 1 = strongly shifted light and defect statistics.
    """

    def __init__(self, seed: int, *, width: int = 160, height: int = 120,
                 defect_rate: float = 0.5, drift: float = 0.0, first_part_id: int = 1):
        if width < 64 or height < 48:
            raise ValueError(f'frame {width}x{height} too small (min 64x48)')
        if not 0.0 <= defect_rate <= 1.0:
            raise ValueError(f'defect_rate {defect_rate} not in [0, 1]')
        self.seed = int(seed)
        self.width = int(width)
        self.height = int(height)
        self.defect_rate = float(defect_rate)
        self.drift = float(drift)
        self.first_part_id = int(first_part_id)
        self._next = 0
        self.set_drift(drift)

    def set_drift(self, drift: float) -> None:
        if not 0.0 <= drift <= 1.0:
            raise ValueError(f'drift {drift} not in [0, 1]')
        self.drift = float(drift)

    def next(self) -> Frame:
        frame = self.frame(self._next)
        self._next += 1
        return frame

    def frame(self, index: int, defect_class: str | None = None) -> Frame:
        """Frame ``index`` of this camera; ``defect_class`` forces the class (balanced sets)."""
        rng = np.random.default_rng([self.seed, int(index)])
        if defect_class is None:
            defective = rng.random() < self.effective_defect_rate()
            defect_class = CLASSES[1 + int(rng.integers(len(CLASSES) - 1))] if defective else 'ok'
        elif defect_class not in CLASSES:
            raise ValueError(f'unknown class {defect_class!r}; known: {list(CLASSES)}')
        kind = PART_KINDS[int(rng.integers(len(PART_KINDS)))]
        image = _render(rng, self.width, self.height, kind, defect_class, index, self.drift)
        return Frame(image, int(index), self.first_part_id + int(index), kind, defect_class)

    def effective_defect_rate(self) -> float:
        return min(1.0, self.defect_rate + 0.3 * self.drift * (1.0 - self.defect_rate))


# -- rendering --------------------------------------------------------------------------------

def _belt(rng, w, h, index) -> np.ndarray:
    belt = np.full((h, w), 70, np.float32)
    # slats move with the belt: frame index sets their phase
    pitch = 16
    phase = (index * 5) % pitch
    for x in range(-pitch + phase, w, pitch):
        cv2.line(belt, (x, 0), (x, h - 1), 58.0, 2)
    belt += rng.normal(0.0, 3.0, (h, w)).astype(np.float32)
    return belt


def _part_shape(kind: str, size: float):
    """(outline mask drawer, hole centres, hole radius) in part coordinates (centre = 0,0)."""
    s = size
    if kind == 'plate':
        holes = [(-0.32 * s, -0.32 * s), (0.32 * s, -0.32 * s),
                 (-0.32 * s, 0.32 * s), (0.32 * s, 0.32 * s)]
        outline = np.array([(-0.45, -0.45), (0.45, -0.45), (0.45, 0.45), (-0.45, 0.45)]) * s
        return outline, holes, 0.075 * s
    if kind == 'washer':
        holes = [(0.0, 0.0)] + [(0.3 * s * np.cos(a), 0.3 * s * np.sin(a))
                                for a in np.linspace(0, 2 * np.pi, 4, endpoint=False)]
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        outline = np.stack([0.47 * s * np.cos(t), 0.47 * s * np.sin(t)], axis=1)
        return outline, holes, 0.07 * s
    # bracket: an L
    outline = np.array([(-0.45, -0.45), (0.45, -0.45), (0.45, -0.05),
                        (-0.05, -0.05), (-0.05, 0.45), (-0.45, 0.45)]) * s
    holes = [(-0.25 * s, -0.25 * s), (0.25 * s, -0.25 * s), (-0.25 * s, 0.25 * s)]
    return outline, holes, 0.08 * s


def _render(rng, w, h, kind, defect, index, drift) -> np.ndarray:
    img = _belt(rng, w, h, index)
    size = min(w, h) * rng.uniform(0.66, 0.78)
    angle = rng.uniform(0, 2 * np.pi)
    cx = w / 2 + rng.uniform(-0.08, 0.08) * w
    cy = h / 2 + rng.uniform(-0.08, 0.08) * h
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def to_img(pts):
        return (np.asarray(pts, np.float64) @ rot.T + (cx, cy))

    outline, holes, hole_r = _part_shape(kind, size)
    metal = rng.uniform(165, 200)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(to_img(outline) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    # brushed-metal texture, then the part over the belt
    texture = cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 1.2)
    part = metal + texture
    alpha = mask.astype(np.float32) / 255.0
    img = img * (1 - alpha) + part * alpha

    contrast = 1.0 - 0.35 * drift   # defects fade with drift
    if defect == 'missing_hole':
        holes = list(holes)
        holes.pop(int(rng.integers(len(holes))))
    hole_px = to_img(holes)
    for (hx, hy) in hole_px:
        cv2.circle(img, (int(round(hx * 16)), int(round(hy * 16))), int(round(hole_r * 16)),
                   40.0, -1, cv2.LINE_AA, shift=4)

    if defect == 'scratch':
        # a straight tool mark across the face, avoiding nothing in particular
        a = rng.uniform(0, np.pi)
        half = size * rng.uniform(0.22, 0.34)
        off = rng.uniform(-0.12, 0.12, 2) * size
        p0 = to_img([off + half * np.array([np.cos(a), np.sin(a)])])[0]
        p1 = to_img([off - half * np.array([np.cos(a), np.sin(a)])])[0]
        level = metal + contrast * rng.uniform(45, 70)
        cv2.line(img, _pt(p0), _pt(p1), float(level), 2, cv2.LINE_AA, shift=4)
    elif defect == 'spot':
        r = size * rng.uniform(0.07, 0.11)
        # a spot in a (dark) hole or off the part would be invisible: the label would lie
        for _ in range(50):
            off = rng.uniform(-0.22, 0.22, 2) * size
            inside = cv2.pointPolygonTest(outline.astype(np.float32), (float(off[0]), float(off[1])),
                                          True) > r + 1
            if inside and all(np.hypot(*(off - np.asarray(h))) > hole_r + r + 2 for h in holes):
                break
        c = to_img([off])[0]
        level = metal - contrast * rng.uniform(100, 140)
        cv2.ellipse(img, _pt(c), (int(r * 16), int(r * rng.uniform(0.6, 1.0) * 16)),
                    float(rng.uniform(0, 180)), 0, 360, float(level), -1, cv2.LINE_AA, shift=4)
    elif defect == 'crack':
        # jagged dark line from the outline inwards
        edge = outline[int(rng.integers(len(outline)))] * rng.uniform(0.85, 0.95)
        direction = -edge / (np.linalg.norm(edge) + 1e-9)
        pts = [edge]
        n = int(rng.integers(5, 8))
        step = size * rng.uniform(0.06, 0.08)
        for _ in range(n):
            turn = rng.uniform(-0.9, 0.9)
            c, s_ = np.cos(turn), np.sin(turn)
            d = np.array([c * direction[0] - s_ * direction[1], s_ * direction[0] + c * direction[1]])
            pts.append(pts[-1] + step * d)
        level = metal - contrast * rng.uniform(110, 140)
        poly = np.round(to_img(pts) * 16).astype(np.int32)
        cv2.polylines(img, [poly], False, float(level), 2, cv2.LINE_AA, shift=4)

    # light: gain, offset, gradient across the field, then sensor noise
    gain = rng.uniform(0.8, 1.2) * (1.0 - 0.45 * drift)
    offset = rng.uniform(-20, 20) - 10 * drift
    grad_dir = rng.uniform(0, 2 * np.pi)
    grad_amp = rng.uniform(0, 30) + 40 * drift
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx - w / 2) * np.cos(grad_dir) + (yy - h / 2) * np.sin(grad_dir)) / max(w, h)
    img = img * gain + offset + grad_amp * ramp
    img += rng.normal(0, rng.uniform(1.5, 5.0) + 6.0 * drift, (h, w)).astype(np.float32)
    gray = np.clip(img, 0, 255).astype(np.uint8)
    # slightly warm light: a colour camera, but the information is in the luminance
    tint = np.array([0.94, 1.0, 1.04], np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    return np.clip(gray[..., None].astype(np.float32) * tint, 0, 255).astype(np.uint8)


def _pt(p) -> tuple[int, int]:
    return int(round(p[0] * 16)), int(round(p[1] * 16))
