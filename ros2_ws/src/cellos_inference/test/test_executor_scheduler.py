"""Scheduler properties: strict priority classes, EDF within a class, weighted fair share
across cells (a flooding cell cannot starve the others), batching, admission control.
"""
from collections import defaultdict

from hypothesis import given, settings, strategies as st

from cellos_inference.core.executor_scheduler import FairScheduler, FifoScheduler, SchedulerConfig
from cellos_inference.core.inference_types import Job, Priority, Status
from cellos_inference.core.service_time import ServiceTime

SERVICE_S = 0.010   # per item, any batch size


def costs(max_batch=1, per_item=SERVICE_S):
    s = ServiceTime(alpha=1.0)
    s.observe(1, per_item)
    s.observe(64, 64 * per_item)
    return lambda model_id: (s, max_batch) if model_id in ('m', 'm2') else None


def job(rid, cell='a', prio=Priority.NORMAL, deadline=1e9, arrival=0.0, model='m', items=1):
    return Job(rid, cell, 'task', model, Priority(prio), deadline, arrival, [], model_id=model,
               items=items, batch_key=(model,))


def sched(cls=FairScheduler, max_batch=1, **cfg):
    cfg.setdefault('max_queue_delay_s', 0.0)
    cfg.setdefault('max_queue_per_cell', 10_000)
    return cls(SchedulerConfig(**cfg), costs(max_batch))


def run_all(s, now=0.0, limit=100_000):
    """Dispatch until empty, completing each batch with its estimate; yields batches."""
    for _ in range(limit):
        d = s.poll(now)
        if d.batch is None:
            return
        s.started(d.batch, now)
        now += d.batch.estimate_s
        s.complete(d.batch, d.batch.estimate_s, now)
        yield d.batch


jobs_strategy = st.lists(st.tuples(st.sampled_from('abcd'), st.sampled_from(list(Priority)),
                                   st.floats(10.0, 1000.0)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(jobs_strategy, st.integers(1, 4))
def test_strict_priority_between_classes(specs, max_batch):
    s = sched(max_batch=max_batch)
    for i, (cell, prio, dl) in enumerate(specs):
        assert s.submit(job(i, cell, prio, dl), 0.0) is None
    classes = [b.priority for b in run_all(s)]
    assert classes == sorted(classes)
    assert all(all(j.priority == b.priority for j in b.jobs) for b in run_all(s))


@settings(max_examples=150, deadline=None)
@given(jobs_strategy)
def test_edf_within_a_class_when_shares_do_not_bind(specs):
    s = sched(fair_window_s=1e9)
    for i, (cell, prio, dl) in enumerate(specs):
        s.submit(job(i, cell, prio, dl), 0.0)
    order = [(b.priority, b.jobs[0].deadline) for b in run_all(s)]
    assert order == sorted(order)
    assert len(order) == len(specs)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=5), st.integers(1, 4),
       st.floats(0.0, 0.05), st.integers(0, 3))
def test_weighted_fair_share_among_backlogged_cells(weights, max_batch, window, flooder):
    """Every cell stays backlogged (cell `flooder` keeps 20x more queued); compute per unit of
    weight never differs by more than the window plus one batch.
    """
    cells = [f'c{i}' for i in range(len(weights))]
    flooder = cells[flooder % len(cells)]
    s = sched(max_batch=max_batch, fair_window_s=window, weights=dict(zip(cells, weights)))
    got = defaultdict(float)
    rid, now = 0, 0.0
    for step in range(150):
        for c in cells:
            want = 40 if c == flooder else 2
            while s.queue_depths().get(c, 0) < want:
                rid += 1
                assert s.submit(job(rid, c), now) is None
        d = s.poll(now)
        b = d.batch
        s.started(b, now)
        now += b.estimate_s
        s.complete(b, b.estimate_s, now)
        for j in b.jobs:
            got[j.cell_ns] += b.estimate_s / b.items
    norm = [got[c] / w for c, w in zip(cells, weights)]
    bound = window + max_batch * SERVICE_S / min(weights) + 1e-9
    assert max(norm) - min(norm) <= bound, (norm, bound)


def test_flooding_cell_does_not_delay_a_light_cell_beyond_the_window():
    s = sched(fair_window_s=0.02)
    now, rid, waits = 0.0, 0, []
    for step in range(300):
        while s.queue_depths().get('flood', 0) < 100:
            rid += 1
            s.submit(job(rid, 'flood'), now)
        if step % 3 == 0:
            rid += 1
            s.submit(job(rid, 'light', arrival=now), now)
        b = s.poll(now).batch
        now += b.estimate_s
        s.complete(b, b.estimate_s, now)
        waits += [now - j.arrival for j in b.jobs if j.cell_ns == 'light']
    assert waits and max(waits) <= 0.02 + 2 * SERVICE_S + 1e-9
    # the light cell asked for 1/3 of the executor and got all of it
    assert len(waits) >= 99


