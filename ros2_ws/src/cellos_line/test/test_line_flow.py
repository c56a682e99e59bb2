"""Plant side of line flow: part motion, overflow, conservation, snapshot checks."""
import pytest
from hypothesis import given, settings, strategies as st

from cellos_line.core.line_flow import FlowSnapshot, LineFlow, StationView, check_snapshot

CELLS = ['cell_01', 'cell_02', 'cell_03']


def one(n=1):
    return lambda: n


def test_a_part_moves_one_station_per_cycle_and_leaves_the_line():
    f = LineFlow(CELLS, 2)
    for _ in range(3):
        for c in CELLS:
            f.step(c, False, one())
    s = f.snapshot()
    assert s.parts_in == 3 and s.conserved
    for _ in range(10):
        for c in CELLS:
            f.step(c, c == 'cell_01', one())
    s = f.snapshot()
    assert s.parts_out == 3 and s.in_buffers == 0 and s.in_cells == 0 and s.conserved


def test_a_part_arriving_at_a_full_buffer_overflows_and_is_dropped():
    f = LineFlow(CELLS, 1)
    for _ in range(4):
        f.step('cell_01', False, one())       # cell_02 never steps: its buffer fills
    s = f.snapshot()
    assert s.station('cell_02').level == 1 and s.overflows == 2 and s.dropped == 2 and s.conserved


def test_held_station_finishes_its_part_but_takes_no_new_one():
    f = LineFlow(CELLS, 2)
    f.step('cell_01', False, one(3))
    for _ in range(3):
        f.step('cell_01', True, one())
    s = f.snapshot()
    assert s.station('cell_02').level == 1 and not s.station('cell_01').busy
    assert s.station('cell_01').held_cycles == 1 and s.parts_in == 1


def test_starved_cycles_are_counted_and_missed_cycles_still_finish_work():
    f = LineFlow(CELLS, 2)
    f.step('cell_02', False, one())
    assert f.snapshot().station('cell_02').starved_cycles == 1
    f.step('cell_01', False, one(5))
    f.step('cell_01', False, one(), cycles=5)
    assert f.snapshot().station('cell_02').level == 1


def test_bad_construction_and_steps_are_refused():
    with pytest.raises(ValueError, match='unique'):
        LineFlow(['a', 'a'], 2)
    with pytest.raises(ValueError, match='>= 1'):
        LineFlow(['a', 'b'], 0)
    f = LineFlow(CELLS, 2)
    with pytest.raises(KeyError, match='unknown cell'):
        f.step('cell_09', False, one())
    with pytest.raises(ValueError, match='work cycles'):
        f.step('cell_01', False, one(0))


def snap(**kw):
    base = dict(seq=1, parts_in=3, parts_out=1, dropped=0, overflows=0,
                stations=(StationView('cell_01', 0, 0, True), StationView('cell_02', 1, 2, False)))
    base.update(kw)
    return FlowSnapshot(**base)


def test_check_snapshot_accepts_a_consistent_one_and_names_each_problem():
    assert check_snapshot(snap(), ['cell_01', 'cell_02']) == ''
    assert 'unknown cell' in check_snapshot(snap(), ['cell_01'])
    bad = snap(stations=(StationView('cell_01', 0, 0, True), StationView('cell_02', -1, 2)))
    assert 'negative buffer level' in check_snapshot(bad)
    over = snap(stations=(StationView('cell_01', 0, 0, True), StationView('cell_02', 3, 2)))
    assert 'above its capacity' in check_snapshot(over)
    assert 'do not add up' in check_snapshot(snap(parts_in=7))
    assert 'negative parts_out' in check_snapshot(snap(parts_out=-1))
    assert 'no stations' in check_snapshot(snap(stations=()))
    twice = snap(stations=(StationView('cell_01', 0, 0, True), StationView('cell_01', 1, 2)))
    assert 'twice' in check_snapshot(twice)


@settings(max_examples=200, deadline=None)
@given(cells=st.integers(1, 5), cap=st.integers(1, 4),
       steps=st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.integers(1, 4), st.integers(1, 3)),
                      max_size=200))
def test_parts_are_conserved_after_every_step_whatever_happens(cells, cap, steps):
    ids = [f'c{i}' for i in range(cells)]
    f = LineFlow(ids, cap)
    for who, held, w, elapsed in steps:
        f.step(ids[who % cells], held, one(w), elapsed)
        s = f.snapshot()
        assert s.conserved, s
        assert all(0 <= x.level <= x.capacity for x in s.stations)
        assert check_snapshot(s, ids) == ''


def test_the_start_interlock_takes_no_part_it_could_not_release():
    f = LineFlow(CELLS, 1, interlock=True)
    for _ in range(6):
        f.step('cell_01', False, one())       # cell_02 never steps: its buffer fills once
    s = f.snapshot()
    assert s.station('cell_02').level == 1 and s.overflows == 0 and s.dropped == 0 and s.conserved
    assert s.station('cell_01').blocked_cycles >= 4 and not s.station('cell_01').busy
    f.step('cell_02', False, one(5))           # room again: cell_01 takes its next part
    f.step('cell_01', False, one())
    assert f.snapshot().station('cell_01').busy


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.integers(1, 3), min_size=3, max_size=3))
def test_with_the_interlock_no_order_of_cycle_starts_overflows_a_buffer(seed, caps):
    import random
    rng = random.Random(seed)
    f = LineFlow(CELLS, dict(zip(CELLS, caps)), interlock=True)
    for _ in range(300):
        c = rng.choice(CELLS)
        f.step(c, rng.random() < 0.1, lambda: rng.randint(1, 4), rng.randint(1, 3))
        assert f.snapshot().conserved
    assert f.snapshot().overflows == 0
