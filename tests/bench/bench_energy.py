"""BENCH energy: >= 7 days of the real CAISO trace through the real gate policy + deferral core,
gated vs ungated on the same work in the same run; gate latency over real DDS (feed -> gates).
"""
from __future__ import annotations

import statistics
import time

import yaml
from cellos_interfaces.msg import GateState
from cellos_interfaces.srv import SetEnergyOverride

from cellos_energy.core.deferral import DeferralQueue, DeferrableJob, ScoreCurve
from cellos_energy.core.energy_gate_policy import (POLICY_PARAMS, Action, GateMachine, TaskClass,
                                                   policy_from_values, task_decision)
from cellos_energy.core.energy_signal import EnergySignal
from cellos_energy.core.energy_trace import EnergyTrace, TraceReplay
from cellos_common.core.params import validate
from conftest import REPO, wait_for

DAYS = 14
COMPRESSION = 3600.0           # one trace hour per simulated second
DT = 300.0 / COMPRESSION       # 5 trace minutes per step
DWELL_TRACE_S = 1800.0         # the config's dwell is for real time; here 30 trace minutes
# work mix, kWh per trace hour: critical inspection, normal inference, deferrable batch jobs
CRITICAL_KW, NORMAL_KW = 2.0, 3.0
JOB_EVERY_H, JOB_KWH, JOB_H, JOB_DEADLINE_H = 6, 4.0, 1.0, 12.0


def gate_policy():
    cfg = yaml.safe_load((REPO / 'config' / 'energy.yaml').read_text())['/**/energy_gate']['ros__parameters']
    values = validate(POLICY_PARAMS, {k: v for k, v in cfg.items() if k in {s.name for s in POLICY_PARAMS}}).values
    values['min_dwell_s'] = DWELL_TRACE_S / COMPRESSION
    return policy_from_values(values)


def replay_cost():
    trace = EnergyTrace.load(REPO / 'config' / 'caiso_np15_2023-04_4weeks_hourly.csv')
    replay = TraceReplay(trace, COMPRESSION, loop=False)
    policy = gate_policy()
    machine, queue = GateMachine(policy, 0.0), DeferralQueue(policy)
    h = 1.0 / COMPRESSION * 3600.0               # one trace hour in simulated seconds
    step_h = DT / h
    cost = {'gated': 0.0, 'ungated': 0.0}
    carbon = {'gated': 0.0, 'ungated': 0.0}
    backlog_kwh, critical_misses, running = 0.0, 0, []
    deadlines, finished = {}, {}
    steps = int(DAYS * 24 / step_h)

    def spend(kind, kwh, i):
        cost[kind] += kwh * trace.price_per_mwh[i] / 1000.0
        carbon[kind] += kwh * trace.carbon_g_per_kwh[i] / 1000.0    # kg

    for k in range(steps):
        now = k * DT
        p = replay.at(now)
        i = p.index
        fc = replay.forecast(p, 24)
        machine.update(EnergySignal('site', 'trace', now, p.data_time_s, trace.price_per_mwh[i],
                                    trace.carbon_g_per_kwh[i], 5000.0, forecast=fc), now)
        level = machine.status.level
        curve = ScoreCurve.from_forecast(now, fc, policy.carbon_price_per_t)
        # critical: always, both runs
        if task_decision(level, TaskClass.CRITICAL, policy).action is not Action.RUN:
            critical_misses += 1
        spend('gated', CRITICAL_KW * step_h, i)
        spend('ungated', CRITICAL_KW * step_h, i)
        # normal: ungated runs as it comes; gated runs the admitted share, backlog catches up at FULL
        spend('ungated', NORMAL_KW * step_h, i)
        d = task_decision(level, TaskClass.NORMAL, policy)
        share = {Action.RUN: 1.0, Action.THROTTLE: d.share}.get(d.action, 0.0)
        backlog_kwh += NORMAL_KW * step_h * (1.0 - share)
        run = NORMAL_KW * step_h * share
        if d.action is Action.RUN:
            catch_up = min(backlog_kwh, NORMAL_KW * step_h)      # at most double rate
            backlog_kwh -= catch_up
            run += catch_up
        spend('gated', run, i)
        # deferrable: a job every JOB_EVERY_H; ungated runs at once
        if k % int(JOB_EVERY_H / step_h) == 0:
            job = DeferrableJob(f'job{k}', JOB_H * h, now + JOB_DEADLINE_H * h, now)
            ok, _, why = queue.submit(job, now, curve)
            assert ok, why
            deadlines[job.job_id] = job.latest_finish_s
            running.append(['ungated', job.job_id, now, JOB_H * h])
        for r in queue.tick(now, level, curve):
            running.append(['gated', r.job.job_id, now, r.job.duration_s])
        for run_ in running:
            kind, job_id, start, left = run_
            spend(kind, JOB_KWH / JOB_H * min(step_h, left / h), i)
            run_[3] = left - DT
            if run_[3] <= 1e-9 and kind == 'gated':
                finished[job_id] = now + DT
        running = [r for r in running if r[3] > 1e-9]
    last = replay.at((steps - 1) * DT).index
    spend('gated', backlog_kwh, last)              # same work: what is still backlogged runs at the end
    missed = len(queue.missed) + len(queue.pending) + sum(
        1 for j, t in finished.items() if t > deadlines[j] + 1e-6)
    return cost, carbon, critical_misses, missed, backlog_kwh, machine.changes, len(deadlines)


