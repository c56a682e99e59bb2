"""Backpressure: no overflow under any work-time sequence, release as soon as the jam clears,
holds propagate upstream naming their root cause.
"""
from hypothesis import given, settings, strategies as st

from cellos_line.core.backpressure import backpressure_holds, is_backpressure
from cellos_line.core.flow_sim import simulate
from cellos_line.core.line_flow import FlowSnapshot, StationView


def line(*stations):
    views = tuple(StationView(c, lvl, cap, busy) for c, lvl, cap, busy in stations)
    n_in = sum(v.level for v in views) + sum(v.busy for v in views)
    return FlowSnapshot(1, n_in, 0, 0, 0, views)


def test_holds_the_cell_feeding_a_full_buffer_and_nobody_else():
    s = line(('c1', 0, 0, True), ('c2', 2, 2, False), ('c3', 0, 2, False))
    assert backpressure_holds(s) == {'c1': 'backpressure: c2 buffer full'}


def test_counts_the_part_in_work_and_the_latency():
    s = line(('c1', 0, 0, True), ('c2', 1, 2, False))
    assert 'c1' in backpressure_holds(s, 1)          # 1 waiting + 1 in work = capacity
    s = line(('c1', 0, 0, False), ('c2', 1, 3, False))
    assert backpressure_holds(s, 1) == {}
    assert 'c1' in backpressure_holds(s, 3)          # 2 more may start before the hold arrives


def test_release_as_soon_as_the_buffer_has_room():
    assert backpressure_holds(line(('c1', 0, 0, False), ('c2', 1, 2, False)), 1) == {}


def test_a_drift_hold_propagates_upstream_with_its_root_cause():
    s = line(('c1', 0, 0, True), ('c2', 1, 2, True), ('c3', 2, 2, False), ('c4', 0, 2, False))
    holds = backpressure_holds(s, 1, {'c3': 'revalidating: drift'})
    assert holds == {'c2': 'backpressure: c3 buffer full [c3: revalidating: drift]',
                     'c1': 'backpressure: c2 buffer full [c3: revalidating: drift]'}
    assert all(is_backpressure(r) for r in holds.values())


work_seq = st.lists(st.integers(1, 12), min_size=1, max_size=60)


def cycler(seq):
    it = iter(seq * 1000)
    return lambda: next(it)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 5), cap=st.integers(1, 5), latency=st.integers(1, 3),
       seqs=st.lists(work_seq, min_size=5, max_size=5), order=st.integers(0, 10_000),
       drift=st.tuples(st.integers(0, 4), st.integers(0, 150), st.integers(0, 100)))
def test_with_backpressure_no_buffer_ever_overflows_and_parts_are_conserved(
        n, cap, latency, seqs, order, drift):
    cap = max(cap, latency)                          # the nodes refuse capacity < latency
    cells = [f'c{i}' for i in range(n)]
    who, start, length = drift

    def external(k):
        return {cells[who % n]: 'revalidating'} if start <= k < start + length else {}

    def check(k, s, holds):
        assert s.conserved
        assert all(v.level <= v.capacity for v in s.stations)
    r = simulate(cells, cap, {c: cycler(seqs[i]) for i, c in enumerate(cells)}, 300,
                 latency_cycles=latency, external_holds=external, order_seed=order, check=check)
    assert r.overflows == 0 and r.dropped == 0 and r.conserved_always
    # memoryless policy: a cell is released at the first cycle start after the room is seen
    assert r.release_lag_max <= latency - 1


@settings(max_examples=50, deadline=None)
@given(seq=work_seq, order=st.integers(0, 100))
def test_without_backpressure_a_slow_cell_makes_the_line_drop_parts(seq, order):
    cells = ['c0', 'c1', 'c2']
    work = {'c0': lambda: 1, 'c1': lambda: 3, 'c2': cycler(seq)}
    r = simulate(cells, 2, work, 100, coordinated=False, order_seed=order)
    assert r.dropped > 0 and r.conserved_always
    r = simulate(cells, 2, {'c0': lambda: 1, 'c1': lambda: 3, 'c2': cycler(seq)}, 100, order_seed=order)
    assert r.dropped == 0 and r.holds_applied > 0 and r.holds_released > 0
