"""Test peers for the OpenADR VEN: a real openleadr VTN on loopback in its own asyncio thread,
plain HTTP or TLS, and the certificates TLS needs (a CA, the VTN's server and signing
certificate, the VEN's client certificate, and a rogue one), made with ``cryptography``.

Used by this package's tests and by the system tests (tests/vtn.py).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Pki:
    ca: str
    vtn_cert: str
    vtn_key: str
    ven_cert: str
    ven_key: str
    rogue_cert: str         # signed by the same CA, but not the VTN's
    rogue_key: str
    vtn_fingerprint: str    # openleadr's fingerprint of vtn_cert
    ven_fingerprint: str
    rogue_fingerprint: str


def make_pki(folder: Path) -> Pki:
    """A CA and three RSA certificates it signed: VTN (serverAuth, 127.0.0.1 / localhost), VEN
    (clientAuth) and a rogue VTN (serverAuth, same names).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from openleadr.utils import certificate_fingerprint

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc) - dt.timedelta(minutes=5)

    def key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem, cert, k):
        cert_path, key_path = folder / f'{stem}.crt', folder / f'{stem}.key'
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if k is not None:
            key_path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        return str(cert_path), str(key_path)

    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name('cellos test CA')).issuer_name(name('cellos test CA'))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_path, _ = write('ca', ca, None)

    def leaf(stem, cn, usage):
        k = key()
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now)
             .not_valid_after(now + dt.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
             .add_extension(x509.SubjectAlternativeName([x509.DNSName('localhost'),
                                                         x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                            critical=False))
        cert = b.sign(ca_key, hashes.SHA256())
        paths = write(stem, cert, k)
        return (*paths, certificate_fingerprint(Path(paths[0]).read_text()))

    vtn = leaf('vtn', 'cellos test VTN', ExtendedKeyUsageOID.SERVER_AUTH)
    ven = leaf('ven', 'cellos test VEN', ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue = leaf('rogue', 'cellos test VTN', ExtendedKeyUsageOID.SERVER_AUTH)
    return Pki(ca_path, vtn[0], vtn[1], ven[0], ven[1], rogue[0], rogue[1], vtn[2], ven[2], rogue[2])


class LoopbackVtn:
    """openleadr OpenADRServer on 127.0.0.1. With ``pki``: HTTPS with client certificates (the
    CA's), messages signed with ``cert``/``key`` (the VTN's, or the rogue's to play an impostor),
    the VEN known by its certificate fingerprint.
    """

    def __init__(self, ven_id: str = 'ven_site', poll_s: float = 0.5, pki: Pki | None = None,
                 sign_as: str = 'vtn'):
        from openleadr import OpenADRServer
        logging.getLogger('openleadr').setLevel(logging.CRITICAL)
        self.port, self.ven_id = free_port(), ven_id
        scheme = 'https' if pki else 'http'
        self.url = f'{scheme}://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b'
        self.registered = False
        self.loop = asyncio.new_event_loop()
        tls = {}
        if pki is not None:
            cert, key = (pki.vtn_cert, pki.vtn_key) if sign_as == 'vtn' else (pki.rogue_cert, pki.rogue_key)
            tls = dict(cert=cert, key=key, http_cert=cert, http_key=key, http_ca_file=pki.ca)
        # openleadr keeps the lookup on its service class: set it for every server, so one left by an
        # earlier server in this process never answers for this one
        self.server = OpenADRServer(vtn_id='CELLOS_TEST_VTN', http_host='127.0.0.1', http_port=self.port,
                                    requested_poll_freq=timedelta(seconds=poll_s), show_fingerprint=False,
                                    ven_lookup=self._lookup, **tls)
        self._ven_fingerprint = pki.ven_fingerprint if pki else None
        self.server.add_handler('on_create_party_registration', self._register)
        self.opted: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name='vtn', daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.run(), self.loop).result(10)

    def _register(self, info):
        if self._ven_fingerprint and info.get('fingerprint') != self._ven_fingerprint:
            return False
        self.registered = True
        return self.ven_id, 'reg-' + self.ven_id

    def _lookup(self, ven_id):
        if ven_id != self.ven_id:
            return {}
        return {'ven_id': ven_id, 'ven_name': 'cellos-site', 'fingerprint': self._ven_fingerprint,
                'registration_id': 'reg-' + ven_id if self.registered else None}

    def add_event(self, signal_name: str, signal_type: str, payload: float, minutes: float = 10) -> str:
        def cb(ven_id, event_id, opt_type):
            self.opted.append((event_id, opt_type))

        async def add():
            return self.server.add_event(
                ven_id=self.ven_id, signal_name=signal_name, signal_type=signal_type, callback=cb,
                intervals=[{'dtstart': datetime.now(timezone.utc), 'duration': timedelta(minutes=minutes),
                            'signal_payload': payload}])
        return asyncio.run_coroutine_threadsafe(add(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
