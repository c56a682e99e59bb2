"""One site power budget shared by several lines: the rule, applied once, at the site feed.

Rule: each listed line gets ``budget x weight / sum of weights``; the parts add up to the site
budget, so the site total never exceeds it. The feed publishes the parts with the signal; a
line's gates and executor take their line's part from it (``for_line``). A line that is not
listed gets nothing (its gates go to the budget's levels, its executor to critical work only),
so a line added without a weight can never push the site over its budget. A signal without
parts (an older feed, or one line's) leaves the whole budget to whoever reads it.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

from cellos_energy.core.energy_signal import EnergySignal


def check_weights(line_ids: Sequence[str], weights: Sequence[float]) -> str | None:
    """None when the weight table is usable, else why not."""
    if len(line_ids) != len(weights):
        return f'{len(line_ids)} line id(s) but {len(weights)} weight(s)'
    if len(set(line_ids)) != len(line_ids) or any(not lid or '/' in lid for lid in line_ids):
        return f'line ids {list(line_ids)} must be unique, non-empty names without /'
    if any(not (math.isfinite(w) and w >= 0) for w in weights):
        return f'weights {list(weights)} must be finite and >= 0'
    if line_ids and sum(weights) <= 0:
        return 'the weights must not all be 0'
    return None


def split_budget(budget_w: float, line_ids: Sequence[str], weights: Sequence[float]) -> tuple[float, ...]:
    """Each line's part of ``budget_w`` in proportion to its weight (ValueError on a bad table)."""
    reason = check_weights(line_ids, weights)
    if reason is not None:
        raise ValueError(reason)
    total = sum(weights)
    return tuple(budget_w * (w / total) for w in weights)   # share first: w / total <= 1 exactly


def with_line_parts(sig: EnergySignal, line_ids: Sequence[str], weights: Sequence[float]) -> EnergySignal:
    """The signal carrying every line's part of its site budget."""
    if not line_ids:
        return replace(sig, line_ids=(), line_budget_w=())
    return replace(sig, line_ids=tuple(line_ids), line_budget_w=split_budget(sig.power_budget_w, line_ids, weights))


def line_part(sig: EnergySignal, line_id: str) -> tuple[float, str]:
    """This line's part of the site budget, and where it comes from."""
    if not sig.line_ids:
        return sig.power_budget_w, f'site budget {sig.power_budget_w:.0f} W (not shared by line)'
    if line_id in sig.line_ids:
        part = sig.line_budget_w[sig.line_ids.index(line_id)]
        return part, f'line {line_id}: {part:.0f} W of the site budget {sig.power_budget_w:.0f} W'
    return 0.0, (f'line {line_id or "(none)"} has no part of the site budget '
                 f'{sig.power_budget_w:.0f} W (shared by {", ".join(sig.line_ids)})')


def for_line(sig: EnergySignal, line_id: str) -> EnergySignal:
    """The signal as one line's gates see it: the budget is the line's part."""
    return replace(sig, power_budget_w=line_part(sig, line_id)[0])
