"""Heavy-tailed work times: deterministic per seed, long holds where configured."""
import pytest

from cellos_line.core.work_times import WorkTimeConfig, WorkTimes, cycles_for


def test_deterministic_by_seed_and_at_least_one_cycle():
    a = WorkTimes(WorkTimeConfig(), 7).sequence(500)
    assert a == WorkTimes(WorkTimeConfig(), 7).sequence(500)
    assert a != WorkTimes(WorkTimeConfig(), 8).sequence(500)
    assert min(a) >= 1


def test_heavy_tail_and_periodic_long_holds():
    w = WorkTimes(WorkTimeConfig(long_hold_every=50, long_hold_periods=40.0), 1)
    seq = [w.next_periods() for _ in range(5000)]
    assert sum(x < 1.0 for x in seq) / len(seq) > 0.8          # most parts fit one cycle
    assert max(x for i, x in enumerate(seq) if (i + 1) % 50) > 5.0   # the tail reaches far
    assert all(seq[i] >= 40.0 for i in range(49, 5000, 50))


def test_cycles_for_rounds_work_up_to_whole_cycles():
    assert cycles_for(0.2) == 1 and cycles_for(1.0) == 1 and cycles_for(1.01) == 2


def test_bad_config_is_refused_with_every_reason():
    with pytest.raises(ValueError, match='median_periods.*tail_probability'):
        WorkTimeConfig(median_periods=0, tail_probability=2)
