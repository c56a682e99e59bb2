"""The line coordinator's logic: discover cells from their reports, hold the reference
schedule, estimate each cell's clock offset, measure phase error, detect lost cells, and
produce each cell's correction (its schedule on its own clock, plus hold / re-sync commands).
Times: ``*_ns`` on the coordinator's clock unless named ``cell_*``.

Holds come from several sources (operator, drift, backpressure); a cell is held while any
source holds it, and its reason lists them. Line flow: the latest accepted plant snapshot
drives the backpressure policy (core.backpressure).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from cellos_line.core.backpressure import backpressure_holds
from cellos_line.core.clock_sync import OffsetEstimator
from cellos_line.core.cycle_clock import Command, CycleState
from cellos_line.core.line_flow import FlowSnapshot, check_snapshot
from cellos_line.core.schedule import Schedule, stagger_offsets


@dataclass(frozen=True)
class CycleReport:
    cell_id: str
    session: int
    cycle_index: int
    cell_start_ns: int
    cell_intended_ns: int
    period_ns: int
    state: int
    cell_send_ns: int
    sync: tuple[int, int, int, int] = (0, 0, 0, 0)
    locked: bool = False
    missed_cycles: int = 0
    thread_priority: int = 0
    realtime_refused: bool = False


@dataclass(frozen=True)
class Correction:
    cell_id: str
    session: int
    anchor_ns: int          # cell clock; 0 with period_ns 0: sync echo only
    anchor_index: int
    period_ns: int
    command: int
    reason: str
    echo_t1_ns: int
    recv_t2_ns: int


CLOCK_MODES = ('exchange', 'system')


@dataclass(frozen=True)
class LineConfig:
    period_ns: int
    offset_mode: str = 'aligned'
    custom_offsets_ms: dict = field(default_factory=dict)
    expected_cells: tuple = ()
    accept_unknown_cells: bool = True
    lost_after_periods: float = 2.5
    common_silence_periods: float = 10.0  # most cells silent at once: lost only after this long
    sync_interval_ns: int = 100_000_000   # a locked cell's reports are answered this often; 0: every one
    clock_mode: str = 'exchange'          # system: PTP/chrony discipline the clocks, offsets taken as 0
    window_ns: int = 2_000_000_000        # phase error percentiles over this much recent time
    backpressure_latency_cycles: int = 2

    def __post_init__(self):
        if self.clock_mode not in CLOCK_MODES:
            raise ValueError(f"unknown clock mode '{self.clock_mode}' ({' | '.join(CLOCK_MODES)})")


OPERATOR, DRIFT, BACKPRESSURE = 'operator', 'drift', 'backpressure'   # hold sources


LOST = 10  # CellPhase.STATE_LOST


@dataclass
class CellTrack:
    cell_id: str
    session: int
    first_seen_ns: int
    last_recv_ns: int = 0
    last_send_ns: int = 0
    last_answer_ns: int = 0
    schedule_sent: int = -1  # version of the line schedule last sent to this cell
    cycle_index: int = 0
    state: int = CycleState.STARTING
    phase_error_ns: float = 0.0
    errors_ns: deque = field(default_factory=deque)   # (recv_ns, phase error) over the window
    offset: OffsetEstimator = field(default_factory=OffsetEstimator)
    held: bool = False
    hold_reason: str = ''
    resync: int = 0          # corrections still to carry RESYNC
    lost: bool = False
    lost_count: int = 0
    relock_count: int = 0
    locked: bool = False
    lock_time_s: float | None = None
    period_ns: int = 0
    missed_cycles: int = 0
    thread_priority: int = 0
    realtime_refused: bool = False
    rejected: int = 0
    last_report: CycleReport | None = None
    last_report_recv_ns: int = 0


class LineCoordinator:
    def __init__(self, config: LineConfig, now_ns: int):
        if config.period_ns <= 0:
            raise ValueError(f'line period must be > 0, got {config.period_ns} ns')
        self.config = config
        self.schedule = Schedule(now_ns - now_ns % config.period_ns, config.period_ns)
        self.schedule_version = 0
        self.cells: dict[str, CellTrack] = {}
        self.offsets: dict[str, int] = {}
        self.duplicates = 0
        self.unknown = 0
        self.out_of_order = 0
        self.holds: dict[str, dict[str, str]] = {}   # cell -> {source: reason}
        self.holds_applied = 0
        self.holds_released = 0
        self.flow: FlowSnapshot | None = None
        self.flow_recv_ns = 0
        self.plant_rejected = 0
        self.plant_status = ''
        self._last_check_ns = 0
        self.late_checks = 0     # lost checks skipped because this process was stalled
        self.common_silences = 0  # times most cells went silent at once
        self._common_silence = False
        self._recompute_offsets()

    # -- schedule ---------------------------------------------------------------------------
    def _order(self) -> list[str]:
        expected = list(self.config.expected_cells)
        return expected + sorted(c for c in self.cells if c not in expected)

    def _recompute_offsets(self) -> None:
        offsets = stagger_offsets(self._order(), self.schedule.period_ns, self.config.offset_mode,
                                  self.config.custom_offsets_ms, len(self.config.expected_cells))
        if offsets != self.offsets:
            self.offsets = offsets
            self.schedule_version += 1

    def set_period(self, period_ns: int, now_ns: int) -> tuple[bool, str]:
        if period_ns <= 0:
            return False, f'period must be > 0, got {period_ns / 1e6:.3f} ms'
        self.schedule = self.schedule.rebased(now_ns, period_ns)
        self.config = replace(self.config, period_ns=period_ns)
        self.schedule_version += 1
        self._recompute_offsets()
        return True, f'line period {period_ns / 1e6:.3f} ms from cycle {self.schedule.nearest_index(now_ns)}'

    def set_offsets(self, mode: str, custom_ms: dict | None = None) -> None:
        stagger_offsets([], self.schedule.period_ns, mode, custom_ms)  # raises on unknown mode
        self.config = replace(self.config, offset_mode=mode,
                              custom_offsets_ms=dict(custom_ms or self.config.custom_offsets_ms))
        self._recompute_offsets()

    def clock_offset_at(self, t: CellTrack, t_ns: int) -> float:
        """The offset the schedule uses for a cell: estimated, or 0 where the system clocks are
        trusted (clock_mode system: the estimate is only the residual, monitored).
        """
        if self.config.clock_mode == 'system':
            return 0.0
        return t.offset.offset_at(t_ns)

    # -- reports ----------------------------------------------------------------------------
    def on_report(self, r: CycleReport, recv_ns: int) -> tuple[Correction | None, str]:
        """Returns (correction to send or None, event text or '')."""
        lost_after = self.config.lost_after_periods * self.schedule.period_ns
        track = self.cells.get(r.cell_id)
        event = ''
        if track is None:
            if (self.config.expected_cells and r.cell_id not in self.config.expected_cells
                    and not self.config.accept_unknown_cells):
                self.unknown += 1
                return None, f"report from unknown cell '{r.cell_id}' ignored"
            track = self.cells[r.cell_id] = CellTrack(r.cell_id, r.session, recv_ns)
            self._recompute_offsets()
            self._refresh_hold(r.cell_id, count=False)
            event = f"cell '{r.cell_id}' discovered"
        elif r.session != track.session:
            if not track.lost and recv_ns - track.last_recv_ns <= lost_after:
                self.duplicates += 1
                track.rejected += 1
                return None, (f"report for cell '{r.cell_id}' from a second process (session {r.session:#x}, "
                              f"live one is {track.session:#x}) ignored: duplicate cell id")
            track.session = r.session
            track.offset.reset()
            track.errors_ns.clear()
            track.locked = False
            track.last_send_ns = 0
            track.schedule_sent = -1
            event = f"cell '{r.cell_id}' restarted (session {r.session:#x})"
        elif r.cell_send_ns <= track.last_send_ns:
            self.out_of_order += 1
            track.rejected += 1
            return None, ''
        if track.lost:
            track.lost = False
            event = event or f"cell '{r.cell_id}' back after {(recv_ns - track.last_recv_ns) / 1e6:.0f} ms"
        track.last_recv_ns, track.last_send_ns = recv_ns, r.cell_send_ns
        track.cycle_index, track.state, track.period_ns = r.cycle_index, r.state, r.period_ns
        track.missed_cycles = r.missed_cycles
        track.thread_priority, track.realtime_refused = r.thread_priority, r.realtime_refused
        track.last_report, track.last_report_recv_ns = r, recv_ns
        track.offset.add_exchange(r.sync)

        if track.offset.ready:
            off = self.offsets.get(r.cell_id, 0)
            start = r.cell_start_ns - self.clock_offset_at(track, recv_ns)
            err = self.schedule.phase_error(int(start), off)
            track.phase_error_ns = err
            track.errors_ns.append((recv_ns, err))
            while track.errors_ns and track.errors_ns[0][0] < recv_ns - self.config.window_ns:
                track.errors_ns.popleft()
        # lock is the cell's judgement (the one place, with its lock_threshold_ms)
        if r.locked and not track.locked:
            if track.lock_time_s is None:
                track.lock_time_s = (recv_ns - track.first_seen_ns) / 1e9
            else:
                track.relock_count += 1
                event = event or f"cell '{r.cell_id}' re-locked"
        track.locked = r.locked
        if not self._answer_due(track, r, recv_ns):
            return None, event
        return self._correction(track, r, recv_ns), event

    def _answer_due(self, t: CellTrack, r: CycleReport, recv_ns: int) -> bool:
        """Answer every report of a cell that is not locked or has not got the current
        schedule; a locked one at the sync interval (the clock exchange's own rate).
        """
        return (not r.locked or r.state not in (CycleState.LOCKED, CycleState.HELD)
                or t.schedule_sent != self.schedule_version or t.resync > 0
                or recv_ns - t.last_answer_ns >= self.config.sync_interval_ns)

    def _correction(self, track: CellTrack, r: CycleReport, recv_ns: int) -> Correction:
        command = Command.HOLD if track.held else Command.RELEASE
        if track.resync > 0:
            track.resync -= 1
            command = Command.RESYNC
        track.last_answer_ns = recv_ns
        if not track.offset.ready and self.config.clock_mode != 'system':
            return Correction(track.cell_id, track.session, 0, 0, 0, command, track.hold_reason,
                              r.cell_send_ns, recv_ns)
        track.schedule_sent = self.schedule_version
        index = self.schedule.nearest_index(recv_ns) + 1
        tick = self.schedule.tick(index, self.offsets.get(track.cell_id, 0))
        skew = track.offset.skew if self.config.clock_mode != 'system' else 0.0
        return Correction(
            cell_id=track.cell_id, session=track.session,
            anchor_ns=int(round(tick + self.clock_offset_at(track, tick))), anchor_index=index,
            period_ns=int(round(self.schedule.period_ns * (1.0 + skew))),
            command=command, reason=track.hold_reason, echo_t1_ns=r.cell_send_ns, recv_t2_ns=recv_ns)

    def check_lost(self, now_ns: int, every_ns: int = 0) -> list[str]:
        """Cells silent for ``lost_after_periods`` periods are lost. The node calls it from a
        timer every ``every_ns``. Two kinds of silence say more about this side than about the
        cells:

        - a check that comes more than twice ``every_ns`` late: this process was stalled, and
          reports may be waiting behind the check; it judges nothing, the next check does;
        - several cells silent at once (three or more, and at least a quarter of the line):
          one side stalled, most likely this one (its DDS participant pauses while it matches
          many new participants, e.g. cells or tools starting); they are lost only after
          ``common_silence_periods``. A single failure (a dead cell, a cut link) is judged at
          ``lost_after_periods``.
        """
        late = every_ns and self._last_check_ns and now_ns - self._last_check_ns > 2 * every_ns
        self._last_check_ns = now_ns
        if late:
            self.late_checks += 1
            return []
        period = self.schedule.period_ns
        lost_after = self.config.lost_after_periods * period
        live = [t for t in self.cells.values() if not t.lost]
        silent = [t for t in live if now_ns - t.last_recv_ns > lost_after]
        if len(silent) >= 3 and 4 * len(silent) >= len(live):
            if not self._common_silence:
                self.common_silences += 1
            self._common_silence = True
            lost_after = max(lost_after, self.config.common_silence_periods * period)
        else:
            self._common_silence = False
        events = []
        for t in silent:
            if now_ns - t.last_recv_ns > lost_after:
                t.lost, t.locked = True, False
                t.lost_count += 1
                events.append(f"cell '{t.cell_id}' lost: no report for "
                              f"{(now_ns - t.last_recv_ns) / 1e6:.1f} ms")
        return events

    # -- commands ---------------------------------------------------------------------------
    def hold(self, cell_id: str, hold: bool, reason: str = '') -> tuple[bool, str]:
        """Hold or release for the operator (hold_cell service); the other hold sources keep theirs."""
        t = self.cells.get(cell_id)
        if t is None:
            return False, f"unknown cell '{cell_id}' (known: {', '.join(sorted(self.cells)) or 'none'})"
        self.set_hold(cell_id, OPERATOR, (reason or 'operator') if hold else None)
        return True, f"cell '{cell_id}' {'held: ' + t.hold_reason if t.held else 'released'}"

    def set_hold(self, cell_id: str, source: str, reason: str | None) -> str:
        """Hold (reason) or release (None) ``cell_id`` for ``source``. The cell may not have
        reported yet: the hold waits for it. Returns the event text when the cell's held state
        changed, else ''.
        """
        mine = self.holds.setdefault(cell_id, {})
        had = source in mine
        if reason is None:
            mine.pop(source, None)
        else:
            mine[source] = reason
        event = self._refresh_hold(cell_id)
        t = self.cells.get(cell_id)
        if event or t is None or had == (reason is not None):
            return event
        # a source joined or left while the cell stays held: say so
        if reason is not None:
            return f"cell '{cell_id}' held: {t.hold_reason}"
        return f"cell '{cell_id}' released from its {source} hold, still held: {t.hold_reason}"

    def _refresh_hold(self, cell_id: str, count: bool = True) -> str:
        mine = self.holds.get(cell_id, {})
        held = bool(mine)
        reason = '; '.join(r for _, r in sorted(mine.items()))
        t = self.cells.get(cell_id)
        if t is None:
            return ''
        was, t.held, t.hold_reason = t.held, held, reason
        if held == was or not count:
            return ''
        if held:
            self.holds_applied += 1
            return f"cell '{cell_id}' held: {reason}"
        self.holds_released += 1
        return f"cell '{cell_id}' released"

    def other_holds(self) -> dict[str, str]:
        """Cells held for reasons other than backpressure (they are the flow's root causes)."""
        return {c: '; '.join(r for s, r in sorted(h.items()) if s != BACKPRESSURE)
                for c, h in self.holds.items() if any(s != BACKPRESSURE for s in h)}

    # -- line flow ----------------------------------------------------------------------------
    def known_cells(self) -> list[str] | None:
        if self.config.expected_cells:
            return list(self.config.expected_cells)
        return None if self.config.accept_unknown_cells else sorted(self.cells)

    def on_plant(self, snapshot: FlowSnapshot, recv_ns: int) -> tuple[bool, str, list[str], list[str]]:
        """A plant snapshot: check it, keep it, hold/release cells by backpressure.
        Returns (accepted, rejection reason, event texts, cells whose held state changed).
        """
        problem = check_snapshot(snapshot, self.known_cells())
        if problem:
            self.plant_rejected += 1
            self.plant_status = problem
            return False, problem, [], []
        self.flow, self.flow_recv_ns = snapshot, recv_ns
        wanted = backpressure_holds(snapshot, self.config.backpressure_latency_cycles, self.other_holds())
        events, changed = [], []
        for st in snapshot.stations:
            event = self.set_hold(st.cell_id, BACKPRESSURE, wanted.get(st.cell_id))
            if event:
                events.append(event)
                changed.append(st.cell_id)
        return True, '', events, changed

    def correction_now(self, cell_id: str, now_ns: int) -> Correction | None:
        """A correction to send right away (a hold or release decided between two reports),
        answering the cell's last report; None before the first one.
        """
        t = self.cells.get(cell_id)
        if t is None or t.last_report is None or t.lost:
            return None
        r = t.last_report
        saved = t.resync
        t.resync = 0   # re-syncs ride on report answers only
        c = self._correction(t, r, t.last_report_recv_ns)
        t.resync = saved
        return c

    def resync(self, cell_id: str = '') -> tuple[bool, str]:
        targets = list(self.cells) if not cell_id else [cell_id]
        if cell_id and cell_id not in self.cells:
            return False, f"unknown cell '{cell_id}'"
        for c in targets:
            self.cells[c].resync = 3  # idempotent on the cell; repeated in case one is lost
        return True, f"re-sync sent to {', '.join(targets) or 'no cell'}"

    # -- views ------------------------------------------------------------------------------
    def state_of(self, t: CellTrack) -> int:
        return LOST if t.lost else t.state

    def error_percentiles_ms(self, t: CellTrack, now_ns: int | None = None) -> tuple[float, float]:
        """|phase error| p50 and p99 over the window (the last ``window_ns`` before now)."""
        since = (now_ns if now_ns is not None else t.last_recv_ns) - self.config.window_ns
        a = sorted(abs(e) for at, e in t.errors_ns if at >= since)
        if not a:
            return 0.0, 0.0
        return a[len(a) // 2] / 1e6, a[min(len(a) - 1, int(0.99 * len(a)))] / 1e6

    def offset_now_ms(self, t: CellTrack, now_ns: int) -> float:
        """Estimated cell clock minus coordinator clock now (0 before the first exchange)."""
        return t.offset.offset_at(now_ns) / 1e6 if t.offset.ready else 0.0
