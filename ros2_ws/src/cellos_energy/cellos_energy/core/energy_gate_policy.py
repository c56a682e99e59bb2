"""Energy gate policy: site signal -> gate level, and gate level x task class -> what to do.

The level is the higher of two demands:
- obligations: the site's power budget and demand-response level (and the safe level when the
  signal is lost); nothing overrides them;
- economics: in ``plan`` mode the day-ahead plan of the held-back normal work (energy_plan) when
  the signal carries a forecast, else (and in ``thresholds`` mode) price and carbon thresholds.
  Normal work is never held past its completion deadline for economic reasons: when the held
  work's slack runs out the economic demand is FULL, however high the price.
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
from cellos_energy.core.energy_plan import HeldWork, NormalPlan, plan_normal
from cellos_energy.core.energy_signal import EnergySignal, ScoreCurve

GATE_MODES = ('plan', 'thresholds')


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
    carbon_price_per_t: float = 50.0                       # internal carbon price for deferral and plan
    gate_mode: str = 'plan'                                # plan on the forecast | thresholds only
    normal_deadline_s: float = 43200.0                     # normal work is served within this of arriving
    normal_catch_up: float = 1.0                           # at FULL, held work served at this x nominal
    normal_guard_s: float = 60.0                           # deadline margin on top of min_dwell_s

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
        if self.gate_mode not in GATE_MODES:
            errors.append(f'gate_mode {self.gate_mode!r} is not one of {list(GATE_MODES)}')
        if not self.normal_catch_up > 0:
            errors.append('normal_catch_up must be > 0: held normal work must be able to catch up')
        if self.normal_guard_s < 0:
            errors.append('normal_guard_s must be >= 0')
        if not self.normal_deadline_s > self.margin_s:
            errors.append(f'normal_deadline_s {self.normal_deadline_s} must exceed min_dwell_s + normal_guard_s '
                          f'({self.margin_s}): the gate could not hold normal work at all')
        if errors:
            raise ValueError('; '.join(errors))
        object.__setattr__(self, 'safe_level', GateLevel(self.safe_level))
        object.__setattr__(self, 'deadline_runs_up_to', GateLevel(self.deadline_runs_up_to))

    @property
    def margin_s(self) -> float:
        """How early held normal work is planned to be done: a relaxation to FULL may wait a dwell."""
        return self.min_dwell_s + self.normal_guard_s

    def normal_capacity(self, level: GateLevel) -> float:
        """Normal work a level lets run, x the nominal normal rate: FULL catches up on held work."""
        if level is GateLevel.FULL:
            return 1.0 + self.normal_catch_up
        return self.eco_normal_share if level is GateLevel.ECO else 0.0


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


def obligation_level(policy: GatePolicy, sig: EnergySignal, current: GateLevel) -> tuple[GateLevel, str]:
    """The level the site's budget and demand response ask for (hysteresis from ``current``), and why."""
    demands = [
        (_falling(sig.power_budget_w, policy.budget_below_w, policy.budget_band_w, current),
         f'budget {sig.power_budget_w:.0f} W'),
        (policy.dr_levels[sig.dr_level], f'DR level {sig.dr_level}' + (
            f' ({sig.dr_event_id})' if sig.dr_event_id else '')),
    ]
    level, why = max(demands, key=lambda d: d[0])
    return GateLevel(level), why


def threshold_level(policy: GatePolicy, sig: EnergySignal, current: GateLevel) -> tuple[GateLevel, str]:
    """The level the price and carbon thresholds ask for (hysteresis from ``current``), and why."""
    demands = [
        (_rising(sig.price_per_mwh, policy.price_per_mwh, policy.price_band_per_mwh, current),
         f'price {sig.price_per_mwh:.1f}/MWh'),
        (_rising(sig.carbon_g_per_kwh, policy.carbon_g_per_kwh, policy.carbon_band_g_per_kwh, current),
         f'carbon {sig.carbon_g_per_kwh:.0f} g/kWh'),
    ]
    level, why = max(demands, key=lambda d: d[0])
    return GateLevel(level), why


def target_level(policy: GatePolicy, sig: EnergySignal, current: GateLevel) -> tuple[GateLevel, str]:
    """The level the thresholds and obligations ask for, given the level held now, and why."""
    return max(threshold_level(policy, sig, current), obligation_level(policy, sig, current),
               key=lambda d: d[0])


def level_for_rate(policy: GatePolicy, rate: float) -> GateLevel:
    """The level whose admitted normal work is nearest a planned serving rate (x nominal)."""
    eco = policy.eco_normal_share
    if rate >= (1.0 + eco) / 2.0:
        return GateLevel.FULL
    if eco > 0 and rate >= eco / 2.0:
        return GateLevel.ECO
    return GateLevel.CRITICAL_ONLY


@dataclass(frozen=True)
class GateStatus:
    level: GateLevel
    reason: str
    safe_fallback: bool
    since_s: float       # when the level last changed
    obligation: GateLevel = GateLevel.FULL   # the part of the level owed to budget, DR or the safe level


