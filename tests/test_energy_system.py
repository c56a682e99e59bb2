"""Energy gating over real DDS: a real openleadr VTN on loopback -> energy_feed (openadr VEN,
own process) -> several energy_gate processes; then the feed dies and the gates go safe.
"""
from __future__ import annotations

import time

import pytest
from cellos_interfaces.msg import GateState

from conftest import wait_for
from vtn import LoopbackVtn

CELLS = ['/line1/cell_0', '/line1/cell_1', '/line1/cell_2']
STALE_S = 1.5
# bounds for a busy 2-core machine: they tell "the event / the loss acted" from "it did not"
EVENT_BOUND_S = 5.0      # VEN poll 0.5 s + feed publish + DDS + gate callback: about 1 s here
LOSS_BOUND_S = STALE_S + 3.5   # stale after 1.5 s without a feed message, checked every 0.1 s


@pytest.fixture
def vtn():
    server = LoopbackVtn(poll_s=0.5)
    yield server
    server.close()


def latest(probe, cell):
    msgs = probe.received(cell)
    return msgs[-1] if msgs else None


def test_vtn_event_gates_every_cell_and_feed_loss_gives_safe_level(processes, ros_probe, vtn):
    from cellos_common.nodes import qos
    processes.start('feed', 'energy_feed_node', namespace='/site',
                    params={'autostart': True, 'source': 'openadr', 'vtn_url': vtn.url, 'allow_plain_http': True,
                            'publish_period_s': 0.5, 'openadr_price_per_mwh': 40.0})
    for ns in CELLS:
        processes.start(ns, 'energy_gate_node', namespace=ns,
                        params={'autostart': True, 'stale_after_s': STALE_S, 'check_period_s': 0.1,
                                'min_dwell_s': 0.0})
    changes: dict[str, float] = {}

    def watch(cell):
        def cb(msg):
            if msg.level == GateState.LEVEL_CRITICAL_ONLY and not msg.safe_fallback and cell not in changes:
                changes[cell] = time.monotonic()
        return cb
    for ns in CELLS:
        ros_probe.subscribe(GateState, f'{ns}/energy/gate', qos.latched_state(), key=ns, callback=watch(ns))

    wait_for(lambda: all((m := latest(ros_probe, ns)) and m.level == GateState.LEVEL_FULL
                         and not m.safe_fallback for ns in CELLS), 60.0, what='every gate FULL from the VTN feed')

    t_event = time.monotonic()
    vtn.add_event('SIMPLE', 'level', 2.0)          # DR high -> CRITICAL_ONLY by the default policy
    wait_for(lambda: len(changes) == len(CELLS), 20.0, what='every gate CRITICAL_ONLY after the VTN event')
    latencies = {c: t - t_event for c, t in changes.items()}
    print(f'VTN event -> gate CRITICAL_ONLY latency s: {latencies}')
    assert max(latencies.values()) < EVENT_BOUND_S, latencies
    for ns in CELLS:
        m = latest(ros_probe, ns)
        assert 'DR level 2' in m.reason and f'/{m.line_id}/{m.cell_id}' == ns
    wait_for(lambda: vtn.opted, 15.0, what='the VEN answering the event')
    assert vtn.opted[0][1] == 'optIn'

    assert processes.stop('feed') == 0, processes.log('feed')   # Ctrl-C: VEN thread joined
    t_loss = time.monotonic()
    wait_for(lambda: all((m := latest(ros_probe, ns)) and m.safe_fallback for ns in CELLS),
             LOSS_BOUND_S + 5.0, what='every gate at the safe level after feed loss')
    took = time.monotonic() - t_loss
    print(f'feed stopped -> all gates safe level in {took:.2f} s (stale bound {STALE_S} s)')
    assert took < LOSS_BOUND_S
    for ns in CELLS:
        m = latest(ros_probe, ns)
        assert m.level == GateState.LEVEL_CRITICAL_ONLY and 'safe level' in m.reason and 'stale' in m.reason
    for ns in CELLS:
        assert processes.stop(ns) == 0, processes.log(ns)


SITE_W = 2000.0
LINES = {'/line1/cell_0': 'line1', '/line2/cell_0': 'line2', '/line3/cell_0': 'line3'}   # line3 has no weight
EXECUTORS = {'line1': '/line1/executor', 'line2': '/line2/executor'}
IDLE_W, BUSY_W = 20.0, 400.0


def executor_caps(probe):
    """power_cap_w of each line's executor, from its latest /diagnostics 'scheduling' status."""
    caps = {}
    for msg in probe.received('diag'):
        for st in msg.status:
            if st.name.endswith('scheduling') and st.hardware_id in EXECUTORS.values():
                values = {kv.key: kv.value for kv in st.values}
                if 'power_cap_w' in values:
                    caps[st.hardware_id] = float(values['power_cap_w'])
    return caps


