"""A publisher a real-time thread can use without ever waiting on the middleware, as
ros2_control's realtime_tools::RealtimePublisher: the real-time thread only hands over what
to publish (``try_publish``: a few attribute writes under a lock it only tries to take), a
thread of its own fills the message and publishes it.

Why: a publish can block. Seen here: with a host's link cut, a UDP send blocked in
``publish()`` for 1.6 s, and a cycle thread that published itself stalled with it. Handed
over, the cycle keeps its schedule; the newest report replaces one not sent yet (counted).
"""
from __future__ import annotations

import threading
from typing import Callable

from cellos_common.core import realtime


class RealtimePublisher:
    def __init__(self, publisher, msg, fill: Callable[[object, object], None], name: str,
                 rt: realtime.Request | None = None):
        """``fill(msg, payload)`` runs on the publishing thread, right before the publish."""
        self._publisher, self._msg, self._fill = publisher, msg, fill
        self._rt = rt or realtime.Request()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._payload = None
        self.sent = 0
        self.replaced = 0       # payloads overwritten before they were sent (the publisher was busy)
        self.realtime: realtime.Result | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def try_publish(self, payload) -> bool:
        """Never blocks. False when the lock was busy (this payload is dropped) or an unsent
        payload was replaced.
        """
        if not self._lock.acquire(blocking=False):
            self.replaced += 1
            return False
        try:
            fresh = self._payload is None
            if not fresh:
                self.replaced += 1
            self._payload = payload
        finally:
            self._lock.release()
        self._ready.set()
        return fresh

    def _run(self) -> None:
        self.realtime = realtime.apply(self._rt)
        while True:
            self._ready.wait()
            if self._stop.is_set():
                break
            with self._lock:
                self._ready.clear()
                payload, self._payload = self._payload, None
            if payload is None:
                continue
            self._fill(self._msg, payload)
            self._publisher.publish(self._msg)
            self.sent += 1
        realtime.normal()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._ready.set()
        self._thread.join(timeout=timeout)
