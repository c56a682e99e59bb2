"""The site energy signal: its value type, its validation and its staleness.

A signal that fails validation is rejected with a reason and the last good one is kept;
a signal older than a bound (by receive time plus the age it carried) is stale. Receive times
and ages are on the receiver's monotonic clock: a wall-clock step on the receiving host neither
freshens a dead feed nor ages a live one. The signal's stamps cross hosts and stay wall-clock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

DR_NONE, DR_MODERATE, DR_HIGH, DR_SPECIAL = 0, 1, 2, 3


@dataclass(frozen=True)
class Forecast:
    """Per-slot values from slot 0 (the current one); slot i starts at
    ``t0_s + i * step_s - offset_s`` where t0_s is the signal's stamp.
    """

    step_s: float = 0.0
    offset_s: float = 0.0
    price_per_mwh: tuple[float, ...] = ()
    carbon_g_per_kwh: tuple[float, ...] = ()

    @property
    def slots(self) -> int:
        return len(self.price_per_mwh) if self.step_s > 0 else 0

    def score(self, carbon_price_per_t: float) -> tuple[float, ...]:
        """Deferral objective per slot, currency per MWh: g/kWh equals kg/MWh."""
        carbon = self.carbon_g_per_kwh or (0.0,) * len(self.price_per_mwh)
        return tuple(p + carbon_price_per_t * c / 1000.0
                     for p, c in zip(self.price_per_mwh, carbon))


@dataclass(frozen=True)
class ScoreCurve:
    """Slot i covers [t0_s + i*step_s, t0_s + (i+1)*step_s)."""

    t0_s: float
    step_s: float
    scores: tuple[float, ...]

    @classmethod
    def from_forecast(cls, stamp_s: float, fc: Forecast, carbon_price_per_t: float) -> 'ScoreCurve':
        return cls(stamp_s - fc.offset_s, fc.step_s, fc.score(carbon_price_per_t))

    def _slot(self, t: float) -> int:
        return min(len(self.scores) - 1, max(0, int((t - self.t0_s) // self.step_s)))

    def mean(self, a: float, b: float) -> float:
        """Time-weighted mean score over [a, b]."""
        if not self.scores or self.step_s <= 0:
            return 0.0
        if b <= a:
            return self.scores[self._slot(a)]
        total, t, i = 0.0, a, self._slot(a)
        last = len(self.scores) - 1
        while t < b - 1e-12:
            # slot by slot, never the slot of the edge just reached: with a step that is not a binary
            # fraction, t0 + (i+1)*step can round to just below the edge and fall back into slot i
            end = b if i == last else min(b, self.t0_s + (i + 1) * self.step_s)
            total += self.scores[i] * max(0.0, end - t)
            t, i = max(t, end), i + 1
        return total / (b - a)

    def boundaries(self, a: float, b: float) -> list[float]:
        first = int((a - self.t0_s) // self.step_s) + 1
        last = min(len(self.scores) - 1, int((b - self.t0_s) // self.step_s))
        return [self.t0_s + i * self.step_s for i in range(max(first, 1), last + 1)]


@dataclass(frozen=True)
class EnergySignal:
    site_id: str
    source: str
    stamp_s: float                 # when the feed published (feed clock, epoch seconds)
    data_time_s: float             # time the values apply to (trace time for a replay)
    price_per_mwh: float
    carbon_g_per_kwh: float
    power_budget_w: float
    dr_level: int = DR_NONE
    dr_start_s: float = 0.0
    dr_end_s: float = 0.0
    dr_event_id: str = ''
    age_s: float = 0.0
    forecast: Forecast = field(default_factory=Forecast)
    # the site budget shared by lines (site_budget): each listed line's part; empty: not shared
    line_ids: tuple[str, ...] = ()
    line_budget_w: tuple[float, ...] = ()


@dataclass(frozen=True)
class SignalLimits:
    """Plausible ranges; outside them a value is a fault, not a price."""

    price_min_per_mwh: float = -2000.0
    price_max_per_mwh: float = 20000.0
    carbon_max_g_per_kwh: float = 2000.0
    budget_max_w: float = 1e8
    max_age_s: float = 3600.0
    max_forecast_slots: int = 2000      # a day-ahead at 5 min steps is 576
    min_forecast_step_s: float = 1e-3   # finer than any gate checks (check_period_s >= 10 ms)
    max_forecast_step_s: float = 86400.0
    max_lines: int = 64                 # lines sharing one site budget
    max_text: int = 256                 # characters of an id, a source or an event id
    max_skew_s: float = 600.0           # stamp vs the receiver's wall clock (hosts are NTP-synced)


def check_sizes(n_forecast: int, n_carbon: int, n_lines: int, n_line_budgets: int, texts: dict,
                limits: SignalLimits = SignalLimits()) -> str | None:
    """The size checks, cheap enough to run before a message's arrays are copied."""
    if max(n_forecast, n_carbon) > limits.max_forecast_slots:
        return f'forecast of {max(n_forecast, n_carbon)} slots (at most {limits.max_forecast_slots})'
    if max(n_lines, n_line_budgets) > limits.max_lines:
        return f'{max(n_lines, n_line_budgets)} line budgets (at most {limits.max_lines})'
    for name, text in texts.items():
        if len(text) > limits.max_text:
            return f'{name} is {len(text)} characters long (at most {limits.max_text})'
    return None


