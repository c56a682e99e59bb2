"""The runner's view of a line: lifecycle bring-up, live progress and the final summary,
from the line state and the cells' raw cycle stamps.

Phase figures use the cycles a cell reports locked, each start taken back to the
coordinator's clock with the cell's estimated clock offset (from the line state): cells on
other hosts have their own clocks. The live line shows the last LIVE_WINDOW_S; the summary
the whole run (up to WINDOW_CYCLES per cell).
"""
from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict, deque

import rclpy
from cellos_interfaces.msg import CellCycle, ExecutorStatus, GateState, Inspection, LineState
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from cellos_line.core.phase_stats import cell_errors_ns, figures, percentile
from cellos_common.nodes import qos
from cellos_common.nodes.lifecycle_client import LifecycleClient
from cellos_common.core import gate_level
from cellos_line.nodes.line_markers import cell_state_name

WINDOW_CYCLES = 3000   # per cell, for the summary's phase figures
LIVE_WINDOW_S = 2.0    # the live line's phase figures


class LineMonitor:
    def __init__(self, line: str, cells: list[str], executor_ns: str | None = None,
                 composed: bool = False):
        self.line, self.cells = line, cells
        self.node = Node('line_runner_monitor')
        # composed: the line's own nodes spin here too, and some of them may block a callback
        self.executor = MultiThreadedExecutor(num_threads=4) if composed else SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.state: LineState | None = None
        # cell -> {cycle index: start ns on the coordinator's clock}, locked cycles only
        self.stamps = {c: {} for c in cells}
        self.order = {c: deque() for c in cells}             # (monotonic receipt time, cycle index)
        self.jitter = {c: deque(maxlen=WINDOW_CYCLES) for c in cells}   # (receipt time, actual - intended)
        self.clock_offsets_ns: dict[str, float] = {}
        self.cycles = defaultdict(int)
        self.started = time.monotonic()
        self.first_all_locked: float | None = None
        self.node.create_subscription(LineState, f'/{line}/line_state', self._on_state, qos.latched_state())
        for c in cells:
            self.node.create_subscription(CellCycle, f'/{line}/{c}/timing/cycle',
                                          lambda m, c=c: self._on_cycle(c, m), qos.cycle_watch())
            self.node.create_subscription(Inspection, f'/{line}/{c}/vision/inspection',
                                          lambda m, c=c: self._on_inspection(c, m), qos.status())
            self.node.create_subscription(GateState, f'/{line}/{c}/energy/gate',
                                          lambda m, c=c: self._on_gate(c, m), qos.latched_state())
        self.verdicts = {c: defaultdict(int) for c in cells}   # pass/fail/undecided/correct/judged
        self.gates: dict[str, GateState] = {}
        self.executor_status: ExecutorStatus | None = None
        if executor_ns:
            self.node.create_subscription(ExecutorStatus, f'{executor_ns}/executor/status',
                                          self._on_executor, qos.status())
        self._stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin, daemon=False)
        self._spinner.start()
        self._composed = []

    def _spin(self):
        while not self._stop.is_set() and rclpy.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception as e:
                if not self._stop.is_set():
                    print(f'cellos: monitor stopped: {type(e).__name__}: {e}', file=sys.stderr)
                break

    def _on_state(self, msg: LineState):
        with self.lock:
            self.state = msg
            self.clock_offsets_ns = {c.cell_id: c.clock_offset_ms * 1e6 for c in msg.cells}
            if self.first_all_locked is None and msg.cells_known == len(self.cells) and \
                    msg.cells_locked == len(self.cells):
                self.first_all_locked = time.monotonic() - self.started

    def _on_cycle(self, cell: str, msg: CellCycle):
        now = time.monotonic()
        with self.lock:
            self.cycles[cell] += 1
            offset = self.clock_offsets_ns.get(cell)
            if not msg.locked or offset is None:
                return
            self.jitter[cell].append((now, msg.cycle_start_ns - msg.intended_start_ns))
            self.stamps[cell][msg.cycle_index] = msg.cycle_start_ns - int(offset)
            self.order[cell].append((now, msg.cycle_index))
            if len(self.order[cell]) > WINDOW_CYCLES:
                self.stamps[cell].pop(self.order[cell].popleft()[1], None)

    def _on_inspection(self, cell: str, msg: Inspection):
        v = {Inspection.VERDICT_PASS: 'pass', Inspection.VERDICT_FAIL: 'fail'}.get(msg.verdict, 'undecided')
        with self.lock:
            t = self.verdicts[cell]
            t[v] += 1
            if v == 'undecided':
                t['undecided_' + undecided_kind(msg.reason)] += 1
            if v != 'undecided' and msg.has_ground_truth:
                t['judged'] += 1
                t['correct'] += msg.defect_class == msg.ground_truth_class

    def _on_gate(self, cell: str, msg: GateState):
        with self.lock:
            self.gates[cell] = msg

    def _on_executor(self, msg: ExecutorStatus):
        with self.lock:
            self.executor_status = msg

    # -- bring-up -------------------------------------------------------------------------------
    def bring_up(self, names, composed_nodes) -> list[str]:
        """configure every node, then activate every node (in-process when composed)."""
        self.started = time.monotonic()
        if composed_nodes:
            self._composed = composed_nodes
            for n in composed_nodes:
                self.executor.add_node(n)
            for n in composed_nodes:
                n.trigger_configure()
            for n in composed_nodes:
                n.trigger_activate()
            return [n.get_fully_qualified_name() for n in composed_nodes if not n.active]
        return LifecycleClient(self.node).bring_up(names, timeout=90.0)

    # -- progress ------------------------------------------------------------------------------
    def progress_line(self) -> str:
        """The live line; its words and counters are the summary's (runner.LEGEND explains them)."""
        with self.lock:
            s = self.state
            elapsed = time.monotonic() - self.started
            if s is None:
                return f't={elapsed:5.1f}s waiting for the coordinator'
            fig = self._figures(since=time.monotonic() - LIVE_WINDOW_S)
        phase = f'phase p99 ({LIVE_WINDOW_S:g} s) {fig.phase_p99_ms:.3f} ms' if fig.ticks else 'phase -'
        return (f't={elapsed:5.1f}s | {cells_text(s, len(self.cells))} | {phase} | period {s.period_ms:.1f} ms'
                + flow_text(s))

    def _offsets(self) -> dict:
        if self.state is None:
            return {}
        return {c.cell_id: int(c.schedule_offset_ms * 1e6) for c in self.state.cells}

    def _figures(self, since: float | None = None):
        """Phase figures over the cycles received since ``since`` (monotonic; None: all kept)."""
        if since is None:
            stamps, jitter = self.stamps, {c: [j for _, j in js] for c, js in self.jitter.items()}
        else:
            stamps = {c: {k: self.stamps[c][k] for t, k in self.order[c] if t >= since and k in self.stamps[c]}
                      for c in self.cells}
            jitter = {c: [j for t, j in js if t >= since] for c, js in self.jitter.items()}
        return figures(stamps, jitter, self._offsets())

    def run(self, stop: threading.Event, duration: float, check_children) -> str | None:
        """Progress until ``stop``, ``duration`` or a problem ``check_children`` returns (returned)."""
        tty = sys.stdout.isatty()
        problem = None
        last = 0.0
        end = time.monotonic() + duration if duration else None
        while not stop.is_set() and (end is None or time.monotonic() < end):
            stop.wait(0.5)
            problem = check_children()
            if problem:
                print(f'\ncellos: {problem}; stopping', file=sys.stderr)
                break
            now = time.monotonic()
            if tty:
                print('\r' + self.progress_line().ljust(100), end='', flush=True)
            elif now - last >= 2.0:
                print(self.progress_line(), flush=True)
                last = now
        if tty:
            print()
        return problem

    # -- summary -------------------------------------------------------------------------------
    def summary(self) -> dict:
        with self.lock:
            s = self.state
            fig = self._figures()
            errors = cell_errors_ns(self.stamps, self._offsets())
            per_cell = {}
            for c in self.cells:
                phase = next((p for p in (s.cells if s else []) if p.cell_id == c), None)
                jit = [abs(j) / 1e6 for _, j in self.jitter[c]]
                err = [abs(e) / 1e6 for e in errors.get(c, [])]
                per_cell[c] = {
                    'state': cell_state_name(phase) if phase else 'never seen',
                    'locked': bool(phase and phase.locked),
                    'lock_time_s': round(phase.lock_time_s, 3) if phase and phase.lock_time_s >= 0 else None,
                    'phase_error_p50_ms': round(percentile(err, 0.5), 4),
                    'phase_error_p99_ms': round(percentile(err, 0.99), 4),
                    'coordinator_p99_ms': round(phase.phase_error_p99_ms, 4) if phase else None,
                    'jitter_p99_ms': round(percentile(jit, 0.99), 4) if jit else None,
                    'clock_offset_ms': round(phase.clock_offset_ms, 3) if phase else None,
                    'clock_skew_ppm': round(phase.clock_skew_ppm, 2) if phase else None,
                    'schedule_offset_ms': round(phase.schedule_offset_ms, 3) if phase else None,
                    'held': bool(phase and phase.held),
                    'lost': phase.lost_count if phase else 0,
                    'relocked': phase.relock_count if phase else 0,
                    'missed_cycles': phase.missed_cycles if phase else 0,
                    'thread_priority': phase.thread_priority if phase else 0,
                    'realtime_refused': bool(phase and phase.realtime_refused),
                    'cycles': self.cycles[c],
                }
            return {
                'line': self.line, 'cells': len(self.cells),
                'cells_locked': sum(v['locked'] for v in per_cell.values()),
                'cells_held': sum(v['held'] for v in per_cell.values()),
                'lost_events': sum(v['lost'] for v in per_cell.values()),
                'all_locked_after_s': round(self.first_all_locked, 3) if self.first_all_locked else None,
                'period_ms': s.period_ms if s else None,
                'floor_p99_ms': round(fig.floor_p99_ms, 4),
                'phase_p50_ms': round(fig.phase_p50_ms, 4), 'phase_p99_ms': round(fig.phase_p99_ms, 4),
                'ratio_to_floor': round(fig.ratio, 3) if fig.ticks else None,
                'realtime': {'coordinator_priority': s.thread_priority if s else 0,
                             'coordinator_refused': bool(s and s.realtime_refused),
                             'cells_refused': [c for c, v in per_cell.items() if v['realtime_refused']],
                             'clock_mode': s.clock_mode if s else None},
                'per_cell': per_cell,
                'flow': flow_figures(s),
                'inspection': self._inspection_figures(),
                'compute_share': self._compute_shares(),
                'executor_power': self._executor_power(),
                'gates': {c: {'level': gate_level.label(g.level), 'reason': g.reason,
                              'safe_fallback': g.safe_fallback, 'price_per_mwh': round(g.price_per_mwh, 2),
                              'deferred_jobs': g.deferred_jobs}
                          for c, g in sorted(self.gates.items())},
            }

    def _inspection_figures(self) -> dict:
        out = {}
        for c, t in self.verdicts.items():
            n = t['pass'] + t['fail'] + t['undecided']
            if n:
                out[c] = {'inspected': n, 'pass': t['pass'], 'fail': t['fail'], 'undecided': t['undecided'],
                          'undecided_time': t['undecided_time'], 'undecided_review': t['undecided_review'],
                          'accuracy': round(t['correct'] / t['judged'], 4) if t['judged'] else None}
        return out

    def _compute_shares(self) -> dict:
        st = self.executor_status
        if st is None:
            return {}
        return {c.cell_id: round(c.compute_share, 3) for c in st.cells if c.line_id == self.line}

    def _executor_power(self) -> dict | None:
        st = self.executor_status
        if st is None:
            return None
        return {'power_w': round(st.power_w, 1), 'measured': st.power_measured,
                'concurrency_limit': st.concurrency_limit}

    @staticmethod
    def format_summary(s: dict) -> str:
        """The run's summary; the words and counters of the live line (runner.LEGEND explains them)."""
        n = s['cells']
        first = (f"all {n} first locked together {s['all_locked_after_s']:.2f} s after bring-up"
                 if s['all_locked_after_s'] else f'never all {n} locked together')
        period = f", period {s['period_ms']:.1f} ms" if s['period_ms'] else ''
        ratio = f"{s['ratio_to_floor']:.2f}" if s['ratio_to_floor'] is not None else '-'
        lines = ['', f"=== cellos line /{s['line']}{period}: at the end {s['cells_locked']}/{n} cells locked, "
                 f"{s.get('cells_held', 0)} held; {first}; cells lost {s.get('lost_events', 0)} "
                 f"time{'' if s.get('lost_events', 0) == 1 else 's'} ===",
                 f"inter-cell phase error p50 {s['phase_p50_ms']:.3f} ms, p99 {s['phase_p99_ms']:.3f} ms; "
                 f"timer jitter floor p99 {s['floor_p99_ms']:.3f} ms; ratio {ratio}",
                 f"{'cell':<10}{'state':<14}{'lock s':>8}{'p50 ms':>9}{'p99 ms':>9}{'jit99 ms':>10}"
                 f"{'clock offset ms':>17}{'sched offset ms':>17}{'lost':>6}{'relock':>8}{'cycles':>8}"]
        for c, v in s['per_cell'].items():
            def f(x, fmt):
                return format(x, fmt) if isinstance(x, (int, float)) and x == x else '-'
            lines.append(f"{c:<10}{v['state']:<14}{f(v['lock_time_s'], '8.2f'):>8}"
                         f"{f(v['phase_error_p50_ms'], '9.3f'):>9}{f(v['phase_error_p99_ms'], '9.3f'):>9}"
                         f"{f(v['jitter_p99_ms'], '10.3f'):>10}{f(v['clock_offset_ms'], '17.3f'):>17}"
                         f"{f(v.get('schedule_offset_ms'), '17.3f'):>17}"
                         f"{v['lost']:>6}{v['relocked']:>8}{v['cycles']:>8}")
        rt = s.get('realtime') or {}
        prios = sorted({v.get('thread_priority', 0) for v in s['per_cell'].values()})
        lines.append('real-time: cycle threads '
                     + ('/'.join(f'SCHED_FIFO {p}' if p else 'normal priority' for p in prios) or '-')
                     + (f", REFUSED on {', '.join(rt['cells_refused'])}" if rt.get('cells_refused') else '')
                     + '; coordinator ' + (f"SCHED_FIFO {rt['coordinator_priority']}" if rt.get('coordinator_priority')
                                           else 'normal priority')
                     + (' (REFUSED)' if rt.get('coordinator_refused') else '')
                     + f"; missed cycles (stalls) {sum(v.get('missed_cycles', 0) for v in s['per_cell'].values())}"
                     + f"; clocks: {rt.get('clock_mode') or '-'}")
        insp = s.get('inspection') or {}
        if insp:
            tot = {k: sum(v[k] for v in insp.values()) for k in ('inspected', 'pass', 'fail', 'undecided')}
            accs = [v['accuracy'] for v in insp.values() if v['accuracy'] is not None]
            late = sum(v.get('undecided_time', 0) for v in insp.values())
            review = sum(v.get('undecided_review', 0) for v in insp.values())
            lines.append(f"inspection: {tot['inspected']} camera frames (not the plant's parts): {tot['pass']} pass, "
                         f"{tot['fail']} fail, {tot['undecided']} undecided ({late} for lack of time "
                         f"= {100 * late / max(1, tot['inspected']):.2f} %, {review} low confidence for review); "
                         "verdict accuracy vs ground truth "
                         + ', '.join(f"{c} {v['accuracy']:.3f}" for c, v in insp.items() if v['accuracy'] is not None)
                         + (f" (mean {sum(accs) / len(accs):.3f})" if accs else ''))
        if s.get('compute_share'):
            power = s.get('executor_power')
            lines.append('executor compute share: ' + ', '.join(f'{c} {v:.2f}' for c, v in s['compute_share'].items())
                         + (f"; power {power['power_w']:.1f} W ({'measured' if power['measured'] else 'modelled'})"
                            if power else ''))
        if s.get('gates'):
            lines.append('energy gates: ' + ', '.join(
                f"{c} {g['level']}{' (safe fallback)' if g['safe_fallback'] else ''}" for c, g in s['gates'].items())
                + f"; price {next(iter(s['gates'].values()))['price_per_mwh']} USD/MWh; deferred jobs "
                + str(sum(g['deferred_jobs'] for g in s['gates'].values())))
        f = s.get('flow')
        if f:
            lines.append(f"flow: parts in {f['parts_in']} = out {f['parts_out']} + in buffers {f['parts_in_buffers']}"
                         f" + in work {f['parts_in_cells']} + dropped {f['parts_dropped']}"
                         f" ({'adds up' if f['adds_up'] else 'DOES NOT ADD UP'}); overflows {f['overflows']};"
                         f" holds {f['holds_applied']} applied, {f['holds_released']} released")
        else:
            lines.append('flow: no plant data (no plant node or PLC bridge on this line)')
        lines.append('(states, columns and counts explained: line_runner --help, or README "Reading the output")')
        return '\n'.join(lines)

    def close(self) -> None:
        self._stop.set()
        self._spinner.join()
        for n in self._composed:
            n.on_shutdown(None)
            self.executor.remove_node(n)
            n.destroy_node()
        self.executor.shutdown()
        self.node.destroy_node()


