"""A cell's periodic cycle, phase-locked to the line schedule the coordinator sends.

The coordinator expresses the schedule on the cell's own clock (anchor + k * period), so the
cell measures its phase error locally every cycle, without loop delay, and slews towards the
schedule by at most ``max_slew`` per cycle: every cycle runs, none is skipped or repeated,
unless a re-sync is commanded (then it jumps to the nearest tick). If corrections stop, the
cell keeps the last schedule and period (free-running) and re-locks when they return.
All times are nanoseconds on the cell's clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

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


@dataclass(frozen=True)
class CycleConfig:
    period_ns: int
    max_slew_fraction: float = 0.1       # of the period, per cycle
    lock_threshold_ns: int = 1_000_000
    lock_cycles: int = 3                 # consecutive cycles within the threshold to call it locked
    coordinator_timeout_ns: int = 100_000_000
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
        self._resync = False
        self._in_lock = 0
        self._last_correction_ns: int | None = None
        self._wake_latency_ns = 0.0

    # -- inputs ---------------------------------------------------------------------------
    def on_correction(self, anchor_ns: int, anchor_index: int, period_ns: int,
                      command: int, now_ns: int, reason: str = '') -> None:
        if period_ns <= 0:
            raise ValueError(f'correction with period {period_ns} ns refused')
        self.schedule = Schedule(anchor_ns - anchor_index * period_ns, period_ns)
        self._last_correction_ns = now_ns
        self.free_running = False
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
        return actual_ns - self.intended_ns

    # -- planning -------------------------------------------------------------------------
    def advance(self, now_ns: int) -> tuple[int, int]:
        """Move to the next cycle: returns (its intended start, when to wake for it)."""
        cfg = self.config
        if (self.schedule is not None and self._last_correction_ns is not None
                and now_ns - self._last_correction_ns > cfg.coordinator_timeout_ns):
            self.free_running = True
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
            else:
                index = self.index + 1
                error = nominal - self.schedule.tick(index)
                if abs(error) > self.period_ns // 2:
                    # first schedule, or the schedule moved by more than half a period:
                    # take the nearest tick's number (a relabel, the cycle still runs)
                    index = self.schedule.nearest_index(nominal)
                    error = wrap(nominal - self.schedule.tick(index), self.period_ns)
                max_slew = int(cfg.max_slew_fraction * self.period_ns)
                step = max(-max_slew, min(max_slew, -error))
                self.index = index
                self.intended_ns = nominal + step
                self.error_ns = error + step
        self._in_lock = self._in_lock + 1 if (self.schedule is not None
                                              and abs(self.error_ns) <= cfg.lock_threshold_ns) else 0
        wake = self.intended_ns - int(max(0.0, self._wake_latency_ns))
        return self.intended_ns, wake

    @property
    def state(self) -> CycleState:
        if self.held:
            return CycleState.HELD
        if self.schedule is None:
            return CycleState.STARTING
        if self.free_running:
            return CycleState.FREE_RUNNING
        if self._in_lock >= self.config.lock_cycles:
            return CycleState.LOCKED
        return CycleState.LOCKING