def test_two_lines_share_one_site_budget_by_weight(processes, ros_probe):
    """One feed, lines 1 and 2 weighted 3:1 (line3 unlisted), each line's gate and executor in
    their own processes: every gate follows its line's part, every executor caps its power to
    it, and the parts never add up to more than the site budget, before and after it changes.
    """
    from diagnostic_msgs.msg import DiagnosticArray
    from cellos_common.nodes import qos
    from cellos_interfaces.srv import SetEnergyOverride
    from conftest import REPO
    processes.start('feed', 'energy_feed_node', namespace='/site',
                    params={'autostart': True, 'power_budget_w': SITE_W, 'line_ids': ['line1', 'line2'],
                            'line_weights.line1': 3.0, 'line_weights.line2': 1.0, 'publish_period_s': 0.5,
                            'trace_file': str(REPO / 'config' / 'caiso_np15_2023-04_4weeks_hourly.csv')})
    for ns in LINES:
        # thresholds far above the trace's prices: only the budget moves these gates
        processes.start(ns, 'energy_gate_node', namespace=ns,
                        params={'autostart': True, 'min_dwell_s': 0.0, 'check_period_s': 0.1,
                                'gate_mode': 'thresholds', 'price_thresholds_per_mwh': [1e4, 1.5e4, 2e4],
                                'carbon_thresholds_g_per_kwh': [1e3, 1.5e3, 2e3]})
    for line, fqn in EXECUTORS.items():
        processes.start(fqn, 'executor_node', namespace=f'/{line}',
                        params={'autostart': True, 'backend': 'onnxruntime', 'workers': 4, 'line_id': line,
                                'power_idle_w': IDLE_W, 'power_busy_w': BUSY_W, 'discover_cells': False})
    for ns in LINES:
        ros_probe.subscribe(GateState, f'{ns}/energy/gate', qos.latched_state(), key=ns)
    ros_probe.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), key='diag')

    def settled(parts, levels, caps):
        gates = {ns: latest(ros_probe, ns) for ns in LINES}
        if any(m is None or m.safe_fallback for m in gates.values()):
            return False
        got = {ns: (round(m.power_budget_w, 3), m.level) for ns, m in gates.items()}
        want = {ns: (parts[i], levels[i]) for i, ns in enumerate(LINES)}
        have_caps = executor_caps(ros_probe)
        return got == want and all(abs(have_caps.get(EXECUTORS[line], -1) - c) < 1e-3 for line, c in caps.items())

    # 2000 W: line1 1500 W (not below 1500: FULL), line2 500 W (< 600: CRITICAL_ONLY), line3 none;
    # executors: line1 3 streams x 400 W + 20 W = 1220 W, line2 1 stream = 420 W
    wait_for(lambda: settled((1500.0, 500.0, 0.0), (GateState.LEVEL_FULL, GateState.LEVEL_CRITICAL_ONLY,
                                                    GateState.LEVEL_CRITICAL_ONLY),
                             {'line1': 1220.0, 'line2': 420.0}), 45.0, what='line parts of 2000 W')
    m3 = latest(ros_probe, '/line3/cell_0')
    assert 'budget 0 W' in m3.reason
    assert 'budget 500 W' in latest(ros_probe, '/line2/cell_0').reason
    assert sum(latest(ros_probe, ns).power_budget_w for ns in LINES) <= SITE_W + 1e-6
    assert sum(executor_caps(ros_probe).values()) <= SITE_W

    # the site budget drops to 800 W (a manual override, as an OpenADR LOAD_DISPATCH would):
    # line1 600 W (ECO), line2 200 W; executors 1 stream (420 W) and a 45 % duty cycle (200 W)
    resp = ros_probe.call(SetEnergyOverride, '/site/set_override',
                          SetEnergyOverride.Request(active=True, dr_level=0, power_budget_w=800.0, reason='test'))
    assert resp.success, resp.message
    wait_for(lambda: settled((600.0, 200.0, 0.0), (GateState.LEVEL_ECO, GateState.LEVEL_CRITICAL_ONLY,
                                                   GateState.LEVEL_CRITICAL_ONLY),
                             {'line1': 420.0, 'line2': 200.0}), 45.0, what='line parts of 800 W')
    assert sum(latest(ros_probe, ns).power_budget_w for ns in LINES) <= 800.0 + 1e-6
    assert sum(executor_caps(ros_probe).values()) <= 800.0
    for key in [*LINES, *EXECUTORS.values()]:
        assert processes.stop(key) == 0, processes.log(key)
