"""Energy feed and gates over real DDS, in their own processes:

1. OpenADR over TLS: the feed's VEN talks to a real openleadr VTN on loopback over mutual TLS,
   the VTN's messages checked against its certificate fingerprint; an event reaches the gates.
   A feed given the wrong fingerprint never publishes a signal (its gate stays at the safe
   level) and says why in its diagnostics; a feed given a plain-HTTP VTN without
   allow_plain_http does not come up.
2. A manual override survives SIGKILL of the feed: the restarted feed publishes it at once.
"""
from __future__ import annotations

import time

import pytest

from conftest import REPO, wait_for
from vtn import LoopbackVtn, make_pki

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from cellos_common.nodes import qos  # noqa: E402
from cellos_interfaces.msg import EnergySignal, GateState  # noqa: E402
from cellos_interfaces.srv import SetEnergyOverride  # noqa: E402

TRACE = str(REPO / 'config' / 'caiso_np15_2023-04_4weeks_hourly.csv')


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp('pki'))


def tls_params(pki, vtn, fingerprint):
    return {'autostart': True, 'source': 'openadr', 'vtn_url': vtn.url, 'ven_id': 'ven_site',
            'vtn_ca_file': pki.ca, 'ven_cert_file': pki.ven_cert, 'ven_key_file': pki.ven_key,
            'vtn_fingerprint': fingerprint, 'publish_period_s': 0.5, 'openadr_retry_s': 0.5}


def feed_status(probe, ns):
    for arr in reversed(probe.received('diag')):
        for s in arr.status:
            if s.name == f'{ns}/energy_feed: energy feed':
                return s
    return None


def test_openadr_over_tls_with_the_vtn_fingerprint(processes, ros_probe, pki):
    vtn = LoopbackVtn(pki=pki, poll_s=0.5)
    try:
        ros_probe.subscribe(EnergySignal, '/site/energy_feed', qos.latched_state(), key='good')
        ros_probe.subscribe(EnergySignal, '/rogue_site/energy_feed', qos.latched_state(), key='rogue')
        ros_probe.subscribe(GateState, '/line1/cell_01/energy/gate', qos.latched_state(), key='gate')
        ros_probe.subscribe(GateState, '/line1/cell_02/energy/gate', qos.latched_state(), key='rogue_gate')
        ros_probe.subscribe(DiagnosticArray, '/diagnostics', qos.diagnostics(), key='diag')
        processes.start('feed', 'energy_feed_node', namespace='/site',
                        params=tls_params(pki, vtn, pki.vtn_fingerprint))
        processes.start('rogue_feed', 'energy_feed_node', namespace='/rogue_site',
                        params=tls_params(pki, vtn, pki.rogue_fingerprint))
        processes.start('plain', 'energy_feed_node', namespace='/plain_site',
                        params={'autostart': True, 'source': 'openadr',
                                'vtn_url': vtn.url.replace('https:', 'http:')})
        gate = {'autostart': True, 'stale_after_s': 2.0, 'check_period_s': 0.1, 'min_dwell_s': 0.0, 'job_store': "''"}
        processes.start('gate', 'energy_gate_node', namespace='/line1/cell_01', params=gate)
        processes.start('rogue_gate', 'energy_gate_node', namespace='/line1/cell_02',
                        params={**gate, 'feed_topic': '/rogue_site/energy_feed'})

        wait_for(lambda: (g := ros_probe.received('gate')) and not g[-1].safe_fallback
                 and g[-1].level == GateState.LEVEL_FULL, 40.0, what='gate FULL from the TLS feed')
        sig = wait_for(lambda: (g := ros_probe.received('good')) and g[-1], 10.0,
                       what="the TLS feed's signal at the probe (the gate may hear it first)")
        assert sig.source.startswith('openadr:https://127.0.0.1')
        vtn.add_event('SIMPLE', 'level', 2.0)
        wait_for(lambda: ros_probe.received('gate')[-1].level == GateState.LEVEL_CRITICAL_ONLY, 15.0,
                 what='the VTN event through TLS to the gate')
        assert 'DR level 2' in ros_probe.received('gate')[-1].reason

        status = wait_for(lambda: (s := feed_status(ros_probe, '/rogue_site')) and 'signature check' in
                          {kv.key: kv.value for kv in s.values}.get('ven_error', '') and s, 20.0,
                          what='the wrong-fingerprint feed saying why')
        assert status.level != b'\x00'
        assert ros_probe.received('rogue') == [], 'a feed with the wrong fingerprint published a signal'
        rogue_gate = ros_probe.received('rogue_gate')[-1]
        assert rogue_gate.safe_fallback and rogue_gate.level == GateState.LEVEL_CRITICAL_ONLY

        wait_for(lambda: 'plain HTTP' in processes.log('plain'), 20.0, what='plain HTTP refused')
        assert 'autostart failed' in processes.log('plain')
        for key in ('feed', 'rogue_feed', 'plain', 'gate', 'rogue_gate'):
            assert processes.procs[key].poll() is None, f'{key} died'
        assert processes.stop('feed') == 0      # the VEN thread joined
        assert 'Traceback' not in processes.log('feed') + processes.log('rogue_feed')
    finally:
        vtn.close()


def test_a_manual_override_survives_sigkill_of_the_feed(processes, ros_probe, tmp_path):
    params = {'autostart': True, 'source': 'trace', 'trace_file': TRACE, 'publish_period_s': 0.2,
              'override_store': str(tmp_path / 'energy_override_{ns}.sqlite3')}
    ros_probe.subscribe(EnergySignal, '/site/energy_feed', qos.latched_state(), key='sig')
    processes.start('feed', 'energy_feed_node', namespace='/site', params=params)
    wait_for(lambda: ros_probe.received('sig'), 20.0, what='a signal from the trace feed')
    bad = ros_probe.call(SetEnergyOverride, '/site/set_override',
                         SetEnergyOverride.Request(active=True, dr_level=2, duration_s=float('nan')))
    assert not bad.success and 'finite' in bad.message
    ok = ros_probe.call(SetEnergyOverride, '/site/set_override',
                        SetEnergyOverride.Request(active=True, dr_level=2, power_budget_w=800.0,
                                                  reason='chiller trip'))
    assert ok.success, ok.message
    wait_for(lambda: (s := ros_probe.received('sig')[-1]).dr_level == 2 and s.power_budget_w == 800.0, 5.0,
             what='the override in the published signal')
    processes.kill('feed')
    ros_probe.clear('sig')
    t0 = time.monotonic()
    processes.start('feed2', 'energy_feed_node', namespace='/site', params=params)
    first = wait_for(lambda: ros_probe.received('sig'), 20.0, what='a signal from the restarted feed')[0]
    print(f'restarted feed: first signal {time.monotonic() - t0:.2f} s after the start')
    assert first.dr_level == 2 and first.power_budget_w == 800.0 and first.dr_event_id == 'manual:chiller trip'
    assert 'manual override restored' in processes.log('feed2')
    cleared = ros_probe.call(SetEnergyOverride, '/site/set_override', SetEnergyOverride.Request(active=False))
    assert cleared.success
    processes.kill('feed2')
    ros_probe.clear('sig')
    processes.start('feed3', 'energy_feed_node', namespace='/site', params=params)
    first = wait_for(lambda: ros_probe.received('sig'), 20.0, what='a signal after the cleared override')[0]
    assert first.dr_level == 0 and '+manual' not in first.source
    assert processes.stop('feed3') == 0
