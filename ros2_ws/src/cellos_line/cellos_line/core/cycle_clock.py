"""A cell's periodic cycle, phase-locked to the line schedule the coordinator sends.

The coordinator expresses the schedule on the cell's own clock (anchor + k * period), so the
cell measures its phase error locally every cycle, without loop delay, and slews towards the
schedule by at most ``max_slew`` per cycle: a small correction never skips or repeats a cycle
(a commanded re-sync jumps to the nearest tick). If corrections stop, the cell keeps the last
schedule and period (free-running) and re-locks when they return.

A stall is different: a cycle thread that wakes more than a period after its intended start
(a GC pause, swap, a frozen VM, SIGSTOP) skips every tick it missed, counts them, and starts
its next cycle on the next tick of the schedule. It never runs the missed cycles late: each
cycle is a tick that vision and the plant act on, and a burst of them is a burst of work.

Lock is judged here, and only here (the coordinator reports what the cell says): the cell is
locked while the median of its last cycle starts' |error| against the schedule is within
``lock_threshold_ns`` (twice that to stay locked, so one late wake-up does not unlock it),
judged over at least ``lock_cycles`` cycles since the last disturbance (first schedule, a
re-sync or relabel, a stall, free-running).
All times are nanoseconds on the cell's clock.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from cellos_line.core.clock_sync import CellExchange
from cellos_line.core.schedule import Schedule, wrap


class CycleState(IntEnum):
    # values are CellCycle.STATE_*
    STARTING = 0
    LOCKING = 1
    LOCKED = 2
    FREE_RUNNING = 3
    HELD = 4


class Command(IntEnum):
    # values are PhaseCorrection.COMMAND_*
    NONE = 0
    HOLD = 1
    RELEASE = 2
    RESYNC = 3


LOCK_WINDOW = 5   # cycle starts in the lock median


@dataclass(frozen=True)
class CycleConfig:
    period_ns: int
    max_slew_fraction: float = 0.1       # of the period, per cycle
    lock_threshold_ns: int = 1_000_000
    lock_cycles: int = 3                 # cycles on the schedule since a disturbance before LOCKED
    coordinator_timeout_ns: int = 300_000_000
    latency_step_ns: int = 5_000         # step of the wake-up latency (median) tracker

    def __post_init__(self):
        if self.period_ns <= 0:
            raise ValueError(f'period must be > 0, got {self.period_ns} ns')
        if not 0.0 < self.max_slew_fraction < 0.5:
            raise ValueError(f'max_slew_fraction must be in (0, 0.5), got {self.max_slew_fraction}')


class CycleClock:
    def __init__(self, config: CycleConfig, now_ns: int):
        self.config = config
        self.period_ns = config.period_ns
        self.schedule: Schedule | None = None
        self.index = 0
        self.intended_ns = now_ns
        self.error_ns = 0              # intended start minus its schedule tick
        self.held = False
        self.hold_reason = ''
        self.free_running = False
        self.locked = False
        self.missed_cycles = 0
        self.stalls = 0
        self.exchange = CellExchange()
        self._resync = False
        self._errors: deque = deque(maxlen=max(LOCK_WINDOW, config.lock_cycles))
        self._since_disturbance = 0
        self._last_correction_ns: int | None = None
        self._wake_latency_ns = 0.0

    # -- inputs ---------------------------------------------------------------------------
    def on_correction(self, anchor_ns: int, anchor_index: int, period_ns: int,
                      command: int, now_ns: int, reason: str = '') -> None:
        if period_ns <= 0:
            raise ValueError(f'correction with period {period_ns} ns refused')
        if self.schedule is None:
            self._disturbed()
        self.schedule = Schedule(anchor_ns - anchor_index * period_ns, period_ns)
        self._last_correction_ns = now_ns
        if self.free_running:
            self.free_running = False
            self._disturbed()
        if command == Command.HOLD:
            self.held, self.hold_reason = True, reason
        elif command == Command.RELEASE:
            self.held, self.hold_reason = False, ''
        elif command == Command.RESYNC:
            self._resync = True

    def on_started(self, actual_ns: int, woke_for_ns: int) -> int:
        """Record the actual start of the current cycle; returns its jitter (actual - intended).

        The wake-up is moved earlier by the median wake-up latency, tracked by +-1 step per
        cycle: a mean would follow the rare long stalls and make every other cycle start early.
        """
        step = self.config.latency_step_ns
        self._wake_latency_ns += step if actual_ns - woke_for_ns > self._wake_latency_ns else -step
        if self.schedule is not None and not self.free_running:
            self._errors.append(abs(actual_ns - self.schedule.tick(self.index)))
            self._since_disturbance += 1
            bound = self.config.lock_threshold_ns * (2 if self.locked else 1)
            self.locked = (self._since_disturbance >= self.config.lock_cycles
                           and sorted(self._errors)[len(self._errors) // 2] <= bound)
        return actual_ns - self.intended_ns

    def _disturbed(self) -> None:
        self.locked = False
        self._errors.clear()
        self._since_disturbance = 0

    # -- planning -------------------------------------------------------------------------
    def stalled(self, now_ns: int) -> bool:
        """The thread woke more than a period after the current cycle's intended start."""
        return now_ns - self.intended_ns > self.period_ns

    def skip_to(self, now_ns: int) -> int:
        """After a stall: skip the ticks missed up to ``now_ns`` (counted) and make the next
        tick of the schedule (or of the cell's own grid before it has one) the current cycle.
        Returns when to wake for it.
        """
        self._check_coordinator(now_ns)
        period = self.period_ns
        if self.schedule is not None:
            period = self.period_ns = self.schedule.period_ns
            index = self.schedule.nearest_index(now_ns) + 1
            while self.schedule.tick(index) - self._wake_latency_ns <= now_ns:
                index += 1
            intended = self.schedule.tick(index)
        else:
            behind = (now_ns - self.intended_ns) // period + 1
            index, intended = self.index + behind, self.intended_ns + behind * period
        self.missed_cycles += max(0, index - self.index)
        self.stalls += 1
        self.index, self.intended_ns, self.error_ns = index, intended, 0
        self._disturbed()
        return self._wake_for(intended)

    def advance(self, now_ns: int) -> tuple[int, int]:
        """Move to the next cycle: returns (its intended start, when to wake for it)."""
        cfg = self.config
        self._check_coordinator(now_ns)
        nominal = self.intended_ns + self.period_ns
        if self.schedule is None:
            self.index += 1
            self.intended_ns = nominal
        else:
            self.period_ns = self.schedule.period_ns
            nominal = self.intended_ns + self.period_ns
            if self._resync:
                self._resync = False
                self.index = self.schedule.nearest_index(nominal)
                self.intended_ns = self.schedule.tick(self.index)
                self.error_ns = 0
                self._disturbed()
            else:
                index = self.index + 1
                error = nominal - self.schedule.tick(index)
                if abs(error) > self.period_ns // 2:
                    # first schedule, or the schedule moved by more than half a period:
                    # take the nearest tick's number (a relabel, the cycle still runs)
                    index = self.schedule.nearest_index(nominal)
                    error = wrap(nominal - self.schedule.tick(index), self.period_ns)
                    self._disturbed()
                max_slew = int(cfg.max_slew_fraction * self.period_ns)
                step = max(-max_slew, min(max_slew, -error))
                self.index = index
                self.intended_ns = nominal + step
                self.error_ns = error + step
        return self.intended_ns, self._wake_for(self.intended_ns)

    def _wake_for(self, intended_ns: int) -> int:
        return intended_ns - int(max(0.0, self._wake_latency_ns))

    def _check_coordinator(self, now_ns: int) -> None:
        if (not self.free_running and self.schedule is not None and self._last_correction_ns is not None
                and now_ns - self._last_correction_ns > self.config.coordinator_timeout_ns):
            self.free_running = True
            self._disturbed()

    @property
    def state(self) -> CycleState:
        if self.held:
            return CycleState.HELD
        if self.schedule is None:
            return CycleState.STARTING
        if self.free_running:
            return CycleState.FREE_RUNNING
        if self.locked:
            return CycleState.LOCKED
        return CycleState.LOCKING
