"""Line flow benchmark: coordinated (backpressure) vs uncoordinated (fixed timers) on the same
line and the same work, side by side.

Pure core in SIMULATED time (cellos_line.core.flow_sim: the plant of core.line_flow and the policy
of core.backpressure, the same code the plant and coordinator nodes run), deterministic by
seed; the coordinator's decisions reach the cells LATENCY cycles after the plant sample they
were made from (as over DDS: plant -> coordinator -> correction -> cell).

Line: 6 cells, input buffers of CAPACITY parts (the first cell fed by the infeed), heavy-tailed
work times (log-normal body, 5 % Pareto tail, core.inference_timing defaults), and cell_04 with
a long hold of 40 periods every 50 parts.

Bottleneck-limited rate: each cell's standalone capacity over the run, i.e. how many of ITS
OWN work times (the same per-cell, per-part sequence the line runs) fit in the run's cycles if
it never waited for a part or for room; the smallest is the bottleneck's. fraction = parts out
of the line / that number. starved = cycles the bottleneck cell sat free with no part waiting
(coordinated run); overflows/dropped: parts that arrived at a full buffer (lost).
"""
from __future__ import annotations

import time

from cellos_line.core.flow_sim import simulate, standalone_parts
from cellos_line.core.work_times import WorkTimeConfig, WorkTimes, cell_seed

CELLS = [f'cell_{i:02d}' for i in range(1, 7)]
HOLD_CELL = 'cell_04'
CAPACITY = 16
LATENCY = 2
CYCLES = 30_000
SEED = 2024


def work_config(cell: str) -> WorkTimeConfig:
    if cell == HOLD_CELL:
        return WorkTimeConfig(long_hold_every=50, long_hold_periods=40.0)
    return WorkTimeConfig()


def streams() -> dict:
    return {c: WorkTimes(work_config(c), cell_seed(SEED, i)).next_cycles for i, c in enumerate(CELLS)}


def test_bench_line_flow():
    t0 = time.perf_counter()
    caps = {c: standalone_parts(WorkTimes(work_config(c), cell_seed(SEED, i)).sequence(CYCLES), CYCLES)
            for i, c in enumerate(CELLS)}
    bottleneck = min(caps, key=caps.get)
    coord = simulate(CELLS, CAPACITY, streams(), CYCLES, coordinated=True, latency_cycles=LATENCY)
    uncoord = simulate(CELLS, CAPACITY, streams(), CYCLES, coordinated=False, latency_cycles=LATENCY)
    wall = time.perf_counter() - t0
    frac = coord.parts_out / caps[bottleneck]
    ufrac = uncoord.parts_out / caps[bottleneck]
    print(f'\nline_flow: simulated time (pure core, deterministic, seed {SEED}), {len(CELLS)} cells, '
          f'{CYCLES} cycles, buffers {CAPACITY}, decision latency {LATENCY} cycles, long holds at {HOLD_CELL}; '
          f'bottleneck {bottleneck} standalone {caps[bottleneck]} parts '
          f'({caps[bottleneck] / CYCLES:.3f}/cycle; others {min(v for c, v in caps.items() if c != bottleneck)}+); '
          f'coordinated out {coord.parts_out}, holds {coord.holds_applied}/{coord.holds_released} released, '
          f'conserved {coord.conserved_always}; uncoordinated out {uncoord.parts_out}, '
          f'starved (bottleneck) {uncoord.starved[bottleneck]}; {wall:.1f} s wall')
    print(f'BENCH line_flow coord_fraction={frac:.4f} overflows={coord.overflows} dropped={coord.dropped} '
          f'starved={coord.starved[bottleneck]} uncoord_fraction={ufrac:.4f} '
          f'uncoord_overflows={uncoord.overflows} uncoord_dropped={uncoord.dropped}')
    assert coord.conserved_always and uncoord.conserved_always
    assert coord.overflows == 0 and coord.dropped == 0