def test_idle_cell_banks_no_credit():
    s = sched(fair_window_s=0.0)
    for i in range(50):
        s.submit(job(i, 'a'), 0.0)
    list(run_all(s))                       # cell a alone: its virtual time grows
    for i in range(10):
        s.submit(job(100 + i, 'a'), 1.0)
        s.submit(job(200 + i, 'b'), 1.0)   # b arrives late: starts at the class clock
    cells = [b.jobs[0].cell_ns for b in run_all(s, now=1.0)]
    assert cells[:6].count('b') <= 4 and cells[:6].count('a') >= 2


def test_batches_same_model_and_shape_up_to_max_batch():
    s = sched(max_batch=4)
    for i in range(6):
        s.submit(job(i, 'ab'[i % 2]), 0.0)
    s.submit(job(9, 'a', model='m2'), 0.0)
    sizes = [(b.model_id, b.items) for b in run_all(s)]
    assert sizes == [('m', 4), ('m', 2), ('m2', 1)]


def test_a_batch_never_makes_its_most_urgent_member_late():
    s = sched(max_batch=4)                       # 10 ms per item: a batch of 3 ends at 30 ms
    for i, dl in enumerate((0.025, 0.028, 0.100)):
        s.submit(job(i, 'abc'[i], Priority.CRITICAL, deadline=dl), 0.0)
    batches = [[j.request_id for j in b.jobs] for b in run_all(s)]
    assert batches[0] == [0, 1]                  # ends at 20 ms: both in time (all three: 30 ms)
    assert batches[1] == [2]


def test_partial_batch_is_held_then_released():
    s = sched(max_batch=4, max_queue_delay_s=0.005)
    s.submit(job(1, arrival=0.0), 0.0)
    d = s.poll(0.001)
    assert d.batch is None and abs(d.wait_until - 0.005) < 1e-9
    s.submit(job(2, arrival=0.002), 0.002)
    d = s.poll(0.006)
    assert d.batch is not None and d.batch.items == 2
    assert d.batch.jobs[0].held_since == 0.001


def test_admission_refuses_unmeetable_deadline_at_once():
    s = sched()
    for i in range(10):
        assert s.submit(job(i, deadline=0.1), 0.0) is None   # 10 x 10 ms, the last ends at 0.1
    refused = s.submit(job(100, deadline=0.1), 0.0)
    assert refused.status == Status.DEADLINE and '100.0 ms of work ahead' in refused.reason
    assert s.submit(job(99, deadline=0.05), 0.0) is None      # earlier deadline: EDF runs it first
    critical = s.submit(job(101, prio=Priority.CRITICAL, deadline=0.02), 0.0)
    assert critical is None   # a higher class does not wait behind normal work


def test_queued_request_that_can_no_longer_make_it_is_answered_deadline():
    s = sched()
    s.submit(job(1, deadline=0.05), 0.0)
    d = s.poll(0.045)
    assert d.batch is None and [o.status for o in d.expired] == [Status.DEADLINE]
    assert s.queued() == 0


def test_queue_full_unknown_model_and_shutdown():
    s = sched(max_queue_per_cell=2)
    assert s.submit(job(1), 0) is None and s.submit(job(2), 0) is None
    assert s.submit(job(3), 0).status == Status.QUEUE_FULL
    assert s.submit(job(4, cell='b'), 0) is None          # per cell, not global
    assert s.submit(job(5, cell='b', model='gone'), 0).status == Status.UNKNOWN_MODEL
    drained = s.shutdown()
    assert sorted(o.request_id for o in drained) == [1, 2, 4]
    assert all(o.status == Status.SHUTTING_DOWN for o in drained)
    assert s.submit(job(6, cell='c'), 0).status == Status.SHUTTING_DOWN


def test_higher_class_displaces_lowest_class_from_a_full_cell_queue():
    s = sched(max_queue_per_cell=2)
    s.submit(job(1, prio=Priority.BACKGROUND, deadline=5), 0)
    s.submit(job(2, prio=Priority.NORMAL, deadline=5), 0)
    assert s.submit(job(3, prio=Priority.CRITICAL, deadline=5), 0) is None
    gone = s.take_displaced()
    assert [(o.request_id, o.status) for o in gone] == [(1, Status.QUEUE_FULL)]
    assert 'displaced' in gone[0].reason and s.take_displaced() == []
    # same class: nothing lower to displace, so the newcomer is the one refused
    assert s.submit(job(4, prio=Priority.NORMAL, deadline=5), 0).status == Status.QUEUE_FULL
    assert s.take_displaced() == []


