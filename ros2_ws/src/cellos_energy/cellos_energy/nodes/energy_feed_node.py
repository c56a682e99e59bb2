"""Site energy feed (one per site, e.g. /site): trace replay or OpenADR 2.0b VEN -> EnergySignal."""
from __future__ import annotations

import math
import os
import threading
import time

from cellos_interfaces.msg import EnergySignal as EnergySignalMsg
from cellos_interfaces.srv import SetEnergyOverride

from cellos_energy.core.energy_signal import (DR_SPECIAL, EnergySignal, Forecast, Override, apply_override,
                                              check_signal)
from cellos_energy.core.energy_trace import DayAhead, EnergyTrace, TraceError, TraceReplay
from cellos_energy.core.openadr_ven import VenEvents, VenThread
from cellos_energy.core.site_budget import check_weights, with_line_parts
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_energy.nodes.convert_energy import signal_to_msg
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, DiagReport
from cellos_common.nodes.operator_action import OperatorActions


class EnergyFeedNode(CellosNode):
    SPIN = 'single'    # no callback blocks
    PARAMS = [
        ParamSpec('site_id', 'site', 'site this feed speaks for'),
        ParamSpec('source', 'trace', 'where the signal comes from', choices=['trace', 'openadr']),
        ParamSpec('topic', 'energy_feed', 'EnergySignal topic (relative: under the node namespace)'),
        ParamSpec('publish_period_s', 1.0, 'heartbeat period of the latched signal', min=0.05, max=60.0,
                  unit='s'),
        ParamSpec('power_budget_w', 5000.0, 'site power available for AI compute, unless a source sets it',
                  min=0.0, max=1e8, unit='W'),
        ParamSpec('forecast_slots', 24, 'forecast slots published with each signal (at most)', min=0, max=1000),
        ParamSpec('forecast_mode', 'day_ahead', 'trace forecast: day_ahead: only the rows a day-ahead market '
                  'had published by then; rolling: the next forecast_slots rows', choices=['day_ahead', 'rolling']),
        ParamSpec('day_start_utc_h', 7.0, 'day-ahead market: UTC hour its trade day starts (CAISO: Pacific '
                  'midnight)', min=0.0, max=24.0, unit='h'),
        ParamSpec('publish_utc_h', 20.0, 'day-ahead market: UTC hour the next trade day\'s prices appear',
                  min=0.0, max=24.0, unit='h'),
        ParamSpec('line_ids', ['line1'], 'lines sharing the site power budget (a line not listed gets none)',
                  read_only=True),
        ParamSpec('line_weights', 1.0, "the line's weight: its part is budget x weight / sum of the weights",
                  keys='line_ids', min=0.0, max=1e6),
        ParamSpec('trace_file', '', 'CSV price/carbon trace (source trace): absolute, or relative to the '
                  'working directory; the bring-up passes the installed config/ trace'),
        ParamSpec('time_compression', 60.0, 'trace seconds replayed per real second', min=0.0,
                  max=1e7, min_exclusive=True),
        ParamSpec('start_row', 0, 'trace row the replay starts at', min=0, max=10_000_000),
        ParamSpec('vtn_url', 'http://127.0.0.1:8080/OpenADR2/Simple/2.0b', 'OpenADR 2.0b VTN endpoint'),
        ParamSpec('ven_name', 'cellos-site', 'VEN name registered at the VTN'),
        ParamSpec('ven_id', '', 'VEN id, empty: assigned by the VTN'),
        ParamSpec('openadr_price_per_mwh', 50.0, 'price when no ELECTRICITY_PRICE event is in force',
                  min=-2000.0, max=20000.0, unit='/MWh'),
        ParamSpec('openadr_carbon_g_per_kwh', 150.0, 'carbon intensity under openadr (2.0b has no carbon signal)',
                  min=0.0, max=2000.0, unit='g/kWh'),
        ParamSpec('openadr_forecast_step_s', 60.0, 'slot length for the forecast built from price intervals',
                  min=1.0, max=86400.0, unit='s'),
        ParamSpec('openadr_retry_s', 2.0, 'delay between registration attempts', min=0.1, max=600.0, unit='s'),
    ]

    def __init__(self, **kwargs):
        super().__init__('energy_feed', **kwargs)

    def check_params(self, p) -> None:
        reason = check_weights(list(p.line_ids), [p.line_weights[line] for line in p.line_ids])
        if reason is not None:
            raise ParameterError(f'line_weights: {reason}')
        try:
            DayAhead(p.day_start_utc_h, p.publish_utc_h)
        except TraceError as e:
            raise ParameterError(str(e)) from e
        self._lock = threading.Lock()
        self._ven: VenThread | None = None
        self._override: Override | None = None
        self._last: EnergySignal | None = None
        self._problem = ''
        self._published = 0
        self._live = False     # between activate and deactivate: the VEN thread may publish too

    # -- lifecycle ----------------------------------------------------------------------
    def configure(self) -> None:
        p = self.params
        self._replay = None
        if p.source == 'trace':
            if not p.trace_file:
                raise ParameterError("source 'trace' needs trace_file (a CSV of price and carbon per slot)")
            path = os.path.abspath(os.path.expanduser(p.trace_file))
            try:
                trace = EnergyTrace.load(path)
                self._replay = TraceReplay(trace, p.time_compression, p.start_row)
                self._day_ahead = DayAhead(p.day_start_utc_h, p.publish_utc_h) \
                    if p.forecast_mode == 'day_ahead' else None
            except TraceError as e:
                raise ParameterError(str(e)) from e
            self.get_logger().info(f'trace {trace.name}: {trace.rows} rows ({trace.days:.1f} days), '
                                   f'x{p.time_compression:g} -> one row every {self._replay.step_real_s:.2f} s')
        self._events = VenEvents()
        self._pub = self.create_publisher(EnergySignalMsg, p.topic, qos.latched_state())
        self._srv = self.create_service(SetEnergyOverride, 'set_override', self._on_override)
        self.actions = OperatorActions(self)
        self._timer = self.create_timer(p.publish_period_s, self.publish)
        self._timer.cancel()
        self.diagnostics.add('energy feed', self._diag)

    def activate(self) -> None:
        self._t0 = time.monotonic()
        self._live = True
        if self.params.source == 'openadr':
            self._ven = VenThread(self.params.ven_name, self.params.vtn_url, self._events,
                                  on_change=self.publish, retry_s=self.params.openadr_retry_s,
                                  log=self.get_logger().info, ven_id=self.params.ven_id or None)
            self._ven.start()
            self.get_logger().info(f'OpenADR VEN {self.params.ven_name} -> {self.params.vtn_url}')
        self._timer.reset()
        self.publish()

    def deactivate(self) -> None:
        with self._lock:
            self._live = False
        self._timer.cancel()
        if self._ven is not None:
            if not self._ven.stop():
                self.get_logger().error('VEN thread did not stop in 5 s')
            self._ven = None

    def cleanup(self) -> None:
        self.destroy_timer(self._timer)
        self.destroy_service(self._srv)
        self.actions.destroy()
        self.destroy_publisher(self._pub)

    # -- signal -------------------------------------------------------------------------
    def _from_trace(self, now: float) -> EnergySignal | None:
        point = self._replay.at(time.monotonic() - self._t0)
        tr = self._replay.trace
        return EnergySignal(
            site_id=self.params.site_id, source=f'trace:{tr.name}', stamp_s=now,
            data_time_s=point.data_time_s, price_per_mwh=tr.price_per_mwh[point.index],
            carbon_g_per_kwh=tr.carbon_g_per_kwh[point.index] if tr.carbon_g_per_kwh else 0.0,
            power_budget_w=self.params.power_budget_w,
            forecast=self._replay.forecast(point, self.params.forecast_slots, self._day_ahead))

    def _from_openadr(self, now: float) -> EnergySignal | None:
        ven = self._ven
        if ven is None or ven.last_contact_s is None:
            self._problem = f'VTN not reached yet: {ven.error if ven else "VEN not running"}'
            return None
        p = self.params
        snap = self._events.snapshot(now, p.openadr_forecast_step_s, p.forecast_slots)
        return EnergySignal(
            site_id=p.site_id, source=f'openadr:{p.vtn_url}', stamp_s=now, data_time_s=now,
            price_per_mwh=p.openadr_price_per_mwh if snap.price_per_mwh is None else snap.price_per_mwh,
            carbon_g_per_kwh=p.openadr_carbon_g_per_kwh,
            power_budget_w=p.power_budget_w if snap.power_budget_w is None else snap.power_budget_w,
            dr_level=snap.dr_level, dr_start_s=snap.dr_start_s, dr_end_s=snap.dr_end_s,
            dr_event_id=snap.dr_event_id, age_s=max(0.0, now - ven.last_contact_s),
            forecast=snap.forecast if snap.forecast.slots else Forecast())

    def publish(self) -> None:
        """Build and publish the current signal (timer, VEN thread and override service)."""
        with self._lock:
            if not self._live:
                return
            now = time.time()
            sig = self._from_trace(now) if self._replay is not None else self._from_openadr(now)
            if sig is None:
                return   # nothing to say: gates see the silence grow stale
            sig = apply_override(sig, self._override, now)
            p = self.params
            sig = with_line_parts(sig, p.line_ids, [p.line_weights[line] for line in p.line_ids])
            reason = check_signal(sig)
            if reason is not None:
                self._problem = f'source gave a bad signal, not published: {reason}'
                self.get_logger().warning(self._problem, throttle_duration_sec=5.0)
                return
            changed = self._last is None or (sig.dr_level, sig.price_per_mwh, sig.power_budget_w) != (
                self._last.dr_level, self._last.price_per_mwh, self._last.power_budget_w)
            if changed:
                self.get_logger().info(f'signal: {sig.price_per_mwh:.1f}/MWh {sig.carbon_g_per_kwh:.0f} g/kWh '
                                       f'budget {sig.power_budget_w:.0f} W DR {sig.dr_level} ({sig.source})')
            self._last, self._problem = sig, ''
            self._pub.publish(signal_to_msg(sig))
            self._published += 1

    def _on_override(self, req, resp):
        resp = self._apply_override(req, resp)
        self.actions.record('set_override', 'energy_override' if req.active else 'clear_energy_override',
                            target=self.params.site_id, reason=req.reason, request=req, success=resp.success,
                            message=resp.message)
        return resp

    def _apply_override(self, req, resp):
        if req.active and req.dr_level > DR_SPECIAL:
            resp.success, resp.message = False, f'dr_level {req.dr_level} is not one of 0..3'
            return resp
        if req.active and not (math.isfinite(req.power_budget_w) and math.isfinite(req.duration_s)):
            resp.success, resp.message = False, 'power_budget_w and duration_s must be finite'
            return resp
        now = time.time()
        with self._lock:
            if req.active:
                until = now + req.duration_s if req.duration_s > 0 else math.inf
                self._override = Override(req.dr_level, req.power_budget_w, until, req.reason or 'manual', now)
                resp.message = (f'override DR {req.dr_level}' + (f', budget {req.power_budget_w:.0f} W'
                                if req.power_budget_w > 0 else '') +
                                (f' for {req.duration_s:.0f} s' if req.duration_s > 0 else ' until cleared'))
            else:
                self._override = None
                resp.message = 'override cleared'
        resp.success = True
        self.get_logger().info(resp.message)
        self.publish()
        return resp

    def _diag(self) -> DiagReport:
        s = self._last
        values = {'source': self.params.source, 'published': self._published}
        if self._ven is not None:
            values.update(vtn=self.params.vtn_url, registered=self._ven.registered,
                          events_received=self._events.received, ven_error=self._ven.error or '-')
        if s is not None:
            values.update(price_per_mwh=s.price_per_mwh, carbon_g_per_kwh=s.carbon_g_per_kwh,
                          power_budget_w=s.power_budget_w, dr_level=s.dr_level, age_s=s.age_s)
        ov = self._override
        if ov is not None and time.time() < ov.until_s:
            values['override'] = f'DR {ov.dr_level}: {ov.reason}'
        if self._problem:
            return DiagReport(ERROR if s is None else WARN, self._problem, values)
        return DiagReport(OK, f'publishing from {self.params.source}', values)


def main(args=None):
    return main_for(EnergyFeedNode, args)
