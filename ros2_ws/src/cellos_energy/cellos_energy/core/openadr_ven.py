"""OpenADR 2.0b VEN (openleadr OpenADRClient) that turns VTN events into site signal values.

``VenEvents`` is the pure part: which events are in force and what they say (SIMPLE level ->
DR level, ELECTRICITY_PRICE -> price and its forecast, LOAD_DISPATCH setpoint (kW) -> compute
budget); it keeps at most MAX_EVENTS events of at most MAX_INTERVALS intervals each. ``VenThread``
runs the client's asyncio loop in its own thread beside rclpy, re-registers while the VTN is
unreachable, and stops cleanly: ``stop`` cancels whatever the client is waiting on (a
registration attempt, a poll) and joins the thread.

Over TLS (``VenTls``), as openleadr does it: mutual TLS (the VEN's certificate and key, the CA
that signed the VTN's server certificate, hostname checked) and every message from the VTN
checked against the VTN's certificate fingerprint (its XML signature); a message that fails is
dropped by openleadr, and only messages that passed count as contact with the VTN.
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from cellos_energy.core.energy_signal import DR_NONE, DR_SPECIAL, Forecast

SUPPORTED = {'SIMPLE': 'level', 'ELECTRICITY_PRICE': 'price', 'LOAD_DISPATCH': 'setpoint'}
MAX_EVENTS = 256         # events in force kept at once; more are refused (optOut) with a note
MAX_INTERVALS = 1000     # intervals of one signal
# openleadr's certificate fingerprint: the last 10 bytes of the SHA-256 of the DER certificate
_FINGERPRINT = re.compile(r'([0-9A-F]{2}:){9}[0-9A-F]{2}')


def _not_a_cancelled_job(record: logging.LogRecord) -> bool:
    """A poll in flight when the VEN stops is cancelled on purpose; apscheduler would log that as a
    job that raised (with a traceback). Every other job error is still logged.
    """
    return not (record.exc_info and record.exc_info[0] is asyncio.CancelledError)


logging.getLogger('apscheduler.executors.default').addFilter(_not_a_cancelled_job)


@dataclass(frozen=True)
class VenTls:
    """What a VEN needs to talk to its VTN over TLS (PEM files)."""

    ca_file: str            # CA that signed the VTN's server certificate
    cert_file: str          # this VEN's client certificate (the VTN knows its fingerprint)
    key_file: str           # this VEN's private key
    vtn_fingerprint: str    # the VTN's certificate fingerprint, 'AB:CD:...' (10 bytes)


def check_connection(vtn_url: str, tls: VenTls | None, allow_plain_http: bool) -> str | None:
    """None when the VEN may connect as configured, else the reason it may not."""
    scheme = urlparse(vtn_url).scheme
    if scheme not in ('http', 'https') or not urlparse(vtn_url).netloc:
        return f'vtn_url {vtn_url!r} is not an http(s) URL'
    if scheme == 'http':
        return None if allow_plain_http else (
            f'vtn_url {vtn_url} is plain HTTP: use https with the VTN fingerprint, or set allow_plain_http')
    if tls is None:
        return 'https needs vtn_ca_file, ven_cert_file, ven_key_file and vtn_fingerprint'
    for what, path in (('vtn_ca_file', tls.ca_file), ('ven_cert_file', tls.cert_file), ('ven_key_file', tls.key_file)):
        if not path:
            return f'https needs {what}'
        if not Path(path).is_file():
            return f'{what} {path} is not a readable file'
    if not _FINGERPRINT.fullmatch(tls.vtn_fingerprint.upper()):
        return (f'vtn_fingerprint {tls.vtn_fingerprint!r} is not a certificate fingerprint '
                "(10 hex bytes 'AB:CD:...', as openleadr prints it)")
    return None


@dataclass(frozen=True)
class Interval:
    start_s: float
    end_s: float      # inf for an open-ended interval
    value: float


@dataclass(frozen=True)
class VenEvent:
    event_id: str
    signal: str             # SIMPLE | ELECTRICITY_PRICE | LOAD_DISPATCH
    intervals: tuple[Interval, ...]

    @property
    def start_s(self) -> float:
        return self.intervals[0].start_s

    @property
    def end_s(self) -> float:
        return self.intervals[-1].end_s

    def value_at(self, t: float) -> float | None:
        for iv in self.intervals:
            if iv.start_s <= t < iv.end_s:
                return iv.value
        return None


def _epoch(dt: datetime) -> float:
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def parse_event(event: dict) -> tuple[list[VenEvent], str]:
    """openleadr's event dict -> the signals we act on, and a note on what was refused."""
    desc = event.get('event_descriptor', {})
    event_id = str(desc.get('event_id', ''))
    out, refused = [], []
    for sig in event.get('event_signals') or []:
        name = sig.get('signal_name', '')
        if name not in SUPPORTED:
            refused.append(f'signal {name!r} not supported')
            continue
        ivs = []
        if len(sig.get('intervals') or []) > MAX_INTERVALS:
            refused.append(f'{name}: more than {MAX_INTERVALS} intervals')
            continue
        for iv in sig.get('intervals') or []:
            try:
                start = _epoch(iv['dtstart'])
                dur = iv['duration'].total_seconds()
                value = float(iv['signal_payload'])
            except (KeyError, AttributeError, TypeError, ValueError) as e:
                refused.append(f'{name}: malformed interval ({e})')
                ivs = []
                break
            if name == 'SIMPLE' and not (DR_NONE <= value <= DR_SPECIAL and value == int(value)):
                refused.append(f'SIMPLE level {value} is not one of 0..3')
                ivs = []
                break
            ivs.append(Interval(start, start + dur if dur > 0 else float('inf'), value))
        if ivs:
            out.append(VenEvent(event_id, name, tuple(sorted(ivs, key=lambda i: i.start_s))))
    return out, '; '.join(refused)


