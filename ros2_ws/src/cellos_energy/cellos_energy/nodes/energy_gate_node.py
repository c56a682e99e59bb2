"""Energy gate (one per cell, namespace /<line>/<cell>): site signal -> the cell's GateState.

The signal's freshness and the latched state's heartbeat run on the monotonic clock (a backward
wall-clock step neither freshens a dead feed nor silences the gate); job deadlines, forecast
times and stamps cross hosts and stay wall-clock. Bad signals and bad DeferJob requests are
refused with the reason and counted (the 'boundary' diagnostics).

Deferred jobs (energy/defer) are kept in a SQLite store (core.job_store, path: job_store), so the
jobs waiting and their deadlines survive a restart of the gate: none lost, none released twice.
"""
from __future__ import annotations

import time
from collections import deque

from cellos_interfaces.msg import EnergySignal as EnergySignalMsg
from cellos_interfaces.msg import GateState as GateStateMsg
from cellos_interfaces.srv import DeferJob

from cellos_energy.core.deferral import DeferralQueue, ScoreCurve
from cellos_energy.core.energy_gate_policy import POLICY_PARAMS, GateLevel, GateMachine, policy_from_values
from cellos_energy.core.energy_signal import SignalTracker
from cellos_energy.core.job_store import JobStore
from cellos_energy.core.site_budget import for_line, line_part
from cellos_common.core.cell_names import split_cell_ns
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.core.state_store import StoreError, store_path
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_common.nodes.convert_time import s_to_time
from cellos_energy.nodes.convert_energy import BadRequest, gate_to_msg, job_from_request, signal_from_msg
from cellos_common.nodes.diagnostics import ERROR, OK, WARN, DiagReport


