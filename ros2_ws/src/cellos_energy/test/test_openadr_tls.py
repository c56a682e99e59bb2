"""The VEN against a real openleadr VTN on loopback: over TLS with the VTN's fingerprint checked,
an impostor or a wrong fingerprint refused, plain HTTP only when allowed, and a VEN thread that
always stops when asked (even while it waits on a VTN that does not answer).
"""
import time

import pytest

from cellos_energy.core.energy_signal import DR_HIGH
from cellos_energy.core.openadr_ven import VenEvents, VenThread, VenTls, check_connection
from loopback_vtn import LoopbackVtn, free_port, make_pki


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp('pki'))


def wait_until(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def ven(url, tls, **kw):
    events = VenEvents()
    v = VenThread('cellos-site', url, events, retry_s=0.3, log=lambda *_: None, ven_id='ven_site', tls=tls, **kw)
    v.start()
    return v, events


def test_tls_with_the_vtn_fingerprint_registers_and_takes_events(pki):
    vtn = LoopbackVtn(pki=pki, poll_s=0.3)
    v, events = ven(vtn.url, VenTls(pki.ca, pki.ven_cert, pki.ven_key, pki.vtn_fingerprint.lower()))
    try:
        assert wait_until(lambda: v.registered, 20.0), v.error
        assert v.last_contact_s is not None and v.accepted > 0 and v.error == ''
        assert abs(time.monotonic() - v.last_contact_s) < 5.0       # monotonic, not wall time
        vtn.add_event('SIMPLE', 'level', 2.0)
        assert wait_until(lambda: events.snapshot(time.time(), 60.0, 1).dr_level == DR_HIGH, 10.0)
        assert wait_until(lambda: vtn.opted, 5.0) and vtn.opted[0][1] == 'optIn'
    finally:
        t0 = time.monotonic()
        assert v.stop(5.0) and not v.alive
        assert time.monotonic() - t0 < 3.0
        vtn.close()


@pytest.mark.parametrize('case', ['wrong fingerprint', 'impostor VTN'])
def test_a_vtn_whose_messages_do_not_carry_the_fingerprint_is_refused(pki, case):
    vtn = LoopbackVtn(pki=pki, poll_s=0.3, sign_as='rogue' if case == 'impostor VTN' else 'vtn')
    expect = pki.rogue_fingerprint if case == 'wrong fingerprint' else pki.vtn_fingerprint
    v, _ = ven(vtn.url, VenTls(pki.ca, pki.ven_cert, pki.ven_key, expect))
    try:
        assert wait_until(lambda: 'signature check against vtn_fingerprint' in v.error, 20.0), v.error
        assert v.answers > 0 and v.accepted == 0
        assert not v.registered and v.last_contact_s is None        # never counted as contact: stays stale
    finally:
        assert v.stop(5.0)
        vtn.close()


def test_a_ven_without_tls_does_not_reach_a_tls_vtn(pki):
    vtn = LoopbackVtn(pki=pki)
    v, _ = ven(vtn.url.replace('https:', 'http:'), None)
    try:
        assert wait_until(lambda: v.error, 20.0)
        assert not v.registered and v.last_contact_s is None
    finally:
        assert v.stop(5.0)
        vtn.close()


def test_stop_is_prompt_while_the_vtn_does_not_answer():
    v, _ = ven(f'http://127.0.0.1:{free_port()}/OpenADR2/Simple/2.0b', None)
    v.retry_s = 60.0
    assert wait_until(lambda: v.error, 20.0)          # connection refused, now waiting to retry
    t0 = time.monotonic()
    assert v.stop(5.0) and not v.alive
    assert time.monotonic() - t0 < 2.0
    never = VenThread('x', 'http://127.0.0.1:1/', VenEvents())
    assert never.stop(1.0)                           # never started: nothing to wait for


def test_connection_rules(pki):
    tls = VenTls(pki.ca, pki.ven_cert, pki.ven_key, pki.vtn_fingerprint)
    https = 'https://vtn.example:8443/OpenADR2/Simple/2.0b'
    assert check_connection(https, tls, False) is None
    assert 'plain HTTP' in check_connection('http://vtn.example/OpenADR2/Simple/2.0b', None, False)
    assert check_connection('http://vtn.example/OpenADR2/Simple/2.0b', None, True) is None
    assert 'not an http(s) URL' in check_connection('ftp://x', None, True)
    assert 'https needs vtn_ca_file' in check_connection(https, None, False)
    assert 'https needs ven_key_file' in check_connection(https, VenTls(pki.ca, pki.ven_cert, '', 'x'), False)
    assert 'not a readable file' in check_connection(https, VenTls('/nonexistent.pem', pki.ven_cert, pki.ven_key,
                                                                   pki.vtn_fingerprint), False)
    assert 'not a certificate fingerprint' in check_connection(https, VenTls(pki.ca, pki.ven_cert, pki.ven_key,
                                                                             'sha256:abc'), False)