class GateMachine:
    """Level with hysteresis, dwell and safe fallback; feed it every signal and every tick.

    It also keeps the account of the normal work its levels held back (``held``) and, in plan
    mode, the current plan of that work on the signal's forecast.
    """

    def __init__(self, policy: GatePolicy, now_s: float):
        self.policy = policy
        # since -inf: the first good signal is applied at once, not after a dwell
        self.status = GateStatus(policy.safe_level, 'no energy signal yet', True, -math.inf,
                                 policy.safe_level)
        self.changes = 0
        self.held = HeldWork()
        self.plan: NormalPlan | None = None
        self.plans_made = 0
        self._accounted_s = now_s
        self._plan_key = None
        self._guard = False

    def _set(self, level: GateLevel, reason: str, fallback: bool, now_s: float,
             obligation: GateLevel) -> bool:
        changed = level != self.status.level
        since = now_s if changed else self.status.since_s
        self.status = GateStatus(level, reason, fallback, since, obligation)
        self.changes += changed
        return changed

    def _account(self, now_s: float) -> None:
        """Held work over the time since the last call, at the level that was in force."""
        if now_s > self._accounted_s:
            self.held.advance(self._accounted_s, now_s, self.policy.normal_capacity(self.status.level))
            self._accounted_s = now_s

    def slack_s(self, now_s: float) -> float:
        """Seconds before held normal work would need FULL to meet its deadline (inf: none held)."""
        return self.held.slack_s(now_s, self.policy.normal_deadline_s, self.policy.normal_catch_up)

    def lost(self, reason: str, now_s: float) -> bool:
        """Signal lost or stale: the safe level at once. Returns whether the level changed."""
        self._account(now_s)
        self._plan_key = None
        return self._set(self.policy.safe_level, f'safe level: {reason}', True, now_s, self.policy.safe_level)

    def _planned(self, sig: EnergySignal, now_s: float) -> tuple[GateLevel, str] | None:
        fc = sig.forecast
        if self.policy.gate_mode != 'plan' or not fc.slots:
            return None
        curve = ScoreCurve.from_forecast(sig.stamp_s, fc, self.policy.carbon_price_per_t)
        key = (round(curve.t0_s / curve.step_s), curve.scores)
        plan = self.plan
        # re-plan on a new forecast, in a new slot, or when the level in force was not the planned one
        if plan is None or key != self._plan_key or now_s >= plan.slot_end_s or (
                level_for_rate(self.policy, plan.rate) != self.status.level
                and now_s - plan.made_at_s >= curve.step_s / 12.0):
            plan = plan_normal(now_s, curve, self.held, self.policy.normal_deadline_s,
                               self.policy.normal_catch_up, self.policy.margin_s)
            self.plan, self._plan_key = plan, key
            self.plans_made += plan is not None
        if plan is None:
            return None
        level = level_for_rate(self.policy, plan.rate)
        cur = self.status.level
        if not self.status.safe_fallback and level > cur and any(
                level_for_rate(self.policy, r) <= cur for r in plan.rates_until(now_s + self.policy.min_dwell_s)[1:]):
            # a tightening the plan undoes within a dwell could not be undone in time: keep the level
            return cur, f'{plan.reason}; {cur.name} kept: the plan relaxes again within the dwell'
        return level, plan.reason

    def update(self, sig: EnergySignal, now_s: float) -> bool:
        """A good, fresh signal. Returns whether the level changed."""
        self._account(now_s)
        cur = self.status.level
        # a level held only as the safe fallback earns no hysteresis band
        band_from = GateLevel.FULL if self.status.safe_fallback else cur
        obligation = obligation_level(self.policy, sig, band_from)
        economic = self._planned(sig, now_s) or threshold_level(self.policy, sig, band_from)
        # deadline guard, with a band: once on, it stays on until a dwell's worth of slack is back
        slack = self.slack_s(now_s)
        self._guard = slack <= self.policy.margin_s + (self.policy.min_dwell_s if self._guard else 0.0)
        if self._guard and economic[0] > GateLevel.FULL:
            economic = (GateLevel.FULL, f'held normal work due: {self.held.total_s:.1f} s of it held, '
                                        f'{slack:.1f} s of slack before its {self.policy.normal_deadline_s:.0f} s '
                                        f'deadline')
        target, why = max(economic, obligation, key=lambda d: d[0])
        ob = obligation[0]
        if target > cur:
            return self._set(target, f'{why} -> {target.name}', False, now_s, ob)
        if target < cur:
            wait = self.policy.min_dwell_s - (now_s - self.status.since_s)
            if wait > 0:
                self._set(cur, f'holding {cur.name} {wait:.1f} s more (dwell); target {target.name} by {why}',
                          False, now_s, ob)
                return False
            return self._set(target, f'{why} -> {target.name}', False, now_s, ob)
        return self._set(cur, f'{why} -> {cur.name}' if target else f'{why}: all within thresholds',
                         False, now_s, ob)


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
    ParamSpec('carbon_price_per_t', 50.0, 'internal carbon price added to the price to rank deferral windows '
              'and plan normal work', min=0.0, max=10000.0, unit='/tCO2'),
    ParamSpec('gate_mode', 'plan', 'plan: serve held normal work where the published forecast is cheapest '
              '(thresholds when a signal has no forecast); thresholds: price and carbon thresholds only',
              choices=list(GATE_MODES)),
    ParamSpec('normal_deadline_s', 43200.0, 'normal work held back by the gate is served within this '
              'time of arriving, whatever the price', min=1.0, max=30 * 86400.0, unit='s'),
    ParamSpec('normal_catch_up', 1.0, 'at FULL, held normal work is served at this multiple of the nominal '
              'normal rate on top of the arriving work', min=0.01, max=100.0, min_exclusive=False),
    ParamSpec('normal_guard_s', 60.0, 'held normal work is planned to be done this long (plus min_dwell_s) '
              'before its deadline', min=0.0, max=86400.0, unit='s'),
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
        carbon_price_per_t=v['carbon_price_per_t'],
        gate_mode=v['gate_mode'],
        normal_deadline_s=v['normal_deadline_s'],
        normal_catch_up=v['normal_catch_up'],
        normal_guard_s=v['normal_guard_s'])
