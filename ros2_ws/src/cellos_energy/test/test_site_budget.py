from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellos_energy.core.energy_signal import EnergySignal, check_signal
from cellos_energy.core.site_budget import (check_weights, for_line, line_part, split_budget,
                                            with_line_parts)

SIG = EnergySignal('site', 'test', 0.0, 0.0, 50.0, 150.0, 2000.0)


def test_parts_follow_the_weights_and_add_up_to_the_site_budget():
    sig = with_line_parts(SIG, ['line1', 'line2'], [3.0, 1.0])
    assert sig.line_budget_w == pytest.approx((1500.0, 500.0)) and check_signal(sig) is None
    assert for_line(sig, 'line1').power_budget_w == pytest.approx(1500.0)
    assert 'line2: 500 W of the site budget 2000 W' in line_part(sig, 'line2')[1]


def test_a_line_without_a_weight_gets_nothing_and_an_unshared_budget_is_whole():
    sig = with_line_parts(SIG, ['line1'], [1.0])
    part, why = line_part(sig, 'line7')
    assert part == 0.0 and 'no part' in why and 'line1' in why
    assert line_part(SIG, 'line7')[0] == 2000.0


def test_bad_weight_tables_are_refused_with_the_reason():
    assert 'weight' in check_weights(['a', 'b'], [1.0])
    assert 'unique' in check_weights(['a', 'a'], [1.0, 1.0])
    assert 'all be 0' in check_weights(['a'], [0.0])
    assert '>= 0' in check_weights(['a'], [-1.0])
    with pytest.raises(ValueError):
        split_budget(100.0, ['a/b'], [1.0])


def test_a_signal_whose_parts_exceed_the_site_budget_is_rejected():
    bad = replace(SIG, line_ids=('line1', 'line2'), line_budget_w=(1500.0, 600.0))
    assert 'over the site budget' in check_signal(bad)
    assert 'line budget' in check_signal(replace(SIG, line_ids=('line1',), line_budget_w=()))


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1e7), st.lists(st.floats(0.0, 1e3), min_size=1, max_size=8))
def test_the_site_total_never_exceeds_the_budget(budget, weights):
    if sum(weights) <= 0:
        return
    ids = [f'line{i}' for i in range(len(weights))]
    sig = with_line_parts(replace(SIG, power_budget_w=budget), ids, weights)
    assert check_signal(sig) is None
    assert sum(line_part(sig, i)[0] for i in ids) <= budget * (1 + 1e-12) + 1e-9
