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
                    params={'autostart': True, 'source': 'openadr', 'vtn_url': vtn.url,
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
        assert 'DR level 2' in m.reason and m.cell_id == ns.strip('/')
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