@dataclass(frozen=True)
class VenSnapshot:
    dr_level: int
    dr_start_s: float
    dr_end_s: float
    dr_event_id: str
    price_per_mwh: float | None       # None: no price event in force
    power_budget_w: float | None      # None: no LOAD_DISPATCH in force
    forecast: Forecast


@dataclass
class VenEvents:
    """Events in force, keyed by event id; thread-safe (the VEN thread writes, ROS reads)."""

    events: dict[str, list[VenEvent]] = field(default_factory=dict)
    received: int = 0
    last_note: str = ''
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_event(self, event: dict) -> str:
        """Returns 'optIn' or 'optOut' (what the VEN answers the VTN)."""
        status = event.get('event_descriptor', {}).get('event_status', '')
        event_id = str(event.get('event_descriptor', {}).get('event_id', ''))
        parsed, note = parse_event(event)
        with self._lock:
            self.received += 1
            self.last_note = note
            if status in ('cancelled', 'completed'):
                self.events.pop(event_id, None)
                return 'optIn'
            if not parsed:
                return 'optOut'
            if event_id not in self.events and len(self.events) >= MAX_EVENTS:
                self.last_note = f'event {event_id[:64]} refused: {MAX_EVENTS} events in force already'
                return 'optOut'
            self.events[event_id] = parsed
        return 'optIn'

    def snapshot(self, now_s: float, forecast_step_s: float, forecast_slots: int) -> VenSnapshot:
        with self._lock:
            sigs = [s for evs in self.events.values() for s in evs if s.end_s > now_s]
            self.events = {k: v for k, v in self.events.items() if any(s.end_s > now_s for s in v)}
        dr = (DR_NONE, 0.0, 0.0, '')
        price = budget = None
        price_sig = None
        for s in sigs:
            v = s.value_at(now_s)
            if v is None:
                continue
            if s.signal == 'SIMPLE' and int(v) > dr[0]:
                dr = (int(v), s.start_s, s.end_s if s.end_s != float('inf') else 0.0, s.event_id)
            elif s.signal == 'ELECTRICITY_PRICE':
                price, price_sig = v, s
            elif s.signal == 'LOAD_DISPATCH':
                budget = v * 1000.0 if budget is None else min(budget, v * 1000.0)
        fc = Forecast()
        if price_sig is not None and forecast_step_s > 0:
            vals = []
            for i in range(forecast_slots):
                v = price_sig.value_at(now_s + i * forecast_step_s)
                if v is None:
                    break
                vals.append(v)
            fc = Forecast(forecast_step_s, 0.0, tuple(vals), ())
        return VenSnapshot(*dr, price, budget, fc)


