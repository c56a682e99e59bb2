"""Site energy feed (one per site, e.g. /site): trace replay or OpenADR 2.0b VEN -> EnergySignal.

OpenADR runs over TLS with the VTN's certificate fingerprint checked (vtn_ca_file, ven_cert_file,
ven_key_file, vtn_fingerprint); plain HTTP only with allow_plain_http, and with a warning. The
VEN thread is started at activate and stopped (joined) at deactivate: a VEN that does not stop
keeps the node from activating again, so two never run. A manual override (set_override) is kept
in a SQLite file (override_store) and in force again after a restart of the feed, until it ends
or is cleared. The data age the feed publishes is measured on the monotonic clock.
"""
from __future__ import annotations

import math
import os
import threading
import time

from cellos_interfaces.msg import EnergySignal as EnergySignalMsg
from cellos_interfaces.srv import SetEnergyOverride

from cellos_energy.core.energy_signal import (EnergySignal, Forecast, Override, apply_override, check_signal,
                                              override_from_record, override_record)
from cellos_energy.core.energy_trace import DayAhead, EnergyTrace, TraceError, TraceReplay
from cellos_energy.core.openadr_ven import VenEvents, VenThread, VenTls, check_connection
from cellos_energy.core.site_budget import check_weights, with_line_parts
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.core.state_store import StateStore, StoreError, store_path
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_energy.nodes.convert_energy import BadRequest, override_from_request, signal_to_msg
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
        ParamSpec('vtn_url', 'https://127.0.0.1:8080/OpenADR2/Simple/2.0b', 'OpenADR 2.0b VTN endpoint (https; '
                  'http only with allow_plain_http)'),
        ParamSpec('vtn_ca_file', '', 'PEM file of the CA that signed the VTN\'s server certificate (https)'),
        ParamSpec('ven_cert_file', '', "PEM file of this VEN's client certificate (https; the VTN knows its "
                  'fingerprint)'),
        ParamSpec('ven_key_file', '', "PEM file of this VEN's private key (https)"),
        ParamSpec('vtn_fingerprint', '', "the VTN certificate's fingerprint (10 hex bytes 'AB:CD:...', as openleadr "
                  'prints it): a VTN message not signed with it is dropped (https)'),
        ParamSpec('allow_plain_http', False, 'allow an http:// vtn_url: no TLS, no fingerprint, anyone on the path '
                  'can forge demand-response events (a warning says so)'),
        ParamSpec('ven_name', 'cellos-site', 'VEN name registered at the VTN'),
        ParamSpec('ven_id', '', 'VEN id, empty: assigned by the VTN'),
        ParamSpec('openadr_price_per_mwh', 50.0, 'price when no ELECTRICITY_PRICE event is in force',
                  min=-2000.0, max=20000.0, unit='/MWh'),
        ParamSpec('openadr_carbon_g_per_kwh', 150.0, 'carbon intensity under openadr (2.0b has no carbon signal)',
                  min=0.0, max=2000.0, unit='g/kWh'),
        ParamSpec('openadr_forecast_step_s', 60.0, 'slot length for the forecast built from price intervals',
                  min=1.0, max=86400.0, unit='s'),
        ParamSpec('openadr_retry_s', 2.0, 'delay between registration attempts', min=0.1, max=600.0, unit='s'),
        ParamSpec('override_store', '', "SQLite file keeping a manual override across restarts ('{ns}': this "
                  "node's namespace; relative: to the working directory); empty: in memory, lost on a restart",
                  read_only=True),
    ]

    def __init__(self, **kwargs):
        super().__init__('energy_feed', **kwargs)
        self._lock = threading.Lock()
        self._ven: VenThread | None = None
        self._override: Override | None = None
        self._store: StateStore | None = None
        self._last: EnergySignal | None = None
        self._problem = ''
        self._published = 0
        self._live = False     # between activate and deactivate: the VEN thread may publish too

    def check_params(self, p) -> None:
        reason = check_weights(list(p.line_ids), [p.line_weights[line] for line in p.line_ids])
        if reason is not None:
            raise ParameterError(f'line_weights: {reason}')
        try:
            DayAhead(p.day_start_utc_h, p.publish_utc_h)
        except TraceError as e:
            raise ParameterError(str(e)) from e
        if p.source == 'openadr':
            reason = check_connection(p.vtn_url, self._tls(p), p.allow_plain_http)
            if reason is not None:
                raise ParameterError(reason)

    @staticmethod
    def _tls(p) -> VenTls | None:
        if not p.vtn_url.startswith('https:'):
            return None
        return VenTls(p.vtn_ca_file, p.ven_cert_file, p.ven_key_file, p.vtn_fingerprint)

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
        if p.source == 'openadr' and p.vtn_url.startswith('http:'):
            self.get_logger().warning(f'OpenADR over plain HTTP ({p.vtn_url}), allowed by allow_plain_http: no TLS, '
                                      'no VTN fingerprint; demand-response events can be forged on the path')
        self._restore_override(p)
        self._events = VenEvents()
        self._pub = self.create_publisher(EnergySignalMsg, p.topic, qos.latched_state())
        self._srv = self.create_service(SetEnergyOverride, 'set_override', self._on_override)
        self.actions = OperatorActions(self)
        self._timer = self.create_timer(p.publish_period_s, self.publish)
        self._timer.cancel()
        self.diagnostics.add('energy feed', self._diag)

    def activate(self) -> None:
        p = self.params
        if self._ven is not None:
            # the last deactivate could not stop it: a second VEN must never run beside it
            if self._ven.stop(timeout=5.0):
                self._ven = None
            else:
                raise RuntimeError('the previous OpenADR VEN thread is still running (it did not stop at '
                                   'deactivate): restart the feed process')
        self._t0 = time.monotonic()
        self._live = True
        if p.source == 'openadr':
            self._ven = VenThread(p.ven_name, p.vtn_url, self._events, on_change=self.publish,
                                  retry_s=p.openadr_retry_s, log=self.get_logger().info, ven_id=p.ven_id or None,
                                  tls=self._tls(p))
            self._ven.start()
            self.get_logger().info(f'OpenADR VEN {p.ven_name} -> {p.vtn_url}'
                                   + (f' (TLS, VTN fingerprint {p.vtn_fingerprint})' if self._ven.tls else ''))
        self._timer.reset()
        self.publish()

    def deactivate(self) -> None:
        with self._lock:
            self._live = False
        self._timer.cancel()
        if self._ven is not None:
            if self._ven.stop(timeout=5.0):
                self._ven = None
            else:   # kept: activate refuses to start a second one while it runs
                self.get_logger().error('VEN thread did not stop in 5 s')

    def cleanup(self) -> None:
        self.destroy_timer(self._timer)
        self.destroy_service(self._srv)
        self.actions.destroy()
        self.destroy_publisher(self._pub)
        if self._store is not None:
            self._store.close()
            self._store = None

    def _restore_override(self, p) -> None:
        try:
            self._store = StateStore(store_path(p.override_store, self.get_namespace()))
            saved = self._store.get('override')
        except StoreError as e:
            raise ParameterError(str(e)) from None
        if not self._store.durable:
            self.get_logger().warning('manual overrides in memory only (override_store is empty): lost on a restart')
            return
        self._override = None
        if saved is None:
            return
        try:
            ov = override_from_record(saved)
        except ValueError as e:
            self.get_logger().error(f'override in {self._store.path} not usable ({e}): none in force')
            return
        if time.time() >= ov.until_s:
            self.get_logger().info(f'override in {self._store.path} ended while the feed was down: none in force')
            self._store.delete('override')
            return
        self._override = ov
        self.get_logger().warning(f'manual override restored from {self._store.path}: DR {ov.dr_level}'
                                  + (f', budget {ov.power_budget_w:.0f} W' if ov.power_budget_w > 0 else '')
                                  + (f' until {ov.until_s:.0f}' if ov.until_s != math.inf else ' until cleared')
                                  + f' ({ov.reason})')

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
            dr_event_id=snap.dr_event_id, age_s=max(0.0, time.monotonic() - ven.last_contact_s),
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
        now = time.time()
        try:
            ov = override_from_request(req, now)
        except BadRequest as e:
            self.reject('set_override', str(e))
            resp.success, resp.message = False, str(e)
            return resp
        with self._lock:
            try:   # on disk before it is in force: a restart finds what the operator was told
                if ov is None:
                    self._store.delete('override')
                else:
                    self._store.put('override', override_record(ov))
            except StoreError as e:
                self.fault('override store', e)
                resp.success, resp.message = False, f'override not stored, not applied: {e}'
                return resp
            self._override = ov
        if ov is None:
            resp.message = 'override cleared'
        else:
            resp.message = (f'override DR {ov.dr_level}' + (f', budget {ov.power_budget_w:.0f} W'
                            if ov.power_budget_w > 0 else '') +
                            (f' for {req.duration_s:.0f} s' if req.duration_s > 0 else ' until cleared'))
        resp.success = True
        self.get_logger().info(resp.message)
        self.publish()
        return resp

    def _diag(self) -> DiagReport:
        s = self._last
        values = {'source': self.params.source, 'published': self._published}
        if self._ven is not None:
            values.update(vtn=self.params.vtn_url, registered=self._ven.registered, tls=self._ven.tls is not None,
                          events_received=self._events.received, vtn_messages=self._ven.answers,
                          vtn_messages_accepted=self._ven.accepted, ven_error=self._ven.error or '-')
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
