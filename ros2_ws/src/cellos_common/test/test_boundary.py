"""Counts of refused inputs and caught faults, with throttled log lines (pure)."""
from cellos_common.core.boundary import MAX_KINDS, OTHER, Tally, clip


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_one_log_line_per_kind_and_second_with_the_count_of_the_rest():
    clock = Clock()
    tally = Tally(log_every_s=1.0, clock=clock)
    assert tally.reject('energy_feed', 'price nan') == 'energy_feed: rejected price nan'
    assert tally.reject('energy_feed', 'price inf') is None
    assert tally.reject('energy_feed', 'price -1e9') is None
    assert tally.reject('defer', 'duration nan') is not None     # another kind has its own line
    clock.t += 1.0
    assert tally.reject('energy_feed', 'price 1e99') == 'energy_feed: rejected price 1e99 (+2 more since the last line)'
    assert tally.rejected == 5 and tally.rejected_by_kind() == {'energy_feed': 4, 'defer': 1}
    assert tally.last(faults=False)[:2] == ('energy_feed', 'price 1e99')
    assert tally.faults == 0 and tally.last(faults=True) is None


def test_a_fault_is_recent_for_a_minute():
    clock = Clock()
    tally = Tally(recent_s=60.0, clock=clock)
    assert not tally.recent_fault()
    line = tally.fault('timer _tick', ValueError('4 is not a valid GateLevel'))
    assert line == 'timer _tick: caught ValueError: 4 is not a valid GateLevel'
    assert tally.recent_fault()
    clock.t += 61.0
    assert not tally.recent_fault() and tally.faults == 1


def test_kinds_and_reasons_are_bounded():
    tally = Tally()
    for i in range(MAX_KINDS + 50):
        tally.reject(f'/forged_{i}', 'x' * 100_000)
    kinds = tally.rejected_by_kind()
    assert len(kinds) == MAX_KINDS + 1 and kinds[OTHER] == 50
    assert len(tally.last(faults=False)[1]) <= 300
    assert clip('a\nb   c') == 'a b c'
