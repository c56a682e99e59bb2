"""The energy gate and feed nodes in-process (real rclpy, real messages and services):

- the gate's freshness is monotonic: after a backward step of its host's wall clock a dead feed
  still goes stale and the latched state's heartbeat goes on (the step is made by giving the
  node module a wall clock an hour behind: libfaketime cannot step the wall clock alone here,
  see the shared ros2-on-pip notes);
- DeferJob with NaN, inf, negative or huge durations, or long ids, is refused with the reason;
  an oversized signal is refused and counted; nothing raises;
- every numeric field of an EnergySignal at its extremes (inf, -inf, NaN, 1e308, 5e-324, the
  Time limits...) through the gate's own callbacks: refused with a reason and counted, or taken,
  never an exception (a 5e-324 s forecast step overflowed int() in the deferral planning);
- the feed's VEN thread: one at most, stopped at deactivate, not lost by a runtime parameter
  change; plain HTTP refused unless allowed.
"""
import copy
import math
import threading
import time
import types

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from cellos_common.nodes import qos
from cellos_energy.core.energy_signal import EnergySignal, Forecast
from cellos_energy.nodes import energy_feed_node, energy_gate_node
from cellos_energy.nodes.convert_energy import signal_to_msg
from cellos_interfaces.msg import EnergySignal as EnergySignalMsg
from cellos_interfaces.msg import GateState
from builtin_interfaces.msg import Time
from cellos_interfaces.srv import DeferJob
from loopback_vtn import LoopbackVtn


