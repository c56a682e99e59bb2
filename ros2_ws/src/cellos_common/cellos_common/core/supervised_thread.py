"""A worker thread whose death is noticed: the cell's cycle thread, the executor's workers.

``target(stop)`` runs until ``stop`` (a threading.Event) is set. If it raises, or returns while
nobody asked it to stop, that is a death: counted, reported through ``on_death`` (the node logs
it and its diagnostics say ERROR), and the target is run again after a backoff, at most
``max_restarts`` times within ``window_s``. Past that budget, or with ``restart=False``, the
thread is given up and ``on_fatal`` is called: a node makes its process exit non-zero there, so
its supervisor (launch respawn, the runner) starts it afresh. A worker never dies silently while
the rest of the node goes on as if it ran.

Adopting it (a node built on cellos_common.nodes.base.CellosNode)::

    def configure(self):
        self._worker = self.supervise('cycle', self._cycle_loop)      # restart=True by default
    def activate(self):
        self._worker.start()
    def deactivate(self):
        if not self._worker.stop(timeout=2.0):
            self.get_logger().error('cycle thread did not stop in 2 s')
    def _cycle_loop(self, stop: threading.Event):
        while not stop.is_set():
            ...  # one cycle; sleep with stop.wait(dt), not time.sleep, so stop() is prompt

The target must be safe to run again after it raised (re-take its locks, re-read its state).
"""
from __future__ import annotations

import threading
import time
import traceback
from typing import Callable


class SupervisedThread:
    def __init__(self, name: str, target: Callable[[threading.Event], None], *, restart: bool = True,
                 max_restarts: int = 3, window_s: float = 60.0, backoff_s: float = 0.2,
                 max_backoff_s: float = 5.0,
                 on_death: Callable[[str, str, bool], None] | None = None,
                 on_fatal: Callable[[str, str], None] | None = None,
                 daemon: bool = True, clock: Callable[[], float] = time.monotonic):
        if max_restarts < 0 or window_s <= 0 or backoff_s < 0:
            raise ValueError('max_restarts >= 0, window_s > 0 and backoff_s >= 0')
        self.name, self.target = name, target
        self.restart, self.max_restarts, self.window_s = restart, max_restarts, window_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.on_death = on_death or (lambda name, error, restarting: None)
        self.on_fatal = on_fatal or (lambda name, reason: None)
        self.daemon, self.clock = daemon, clock
        self.deaths = 0
        self.restarts = 0
        self.last_error = ''
        self.last_death_at: float | None = None
        self.fatal: str | None = None      # why it was given up
        self._recent: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control --------------------------------------------------------------------------
    def start(self) -> None:
        """Start (again after a stop()); a thread still running is left as it is."""
        if self.alive:
            return
        self._stop = threading.Event()
        self.fatal = None
        self._recent = []
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=self.name,
                                        daemon=self.daemon)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the target to stop and wait; True when the thread ended within ``timeout``."""
        self._stop.set()
        t = self._thread
        if t is None or t is threading.current_thread():
            return True
        t.join(timeout)
        return not t.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- supervision ----------------------------------------------------------------------
    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.target(stop)
                if stop.is_set():
                    return
                error = 'returned while it was meant to run'
            except BaseException as e:  # noqa: B902 - a worker's death of any kind is reported
                if stop.is_set():
                    return
                frames = traceback.extract_tb(e.__traceback__)
                where = f' at {frames[-1].filename.rsplit("/", 1)[-1]}:{frames[-1].lineno}' if frames else ''
                error = f'{type(e).__name__}: {e}{where}'
            if not self._died(error):
                return
            if stop.wait(self._backoff()):
                return
            self.restarts += 1

    def _died(self, error: str) -> bool:
        """Count a death; True when the target is to run again."""
        now = self.clock()
        self.deaths += 1
        self.last_error, self.last_death_at = error, now
        self._recent = [t for t in self._recent if now - t <= self.window_s] + [now]
        again = self.restart and len(self._recent) <= self.max_restarts
        try:
            self.on_death(self.name, error, again)
        finally:
            if not again:
                self.fatal = (f'died {len(self._recent)} times within {self.window_s:g} s, last: {error}'
                              if self.restart else f'died: {error}')
                self.on_fatal(self.name, self.fatal)
        return again

    def _backoff(self) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** max(0, len(self._recent) - 1))

    def health(self, recent_s: float = 60.0) -> tuple[bool, str]:
        """(healthy, text): unhealthy while given up, or within ``recent_s`` of a death."""
        if self.fatal:
            return False, f'{self.name} thread given up: {self.fatal}'
        if self.last_death_at is not None and self.clock() - self.last_death_at <= recent_s:
            return False, (f'{self.name} thread died {self.deaths} time(s), restarted '
                           f'{self.restarts}; last: {self.last_error}')
        if self._thread is not None and not self.alive and not self._stop.is_set():
            return False, f'{self.name} thread is not running'
        return True, f'{self.name} thread ' + ('running' if self.alive else 'stopped') + (
            f' ({self.deaths} earlier death(s))' if self.deaths else '')
