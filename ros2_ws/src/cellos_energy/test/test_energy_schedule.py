import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellos_energy.core.energy_schedule import JobWindow, NormalWork, ScheduleError, schedule, slot_cost


def served_late(bounds, served, work: NormalWork, sub=48):
    """Independent replay: arrivals and serving uniform within each slot, in ``sub`` steps per
    slot, oldest first. Returns (kWh served later than their deadline, kWh never served).
    """
    queue, late = [], 0.0       # queue: [arrived_h, kWh]
    for a, b, kwh in work.spans:
        if b <= bounds[0]:
            queue.append([a, kwh])
    for s, x in enumerate(served):
        t0, dt = bounds[s], (bounds[s + 1] - bounds[s]) / sub
        for k in range(sub):
            t = t0 + k * dt
            queue.append([t, work.arrived(t + dt) - work.arrived(max(t, bounds[0]))])
            left = x / sub
            while queue and left > 1e-12:
                take = min(queue[0][1], left)
                if t + dt > queue[0][0] + work.deadline_h + 2 * dt + 1e-9:
                    late += take
                queue[0][1] -= take
                left -= take
                if queue[0][1] <= 1e-12:
                    queue.pop(0)
    return late, sum(q[1] for q in queue)


def test_job_goes_to_the_cheapest_hour_of_its_window():
    plan = schedule([0, 1, 2, 3, 4], [50.0, 10.0, 80.0, 5.0], jobs=[JobWindow('j', 0.0, 3.0, 4.0, 4.0)])
    assert plan.jobs_kwh['j'] == pytest.approx((0.0, 4.0, 0.0, 0.0))
    assert plan.cost == pytest.approx(40.0)


def test_negative_prices_are_the_best_time_but_create_no_work():
    work = NormalWork(((0.0, 4.0, 4.0),), 2.0, 3.0)
    plan = schedule([0, 1, 2, 3, 4], [50.0, 60.0, -20.0, 70.0], work)
    assert plan.normal_kwh[2] == pytest.approx(2.0)     # as much as has arrived and the rate allows
    assert sum(plan.normal_kwh) == pytest.approx(4.0)   # and no more than arrived
    assert served_late([0, 1, 2, 3, 4], plan.normal_kwh, work) == pytest.approx((0.0, 0.0), abs=1e-6)


def test_deadline_forces_work_through_a_spike():
    """Ten hours at 10x the median: with a 2 h deadline most of it must run through the spike."""
    prices = [50.0, 50.0] + [500.0] * 10 + [50.0] * 4
    work = NormalWork(((0.0, 16.0, 16.0),), 2.0, 2.0)
    plan = schedule(list(range(17)), prices, work)
    late, left = served_late(list(range(17)), plan.normal_kwh, work)
    assert late == pytest.approx(0.0, abs=1e-6) and left == pytest.approx(0.0, abs=1e-6)
    assert sum(plan.normal_kwh[2:12]) >= 6.0 - 1e-6    # arrivals in the spike, minus what waits 2 h past it
    assert served_late(list(range(17)), [0.0] * 12 + [4.0] * 4, work)[0] > 5.0    # waiting it out is late


def test_infeasible_deadline_is_a_clear_error():
    with pytest.raises(ScheduleError, match='deadline'):
        schedule([0, 1, 2], [1.0, 1.0], NormalWork(((-5.0, 0.0, 10.0),), 1.0, 1.0))
    with pytest.raises(ScheduleError, match='do not fit'):
        schedule([0, 1, 2], [1.0, 1.0], jobs=[JobWindow('j', 0.0, 1.0, 5.0, 1.0)])


def test_a_deadline_inside_a_slot_cuts_it():
    """Work held since -0.5 h with a 1 h deadline falls due at 0.5 h, inside the first slot."""
    work = NormalWork(((-0.5, 0.0, 0.5),), 2.0, 1.0)
    plan = schedule([0, 1, 2], [100.0, 0.0], work, terminal_cost_per_kwh=0.0)
    assert plan.bounds_h == pytest.approx((0.0, 0.5, 1.0, 2.0)) and plan.slot_of == (0, 0, 1)
    assert plan.normal_kwh[0] == pytest.approx(0.5)      # by 0.5 h, however dear the slot
    assert plan.energy_kwh() == pytest.approx((0.5, 0.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-20, 200), min_size=2, max_size=6), st.integers(1, 3))
def test_matches_exhaustive_search_on_small_integer_cases(prices, deadline):
    """1 kWh arrives per slot, at most 2 kWh served per slot, served within ``deadline`` slots:
    the program's optimum equals the best of every integer schedule (interval constraints: the
    optimum is integral).
    """
    n = len(prices)
    bounds = list(range(n + 1))
    work = NormalWork(((0.0, float(n), float(n)),), 2.0, float(deadline))
    best = None
    for xs in itertools.product((0, 1, 2), repeat=n):
        # feasible: never more served than arrived, nothing older than the deadline at a slot end
        backlog, ok = 0.0, True
        for s, x in enumerate(xs):
            backlog += 1 - x
            ok &= -1e-9 <= backlog <= min(deadline, s + 1) + 1e-9
        if ok and backlog < 1e-9:
            cost = sum(p * x for p, x in zip(prices, xs))
            best = cost if best is None else min(best, cost)
    plan = schedule(bounds, prices, work)
    assert plan.cost == pytest.approx(best, abs=1e-6)
    assert slot_cost(plan, prices) == pytest.approx(best, abs=1e-6)
    late, left = served_late(bounds, plan.normal_kwh, work)
    assert late < 1e-6 and left < 1e-6
