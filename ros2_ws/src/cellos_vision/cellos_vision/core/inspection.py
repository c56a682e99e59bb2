"""From model output to an inspection verdict, and the drift monitor that watches the verdicts.

``decide`` turns logits into PASS / FAIL / UNDECIDED with a defect class and a confidence.
Anything that is not a trustworthy model answer (a late, rejected, gated or failed inference,
a bad frame, malformed or non-finite output, low confidence) is UNDECIDED with a reason: a
cell never passes a part it did not actually inspect.

``DriftMonitor`` compares the recent confidence distribution with a reference window taken
while the line ran nominally (two-sample Kolmogorov-Smirnov statistic and mean drop), and the
rate at which downstream feedback disagrees with this cell's verdicts. Beyond a bound it tells
the cell to switch to its fallback model (or a stricter threshold) and hold for revalidation;
revalidation passes once the fallback has run ``revalidate_samples`` inspections within bounds.
"""
from __future__ import annotations

import enum
import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


class Verdict(enum.IntEnum):
    # values match cellos_interfaces/Inspection VERDICT_*
    PASS = 0
    FAIL = 1
    UNDECIDED = 2


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    defect_class: str          # a model class, or '' when undecided without a model answer
    confidence: float          # top-class probability; 0 when no model answer
    reason: str = ''           # why undecided; empty otherwise
    model_id: str = ''
    probabilities: tuple[float, ...] = ()

    @property
    def decided(self) -> bool:
        return self.verdict != Verdict.UNDECIDED


def undecided(reason: str, model_id: str = '') -> Decision:
    if not reason:
        raise ValueError('an undecided verdict needs a reason')
    return Decision(Verdict.UNDECIDED, '', 0.0, reason, model_id)


# what a classifier's output may be: a float tensor of a sane size
LOGIT_DTYPES = ('float32', 'float16', 'float64')
MAX_OUTPUT_RANK = 8
MAX_OUTPUT_VALUES = 1 << 16


def logits_from_bytes(dtype: str, shape: Sequence[int], data: bytes | memoryview) -> np.ndarray:
    """A model output tensor as it travels (dtype name, shape, little-endian bytes) -> a float64
    array; ValueError with the reason for an unknown dtype, a rank or size out of bounds, or a
    byte length that does not match the shape.
    """
    if dtype not in LOGIT_DTYPES:
        raise ValueError(f'output dtype {dtype[:32]!r} is not one of {", ".join(LOGIT_DTYPES)}')
    if len(shape) > MAX_OUTPUT_RANK:
        raise ValueError(f'output rank {len(shape)} > {MAX_OUTPUT_RANK}')
    count = 1
    for d in shape:
        count *= int(d)
    if count > MAX_OUTPUT_VALUES:
        raise ValueError(f'output shape {list(shape)[:MAX_OUTPUT_RANK]} has {count} values > {MAX_OUTPUT_VALUES}')
    item = np.dtype(dtype).itemsize
    if len(data) != count * item:
        raise ValueError(f'output has {len(data)} bytes, shape {list(shape)} x {dtype} needs {count * item}')
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder('<')).astype(np.float64).reshape(
        tuple(int(d) for d in shape))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def decide(logits: Sequence[float] | np.ndarray, classes: Sequence[str], threshold: float,
           model_id: str = '', ok_class: str = 'ok') -> Decision:
    """Logits of one frame -> verdict. ``threshold``: minimum top-class probability to decide."""
    x = np.asarray(logits, np.float64).reshape(-1)
    if x.size != len(classes):
        return undecided(f'model output has {x.size} values, expected {len(classes)} classes', model_id)
    if not np.all(np.isfinite(x)):
        return undecided('model output is not finite', model_id)
    p = softmax(x)
    top = int(np.argmax(p))
    conf = float(p[top])
    name = classes[top]
    probs = tuple(float(v) for v in p)
    if conf < threshold:
        return Decision(Verdict.UNDECIDED, name, conf,
                        f'low confidence {conf:.2f} < {threshold:.2f} (best guess {name})', model_id, probs)
    verdict = Verdict.PASS if name == ok_class else Verdict.FAIL
    return Decision(verdict, name, conf, '', model_id, probs)


# -- drift ------------------------------------------------------------------------------------

class DriftState(enum.IntEnum):
    LEARNING = 0       # filling the reference window on the primary model
    NOMINAL = 1        # primary model, within bounds
    REVALIDATING = 2   # drift seen: fallback active, the cell holds until it revalidates
    FALLBACK = 3       # revalidated on the fallback: running again, primary stays off until reset


