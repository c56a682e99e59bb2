"""builtin_interfaces/Time <-> seconds as float: the one conversion every package uses."""
from __future__ import annotations

import math

from builtin_interfaces.msg import Time

MAX_SEC = 2**31 - 1   # Time.sec is int32


def time_to_s(t: Time) -> float:
    return t.sec + t.nanosec * 1e-9


def s_to_time(s: float) -> Time:
    """Seconds -> Time; 0 or less gives the zero Time ('not set'). Raises ValueError for a
    value that is not finite or past what Time can carry.
    """
    if not math.isfinite(s):
        raise ValueError(f'time {s!r} is not a finite number of seconds')
    if s <= 0:
        return Time()
    if s >= MAX_SEC:
        raise ValueError(f'time {s:.0f} s is beyond what builtin_interfaces/Time carries')
    sec = int(s)
    return Time(sec=sec, nanosec=min(999_999_999, int(round((s - sec) * 1e9))))
