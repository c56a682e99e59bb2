"""EnergySignal / GateState / DeferJob / SetEnergyOverride messages <-> the energy core types
(the one place), with the checks on what comes in: a signal's sizes before its arrays are copied
(its values are judged by energy_signal.check_signal when offered), a deferred job and an
override request by the core's rules (BadRequest with the reason).
"""
from __future__ import annotations

from cellos_common.core.cell_names import cell_ns
from cellos_common.nodes.convert_time import s_to_time, time_to_s
from cellos_interfaces.msg import EnergySignal as EnergySignalMsg
from cellos_interfaces.msg import GateState as GateStateMsg

from cellos_energy.core.deferral import DeferrableJob, check_job
from cellos_energy.core.energy_gate_policy import GateStatus
from cellos_energy.core.energy_signal import EnergySignal, Forecast, Override, ScoreCurve, check_sizes, make_override


class BadRequest(ValueError):
    """A message or service request refused, with the reason."""


def signal_to_msg(sig: EnergySignal) -> EnergySignalMsg:
    m = EnergySignalMsg()
    m.header.stamp = s_to_time(sig.stamp_s)
    m.header.frame_id = sig.site_id
    m.site_id, m.source = sig.site_id, sig.source
    m.data_time = s_to_time(sig.data_time_s)
    m.price_per_mwh = float(sig.price_per_mwh)
    m.carbon_g_per_kwh = float(sig.carbon_g_per_kwh)
    m.power_budget_w = float(sig.power_budget_w)
    m.dr_level = int(sig.dr_level)
    m.dr_start, m.dr_end = s_to_time(sig.dr_start_s), s_to_time(sig.dr_end_s)
    m.dr_event_id = sig.dr_event_id
    m.age_s = float(sig.age_s)
    fc = sig.forecast
    m.forecast_step_s, m.forecast_offset_s = float(fc.step_s), float(fc.offset_s)
    m.forecast_price_per_mwh = [float(x) for x in fc.price_per_mwh]
    m.forecast_carbon_g_per_kwh = [float(x) for x in fc.carbon_g_per_kwh]
    m.line_ids = list(sig.line_ids)
    m.line_power_budget_w = [float(x) for x in sig.line_budget_w]
    return m


def signal_from_msg(m: EnergySignalMsg) -> EnergySignal:
    """BadRequest for a message too large to take (forecast, lines, ids); the values are checked
    when the signal is offered to the tracker.
    """
    reason = check_sizes(len(m.forecast_price_per_mwh), len(m.forecast_carbon_g_per_kwh), len(m.line_ids),
                         len(m.line_power_budget_w),
                         {'site_id': m.site_id, 'source': m.source, 'dr_event_id': m.dr_event_id,
                          **{f'line id {i}': x for i, x in enumerate(m.line_ids)}})
    if reason is not None:
        raise BadRequest(reason)
    return EnergySignal(
        site_id=m.site_id, source=m.source, stamp_s=time_to_s(m.header.stamp),
        data_time_s=time_to_s(m.data_time), price_per_mwh=m.price_per_mwh,
        carbon_g_per_kwh=m.carbon_g_per_kwh, power_budget_w=m.power_budget_w,
        dr_level=m.dr_level, dr_start_s=time_to_s(m.dr_start), dr_end_s=time_to_s(m.dr_end),
        dr_event_id=m.dr_event_id, age_s=m.age_s,
        forecast=Forecast(m.forecast_step_s, m.forecast_offset_s,
                          tuple(m.forecast_price_per_mwh), tuple(m.forecast_carbon_g_per_kwh)),
        line_ids=tuple(m.line_ids), line_budget_w=tuple(m.line_power_budget_w))


def gate_to_msg(line_id: str, cell_id: str, stamp_s: float, status: GateStatus, sig: EnergySignal | None,
                signal_age_s: float, curve: ScoreCurve | None,
                deferred: list[str], released: list[str], next_window_s: float) -> GateStateMsg:
    m = GateStateMsg()
    m.header.stamp = s_to_time(stamp_s)
    m.header.frame_id = cell_ns(line_id, cell_id)
    m.line_id, m.cell_id = line_id, cell_id
    m.level = int(status.level)
    m.reason = status.reason
    m.safe_fallback = status.safe_fallback
    m.signal_age_s = float(signal_age_s) if signal_age_s != float('inf') else -1.0
    if sig is not None:
        m.price_per_mwh, m.carbon_g_per_kwh = float(sig.price_per_mwh), float(sig.carbon_g_per_kwh)
        m.power_budget_w = float(sig.power_budget_w)
    m.deferred_jobs = len(deferred)
    m.next_window_s = float(next_window_s)
    if curve is not None:
        m.forecast_step_s = float(curve.step_s)
        m.forecast_offset_s = float(max(0.0, stamp_s - curve.t0_s) % curve.step_s) if curve.step_s > 0 else 0.0
        first = int(max(0.0, stamp_s - curve.t0_s) // curve.step_s) if curve.step_s > 0 else 0
        m.forecast_score_per_mwh = [float(x) for x in curve.scores[first:]]
    m.deferred_job_ids = list(deferred)
    m.released_job_ids = list(released)
    return m


def gate_curve_from_msg(m: GateStateMsg) -> ScoreCurve | None:
    """The deferral objective a GateState carries (for the arbiter's own planning)."""
    if m.forecast_step_s <= 0 or not m.forecast_score_per_mwh:
        return None
    return ScoreCurve(time_to_s(m.header.stamp) - m.forecast_offset_s, m.forecast_step_s,
                      tuple(m.forecast_score_per_mwh))


def job_from_request(req, now_s: float) -> DeferrableJob:
    """A DeferJob request -> the job to queue; BadRequest (NaN, inf, negative or huge duration,
    an empty, long or unprintable id, a deadline past the horizon).
    """
    latest = time_to_s(req.latest_finish)
    reason = check_job(req.job_id, req.duration_s, latest, now_s)
    if reason is not None:
        raise BadRequest(reason)
    return DeferrableJob(req.job_id, float(req.duration_s), latest, now_s)


def override_from_request(req, now_s: float) -> Override | None:
    """A SetEnergyOverride request -> the override (None: clear it); BadRequest with the reason."""
    if not req.active:
        return None
    try:
        return make_override(req.dr_level, req.power_budget_w, req.duration_s, req.reason, now_s)
    except ValueError as e:
        raise BadRequest(str(e)) from None