def check_signal(sig: EnergySignal, limits: SignalLimits = SignalLimits(), now_s: float | None = None) -> str | None:
    """None when the signal is usable, else the reason it is not. ``now_s``: the receiver's wall
    clock, to refuse a stamp further than max_skew_s from it.
    """
    sizes = check_sizes(len(sig.forecast.price_per_mwh), len(sig.forecast.carbon_g_per_kwh), len(sig.line_ids),
                        len(sig.line_budget_w), {'site_id': sig.site_id, 'source': sig.source,
                                                 'dr_event_id': sig.dr_event_id,
                                                 **{f'line id {i}': x for i, x in enumerate(sig.line_ids)}}, limits)
    if sizes is not None:
        return sizes
    numbers = {'price_per_mwh': sig.price_per_mwh, 'carbon_g_per_kwh': sig.carbon_g_per_kwh,
               'power_budget_w': sig.power_budget_w, 'age_s': sig.age_s, 'stamp_s': sig.stamp_s,
               'data_time_s': sig.data_time_s, 'dr_start_s': sig.dr_start_s, 'dr_end_s': sig.dr_end_s,
               'forecast_step_s': sig.forecast.step_s, 'forecast_offset_s': sig.forecast.offset_s}
    for name, v in numbers.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            return f'{name} is not a finite number ({v!r})'
    if now_s is not None and abs(sig.stamp_s - now_s) > limits.max_skew_s:
        return (f'stamp {sig.stamp_s - now_s:+.0f} s from this host\'s clock (at most {limits.max_skew_s:.0f} s: '
                'a clock step here or at the feed?)')
    if not limits.price_min_per_mwh <= sig.price_per_mwh <= limits.price_max_per_mwh:
        return (f'price_per_mwh {sig.price_per_mwh} outside '
                f'[{limits.price_min_per_mwh}, {limits.price_max_per_mwh}]')
    if not 0.0 <= sig.carbon_g_per_kwh <= limits.carbon_max_g_per_kwh:
        return f'carbon_g_per_kwh {sig.carbon_g_per_kwh} outside [0, {limits.carbon_max_g_per_kwh}]'
    if not 0.0 <= sig.power_budget_w <= limits.budget_max_w:
        return f'power_budget_w {sig.power_budget_w} outside [0, {limits.budget_max_w}]'
    if sig.dr_level not in (DR_NONE, DR_MODERATE, DR_HIGH, DR_SPECIAL):
        return f'dr_level {sig.dr_level} is not one of 0..3'
    if sig.dr_end_s and sig.dr_start_s and sig.dr_end_s < sig.dr_start_s:
        return f'DR window ends ({sig.dr_end_s}) before it starts ({sig.dr_start_s})'
    if not 0.0 <= sig.age_s <= limits.max_age_s:
        return f'age_s {sig.age_s} outside [0, {limits.max_age_s}]'
    if not sig.site_id:
        return 'empty site_id'
    if len(sig.line_ids) != len(sig.line_budget_w):
        return f'{len(sig.line_ids)} line id(s) but {len(sig.line_budget_w)} line budget(s)'
    if len(set(sig.line_ids)) != len(sig.line_ids):
        return f'line ids {list(sig.line_ids)} repeat'
    for lid, part in zip(sig.line_ids, sig.line_budget_w):
        if not (isinstance(part, (int, float)) and math.isfinite(part) and part >= 0):
            return f'line {lid} budget {part!r} is not a finite number >= 0'
    if sum(sig.line_budget_w) > sig.power_budget_w * (1 + 1e-9) + 1e-6:
        return (f'line budgets add up to {sum(sig.line_budget_w):.1f} W, over the site budget '
                f'{sig.power_budget_w:.1f} W')
    fc = sig.forecast
    if fc.price_per_mwh:
        if not (math.isfinite(fc.step_s) and limits.min_forecast_step_s <= fc.step_s <= limits.max_forecast_step_s):
            return (f'forecast step {fc.step_s!r} s must be in [{limits.min_forecast_step_s:g}, '
                    f'{limits.max_forecast_step_s:.0f}]')
        if not 0.0 <= fc.offset_s <= fc.step_s:
            return f'forecast offset {fc.offset_s} s outside [0, step]'
        if fc.carbon_g_per_kwh and len(fc.carbon_g_per_kwh) != len(fc.price_per_mwh):
            return 'forecast price and carbon differ in length'
        for p in fc.price_per_mwh:
            if not (math.isfinite(p) and limits.price_min_per_mwh <= p <= limits.price_max_per_mwh):
                return f'forecast price {p} out of range'
        for c in fc.carbon_g_per_kwh:
            if not (math.isfinite(c) and 0.0 <= c <= limits.carbon_max_g_per_kwh):
                return f'forecast carbon {c} out of range'
    return None


