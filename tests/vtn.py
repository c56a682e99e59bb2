"""A real openleadr OpenADR 2.0b VTN on loopback, run in its own asyncio thread (test peer)."""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
from datetime import datetime, timedelta, timezone


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class LoopbackVtn:
    def __init__(self, ven_id: str = 'ven_site', poll_s: float = 0.5):
        from openleadr import OpenADRServer
        logging.getLogger('openleadr').setLevel(logging.ERROR)
        self.port, self.ven_id = free_port(), ven_id
        self.url = f'http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b'
        self.loop = asyncio.new_event_loop()
        self.server = OpenADRServer(vtn_id='CELLOS_TEST_VTN', http_host='127.0.0.1', http_port=self.port,
                                    requested_poll_freq=timedelta(seconds=poll_s), show_fingerprint=False)
        self.server.add_handler('on_create_party_registration', lambda info: (ven_id, 'reg-' + ven_id))
        self.opted: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name='vtn')
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.run(), self.loop).result(10)

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
