from cellos_inference.core.arbiter_policy import ArbiterConfig, ArbiterPolicy, EnergyGate, GateLevel
from cellos_inference.core.inference_types import Priority, Status


def policy(**kw):
    kw.setdefault('cell_ns', 'line1/cell1')
    return ArbiterPolicy(ArbiterConfig(**kw))


def submit(p, rid=1, *, now=0.0, deadline=1.0, task='inspection', prio=Priority.NORMAL, cell='line1/cell1'):
    return p.submit(request_id=rid, cell_ns=cell, task=task, model='m', priority=int(prio),
                    deadline=deadline, now=now)


def test_refusals_have_their_status():
    p = policy(max_in_flight=1)
    assert submit(p, cell='line1/cell2').refusal.status == Status.REJECTED
    assert submit(p, deadline=-1.0).refusal.status == Status.DEADLINE
    assert p.submit(request_id=1, cell_ns='', task='t', model='m', priority=7, deadline=1,
                    now=0).refusal.status == Status.REJECTED
    assert submit(p).pending is not None
    full = submit(p, 2).refusal
    assert full.status == Status.REJECTED and 'max_in_flight 1' in full.reason


def test_task_priority_overrides_request():
    p = policy(task_priority={'maintenance': Priority.BACKGROUND})
    assert submit(p, task='maintenance', prio=Priority.CRITICAL).pending.priority == Priority.BACKGROUND


def test_energy_gate_levels():
    gate = EnergyGate()
    p = ArbiterPolicy(ArbiterConfig('c'), gate)
    args = dict(cell_ns='c', model='m', deadline=1.0, now=0.0)
    gate.set(GateLevel.ECO, 'price peak')
    r = p.submit(request_id=1, task='maintenance', priority=Priority.BACKGROUND, **args).refusal
    assert r.status == Status.GATED and 'price peak' in r.reason
    assert p.submit(request_id=2, task='x', priority=Priority.NORMAL, **args).pending
    gate.set(GateLevel.HALT)
    assert p.submit(request_id=3, task='x', priority=Priority.CRITICAL, **args).refusal.status == Status.GATED
    assert p.submit(request_id=4, task='inspection', priority=Priority.CRITICAL, **args).pending


def test_forwards_only_to_a_live_executor_and_each_request_ends_once():
    p = policy(executor_timeout_s=0.5)
    submit(p, 1, deadline=1.0)
    assert p.to_forward(0.0, can_send=True) == []          # no executor seen yet: waits here
    p.executor_seen(0.1)
    assert p.to_forward(0.1, can_send=False) == []         # not matched yet
    fwd = p.to_forward(0.1, can_send=True)
    assert [f.request_id for f in fwd] == [1] and p.to_forward(0.1, True) == []
    assert p.on_result(fwd[0].forward_id).request_id == 1
    assert p.on_result(fwd[0].forward_id) is None          # a duplicate is not a second answer


def test_executor_lost_times_out_in_flight_at_once_and_waiting_at_deadline():
    p = policy(executor_timeout_s=0.5)
    p.executor_seen(0.0)
    submit(p, 1, deadline=5.0)
    p.to_forward(0.0, True)
    assert p.expire(0.4) == []
    lost = p.expire(0.6)                                   # no heartbeat for > 0.5 s
    assert [(x.request_id, 'executor lost' in why) for x, why in lost] == [(1, True)]
    submit(p, 2, now=0.6, deadline=2.0)                    # accepted while no executor: waits
    assert p.expire(1.98, lead_s=0.01) == []
    late = p.expire(1.99, lead_s=0.01)                     # answered no later than its deadline
    assert [x.request_id for x, _ in late] == [2] and not p.pending


def test_next_check_is_the_next_thing_due_not_a_poll():
    p = policy(executor_timeout_s=0.5)
    assert p.next_check(0.0, lead_s=0.01, idle_s=0.25) == 0.25                 # nothing pending
    submit(p, 1, deadline=0.2)
    assert p.next_check(0.0, lead_s=0.01, idle_s=0.25) == 0.01                 # held: no executor yet
    p.executor_seen(0.0)
    p.to_forward(0.0, True)
    assert abs(p.next_check(0.0, lead_s=0.01, idle_s=0.25) - 0.19) < 1e-9      # its deadline, less the lead
    submit(p, 2, deadline=5.0)
    p.to_forward(0.0, True)
    assert p.expire(0.19, lead_s=0.01)                                         # 1 answered at that check
    assert abs(p.next_check(0.19, lead_s=0.01, idle_s=0.25) - 0.44) < 1e-9     # 2: the idle check
    p.executor_seen(0.3)
    assert p.next_check(0.3, lead_s=0.01, idle_s=1.0) == 0.8                   # the executor's status due
    assert p.next_check(0.9, lead_s=0.01, idle_s=1.0) == 0.91                  # never in the past


def test_result_after_timeout_is_dropped():
    p = policy()
    p.executor_seen(0.0)
    submit(p, 1, deadline=0.2)
    fid = p.to_forward(0.0, True)[0].forward_id
    assert len(p.expire(0.2)) == 1
    assert p.on_result(fid) is None


def test_gate_refuses_an_unknown_level_and_keeps_its_own():
    import pytest
    from cellos_common.core.gate_level import GateLevel
    from cellos_inference.core.arbiter_policy import EnergyGate
    g = EnergyGate()
    g.set(GateLevel.ECO, 'peak')
    with pytest.raises(ValueError, match='gate level 4'):
        g.set(4, 'forged')
    assert g.level == GateLevel.ECO and g.reason == 'peak'


def test_results_only_from_the_executor_publisher_bound_at_first_contact():
    from cellos_inference.core.arbiter_policy import ResultSource
    src = ResultSource()
    executor = {b'E1'}
    assert src.accept(b'X', lambda: executor) == (False, 'publisher is not the executor')
    assert src.accept(b'E1', lambda: executor) == (True, 'bound')
    assert src.accept(b'E1', lambda: set()) == (True, '')         # bound: no graph lookup needed
    executor.add(b'E2')                                           # a second "executor" while E1 lives
    assert src.accept(b'E2', lambda: executor)[0] is False
    executor.discard(b'E1')                                       # the executor restarted
    assert src.accept(b'E2', lambda: executor) == (True, 'bound')
    assert src.accept(b'', lambda: executor)[0] is False and src.refused == 3


def test_unknown_result_status_is_counted_not_raised():
    from cellos_inference.core.arbiter_policy import ArbiterConfig, ArbiterPolicy
    pol = ArbiterPolicy(ArbiterConfig('line1/cell_01'))
    pol.count(14)
    assert pol.counts == {'status 14': 1}
