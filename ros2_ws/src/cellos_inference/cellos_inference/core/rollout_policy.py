"""When a candidate model is rolled back or promoted: the figures the cells measure on it, and
the thresholds a line's rollout controller applies to them.

Figures are counts over each cell's last ``window`` candidate decisions, so a line adds its
cells up exactly. A verdict is "decided" when it is PASS or FAIL; accuracy is the share of the
candidate's decided verdicts whose class was right where the truth is known (the plant
simulation's ground truth, an operator's review, a downstream station's finding).

Rolling back and promoting are asymmetric on purpose:
  - roll back on evidence: as soon as ``rollback_min_samples`` decisions are in and a proportion
    (accuracy, agreement, UNDECIDED rate) is beyond its threshold with confidence (its Wilson
    score bound at ``z`` on the good side is still past the threshold), or the latency p95 is
    over the SLO. A clearly bad model goes after a handful of decisions; a good one is not
    thrown out for one unlucky error.
  - promote on volume: ``promote_min_samples`` decisions with every judged figure within its
    threshold (point estimates), accuracy no worse than production's on the same parts by more
    than ``max_accuracy_drop``, and at least agreement or accuracy judged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class RolloutFigures:
    window: int = 0
    samples: int = 0                 # candidate decisions
    undecided: int = 0
    compared: int = 0                # parts decided by both models
    agreed: int = 0
    with_truth: int = 0              # candidate decided, truth known
    correct: int = 0
    production_with_truth: int = 0
    production_correct: int = 0
    mean_confidence: float | None = None
    latency_p95_ms: float | None = None
    shadow_sent: int = 0
    shadow_skipped: int = 0
    last_part_id: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.with_truth if self.with_truth else None

    @property
    def production_accuracy(self) -> float | None:
        return self.production_correct / self.production_with_truth if self.production_with_truth else None

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def undecided_rate(self) -> float | None:
        return self.undecided / self.samples if self.samples else None

    def summary(self) -> str:
        def pct(x):
            return '-' if x is None else f'{x:.2f}'
        return (f'{self.samples} decisions: accuracy {pct(self.accuracy)} ({self.correct}/{self.with_truth}, '
                f'production {pct(self.production_accuracy)}), agreement {pct(self.agreement)} '
                f'({self.agreed}/{self.compared}), undecided {pct(self.undecided_rate)}, '
                f'latency p95 {pct(self.latency_p95_ms)} ms')


COUNTS = tuple(f.name for f in fields(RolloutFigures)
               if f.name not in ('mean_confidence', 'latency_p95_ms', 'last_part_id'))


def merge(figures) -> RolloutFigures:
    """A line's figures from its cells': counts added, confidence weighted by samples, the worst
    latency p95 kept (a p95 cannot be added up; the worst cell is the one an SLO is about).
    """
    figures = list(figures)
    counts = {name: sum(getattr(f, name) for f in figures) for name in COUNTS}
    weighted = [(f.mean_confidence, f.samples) for f in figures if f.mean_confidence is not None and f.samples]
    n = sum(w for _, w in weighted)
    latencies = [f.latency_p95_ms for f in figures if f.latency_p95_ms is not None]
    return RolloutFigures(**counts, mean_confidence=sum(c * w for c, w in weighted) / n if n else None,
                          latency_p95_ms=max(latencies) if latencies else None,
                          last_part_id=max((f.last_part_id for f in figures), default=0))


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (low, high); (0, 1) without samples."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Thresholds:
    min_accuracy: float = 0.9          # candidate's decided verdicts right, where truth is known
    min_agreement: float = 0.7         # same verdict and class as production, on parts both decided
    latency_slo_ms: float = 50.0       # candidate's compute p95; 0: not judged
    max_undecided_rate: float = 0.3
    max_accuracy_drop: float = 0.02    # promotion: accuracy >= production's on the same parts - this
    rollback_min_samples: int = 10
    promote_min_samples: int = 200
    z: float = 2.0                     # Wilson bound of the rollback test (2: about 95 % two-sided)

    def __post_init__(self):
        for name in ('min_accuracy', 'min_agreement', 'max_undecided_rate', 'max_accuracy_drop'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1]')
        if self.rollback_min_samples < 1 or self.promote_min_samples < self.rollback_min_samples:
            raise ValueError('need 1 <= rollback_min_samples <= promote_min_samples')
        if self.latency_slo_ms < 0 or self.z <= 0:
            raise ValueError('latency_slo_ms must be >= 0 and z > 0')


@dataclass(frozen=True)
class Judgement:
    action: str        # rollback | promote | wait
    reason: str


def judge(f: RolloutFigures, t: Thresholds) -> Judgement:
    if f.samples < t.rollback_min_samples:
        return Judgement('wait', f'{f.samples}/{t.rollback_min_samples} candidate decisions')
    bad = []
    if f.with_truth >= t.rollback_min_samples and wilson(f.correct, f.with_truth, t.z)[1] < t.min_accuracy:
        bad.append(f'accuracy {f.accuracy:.2f} < {t.min_accuracy:.2f} ({f.correct}/{f.with_truth} right)')
    if f.compared >= t.rollback_min_samples and wilson(f.agreed, f.compared, t.z)[1] < t.min_agreement:
        bad.append(f'agreement {f.agreement:.2f} < {t.min_agreement:.2f} ({f.agreed}/{f.compared})')
    if wilson(f.undecided, f.samples, t.z)[0] > t.max_undecided_rate:
        bad.append(f'undecided {f.undecided_rate:.2f} > {t.max_undecided_rate:.2f} ({f.undecided}/{f.samples})')
    if t.latency_slo_ms and f.latency_p95_ms is not None and f.latency_p95_ms > t.latency_slo_ms:
        bad.append(f'latency p95 {f.latency_p95_ms:.1f} ms > SLO {t.latency_slo_ms:.1f} ms')
    if bad:
        return Judgement('rollback', '; '.join(bad) + f' over {f.samples} candidate decisions')
    if f.samples < t.promote_min_samples:
        return Judgement('wait', f'{f.samples}/{t.promote_min_samples} candidate decisions before promotion')
    short = []
    judged = 0
    if f.with_truth >= t.rollback_min_samples:
        judged += 1
        if f.accuracy < t.min_accuracy:
            short.append(f'accuracy {f.accuracy:.2f} < {t.min_accuracy:.2f}')
        prod = f.production_accuracy
        if f.production_with_truth >= t.rollback_min_samples and f.accuracy < prod - t.max_accuracy_drop:
            short.append(f'accuracy {f.accuracy:.2f} below production {prod:.2f} - {t.max_accuracy_drop:.2f}')
    if f.compared >= t.rollback_min_samples:
        judged += 1
        if f.agreement < t.min_agreement:
            short.append(f'agreement {f.agreement:.2f} < {t.min_agreement:.2f}')
    if f.undecided_rate > t.max_undecided_rate:
        short.append(f'undecided {f.undecided_rate:.2f} > {t.max_undecided_rate:.2f}')
    if not judged:
        short.append('neither accuracy nor agreement could be judged (no truth, no parts decided by both)')
    if short:
        return Judgement('wait', 'not promoted yet: ' + '; '.join(short))
    return Judgement('promote', 'within every threshold: ' + f.summary())