def test_fifo_baseline_ignores_priority_and_deadline():
    s = sched(FifoScheduler, max_batch=1)
    s.submit(job(1, prio=Priority.BACKGROUND, deadline=100), 0)
    s.submit(job(2, prio=Priority.CRITICAL, deadline=0.001), 0)
    assert [b.jobs[0].request_id for b in run_all(s)] == [1, 2]


def test_critical_reserve_cuts_non_critical_batches_to_fit_the_tightest_critical_budget():
    s = sched(max_batch=8, critical_horizon_s=10.0, reserve_margin_s=0.0)
    assert s.submit(job(1, prio=Priority.CRITICAL, deadline=0.045, arrival=0.0), 0.0) is None
    b = s.poll(0.0).batch
    assert b.priority == Priority.CRITICAL
    s.started(b, 0.0)
    s.complete(b, b.estimate_s, 0.01)
    for i in range(8):
        s.submit(job(10 + i, deadline=100.0), 0.01)
    # a critical request may arrive any moment with 45 ms budget and 10 ms compute: 35 ms of slack,
    # so a normal batch takes 3 requests (30 ms), not 8 (80 ms)
    assert abs(s.critical_slack(0.01) - 0.035) < 1e-9
    assert s.poll(0.01).batch.items == 3
    # once no critical request was seen for the horizon, batches are full again
    assert s.poll(20.0).batch.items == 5


def test_critical_reserve_off_and_never_below_one_request():
    s = sched(max_batch=8, critical_reserve=False)
    s.submit(job(1, prio=Priority.CRITICAL, deadline=0.015), 0.0)
    s.poll(0.0)
    for i in range(8):
        s.submit(job(10 + i, deadline=5.0), 0.0)
    assert s.poll(0.0).batch.items == 8
    s = sched(max_batch=8)
    s.submit(job(1, prio=Priority.CRITICAL, deadline=0.012), 0.0)
    s.poll(0.0)
    for i in range(8):
        s.submit(job(10 + i, deadline=5.0), 0.0)
    assert s.poll(0.0).batch.items == 1          # no slack at all: one at a time, never starved


def test_model_unloaded_between_lookups_is_answered_not_raised():
    service = ServiceTime(alpha=1.0)
    service.observe(1, SERVICE_S)
    state = {'loaded': True, 'calls': 0}

    def cost(model_id):
        state['calls'] += 1
        return (service, 4) if state['loaded'] else None
    s = FairScheduler(SchedulerConfig(max_queue_delay_s=0.0), cost)
    assert s.submit(job(1, deadline=5.0), 0.0) is None
    state['loaded'] = False                       # unload right after _expire looked
    orig = s._expire
    s._expire = lambda now: (state.__setitem__('loaded', True), orig(now), state.__setitem__('loaded', False))[1]
    d = s.poll(0.0)
    assert d.batch is None and [o.status for o in d.expired] == [Status.UNKNOWN_MODEL]
    state['loaded'] = False
    assert s.submit(job(2, deadline=5.0), 0.0).status == Status.UNKNOWN_MODEL


def test_zero_negative_and_nan_weights_never_divide_by_zero():
    cfg = SchedulerConfig(weights={'a': 0.0, 'b': -1.0, 'c': float('nan'), 'd': 'x'})
    assert cfg.weight('a') > 0 and cfg.weight('b') > 0 and cfg.weight('c') == 1.0 and cfg.weight('d') == 1.0
    s = FairScheduler(cfg, costs(1))
    for i, c in enumerate('abcd'):
        s.submit(job(i, c), 0.0)
    assert len(list(run_all(s))) == 4


def test_idle_cells_leave_no_state_behind():
    s = sched()
    s.submit(job(1, 'gone'), 0.0)
    list(run_all(s))
    s.forget('gone')
    assert 'gone' not in s.queue_depths() and all('gone' not in s.vtime[p] for p in Priority)


def test_a_clock_stepping_back_never_makes_every_request_late():
    """busy_until lives on the executor clock; if that clock stepped back (it is monotonic, but the
    rule holds whatever it is), the work ahead is never more than the batches in flight.
    """
    s = sched(max_batch=1)
    s.submit(job(1, deadline=1000.0), 1000.0 - 0.5)
    b = s.poll(999.5).batch
    s.started(b, 999.5)                       # busy until 999.51
    assert s.busy_for(970.0) == SERVICE_S     # 30 s back: still one batch, not 29.5 s
    assert s.submit(job(2, deadline=970.05), 970.0) is None