TIME_WORDS = ('late', 'busy', 'timed out', 'timeout', 'deadline', 'expired')


def undecided_kind(reason: str) -> str:
    """time: no verdict for lack of time (late, busy, timed out); review: a low-confidence
    verdict left to a person; other: a bad frame, a rejected request, shutting down.
    """
    r = reason.lower()
    if r.startswith('low confidence'):
        return 'review'
    return 'time' if any(w in r for w in TIME_WORDS) else 'other'


def flow_figures(s: LineState | None) -> dict | None:
    """Part counts of one line state sample (one plant sample: they add up), or None."""
    if s is None or s.plant_age_s < 0:
        return None
    return {'parts_in': s.parts_in, 'parts_out': s.parts_out, 'parts_in_buffers': s.parts_in_buffers,
            'parts_in_cells': s.parts_in_cells, 'parts_dropped': s.parts_dropped,
            'adds_up': s.parts_in == s.parts_out + s.parts_in_buffers + s.parts_in_cells + s.parts_dropped,
            'overflows': s.overflows, 'holds_applied': s.holds_applied, 'holds_released': s.holds_released,
            'cells_held': [c.cell_id for c in s.cells if c.held]}


def cells_text(s: LineState, n: int) -> str:
    """Cells in step, held, and lost events (the summary's lost column, summed) of one line state."""
    held = sum(1 for c in s.cells if c.held)
    lost = sum(c.lost_count for c in s.cells)
    return (f'cells {s.cells_locked}/{n} locked, {held} held'
            + (f', {s.cells_known}/{n} known' if s.cells_known < n else '')
            + f" | lost {lost} time{'' if lost == 1 else 's'}, {s.cells_lost} now")


def flow_text(s: LineState) -> str:
    f = flow_figures(s)
    if f is None:
        return ''
    return (f" | parts in {f['parts_in']}, out {f['parts_out']}, in buffers {f['parts_in_buffers']},"
            f" in work {f['parts_in_cells']}, dropped {f['parts_dropped']} | overflows {f['overflows']},"
            f" holds {f['holds_applied']}")
