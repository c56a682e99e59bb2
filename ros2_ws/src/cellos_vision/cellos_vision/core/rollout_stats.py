"""A cell's side of a model rollout, without ROS: which frames the candidate also sees (shadow),
and the figures on the candidate that the line's rollout controller judges.

The candidate's answers in shadow are kept apart from the verdict: they are compared with
production's verdict on the same part, and with the part's truth where it is known (the plant
simulation's ground truth, an operator's review, a downstream station's finding), and never
published as the part's verdict.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from cellos_inference.core.rollout_policy import RolloutFigures
from cellos_vision.core.inspection import Decision, Verdict


class ShadowSampler:
    """Takes exactly ``share`` of the frames, evenly spread: each frame adds ``share`` to a credit
    and a frame is taken when the credit reaches 1. No randomness: a run is repeatable.
    """

    def __init__(self, share: float):
        self.share = share
        self._credit = 0.0

    def take(self) -> bool:
        if self.share <= 0.0:
            return False
        self._credit += self.share
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False


@dataclass
class _Part:
    production: Decision | None = None
    candidate: Decision | None = None
    latency_ms: float = float('nan')
    truth: str = ''


def _decided(d: Decision | None) -> bool:
    return d is not None and d.verdict != Verdict.UNDECIDED


class CandidateTracker:
    """The last ``window`` candidate decisions of one cell and, for their parts, production's
    decision and the truth. ``reset`` when the candidate changes.
    """

    def __init__(self, window: int = 200):
        self.window = window
        self.candidate_id = ''
        self.reset('')

    def reset(self, candidate_id: str) -> None:
        self.candidate_id = candidate_id
        self._parts: OrderedDict[int, _Part] = OrderedDict()
        self._order: deque[int] = deque(maxlen=self.window)   # parts with a candidate decision
        self.shadow_sent = 0
        self.shadow_skipped = 0
        self.last_part_id = 0

    def watch(self, part_id: int) -> None:
        """The candidate sees this part (a shadow request went out, or it serves the cell): keep
        production's decision and the truth of it. Other parts are not kept.
        """
        if part_id not in self._parts:
            self._parts[part_id] = _Part()
            while len(self._parts) > 4 * self.window:   # parts whose answers never came
                self._parts.popitem(last=False)

    def production(self, part_id: int, decision: Decision) -> None:
        p = self._parts.get(part_id)
        if p is not None:
            p.production = decision

    def truth(self, part_id: int, defect_class: str) -> None:
        p = self._parts.get(part_id)
        if p is not None and defect_class:
            p.truth = defect_class

    def candidate(self, part_id: int, decision: Decision, latency_ms: float) -> None:
        self.watch(part_id)
        p = self._parts[part_id]
        first = p.candidate is None
        p.candidate, p.latency_ms = decision, float(latency_ms)
        if first:
            if len(self._order) == self._order.maxlen:
                self._parts.pop(self._order[0], None)
            self._order.append(part_id)
        self.last_part_id = part_id

    def figures(self) -> RolloutFigures:
        parts = [self._parts[i] for i in self._order if i in self._parts]
        cands = [p for p in parts if p.candidate is not None]
        undecided = sum(1 for p in cands if not _decided(p.candidate))
        both = [p for p in cands if _decided(p.candidate) and _decided(p.production)]
        truth = [p for p in cands if _decided(p.candidate) and p.truth]
        prod_truth = [p for p in parts if _decided(p.production) and p.truth]
        conf = [p.candidate.confidence for p in cands if p.candidate.confidence > 0]
        lat = [p.latency_ms for p in cands if np.isfinite(p.latency_ms)]
        return RolloutFigures(
            window=self.window, samples=len(cands), undecided=undecided, compared=len(both),
            agreed=sum(1 for p in both if p.candidate.defect_class == p.production.defect_class),
            with_truth=len(truth), correct=sum(1 for p in truth if p.candidate.defect_class == p.truth),
            production_with_truth=len(prod_truth),
            production_correct=sum(1 for p in prod_truth if p.production.defect_class == p.truth),
            mean_confidence=float(np.mean(conf)) if conf else None,
            latency_p95_ms=float(np.percentile(lat, 95)) if lat else None,
            shadow_sent=self.shadow_sent, shadow_skipped=self.shadow_skipped, last_part_id=self.last_part_id)
