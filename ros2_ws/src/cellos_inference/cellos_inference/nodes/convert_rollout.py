"""The one place converting model rollout messages <-> core types (ModelAlias, ModelAliases,
RolloutStats).
"""
from __future__ import annotations

import math

from builtin_interfaces.msg import Time

from cellos_inference.core.model_aliases import Mode, ModelRef, TaskAliases
from cellos_inference.core.rollout_policy import RolloutFigures
from cellos_interfaces.msg import ModelAlias, ModelAliases, RolloutStats


def alias_to_msg(a: TaskAliases | None) -> ModelAlias:
    if a is None:
        return ModelAlias()
    return ModelAlias(task=a.task, production_id=a.production.id, production_name=a.production.name,
                      candidate_id=a.candidate.id, candidate_name=a.candidate.name, mode=int(a.mode),
                      canary_cells=list(a.canary_cells), previous_id=a.previous.id,
                      previous_name=a.previous.name, reason=a.reason, changed_s=float(a.changed_s))


def alias_from_msg(m: ModelAlias) -> TaskAliases:
    """What a cell needs of a task's aliases (paths are the executor's, not sent)."""
    try:
        mode = Mode(m.mode)
    except ValueError:
        mode = Mode.NONE
    return TaskAliases(m.task, ModelRef(m.production_id, m.production_name), ModelRef(m.candidate_id, m.candidate_name),
                       mode, tuple(m.canary_cells), ModelRef(m.previous_id, m.previous_name), m.reason, m.changed_s)


def aliases_msg(aliases, *, executor_id: str, stamp: Time) -> ModelAliases:
    msg = ModelAliases(executor_id=executor_id, aliases=[alias_to_msg(a) for a in aliases])
    msg.header.stamp = stamp
    return msg


def _nan(x) -> float:
    return float('nan') if x is None else float(x)


def stats_msg(f: RolloutFigures, *, line_id: str, cell_id: str, task: str, production_id: str,
              candidate_id: str, mode: int, candidate_serving: bool, stamp: Time) -> RolloutStats:
    msg = RolloutStats(line_id=line_id, cell_id=cell_id, task=task, production_id=production_id,
                       candidate_id=candidate_id, mode=int(mode), candidate_serving=bool(candidate_serving),
                       window=f.window, samples=f.samples, undecided=f.undecided, compared=f.compared,
                       agreed=f.agreed, with_truth=f.with_truth, correct=f.correct,
                       production_with_truth=f.production_with_truth, production_correct=f.production_correct,
                       mean_confidence=_nan(f.mean_confidence), latency_p95_ms=_nan(f.latency_p95_ms),
                       shadow_sent=f.shadow_sent, shadow_skipped=f.shadow_skipped, last_part_id=f.last_part_id)
    msg.header.stamp = stamp
    return msg


def stats_from_msg(m: RolloutStats) -> RolloutFigures:
    def opt(x):
        return None if math.isnan(x) else float(x)
    return RolloutFigures(window=m.window, samples=m.samples, undecided=m.undecided, compared=m.compared,
                          agreed=m.agreed, with_truth=m.with_truth, correct=m.correct,
                          production_with_truth=m.production_with_truth, production_correct=m.production_correct,
                          mean_confidence=opt(m.mean_confidence), latency_p95_ms=opt(m.latency_p95_ms),
                          shadow_sent=m.shadow_sent, shadow_skipped=m.shadow_skipped, last_part_id=m.last_part_id)