@dataclass(frozen=True)
class DriftBounds:
    reference_size: int = 60          # confidences that make the reference distribution
    window_size: int = 30             # recent confidences compared with it
    max_ks: float = 0.45              # one-sided KS statistic (recent below reference) counted as drift
    max_mean_drop: float = 0.12       # mean confidence drop vs the reference
    feedback_window: int = 30         # recent downstream feedback outcomes kept
    min_feedback: int = 10            # fewer than this: the mismatch rate is not judged
    max_mismatch: float = 0.15        # downstream disagreement rate that counts as drift
    revalidate_samples: int = 20      # fallback inspections needed before the hold is released
    revalidate_min_confidence: float = 0.7  # fallback's mean confidence needed to release

    def __post_init__(self):
        for name in ('reference_size', 'window_size', 'feedback_window', 'revalidate_samples'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1')
        if self.min_feedback < 1 or self.min_feedback > self.feedback_window:
            raise ValueError('min_feedback must be in [1, feedback_window]')
        for name in ('max_ks', 'max_mean_drop', 'max_mismatch', 'revalidate_min_confidence'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1]')


@dataclass(frozen=True)
class DriftStatus:
    state: DriftState
    ks: float                  # NaN until both windows are full
    mean_drop: float           # NaN until both windows are full
    mismatch_rate: float       # NaN until min_feedback outcomes
    reason: str = ''           # why drifted / why still holding

    @property
    def use_fallback(self) -> bool:
        return self.state in (DriftState.REVALIDATING, DriftState.FALLBACK)

    @property
    def hold(self) -> bool:
        return self.state == DriftState.REVALIDATING


def ks_statistic(a: Sequence[float], b: Sequence[float], lower_only: bool = False) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: max distance between the empirical CDFs.

    ``lower_only``: one-sided, how far ``b`` lies below ``a`` (max of CDF_b - CDF_a); a model
    that got more confident is not what the drift monitor looks for.
    """
    a = np.sort(np.asarray(a, np.float64))
    b = np.sort(np.asarray(b, np.float64))
    if a.size == 0 or b.size == 0:
        return math.nan
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side='right') / a.size
    cdf_b = np.searchsorted(b, grid, side='right') / b.size
    diff = cdf_b - cdf_a
    return float(max(0.0, np.max(diff)) if lower_only else np.max(np.abs(diff)))


@dataclass
class DriftMonitor:
    bounds: DriftBounds = field(default_factory=DriftBounds)

    def __post_init__(self):
        self.reset()

    def record(self) -> dict:
        """What a restart must keep: the state, the learned reference, the reason and the switches.

        The recent window, the feedback outcomes and the revalidation samples are not kept: they
        refill from the inspections after the restart, judged against the kept reference (a
        restart while revalidating holds until the fallback revalidated again).
        """
        return {'state': int(self.state), 'reference': [float(c) for c in self._reference]
                if self.state != DriftState.LEARNING else [], 'reason': self._reason, 'switches': int(self.switches)}

    def restore(self, rec: dict) -> None:
        """Take back a ``record``; ValueError (and nothing changed) when it does not fit these bounds."""
        try:
            state = DriftState(int(rec['state']))
            reference = [float(c) for c in rec['reference']]
            reason, switches = str(rec['reason']), int(rec['switches'])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f'drift record unreadable: {type(e).__name__}: {e}') from None
        if state != DriftState.LEARNING and len(reference) != self.bounds.reference_size:
            raise ValueError(f'drift record has a reference of {len(reference)} confidences, the bounds '
                             f'want {self.bounds.reference_size}')
        if not all(0.0 <= c <= 1.0 for c in reference) or switches < 0:
            raise ValueError('drift record has confidences outside [0, 1] or negative switches')
        self.reset()
        self.state, self._reason, self.switches = state, reason, switches
        self._reference = reference if state != DriftState.LEARNING else []

    def reset(self) -> None:
        """Back to the primary model, learning a new reference (operator action)."""
        self.state = DriftState.LEARNING
        self._reference: list[float] = []
        self._recent: deque[float] = deque(maxlen=self.bounds.window_size)
        self._feedback: deque[bool] = deque(maxlen=self.bounds.feedback_window)
        self._revalidation: list[float] = []
        self._reason = ''
        self.switches = 0

    # -- inputs ---------------------------------------------------------------------------
    def observe(self, decision: Decision) -> DriftStatus:
        """Every inspection with a model answer (decided or low-confidence) goes in here;
        undecided-without-answer (late, rejected, bad frame) says nothing about the model.
        """
        if decision.confidence <= 0.0 or not decision.defect_class:
            return self.status()
        conf = float(decision.confidence)
        if self.state == DriftState.LEARNING:
            self._reference.append(conf)
            if len(self._reference) >= self.bounds.reference_size:
                self.state = DriftState.NOMINAL
        elif self.state == DriftState.NOMINAL:
            self._recent.append(conf)
        elif self.state == DriftState.REVALIDATING:
            self._revalidation.append(conf)
        self._evaluate()
        return self.status()

    def feedback(self, predicted_class: str, downstream_class: str) -> DriftStatus:
        """A downstream station's finding for a part this cell judged."""
        self._feedback.append(predicted_class != downstream_class)
        self._evaluate()
        return self.status()

    # -- state ----------------------------------------------------------------------------
    def _shift(self) -> tuple[float, float]:
        if self.state != DriftState.NOMINAL or len(self._recent) < self.bounds.window_size:
            return math.nan, math.nan
        ks = ks_statistic(self._reference, self._recent, lower_only=True)
        return ks, float(np.mean(self._reference) - np.mean(self._recent))

    def mismatch_rate(self) -> float:
        if len(self._feedback) < self.bounds.min_feedback:
            return math.nan
        return float(np.mean(self._feedback))

    def _evaluate(self) -> None:
        b = self.bounds
        if self.state in (DriftState.LEARNING, DriftState.NOMINAL):
            ks, drop = self._shift()
            mismatch = self.mismatch_rate()
            why = []
            if ks > b.max_ks:
                why.append(f'confidence KS {ks:.2f} > {b.max_ks:.2f}')
            if drop > b.max_mean_drop:
                why.append(f'mean confidence dropped {drop:.2f} > {b.max_mean_drop:.2f}')
            if mismatch > b.max_mismatch:
                why.append(f'downstream mismatch {mismatch:.2f} > {b.max_mismatch:.2f}')
            if why:
                self.state = DriftState.REVALIDATING
                self._reason = 'drift: ' + '; '.join(why)
                self._revalidation = []
                self._feedback.clear()   # the fallback is judged on its own feedback
                self.switches += 1
        elif self.state == DriftState.REVALIDATING:
            n = len(self._revalidation)
            if n < b.revalidate_samples:
                self._reason = f'revalidating fallback: {n}/{b.revalidate_samples} inspections'
                return
            mean = float(np.mean(self._revalidation[-b.revalidate_samples:]))
            mismatch = self.mismatch_rate()
            if 0 < len(self._feedback) < b.min_feedback:
                # feedback is coming: wait for enough of it rather than release on confidence alone
                self._reason = (f'revalidating fallback: {len(self._feedback)}/{b.min_feedback} '
                                'downstream feedback outcomes')
            elif mean < b.revalidate_min_confidence:
                self._reason = (f'revalidating fallback: mean confidence {mean:.2f} < '
                                f'{b.revalidate_min_confidence:.2f}')
            elif mismatch > b.max_mismatch:
                self._reason = f'revalidating fallback: downstream mismatch {mismatch:.2f} > {b.max_mismatch:.2f}'
            else:
                self.state = DriftState.FALLBACK
                self._reason = f'fallback revalidated (mean confidence {mean:.2f})'

    def status(self) -> DriftStatus:
        ks, drop = self._shift()
        reason = self._reason
        if self.state == DriftState.LEARNING:
            reason = f'learning reference: {len(self._reference)}/{self.bounds.reference_size}'
        elif self.state == DriftState.NOMINAL:
            reason = ''
        return DriftStatus(self.state, ks, drop, self.mismatch_rate(), reason)


# -- model metadata ---------------------------------------------------------------------------

MODELS_DIR = Path(__file__).resolve().parents[1] / 'models'


@dataclass(frozen=True)
class ModelMeta:
    """What a cell needs to know about a model: written next to the .onnx by the trainer."""

    model_id: str
    classes: tuple[str, ...]
    ok_class: str
    input_name: str
    output_name: str
    confidence_threshold: float
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> 'ModelMeta':
        """From a model JSON; a bare model id is looked up among the shipped models."""
        p = Path(path)
        if not p.suffix:
            p = MODELS_DIR / f'{path}.json'
        try:
            raw = json.loads(p.read_text())
            meta = cls(str(raw['model_id']), tuple(raw['classes']), str(raw.get('ok_class', 'ok')),
                       str(raw['input']['name']), str(raw['output']['name']),
                       float(raw.get('confidence_threshold', 0.8)), raw)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f'model metadata {p}: {type(e).__name__}: {e}') from None
        if meta.ok_class not in meta.classes:
            raise ValueError(f'model metadata {p}: ok class {meta.ok_class!r} not in {meta.classes}')
        return meta
