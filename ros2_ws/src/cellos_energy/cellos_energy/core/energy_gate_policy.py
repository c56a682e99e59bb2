"""Energy gate policy: site signal -> gate level, and gate level x task class -> what to do.

Levels tighten at once and relax only after a minimum dwell; each threshold has a band
(Schmitt trigger), so a signal jittering around a threshold does not make the level flap.
A lost or stale signal puts the gate at the configured safe level at once.
Safety-critical work is never gated, at any level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from cellos_common.core.gate_level import GateLevel
from cellos_common.core.params import ParamSpec
from cellos_energy.core.energy_signal import EnergySignal


class TaskClass(str, Enum):
    CRITICAL = 'critical'
    NORMAL = 'normal'
    DEFERRABLE = 'deferrable'


class Action(str, Enum):
    RUN = 'run'
    THROTTLE = 'throttle'     # admit only ``share`` of this class's work
    DEFER = 'defer'           # hold until ``defer_until_s``
    GATED = 'gated'           # refuse now, with the reason


@dataclass(frozen=True)
class GatePolicy:
    # thresholds to enter ECO / CRITICAL_ONLY / HALT (value >= threshold)
    price_per_mwh: tuple[float, float, float] = (90.0, 160.0, 500.0)
    price_band_per_mwh: float = 10.0
    carbon_g_per_kwh: tuple[float, float, float] = (210.0, 300.0, 2000.0)
    carbon_band_g_per_kwh: float = 10.0
    # budget for AI compute: enter ECO / CRITICAL_ONLY / HALT when budget < threshold
    budget_below_w: tuple[float, float, float] = (1500.0, 600.0, 0.0)
    budget_band_w: float = 100.0
    dr_levels: tuple[int, int, int, int] = (0, 1, 2, 3)   # gate level for DR none/moderate/high/special
    min_dwell_s: float = 30.0                              # before relaxing to a lower level
    safe_level: GateLevel = GateLevel.CRITICAL_ONLY
    eco_normal_share: float = 0.5                          # share of normal work admitted under ECO
    deadline_runs_up_to: GateLevel = GateLevel.CRITICAL_ONLY  # a due deferrable job still runs here
    carbon_price_per_t: float = 50.0                       # internal carbon price for deferral

    def __post_init__(self):
        errors = []
        for name in ('price_per_mwh', 'carbon_g_per_kwh'):
            t = getattr(self, name)
            if len(t) != 3 or list(t) != sorted(t):
                errors.append(f'{name} thresholds {t} must be 3 non-decreasing values')
        if len(self.budget_below_w) != 3 or list(self.budget_below_w) != sorted(self.budget_below_w, reverse=True):
            errors.append(f'budget_below_w {self.budget_below_w} must be 3 non-increasing values')
        for name in ('price_band_per_mwh', 'carbon_band_g_per_kwh', 'budget_band_w', 'min_dwell_s',
                     'carbon_price_per_t'):
            if getattr(self, name) < 0:
                errors.append(f'{name} must be >= 0')
        if len(self.dr_levels) != 4 or any(lv not in range(4) for lv in self.dr_levels) \
                or list(self.dr_levels) != sorted(self.dr_levels):
            errors.append(f'dr_levels {self.dr_levels} must be 4 non-decreasing levels 0..3')
        if not 0.0 <= self.eco_normal_share <= 1.0:
            errors.append(f'eco_normal_share {self.eco_normal_share} outside [0, 1]')
        if errors:
            raise ValueError('; '.join(errors))
        object.__setattr__(self, 'safe_level', GateLevel(self.safe_level))
        object.__setattr__(self, 'deadline_runs_up_to', GateLevel(self.deadline_runs_up_to))


def _rising(value: float, thresholds, band: float, current: int) -> int:
    """Highest level whose threshold ``value`` reaches; a level held now needs only threshold - band."""
    level = 0
    for lv, thr in enumerate(thresholds, start=1):
        if value >= (thr - band if current >= lv else thr):
            level = lv
    return level


def _falling(value: float, thresholds, band: float, current: int) -> int:
    level = 0
    for lv, thr in enumerate(thresholds, start=1):
        if value < (thr + band if current >= lv else thr):
            level = lv
    return level


def target_level(policy: GatePolicy, sig: EnergySignal, current: GateLevel) -> tuple[GateLevel, str]:
    """The level the signal asks for, given the level held now (for the bands), and why."""
    demands = [
        (_rising(sig.price_per_mwh, policy.price_per_mwh, policy.price_band_per_mwh, current),
         f'price {sig.price_per_mwh:.1f}/MWh'),
        (_rising(sig.carbon_g_per_kwh, policy.carbon_g_per_kwh, policy.carbon_band_g_per_kwh, current),
         f'carbon {sig.carbon_g_per_kwh:.0f} g/kWh'),
        (_falling(sig.power_budget_w, policy.budget_below_w, policy.budget_band_w, current),
         f'budget {sig.power_budget_w:.0f} W'),
        (policy.dr_levels[sig.dr_level], f'DR level {sig.dr_level}' + (
            f' ({sig.dr_event_id})' if sig.dr_event_id else '')),
    ]
    level, why = max(demands, key=lambda d: d[0])
    return GateLevel(level), why


@dataclass(frozen=True)
class GateStatus:
    level: GateLevel
    reason: str
    safe_fallback: bool
    since_s: float       # when the level last changed


class GateMachine:
    """Level with hysteresis, dwell and safe fallback; feed it every signal and every tick."""

    def __init__(self, policy: GatePolicy, now_s: float):
        self.policy = policy
        # since -inf: the first good signal is applied at once, not after a dwell
        self.status = GateStatus(policy.safe_level, 'no energy signal yet', True, -math.inf)
        self.changes = 0

    def _set(self, level: GateLevel, reason: str, fallback: bool, now_s: float) -> bool:
        changed = level != self.status.level
        since = now_s if changed else self.status.since_s
        self.status = GateStatus(level, reason, fallback, since)
        self.changes += changed
        return changed

    def lost(self, reason: str, now_s: float) -> bool:
        """Signal lost or stale: the safe level at once. Returns whether the level changed."""
        return self._set(self.policy.safe_level, f'safe level: {reason}', True, now_s)

    def update(self, sig: EnergySignal, now_s: float) -> bool:
        """A good, fresh signal. Returns whether the level changed."""
        cur = self.status.level
        # a level held only as the safe fallback earns no hysteresis band
        target, why = target_level(self.policy, sig, GateLevel.FULL if self.status.safe_fallback else cur)
        if target > cur:
            return self._set(target, f'{why} -> {target.name}', False, now_s)
        if target < cur:
            wait = self.policy.min_dwell_s - (now_s - self.status.since_s)
            if wait > 0:
                self._set(cur, f'holding {cur.name} {wait:.1f} s more (dwell); target {target.name} by {why}',
                          False, now_s)
                return False
            return self._set(target, f'{why} -> {target.name}', False, now_s)
        return self._set(cur, f'{why} -> {cur.name}' if target else f'{why}: all within thresholds',
                         False, now_s)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    share: float = 1.0                 # for THROTTLE: the admitted share of this class's work
    defer_until_s: float | None = None  # for DEFER


def task_decision(level: GateLevel, task: TaskClass, policy: GatePolicy, *, now_s: float = 0.0,
                  release_at_s: float | None = None, latest_start_s: float | None = None) -> Decision:
    """What a cell may do with one task now. The arbiter's single entry point to the gate.

    For a deferrable job pass its planned release (``deferral.plan_release``) and its latest
    start (latest finish - duration); without them it is deferred to its own plan.
    """
    level = GateLevel(level)
    if task is TaskClass.CRITICAL:
        return Decision(Action.RUN, f'critical runs at every level ({level.name})')
    if task is TaskClass.NORMAL:
        if level is GateLevel.FULL:
            return Decision(Action.RUN, 'gate FULL')
        if level is GateLevel.ECO:
            return Decision(Action.THROTTLE, f'gate ECO: normal work throttled to {policy.eco_normal_share:.0%}',
                            share=policy.eco_normal_share)
        return Decision(Action.GATED, f'gate {level.name}: normal work is gated')
    if latest_start_s is not None and now_s >= latest_start_s:
        if level <= policy.deadline_runs_up_to:
            return Decision(Action.RUN, f'deadline: latest start reached, runs at {level.name}')
        return Decision(Action.GATED, f'gate {level.name}: deferrable job misses its deadline')
    if release_at_s is not None and now_s < release_at_s:
        return Decision(Action.DEFER, 'waiting for the cheapest window that meets the deadline',
                        defer_until_s=release_at_s)
    if level <= GateLevel.ECO:
        return Decision(Action.RUN, f'cheapest window reached at {level.name}')
    if latest_start_s is not None:
        return Decision(Action.DEFER, f'gate {level.name}: deferred to its latest start',
                        defer_until_s=latest_start_s)
    return Decision(Action.GATED, f'gate {level.name}: deferrable work without a deadline is gated')


LEVEL_NAMES = [lv.name for lv in GateLevel]

POLICY_PARAMS = [
    ParamSpec('price_thresholds_per_mwh', [90.0, 160.0, 500.0],
              'price at or above which the gate enters ECO, CRITICAL_ONLY, HALT', unit='/MWh'),
    ParamSpec('price_band_per_mwh', 10.0, 'hysteresis band: a held level is left only below threshold - band',
              min=0.0, max=1000.0, unit='/MWh'),
    ParamSpec('carbon_thresholds_g_per_kwh', [210.0, 300.0, 2000.0],
              'carbon intensity at or above which the gate enters ECO, CRITICAL_ONLY, HALT', unit='g/kWh'),
    ParamSpec('carbon_band_g_per_kwh', 10.0, 'hysteresis band on carbon', min=0.0, max=1000.0, unit='g/kWh'),
    ParamSpec('budget_below_w', [1500.0, 600.0, 0.0],
              'site compute budget below which the gate enters ECO, CRITICAL_ONLY, HALT', unit='W'),
    ParamSpec('budget_band_w', 100.0, 'hysteresis band on the budget', min=0.0, max=1e6, unit='W'),
    ParamSpec('dr_levels', [0, 1, 2, 3], 'gate level (0 FULL .. 3 HALT) for DR none, moderate, high, special'),
    ParamSpec('min_dwell_s', 30.0, 'minimum time at a level before relaxing to a lower one',
              min=0.0, max=86400.0, unit='s'),
    ParamSpec('safe_level', 'CRITICAL_ONLY', 'level on signal loss or stale signal', choices=LEVEL_NAMES),
    ParamSpec('eco_normal_share', 0.5, 'share of normal work admitted under ECO', min=0.0, max=1.0),
    ParamSpec('deadline_runs_up_to', 'CRITICAL_ONLY',
              'highest level at which a deferrable job at its latest start still runs', choices=LEVEL_NAMES),
    ParamSpec('carbon_price_per_t', 50.0, 'internal carbon price used to rank deferral windows',
              min=0.0, max=10000.0, unit='/tCO2'),
]


def policy_from_values(v) -> GatePolicy:
    """GatePolicy from validated POLICY_PARAMS values (a ParamSet or a dict); ValueError if inconsistent."""
    return GatePolicy(
        price_per_mwh=tuple(float(x) for x in v['price_thresholds_per_mwh']),
        price_band_per_mwh=v['price_band_per_mwh'],
        carbon_g_per_kwh=tuple(float(x) for x in v['carbon_thresholds_g_per_kwh']),
        carbon_band_g_per_kwh=v['carbon_band_g_per_kwh'],
        budget_below_w=tuple(float(x) for x in v['budget_below_w']),
        budget_band_w=v['budget_band_w'],
        dr_levels=tuple(int(x) for x in v['dr_levels']),
        min_dwell_s=v['min_dwell_s'],
        safe_level=GateLevel[v['safe_level']],
        eco_normal_share=v['eco_normal_share'],
        deadline_runs_up_to=GateLevel[v['deadline_runs_up_to']],
        carbon_price_per_t=v['carbon_price_per_t'])
