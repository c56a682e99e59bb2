"""Deferrable jobs: released into the cheapest forecast window that still meets their deadline.

The objective per slot is price + internal carbon price x carbon (currency per MWh). A job is
never planned past its latest start (latest finish - duration - margin); past the forecast
horizon the last known slot value is assumed to persist.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from cellos_energy.core.energy_gate_policy import Action, GateLevel, GatePolicy, TaskClass, task_decision
from cellos_energy.core.energy_signal import ScoreCurve


MAX_JOB_ID = 128                # characters of a job id
MAX_DURATION_S = 7 * 86400.0    # a deferrable job runs at most a week
MAX_HORIZON_S = 30 * 86400.0    # and must finish within 30 days
MAX_MISSED = 100                # missed jobs remembered (the count goes on)


def check_job(job_id: str, duration_s: float, latest_finish_s: float, now_s: float) -> str | None:
    """None when a deferrable job can be queued, else why not."""
    if not job_id:
        return 'empty job_id'
    if len(job_id) > MAX_JOB_ID:
        return f'job_id is {len(job_id)} characters long (at most {MAX_JOB_ID})'
    if not job_id.isprintable():
        return 'job_id has control characters'
    if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_DURATION_S):
        return f'duration {duration_s!r} s must be in (0, {MAX_DURATION_S:.0f}]'
    if not math.isfinite(latest_finish_s) or latest_finish_s - now_s > MAX_HORIZON_S:
        return f'latest finish {latest_finish_s - now_s:.0f} s from now is past {MAX_HORIZON_S:.0f} s'
    return None


@dataclass(frozen=True)
class DeferrableJob:
    job_id: str
    duration_s: float
    latest_finish_s: float
    submitted_s: float

    def latest_start(self, margin_s: float = 0.0) -> float:
        return self.latest_finish_s - self.duration_s - margin_s


@dataclass(frozen=True)
class ReleasePlan:
    start_s: float
    mean_score: float
    reason: str


def plan_release(now_s: float, job: DeferrableJob, curve: ScoreCurve | None,
                 margin_s: float = 0.0) -> ReleasePlan:
    """Cheapest start in [now, latest start]; ties go to the earliest start."""
    latest = job.latest_start(margin_s)
    if latest <= now_s:
        return ReleasePlan(now_s, curve.mean(now_s, now_s + job.duration_s) if curve else 0.0,
                           'latest start reached')
    if curve is None or not curve.scores:
        return ReleasePlan(latest, 0.0, 'no forecast: held to its latest start')
    candidates = [now_s, *curve.boundaries(now_s, latest), latest]
    best = min(candidates, key=lambda s: (round(curve.mean(s, s + job.duration_s), 9), s))
    return ReleasePlan(best, curve.mean(best, best + job.duration_s),
                       'now is the cheapest window' if best == now_s else 'cheapest window before the deadline')


@dataclass(frozen=True)
class Release:
    job: DeferrableJob
    at_s: float
    reason: str


@dataclass
class DeferralQueue:
    """The jobs a cell holds back; ``tick`` re-plans them and hands out those to run now."""

    policy: GatePolicy
    margin_s: float = 0.0
    max_jobs: int = 1000
    pending: dict[str, DeferrableJob] = field(default_factory=dict)
    plans: dict[str, ReleasePlan] = field(default_factory=dict)
    # past their deadline while gated: the last MAX_MISSED, their count, and those not yet taken
    missed: deque = field(default_factory=lambda: deque(maxlen=MAX_MISSED))
    missed_count: int = 0
    _new_missed: list = field(default_factory=list)

    def take_missed(self) -> list[Release]:
        """The jobs missed since the last call (for the node to log and store once each)."""
        out, self._new_missed = self._new_missed, []
        return out

    def submit(self, job: DeferrableJob, now_s: float,
               curve: ScoreCurve | None) -> tuple[bool, ReleasePlan | None, str]:
        reason = check_job(job.job_id, job.duration_s, job.latest_finish_s, now_s)
        if reason is not None:
            return False, None, reason
        if job.job_id in self.pending:
            return False, None, f'job {job.job_id} is already queued'
        if len(self.pending) >= self.max_jobs:
            return False, None, f'queue full ({self.max_jobs} jobs)'
        if job.latest_start(self.margin_s) < now_s:
            return False, None, (f'cannot meet its deadline: latest start was '
                                 f'{now_s - job.latest_start(self.margin_s):.1f} s ago')
        plan = plan_release(now_s, job, curve, self.margin_s)
        self.pending[job.job_id] = job
        self.plans[job.job_id] = plan
        return True, plan, plan.reason

    def tick(self, now_s: float, level: GateLevel, curve: ScoreCurve | None,
             obligation: GateLevel | None = None) -> list[Release]:
        """Re-plan every job on the newest forecast; return the ones released now.

        ``obligation``: the part of the gate level owed to budget, DR or the safe level
        (GateStatus.obligation). A job at its latest start runs unless the obligation forbids
        it: a price spike is no reason to miss a deadline. In plan mode the job's own cheapest
        window is the economic decision, so only the obligation can hold a planned release.
        """
        owed = level if obligation is None else obligation
        release_level = owed if self.policy.gate_mode == 'plan' else level
        out = []
        for job_id, job in list(self.pending.items()):
            if now_s + job.duration_s > job.latest_finish_s and owed > self.policy.deadline_runs_up_to:
                del self.pending[job_id], self.plans[job_id]
                missed = Release(job, now_s, f'missed its deadline: gate {level.name}')
                self.missed.append(missed)
                self._new_missed.append(missed)
                self.missed_count += 1
                continue
            plan = plan_release(now_s, job, curve, self.margin_s)
            self.plans[job_id] = plan
            latest = job.latest_start(self.margin_s)
            d = task_decision(owed if now_s >= latest else release_level, TaskClass.DEFERRABLE, self.policy,
                              now_s=now_s, release_at_s=plan.start_s, latest_start_s=latest)
            if d.action is Action.RUN:
                del self.pending[job_id], self.plans[job_id]
                out.append(Release(job, now_s, d.reason))
        return out

    def next_release_s(self) -> float | None:
        return min((p.start_s for p in self.plans.values()), default=None)