def gate_latency_ms(processes, ros_probe, rounds=6):
    """set_override on the feed (service) -> GateState level change at every gate process."""
    from cellos_common.nodes import qos
    cells = ['/line1/cell_0', '/line1/cell_1']
    processes.start('feed', 'energy_feed_node', namespace='/site',
                    params={'autostart': True, 'time_compression': 60.0, 'publish_period_s': 1.0})
    for ns in cells:
        processes.start(ns, 'energy_gate_node', namespace=ns,
                        params={'autostart': True, 'min_dwell_s': 0.0, 'check_period_s': 0.1})
    arrivals: dict[tuple[str, int], float] = {}
    for ns in cells:
        ros_probe.subscribe(GateState, f'{ns}/energy/gate', qos.latched_state(), key=ns,
                            callback=lambda m, ns=ns: arrivals.setdefault((ns, m.level), time.monotonic()))
    wait_for(lambda: all((ns, GateState.LEVEL_FULL) in arrivals for ns in cells), 30.0, what='gates FULL')
    samples = []
    for r in range(rounds):
        on = r % 2 == 0
        want = GateState.LEVEL_CRITICAL_ONLY if on else GateState.LEVEL_FULL
        for ns in cells:
            arrivals.pop((ns, want), None)
        t0 = time.monotonic()
        resp = ros_probe.call(SetEnergyOverride, '/site/set_override',
                              SetEnergyOverride.Request(active=on, dr_level=2, reason='bench'))
        assert resp.success, resp.message
        wait_for(lambda: all((ns, want) in arrivals for ns in cells), 10.0, what='gate change')
        samples += [(arrivals[(ns, want)] - t0) * 1000.0 for ns in cells]
    return statistics.median(samples), max(samples)


def test_bench_energy(processes, ros_probe):
    t0 = time.monotonic()
    cost, carbon, critical_misses, deferrable_misses, backlog, changes, jobs = replay_cost()
    cost_pct = 100.0 * (cost['ungated'] - cost['gated']) / cost['ungated']
    carbon_pct = 100.0 * (carbon['ungated'] - carbon['gated']) / carbon['ungated']
    replay_s = time.monotonic() - t0
    lat_med, lat_max = gate_latency_ms(processes, ros_probe)
    print(f'\ncost USD gated {cost["gated"]:.2f} ungated {cost["ungated"]:.2f}; carbon kg gated '
          f'{carbon["gated"]:.1f} ungated {carbon["ungated"]:.1f}; {jobs} deferrable jobs; gate level '
          f'changes {changes}; normal backlog run at end {backlog:.2f} kWh; replay {replay_s:.1f} s; '
          f'gate latency (override service call -> GateState at 2 gate processes) median {lat_med:.1f} ms '
          f'max {lat_max:.1f} ms')
    print(f'BENCH energy days={DAYS} cost_saved_pct={cost_pct:.2f} carbon_saved_pct={carbon_pct:.2f} '
          f'critical_misses={critical_misses} deferrable_misses={deferrable_misses} '
          f'gate_latency_ms={lat_med:.1f}')
    assert critical_misses == 0 and deferrable_misses == 0