class EnergyGateNode(CellosNode):
    SPIN = 'single'    # no callback blocks
    PARAMS = [
        ParamSpec('line_id', '', "line whose part of the site power budget this gate follows; empty: the "
                  "line of the node's namespace (/line1/cell_01 -> line1)"),
        ParamSpec('feed_topic', '/site/energy_feed', 'site EnergySignal topic'),
        ParamSpec('gate_topic', 'energy/gate', 'GateState topic (relative: under the cell namespace)'),
        ParamSpec('stale_after_s', 5.0, 'signal older than this (receive time + its age) -> safe level',
                  min=0.1, max=86400.0, unit='s'),
        ParamSpec('check_period_s', 0.2, 'staleness / deferral check period', min=0.01, max=10.0, unit='s'),
        ParamSpec('republish_period_s', 1.0, 'heartbeat of the latched GateState', min=0.05, max=60.0, unit='s'),
        ParamSpec('deferral_margin_s', 1.0, 'slack kept before a deferrable job\'s latest start',
                  min=0.0, max=86400.0, unit='s'),
        ParamSpec('max_deferred_jobs', 1000, 'deferred-job queue capacity', min=1, max=100000),
        ParamSpec('job_store', 'log/state/deferred_jobs_{ns}.sqlite3', "SQLite file of the deferred jobs "
                  "('{ns}': this node's namespace, line1_cell_01; relative: to the working directory, the "
                  "workspace under make run); empty: in memory, not durable", read_only=True),
        *POLICY_PARAMS,
    ]

    def __init__(self, **kwargs):
        super().__init__('energy_gate', **kwargs)

    def check_params(self, params) -> None:
        try:
            policy_from_values(params)
        except ValueError as e:
            raise ParameterError(str(e)) from e

    def configure(self) -> None:
        p = self.params
        ns_line, self.cell_id = split_cell_ns(self.get_namespace())
        self.line_id = p.line_id or ns_line
        if not ns_line:
            raise ParameterError(f"a gate runs in its cell's namespace /<line>/<cell>, not {self.get_namespace()}")
        self.policy = policy_from_values(p)
        now = time.time()
        self.tracker = SignalTracker(p.stale_after_s)
        self.machine = GateMachine(self.policy, now)
        self.queue = DeferralQueue(self.policy, p.deferral_margin_s, p.max_deferred_jobs)
        self.curve: ScoreCurve | None = None
        self.released: deque[str] = deque(maxlen=32)
        try:
            self.store = JobStore(store_path(p.job_store, self.get_namespace()))
            restored = self.store.pending()
        except StoreError as e:
            raise ParameterError(str(e)) from None
        self.queue.pending.update({j.job_id: j for j in restored})
        self.released.extend(self.store.recent_released(self.released.maxlen))
        where = f'deferred jobs in {self.store.path}' + (f': {len(restored)} restored' if restored else '')
        if self.store.durable:   # rclpy wants one severity per call site
            self.get_logger().info(where)
        else:
            self.get_logger().warning(where + ' (NOT durable: lost on a restart)')
        self._last_pub = float('-inf')   # monotonic
        self._pub = self.create_publisher(GateStateMsg, p.gate_topic, qos.latched_state())
        self._sub = None
        self._srv = self.create_service(DeferJob, 'energy/defer', self._on_defer)
        self._timer = self.create_timer(p.check_period_s, self._tick)
        self._timer.cancel()
        self.diagnostics.add('energy gate', self._diag)

    def activate(self) -> None:
        self._sub = self.create_subscription(EnergySignalMsg, self.params.feed_topic, self._on_signal,
                                             qos.latched_state())
        self._timer.reset()
        self._publish(time.time(), time.monotonic())

    def deactivate(self) -> None:
        self._timer.cancel()
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None

    def cleanup(self) -> None:
        self.store.close()
        self.destroy_timer(self._timer)
        self.destroy_service(self._srv)
        self.destroy_publisher(self._pub)

    # -- signal and level ------------------------------------------------------------------
    def _on_signal(self, msg: EnergySignalMsg) -> None:
        now, mono = time.time(), time.monotonic()
        try:
            sig = signal_from_msg(msg)
        except BadRequest as e:
            self.tracker.rejected += 1
            self.tracker.last_rejection = str(e)
            self.reject('energy signal', f'{e}; keeping the last good one')
            return
        reason = self.tracker.offer(sig, mono, now)
        if reason is not None:
            self.reject('energy signal', f'from {sig.source[:64] or "?"}: {reason}; keeping the last good one')
            return
        if sig.forecast.slots:
            self.curve = ScoreCurve.from_forecast(sig.stamp_s, sig.forecast, self.policy.carbon_price_per_t)
        self._evaluate(now, mono)

    def _evaluate(self, now: float, mono: float) -> None:
        """``now``: wall clock (deadlines, forecast); ``mono``: monotonic (freshness, heartbeat)."""
        before = self.machine.status
        if self.tracker.is_stale(mono):
            age = self.tracker.age_s(mono)
            what = 'no signal received' if age == float('inf') else f'signal stale ({age:.1f} s old)'
            changed = self.machine.lost(f'{what} > {self.params.stale_after_s:.1f} s', now)
        else:
            changed = self.machine.update(for_line(self.tracker.last_good, self.line_id), now)
        status = self.machine.status
        if changed or status.safe_fallback != before.safe_fallback:
            text = f'gate {before.level.name} -> {status.level.name}: {status.reason}'
            if status.safe_fallback:
                self.get_logger().warning(text)
            else:
                self.get_logger().info(text)
        for r in self.queue.tick(now, status.level, self.curve, obligation=status.obligation):
            self.store.finish(r.job.job_id, 'released', now, r.reason)   # stored before it is announced
            self.released.append(r.job.job_id)
            self.get_logger().info(f'released deferred job {r.job.job_id}: {r.reason}')
            changed = True
        for r in self.queue.take_missed():
            self.store.finish(r.job.job_id, 'missed', now, r.reason)
            self.get_logger().error(f'deferred job {r.job.job_id}: {r.reason}')
        if changed or status.safe_fallback != before.safe_fallback or \
                mono - self._last_pub >= self.params.republish_period_s:
            self._publish(now, mono)

    def _tick(self) -> None:
        self._evaluate(time.time(), time.monotonic())

    def _publish(self, now: float, mono: float) -> None:
        nxt = self.queue.next_release_s()
        sig = self.tracker.last_good
        msg = gate_to_msg(self.line_id, self.cell_id, now, self.machine.status,
                          for_line(sig, self.line_id) if sig else None, self.tracker.age_s(mono), self.curve,
                          list(self.queue.pending),
                          list(self.released), max(0.0, nxt - now) if nxt is not None else 0.0)
        self._pub.publish(msg)
        self._last_pub = mono

    # -- deferred jobs ---------------------------------------------------------------------
    def _on_defer(self, req, resp):
        now = time.time()
        try:
            job = job_from_request(req, now)
        except BadRequest as e:
            self.reject('energy/defer', str(e))
            resp.accepted, resp.reason = False, str(e)
            return resp
        ok, plan, reason = self.queue.submit(job, now, self.curve)
        if ok:
            try:
                self.store.add(job)    # on disk before the answer says accepted
            except StoreError as e:
                self.queue.pending.pop(job.job_id, None)
                self.queue.plans.pop(job.job_id, None)
                ok, reason = False, str(e)
        resp.accepted, resp.reason = ok, reason
        if ok:
            resp.release_at = s_to_time(plan.start_s)
            self.get_logger().info(f'deferred job {job.job_id}: release in {plan.start_s - now:.1f} s ({reason})')
            self._evaluate(now, time.monotonic())
        else:
            self.reject('energy/defer', f'job {job.job_id}: {reason}')
        return resp

    def _diag(self) -> DiagReport:
        now = time.time()
        st = self.machine.status
        values = {'level': st.level.name, 'reason': st.reason, 'safe_fallback': st.safe_fallback,
                  'signal_age_s': self.tracker.age_s(time.monotonic()), 'accepted': self.tracker.accepted,
                  'rejected': self.tracker.rejected, 'last_rejection': self.tracker.last_rejection or '-',
                  'deferred_jobs': len(self.queue.pending), 'missed_jobs': self.queue.missed_count,
                  'level_changes': self.machine.changes, 'line_id': self.line_id,
                  'gate_mode': self.policy.gate_mode, 'normal_held_s': self.machine.held.total_s,
                  'normal_slack_s': self.machine.slack_s(now),
                  'plan': self.machine.plan.reason if self.machine.plan else '-'}
        oldest = self.machine.held.oldest_s()
        values['normal_oldest_age_s'] = now - oldest if oldest is not None else 0.0
        if self.tracker.last_good is not None:
            values['power_budget'] = line_part(self.tracker.last_good, self.line_id)[1]
        if st.safe_fallback:
            return DiagReport(ERROR, f'SAFE LEVEL {st.level.name}: {st.reason}', values)
        if st.level >= GateLevel.CRITICAL_ONLY or self.queue.missed_count:
            return DiagReport(WARN, f'{st.level.name}: {st.reason}', values)
        return DiagReport(OK, f'{st.level.name}: {st.reason}', values)


def main(args=None):
    return main_for(EnergyGateNode, args)