class VenThread:
    """openleadr OpenADRClient in an asyncio loop on its own thread.

    ``last_contact_s`` is the monotonic time of the last message from the VTN that passed
    openleadr's checks (schema, and over TLS the fingerprint): the feed's freshness.
    ``on_change`` runs on the VEN thread after every event from the VTN.
    """

    def __init__(self, ven_name: str, vtn_url: str, events: VenEvents,
                 on_change: Callable[[], None] = lambda: None, retry_s: float = 2.0,
                 log: Callable[[str], None] = print, ven_id: str | None = None,
                 tls: VenTls | None = None, clock: Callable[[], float] = time.monotonic):
        self.ven_name, self.vtn_url, self.ven_id, self.tls = ven_name, vtn_url, ven_id, tls
        self.events, self.on_change, self.retry_s, self.log = events, on_change, retry_s, log
        self.clock = clock
        self.last_contact_s: float | None = None
        self.registered = False
        self.error = ''
        self.answers = 0          # messages received from the VTN
        self.accepted = 0         # of them, those that passed openleadr's checks
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name='openadr-ven', daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> bool:
        """Cancel the client (whatever it waits on) and join the thread; True when it ended in time."""
        with self._lock:
            self._stopping.set()
            if self._task is not None and self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._task.cancel)
                except RuntimeError:  # loop closed in between
                    pass
        if self._thread.ident is None:     # never started
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        logging.getLogger('openleadr').setLevel(logging.CRITICAL)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._lock:
            self._loop = loop
            self._task = loop.create_task(self._main())
            if self._stopping.is_set():
                self._task.cancel()
        self._ready.set()
        try:
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self.registered = False
            rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in rest:
                t.cancel()
            if rest:
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.close()

    def _client(self):
        from openleadr import OpenADRClient
        tls = self.tls
        client = OpenADRClient(ven_name=self.ven_name, vtn_url=self.vtn_url, ven_id=self.ven_id,
                               show_fingerprint=False,
                               **({'cert': tls.cert_file, 'key': tls.key_file, 'ca_file': tls.ca_file,
                                   'vtn_fingerprint': tls.vtn_fingerprint.upper()} if tls else {}))

        async def on_event(event):
            result = self.events.on_event(event)
            self.on_change()
            return result

        async def answered(*_):
            self.answers += 1

        async def accepted(*_):   # after the schema and (over TLS) the fingerprint check
            self.accepted += 1
            self.last_contact_s = self.clock()

        client.add_handler('on_event', on_event)
        client.add_handler('on_update_event', on_event)
        client.add_hook('after_receive_xml', answered)
        client.add_hook('after_parse_xml', accepted)
        return client

    async def _main(self) -> None:
        while not self._stopping.is_set():
            client = self._client()
            answers, accepted = self.answers, self.accepted
            try:
                try:
                    await client.run()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # aiohttp and ssl errors when the VTN is down or refuses us
                    self.error = f'{type(e).__name__}: {e}'
                self.registered = client.registration_id is not None
                if self.registered:
                    self.error = ''
                    self.log(f'VEN registered at {self.vtn_url} as {client.ven_id}')
                    self.on_change()
                    await asyncio.Event().wait()     # until stop() cancels this task
                if self.answers > answers and self.accepted == accepted:
                    self.error = (f'the VTN at {self.vtn_url} answered, but none of its messages passed the '
                                  + ('signature check against vtn_fingerprint ' + self.tls.vtn_fingerprint
                                     if self.tls else 'schema check'))
                else:
                    self.error = self.error or f'VTN at {self.vtn_url} did not register this VEN'
                await asyncio.sleep(self.retry_s)
            finally:
                self.registered = False
                # a poll in flight finishes before the session closes under it (apscheduler would log
                # the aborted request as a job that raised); one on loopback takes milliseconds
                polls = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == 'run_coroutine_job']
                if polls:
                    client.scheduler.pause()
                    await asyncio.wait(polls, timeout=2.0)
                try:
                    await client.stop()
                except Exception:  # the client session may never have opened
                    pass
