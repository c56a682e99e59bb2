"""Plant simulation (one per line, e.g. /line1/plant): the line's buffers and part motion.

Steps each cell's station at every ``<line>/<cell>/timing/cycle`` report, with heavy-tailed
work times (core.work_times). A cell starts a new part only while it runs under the
coordinator: state LOCKING or LOCKED (HELD, STARTING and FREE_RUNNING start none; a cell
free-runs once the coordinator's corrections stop for its coordinator_timeout_ms, so a stalled
coordinator holds the line instead of letting cells run on a stale release), and, with
``start_interlock``, only while the next buffer has room for the part (the station's own
interlock: a part started can always be released). Publishes
``plant/state`` (PlantState) after every step that moved a part or changed a hold, and at
``state_rate_hz``. A PLC bridge replaces
this node by publishing the same topic (docs/plant_contract.md).
"""
from __future__ import annotations

import re
import zlib

from cellos_interfaces.msg import CellCycle, PlantState

from cellos_line.core.work_times import WorkTimeConfig, WorkTimes, cell_seed
from cellos_line.core.line_flow import LineFlow
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_line.nodes.convert_flow import plant_state_msg
from cellos_common.nodes.diagnostics import OK, WARN, DiagReport

UNDER_COORDINATION = (CellCycle.STATE_LOCKING, CellCycle.STATE_LOCKED)
MAX_CATCH_UP = 1000   # cycles; a larger jump of cycle_index is a relabel (re-sync), counted as one

PARAMS = [
    ParamSpec('line_id', '', "line id; empty: the last part of the node's namespace"),
    ParamSpec('cells', [], 'cells in line order (empty: discover, ordered by id)', read_only=True, item=str),
    ParamSpec('buffer_capacity', 4, 'input buffer capacity of every cell but the first (fed by the infeed)',
              min=1, max=100000, unit='parts'),
    ParamSpec('buffer_capacities', 0, "the cell's input buffer capacity; 0: buffer_capacity", keys='cells',
              min=0, max=100000, unit='parts'),
    ParamSpec('seed', 1, 'work time seed (each cell has its own stream)', min=0, max=2**31 - 1),
    ParamSpec('work_median_periods', 0.6, 'median work time of a part', min=0.0, max=1000.0,
              min_exclusive=True, unit='periods'),
    ParamSpec('work_sigma', 0.35, 'log-normal spread of the work time', min=0.0, max=5.0),
    ParamSpec('work_tail_probability', 0.05, 'share of parts with a heavy-tailed (Pareto) extra time',
              min=0.0, max=1.0),
    ParamSpec('work_tail_alpha', 1.5, 'Pareto shape of the tail (smaller: heavier)', min=0.1, max=100.0),
    ParamSpec('work_tail_scale_periods', 1.0, 'Pareto scale of the tail', min=0.0, max=1000.0, unit='periods'),
    ParamSpec('work_max_periods', 50.0, 'cap on one work time (long holds come on top)', min=0.0, max=1e6,
              min_exclusive=True, unit='periods'),
    ParamSpec('long_hold_cell', '', 'cell with periodic long holds (empty: none)'),
    ParamSpec('long_hold_every_parts', 0, 'a long hold every this many parts of long_hold_cell (0: never)',
              min=0, max=10**9),
    ParamSpec('long_hold_periods', 0.0, 'length of a long hold', min=0.0, max=1e6, unit='periods'),
    ParamSpec('start_interlock', True, "a station takes a part only while the next buffer has room for it "
              "(a station's own interlock); false: only the coordinator's holds prevent overflows"),
    ParamSpec('state_rate_hz', 5.0, 'plant/state heartbeat (it is also sent after every step)',
              min=0.1, max=1000.0, unit='Hz'),
    ParamSpec('discovery_period_s', 0.5, 'how often to look for cells when cells is empty',
              min=0.05, max=60.0, unit='s'),
]


