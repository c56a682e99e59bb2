"""How long a cell works on one part, in cycle periods: heavy-tailed inference times with
occasional long holds. Deterministic by seed, one stream per cell, indexed by part: the n-th
part of a cell takes the same time whatever the line around it does (so a coordinated and an
uncoordinated run, and the bottleneck bound, see the same work).

Body: log-normal around ``median_periods``. Tail: with ``tail_probability`` a Pareto draw
(``tail_alpha``, scale ``tail_scale_periods``) is added. Long holds: every
``long_hold_every`` parts, ``long_hold_periods`` more. Capped at ``max_periods``.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkTimeConfig:
    median_periods: float = 0.6
    sigma: float = 0.35
    tail_probability: float = 0.05
    tail_alpha: float = 1.5
    tail_scale_periods: float = 1.0
    max_periods: float = 50.0
    long_hold_every: int = 0          # parts; 0: never
    long_hold_periods: float = 0.0

    def __post_init__(self):
        problems = []
        if not self.median_periods > 0:
            problems.append(f'median_periods must be > 0, got {self.median_periods}')
        if self.sigma < 0:
            problems.append(f'sigma must be >= 0, got {self.sigma}')
        if not 0.0 <= self.tail_probability <= 1.0:
            problems.append(f'tail_probability must be in [0, 1], got {self.tail_probability}')
        if not self.tail_alpha > 0:
            problems.append(f'tail_alpha must be > 0, got {self.tail_alpha}')
        if self.tail_scale_periods < 0 or self.long_hold_periods < 0:
            problems.append('tail_scale_periods and long_hold_periods must be >= 0')
        if self.long_hold_every < 0:
            problems.append(f'long_hold_every must be >= 0, got {self.long_hold_every}')
        if not self.max_periods >= self.median_periods:
            problems.append(f'max_periods ({self.max_periods}) must be >= median_periods')
        if problems:
            raise ValueError('; '.join(problems))


def cycles_for(work_periods: float) -> int:
    """Cycles a part occupies its station: work starts at a cycle start, the part moves on at
    the first cycle start after the work is done (at least the next one).
    """
    return max(1, math.ceil(work_periods - 1e-9))


class WorkTimes:
    def __init__(self, config: WorkTimeConfig, seed: int):
        self.config = config
        self._rng = random.Random(seed)
        self.parts = 0

    def next_periods(self) -> float:
        c = self.config
        self.parts += 1
        w = c.median_periods * math.exp(c.sigma * self._rng.gauss(0.0, 1.0))
        if self._rng.random() < c.tail_probability:
            w += c.tail_scale_periods * self._rng.paretovariate(c.tail_alpha)
        if c.long_hold_every and self.parts % c.long_hold_every == 0:
            w += c.long_hold_periods
        return min(w, c.max_periods + (c.long_hold_periods if c.long_hold_every else 0.0))

    def next_cycles(self) -> int:
        return cycles_for(self.next_periods())

    def sequence(self, n: int) -> list[int]:
        return [self.next_cycles() for _ in range(n)]


def cell_seed(seed: int, position: int) -> int:
    """The work stream of the cell at ``position`` (0-based) on a line run with ``seed``."""
    return seed * 1_000_003 + position
