"""The clock a line node stamps with: the host's wall clock as it was when the node started,
carried on by the monotonic clock, so a step of the wall clock (an operator's `date -s`, an NTP
step, a VM resumed) changes nothing the node measures or schedules.

The line needs one clock per host that never jumps: the cell's cycle sleeps towards ticks on it,
the coordinator's lost-cell ages and the clock exchange's stamps are taken on it. So this clock
is the monotonic clock plus a base that follows the wall clock's slow changes (its rate against
the monotonic clock, slewing) at every ``check``, but not a step: a change of (wall - monotonic)
above STEP_NS between two checks is reported and not followed. The clock exchange keeps
estimating each cell's offset and rate from the coordinator, whatever the wall clocks say.
Stamps for people (message headers, logs) stay on the wall clock.
"""
from __future__ import annotations

import time
from typing import Callable

STEP_NS = 20_000_000   # a change of wall - monotonic between two checks above this is a step
READ_NS = 1_000_000    # the two readings of one comparison must lie this close (no preemption between)


class StampClock:
    def __init__(self, wall: Callable[[], int] = time.time_ns, mono: Callable[[], int] = time.monotonic_ns,
                 step_ns: int = STEP_NS):
        self._wall, self._mono, self._step_ns = wall, mono, step_ns
        self._base = self._wall() - self._mono()      # this clock = monotonic + base
        self._seen = self._base                       # wall - monotonic when last checked
        self.steps = 0
        self.last_step_ns = 0

    def now_ns(self) -> int:
        return self._mono() + self._base

    def wall_offset_ns(self) -> int:
        """Wall clock minus this clock: what the wall clock's steps have added up to."""
        return self._seen - self._base

    def check(self) -> int:
        """The wall clock's step since the last look (ns, + forward), or 0. Cheap: called
        every cycle or timer tick.
        """
        m0 = self._mono()
        w = self._wall()
        m1 = self._mono()
        if m1 - m0 > READ_NS:
            return 0   # preempted between the readings: judge at the next check
        step = w - (m0 + m1) // 2 - self._seen
        self._seen += step
        if abs(step) <= self._step_ns:
            self._base += step   # the wall clock's rate and slewing: followed, a little at each check
            return 0
        self.steps += 1
        self.last_step_ns = step
        return step

    def from_wall(self, wall_ns: int) -> int:
        """A wall-clock stamp taken on this host (a DDS reception stamp) on this clock."""
        if not wall_ns:
            return 0
        return wall_ns - (self._wall() - self._mono() - self._base)
