"""What a node's boundaries (message callbacks, timers, service handlers, threads) count: the
inputs they refused and the exceptions they caught, with the log lines about them throttled.

A bad message is dropped with a reason (``reject``); an exception that escapes a callback is
caught at the boundary (``fault``). Both are counted per kind, the last reason is kept, and a
log line is due at most once per ``log_every_s`` per kind, saying how many more like it came in
between: a flood of forged messages costs a count, not a log line each.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

MAX_KINDS = 64         # distinct kinds kept by name; more are counted under OTHER
OTHER = '(other)'
MAX_REASON = 300       # characters of a reason kept and logged


def clip(text: str, n: int = MAX_REASON) -> str:
    """A reason as logged: one line, at most ``n`` characters (a forged string may be megabytes)."""
    text = ' '.join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + '...'


@dataclass
class _Kind:
    count: int = 0
    last_reason: str = ''
    last_at: float = float('-inf')
    logged_at: float = float('-inf')
    unlogged: int = 0


@dataclass
class Tally:
    """Thread-safe counts of rejected inputs and caught faults, by kind ('arbiter/result', 'timer _tick')."""

    log_every_s: float = 1.0
    recent_s: float = 60.0     # a fault this recent makes the node's boundary status ERROR
    clock: Callable[[], float] = time.monotonic
    _rejects: dict = field(default_factory=dict)
    _faults: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reject(self, kind: str, reason: str) -> str | None:
        """Count a refused input; return the log line when one is due, else None."""
        return self._count(self._rejects, kind, reason, 'rejected')

    def fault(self, kind: str, error: BaseException | str) -> str | None:
        """Count an exception caught at a boundary; return the log line when one is due."""
        text = error if isinstance(error, str) else f'{type(error).__name__}: {error}'
        return self._count(self._faults, kind, text, 'caught')

    def _count(self, table: dict, kind: str, reason: str, verb: str) -> str | None:
        now = self.clock()
        reason = clip(reason)
        with self._lock:
            if kind not in table and len(table) >= MAX_KINDS:
                kind = OTHER
            k = table.setdefault(kind, _Kind())
            k.count += 1
            k.last_reason, k.last_at = reason, now
            if now - k.logged_at < self.log_every_s:
                k.unlogged += 1
                return None
            more = f' (+{k.unlogged} more since the last line)' if k.unlogged else ''
            k.logged_at, k.unlogged = now, 0
        return f'{kind}: {verb} {reason}{more}'

    @property
    def rejected(self) -> int:
        with self._lock:
            return sum(k.count for k in self._rejects.values())

    @property
    def faults(self) -> int:
        with self._lock:
            return sum(k.count for k in self._faults.values())

    def rejected_by_kind(self) -> dict[str, int]:
        with self._lock:
            return {name: k.count for name, k in self._rejects.items()}

    def faults_by_kind(self) -> dict[str, int]:
        with self._lock:
            return {name: k.count for name, k in self._faults.items()}

    def last(self, faults: bool) -> tuple[str, str, float] | None:
        """(kind, reason, seconds ago) of the newest fault (or reject), or None."""
        now = self.clock()
        with self._lock:
            table = self._faults if faults else self._rejects
            if not table:
                return None
            name, k = max(table.items(), key=lambda kv: kv[1].last_at)
            return name, k.last_reason, now - k.last_at

    def recent_fault(self) -> bool:
        newest = self.last(faults=True)
        return newest is not None and newest[2] <= self.recent_s