class Graph:
    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.peer = rclpy.create_node('peer', context=self.context)
        self.ex = SingleThreadedExecutor(context=self.context)
        self.ex.add_node(self.peer)
        self.nodes = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self.ex.spin_once(timeout_sec=0.02)

    def add(self, node):
        self.nodes.append(node)
        self.ex.add_node(node)
        return node

    def call(self, srv_type, name, request):
        client = self.peer.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(request)
        assert wait_until(future.done, 5.0)
        self.peer.destroy_client(client)
        return future.result()

    def close(self):
        self._stop.set()
        self._thread.join()
        for n in self.nodes:
            n.on_shutdown(None)
            n.destroy_node()
        self.peer.destroy_node()
        self.ex.shutdown()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def wait_until(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def signal(stamp_s, **kw):
    return signal_to_msg(EnergySignal(site_id='site', source='test', stamp_s=stamp_s, data_time_s=stamp_s,
                                      price_per_mwh=40.0, carbon_g_per_kwh=100.0, power_budget_w=5000.0, **kw))


def test_a_dead_feed_goes_stale_after_a_backward_wall_clock_step(graph, monkeypatch):
    gate = graph.add(energy_gate_node.EnergyGateNode(
        context=graph.context, namespace='/line1/cell_01',
        parameter_overrides=[Parameter('job_store', value=''),
                             Parameter('stale_after_s', value=1.0), Parameter('check_period_s', value=0.05),
                             Parameter('republish_period_s', value=0.2), Parameter('min_dwell_s', value=0.0)]))
    states = []
    graph.peer.create_subscription(GateState, '/line1/cell_01/energy/gate', states.append, qos.latched_state())
    feed = graph.peer.create_publisher(EnergySignalMsg, '/site/energy_feed', qos.latched_state())
    assert gate.bring_up()
    feed.publish(signal(time.time()))
    assert wait_until(lambda: states and not states[-1].safe_fallback, 5.0)
    # the feed dies, and this host's wall clock steps back an hour
    graph.peer.destroy_publisher(feed)
    behind = types.SimpleNamespace(time=lambda: time.time() - 3600.0, monotonic=time.monotonic)
    monkeypatch.setattr(energy_gate_node, 'time', behind)
    n = len(states)
    assert wait_until(lambda: states[-1].safe_fallback, 5.0), 'a dead feed looked fresh after the step'
    assert 'stale' in states[-1].reason
    assert wait_until(lambda: len(states) > n + 5, 5.0), 'the heartbeat stopped after the step'


def test_bad_deferred_jobs_and_signals_are_refused_with_a_reason(graph):
    gate = graph.add(energy_gate_node.EnergyGateNode(context=graph.context, namespace='/line1/cell_02',
                                                     parameter_overrides=[Parameter('job_store', value='')]))
    assert gate.bring_up()
    now = time.time()
    finish = rclpy.time.Time(seconds=int(now + 3600)).to_msg()
    for job_id, duration, words in [('nan', math.nan, 'duration nan'), ('inf', math.inf, 'duration inf'),
                                    ('neg', -1.0, 'duration -1.0'), ('huge', 1e300, 'duration 1e+300'),
                                    ('x' * 10_000, 60.0, '10000 characters'), ('', 60.0, 'empty job_id')]:
        res = graph.call(DeferJob, '/line1/cell_02/energy/defer',
                         DeferJob.Request(job_id=job_id, duration_s=duration, latest_finish=finish))
        assert not res.accepted and words in res.reason, res.reason
    res = graph.call(DeferJob, '/line1/cell_02/energy/defer',
                     DeferJob.Request(job_id='ok', duration_s=60.0, latest_finish=finish))
    assert res.accepted, res.reason
    pub = graph.peer.create_publisher(EnergySignalMsg, '/site/energy_feed', qos.latched_state())
    big = signal(time.time(), forecast=Forecast(60.0, 0.0, (40.0,) * 5000, ()))
    pub.publish(big)
    assert wait_until(lambda: gate.tracker.rejected >= 1, 5.0)
    assert 'forecast of 5000 slots' in gate.tracker.last_rejection
    assert gate.tally.rejected_by_kind()['energy/defer'] == 6 and gate.tally.faults == 0


EXTREMES = (math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, -5e-324, 1e-300, 0.0, -0.0, -1.0)
TIME_EXTREMES = (Time(sec=2**31 - 1, nanosec=999_999_999), Time(sec=-2**31), Time(sec=0, nanosec=2**32 - 1))


def extreme_signals(good: EnergySignalMsg):
    """(field, value, message): ``good`` with one numeric field (or one element of a number
    array, or a stamp) at an extreme.
    """
    for name, kind in EnergySignalMsg.get_fields_and_field_types().items():
        if kind == 'double':
            values = [(v, {name: v}) for v in EXTREMES]
        elif kind == 'sequence<double>':
            values = [(v, {name: [v] + list(getattr(good, name))[1:]}) for v in EXTREMES]
        elif kind == 'uint8':
            values = [(v, {name: v}) for v in (4, 255)]
        elif kind in ('builtin_interfaces/Time', 'std_msgs/Header'):
            values = [(t, {name: t}) for t in TIME_EXTREMES]
        else:
            continue
        for value, change in values:
            m = copy.deepcopy(good)
            for k, v in change.items():
                if k == 'header':
                    m.header.stamp = v
                else:
                    setattr(m, k, v)
            yield name, value, m


def test_extreme_values_in_every_numeric_field_of_a_signal_are_refused_or_taken_never_raise():
    """The gate's callbacks called directly (no executor: an exception reaches the test instead
    of the node's boundary), with a job held so the deferral planning runs on every signal.
    """
    context = rclpy.Context()
    rclpy.init(context=context)
    gate = energy_gate_node.EnergyGateNode(context=context, namespace='/line1/cell_03',
                                           parameter_overrides=[Parameter('job_store', value='')])
    try:
        assert gate.bring_up()
        now = time.time()
        good = signal(now, forecast=Forecast(60.0, 0.0, (40.0, 90.0) * 12, (100.0,) * 24),
                      line_ids=('line1',), line_budget_w=(4000.0,))
        deadline = rclpy.time.Time(seconds=int(now + 3600)).to_msg()
        taken = refused = 0
        for i, (name, value, msg) in enumerate(extreme_signals(good)):
            before = (gate.tracker.accepted, gate.tracker.rejected)
            gate._on_signal(msg)
            resp = gate._on_defer(DeferJob.Request(job_id=f'job{i}', duration_s=600.0, latest_finish=deadline),
                                  DeferJob.Response())
            gate._tick()
            if gate.tracker.rejected > before[1]:
                refused += 1
                assert gate.tracker.last_rejection, (name, value)
            else:
                assert gate.tracker.accepted == before[0] + 1, (name, value)
                taken += 1
            assert resp.accepted or resp.reason, (name, value)
            gate._on_signal(good)                              # back to a good curve for the next one
        assert gate.tally.faults == 0
        assert gate.tally.rejected_by_kind()['energy signal'] == refused > 0 and taken > 0
        step = [m for n, v, m in extreme_signals(good) if n == 'forecast_step_s' and v == 5e-324][0]
        gate._on_signal(step)
        assert 'forecast step 5e-324 s' in gate.tracker.last_rejection
    finally:
        gate.on_shutdown(None)
        gate.destroy_node()
        rclpy.shutdown(context=context)


def feed_node(graph, url, **params):
    overrides = [Parameter('source', value='openadr'), Parameter('vtn_url', value=url),
                 Parameter('ven_id', value='ven_site'), Parameter('openadr_retry_s', value=0.3)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return graph.add(energy_feed_node.EnergyFeedNode(context=graph.context, namespace='/site',
                                                     parameter_overrides=overrides))


def ven_threads():
    return [t for t in threading.enumerate() if t.name == 'openadr-ven' and t.is_alive()]


def test_one_ven_at_most_and_none_after_deactivate(graph):
    vtn = LoopbackVtn(poll_s=0.3)
    try:
        feed = feed_node(graph, vtn.url, allow_plain_http=True)
        assert feed.bring_up()
        assert wait_until(lambda: feed._ven.registered, 20.0)
        assert len(ven_threads()) == 1
        # a runtime parameter change must not lose track of the running VEN
        assert feed.set_parameters([Parameter('publish_period_s', value=0.5)])[0].successful
        for _ in range(2):
            assert feed.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert ven_threads() == [], 'the VEN thread outlived deactivate'
            assert feed.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert len(ven_threads()) == 1
        assert feed.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert ven_threads() == []
    finally:
        vtn.close()


def test_plain_http_is_refused_unless_allowed(graph):
    feed = feed_node(graph, 'http://127.0.0.1:9/OpenADR2/Simple/2.0b')
    assert feed.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert ven_threads() == []