class PlantNode(CellosNode):
    SPIN = 'single'    # no callback blocks
    PARAMS = PARAMS

    def __init__(self, **kwargs):
        super().__init__('plant', **kwargs)
        self.flow: LineFlow | None = None
        self._subs: dict = {}
        self._last: dict[str, tuple[int, int]] = {}   # cell -> (session, cycle_index)
        self._work: dict[str, WorkTimes] = {}
        self._seen: set[str] = set()
        self._seen_before: set[str] = set()
        self._seq = 0
        self._plant_timers = []
        self._published = None

    def check_params(self, p) -> None:
        try:
            WorkTimeConfig(p.work_median_periods, p.work_sigma, p.work_tail_probability, p.work_tail_alpha,
                           p.work_tail_scale_periods, max(p.work_max_periods, p.work_median_periods))
        except ValueError as e:
            raise ParameterError(str(e)) from None

    def configure(self) -> None:
        p = self.params
        self.line_id = p.line_id or self.get_namespace().rstrip('/').rsplit('/', 1)[-1] or 'line'
        self.line_ns = self.get_namespace().rstrip('/')
        self.capacities = {c: n for c, n in p.buffer_capacities.items() if n > 0}
        self._topic = re.compile('^' + re.escape(self.line_ns) + r'/([A-Za-z0-9_]+)/timing/cycle$')
        self.state_pub = self.create_publisher(PlantState, 'plant/state', qos.plant_state())
        if p.cells:
            self._build(list(p.cells))
        self.diagnostics.add('plant', self._diagnose)

    def activate(self) -> None:
        p = self.params
        self._plant_timers = [self.create_timer(1.0 / p.state_rate_hz, self._publish)]
        if self.flow is None:
            self._plant_timers.append(self.create_timer(p.discovery_period_s, self._discover))

    def deactivate(self) -> None:
        for t in self._plant_timers:
            self.destroy_timer(t)
        self._plant_timers = []

    def cleanup(self) -> None:
        for sub in self._subs.values():
            self.destroy_subscription(sub)
        self._subs.clear()
        self.destroy_publisher(self.state_pub)
        self.flow = None

    # -- the line -------------------------------------------------------------------------------
    def _work_for(self, cell: str) -> WorkTimes:
        p = self.params
        long_hold = cell == p.long_hold_cell
        cfg = WorkTimeConfig(
            p.work_median_periods, p.work_sigma, p.work_tail_probability, p.work_tail_alpha,
            p.work_tail_scale_periods, max(p.work_max_periods, p.work_median_periods),
            p.long_hold_every_parts if long_hold else 0, p.long_hold_periods if long_hold else 0.0)
        return WorkTimes(cfg, cell_seed(p.seed, zlib.crc32(cell.encode())))

    def _add(self, cell: str) -> None:
        if self.flow is None:
            self.flow = LineFlow([cell], 0, interlock=self.params.start_interlock)
        else:
            self.flow.add_cell(cell, self.capacities.get(cell, self.params.buffer_capacity))
        self._work[cell] = self._work_for(cell)
        self._subs[cell] = self.create_subscription(
            CellCycle, f'{self.line_ns}/{cell}/timing/cycle', lambda m, c=cell: self._on_cycle(c, m),
            qos.cycle_report(depth=1))

    def _build(self, cells: list[str]) -> None:
        for c in cells:
            self._add(c)
        caps = ', '.join(f'{s.cell_id}[{s.capacity or "infeed"}]' for s in self.flow.stations)
        self.get_logger().info(f"line '{self.line_id}': {caps}"
                               + (f'; long holds at {self.params.long_hold_cell}'
                                  if self.params.long_hold_cell else ''))

    def _discover(self) -> None:
        """cells empty: build the line from the cells seen, once no new one appeared for one
        discovery period (so cell_02 is not put behind cell_03 because it started later).
        """
        seen = {m.group(1) for name, _ in self.get_topic_names_and_types() if (m := self._topic.match(name))}
        if self.flow is None:
            if seen and seen == self._seen_before:
                self._build(sorted(seen))
            self._seen_before = seen
            return
        for cell in sorted(seen - set(self.flow.cells)):
            self.get_logger().warning(f"cell '{cell}' appeared after the line was built: added at its end")
            self._add(cell)

    def _on_cycle(self, cell: str, msg: CellCycle) -> None:
        if self.flow is None or msg.cell_id != cell:
            return
        last = self._last.get(cell)
        if last is not None and last[0] == msg.session:
            if msg.cycle_index <= last[1]:
                return   # duplicate or out of order
            elapsed = msg.cycle_index - last[1]
            elapsed = elapsed if elapsed <= MAX_CATCH_UP else 1
        else:
            elapsed = 1
        self._last[cell] = (msg.session, msg.cycle_index)
        may_start = msg.state in UNDER_COORDINATION
        for e in self.flow.step(cell, not may_start, self._work[cell].next_cycles, elapsed):
            if e.kind == 'overflow':
                self.get_logger().error(e.text)
        self._publish(only_if_changed=True)

    def _publish(self, only_if_changed: bool = False) -> None:
        if self.flow is None:
            return
        s = self.flow.snapshot()
        key = (s.parts_in, s.parts_out, s.dropped, tuple((v.level, v.busy, v.held) for v in s.stations))
        if only_if_changed and key == self._published:
            return
        self._published = key
        self._seq += 1
        self.state_pub.publish(plant_state_msg(s, stamp=self.get_clock().now().to_msg(),
                                               line_id=self.line_id, source='simulation', seq=self._seq))

    def _diagnose(self) -> DiagReport:
        if self.flow is None:
            return DiagReport(WARN, 'waiting for cells', {})
        s = self.flow.snapshot()
        values = {'parts_in': s.parts_in, 'parts_out': s.parts_out, 'in_buffers': s.in_buffers,
                  'in_cells': s.in_cells, 'dropped': s.dropped, 'overflows': s.overflows}
        for st in s.stations:
            values[f'{st.cell_id}.buffer'] = f'{st.level}/{st.capacity}'
            values[f'{st.cell_id}.starved_cycles'] = st.starved_cycles
            values[f'{st.cell_id}.blocked_cycles'] = st.blocked_cycles
        if s.overflows:
            return DiagReport(WARN, f'{s.overflows} overflow(s), {s.dropped} part(s) dropped', values)
        return DiagReport(OK, f'{s.parts_out} parts out, {s.in_buffers} in buffers', values)


def main(args=None):
    return main_for(PlantNode, args)


if __name__ == '__main__':
    import sys
    sys.exit(main())