@dataclass
class SignalTracker:
    """Keeps the last good signal; rejects bad ones with a reason; knows when it is stale.
    Every ``now_s`` here is the receiver's monotonic clock.
    """

    stale_after_s: float
    limits: SignalLimits = field(default_factory=SignalLimits)
    last_good: EnergySignal | None = None
    received_at_s: float | None = None     # receiver's monotonic clock when last_good arrived
    last_rejection: str = ''
    accepted: int = 0
    rejected: int = 0

    def offer(self, sig: EnergySignal, now_s: float, wall_s: float | None = None) -> str | None:
        """Take a new signal; returns the rejection reason, or None when accepted. ``wall_s``:
        the receiver's wall clock, for the stamp check.
        """
        reason = check_signal(sig, self.limits, wall_s)
        if reason is not None:
            self.rejected += 1
            self.last_rejection = reason
            return reason
        self.last_good, self.received_at_s = sig, now_s
        self.accepted += 1
        return None

    def age_s(self, now_s: float) -> float:
        if self.last_good is None or self.received_at_s is None:
            return math.inf
        return max(0.0, now_s - self.received_at_s) + self.last_good.age_s

    def is_stale(self, now_s: float) -> bool:
        return self.age_s(now_s) > self.stale_after_s


@dataclass(frozen=True)
class Override:
    """Manual DR override from the site feed's set_override service."""

    dr_level: int
    power_budget_w: float      # <= 0: keep the source's budget
    until_s: float             # math.inf: until cleared
    reason: str
    since_s: float


MAX_OVERRIDE_S = 7 * 86400.0     # an override with a duration lasts at most a week


def make_override(dr_level: int, power_budget_w: float, duration_s: float, reason: str, now_s: float,
                  limits: SignalLimits = SignalLimits()) -> Override:
    """An operator's override, checked; ValueError with the reason. duration <= 0: until cleared;
    power budget <= 0: the source's.
    """
    if dr_level not in (DR_NONE, DR_MODERATE, DR_HIGH, DR_SPECIAL):
        raise ValueError(f'dr_level {dr_level} is not one of 0..3')
    if not (math.isfinite(power_budget_w) and math.isfinite(duration_s)):
        raise ValueError('power_budget_w and duration_s must be finite')
    if power_budget_w > limits.budget_max_w:
        raise ValueError(f'power_budget_w {power_budget_w:g} W above {limits.budget_max_w:g} W')
    if duration_s > MAX_OVERRIDE_S:
        raise ValueError(f'duration_s {duration_s:g} s longer than {MAX_OVERRIDE_S:.0f} s (clear it instead: '
                         'duration 0 holds until cleared)')
    if len(reason) > limits.max_text:
        raise ValueError(f'reason is {len(reason)} characters long (at most {limits.max_text})')
    until = now_s + duration_s if duration_s > 0 else math.inf
    return Override(int(dr_level), float(power_budget_w), until, reason or 'manual', now_s)


def override_record(ov: Override) -> dict:
    """An override as kept in a store (JSON: no infinity)."""
    return {'dr_level': ov.dr_level, 'power_budget_w': ov.power_budget_w,
            'until_s': None if math.isinf(ov.until_s) else ov.until_s, 'reason': ov.reason, 'since_s': ov.since_s}


def override_from_record(rec: dict) -> Override:
    """ValueError when the record is not one ``override_record`` wrote."""
    try:
        until = math.inf if rec['until_s'] is None else float(rec['until_s'])
        ov = make_override(int(rec['dr_level']), float(rec['power_budget_w']), 0.0, str(rec['reason']),
                           float(rec['since_s']))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f'override record unreadable: {type(e).__name__}: {e}') from None
    if not (until == math.inf or math.isfinite(until)):
        raise ValueError(f'override record ends at {until!r}')
    return replace(ov, until_s=until)


def apply_override(sig: EnergySignal, ov: Override | None, now_s: float) -> EnergySignal:
    """The source's signal with an active override laid over it (a higher DR level wins)."""
    if ov is None or now_s >= ov.until_s:
        return sig
    out = replace(sig, source=f'{sig.source}+manual',
                  dr_level=max(sig.dr_level, ov.dr_level) if ov.dr_level else sig.dr_level,
                  dr_event_id=f'manual:{ov.reason}' if ov.dr_level >= sig.dr_level else sig.dr_event_id)
    if ov.dr_level >= sig.dr_level:
        out = replace(out, dr_start_s=ov.since_s, dr_end_s=0.0 if math.isinf(ov.until_s) else ov.until_s)
    if ov.power_budget_w > 0:
        out = replace(out, power_budget_w=ov.power_budget_w)
    return out
