"""OpenADR 2.0b VEN (openleadr OpenADRClient) that turns VTN events into site signal values.

``VenEvents`` is the pure part: which events are in force and what they say (SIMPLE level ->
DR level, ELECTRICITY_PRICE -> price and its forecast, LOAD_DISPATCH setpoint (kW) -> compute
budget). ``VenThread`` runs the client's asyncio loop in its own thread beside rclpy,
re-registers while the VTN is unreachable, and stops cleanly.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from cellos_energy.core.energy_signal import DR_NONE, DR_SPECIAL, Forecast

SUPPORTED = {'SIMPLE': 'level', 'ELECTRICITY_PRICE': 'price', 'LOAD_DISPATCH': 'setpoint'}


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

    ``last_contact_s`` is the wall time of the last message from the VTN (freshness).
    ``on_change`` runs on the VEN thread after every event from the VTN.
    """

    def __init__(self, ven_name: str, vtn_url: str, events: VenEvents,
                 on_change: Callable[[], None] = lambda: None, retry_s: float = 2.0,
                 log: Callable[[str], None] = print, ven_id: str | None = None):
        self.ven_name, self.vtn_url, self.ven_id = ven_name, vtn_url, ven_id
        self.events, self.on_change, self.retry_s, self.log = events, on_change, retry_s, log
        self.last_contact_s: float | None = None
        self.registered = False
        self.error = ''
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name='openadr-ven', daemon=False)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5.0)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the client and join the thread; True when it ended in time."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # loop already closed
                pass
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        logging.getLogger('openleadr').setLevel(logging.ERROR)
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        from openleadr import OpenADRClient
        self._stop = asyncio.Event()
        self._ready.set()
        while not self._stop.is_set():
            client = OpenADRClient(ven_name=self.ven_name, vtn_url=self.vtn_url, ven_id=self.ven_id,
                                   show_fingerprint=False)

            async def on_event(event):
                result = self.events.on_event(event)
                self.on_change()
                return result

            async def touched(*_):
                self.last_contact_s = time.time()

            client.add_handler('on_event', on_event)
            client.add_handler('on_update_event', on_event)
            client.add_hook('after_receive_xml', touched)
            try:
                await client.run()
            except Exception as e:  # aiohttp errors when the VTN is down
                self.error = f'{type(e).__name__}: {e}'
            self.registered = client.registration_id is not None
            if self.registered:
                self.error = ''
                self.log(f'VEN registered at {self.vtn_url} as {client.ven_id}')
                self.on_change()
                await self._stop.wait()
            else:
                self.error = self.error or f'VTN at {self.vtn_url} did not register this VEN'
                try:
                    await asyncio.wait_for(self._stop.wait(), self.retry_s)
                except asyncio.TimeoutError:
                    pass
            try:
                await client.stop()
            except Exception:  # the client session may never have opened
                pass
        self.registered = False
