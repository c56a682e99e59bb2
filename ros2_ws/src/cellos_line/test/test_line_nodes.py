"""The line's nodes in-process (real rclpy): the cell's cycle thread is supervised (a death is
ERROR and the thread runs again), and a coordinator whose configure fails leaves nothing built.
"""
import threading
import time

import pytest
import rclpy
import rclpy.parameter
from lifecycle_msgs.msg import State
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn

from cellos_common.nodes.diagnostics import ERROR
from cellos_line.nodes.coordinator_node import CoordinatorNode
from cellos_line.nodes.timing_node import TimingNode


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=['--ros-args', '-p', 'period_ms:=20.0'])
    yield ctx
    rclpy.shutdown(context=ctx)


def spin(node, ctx):
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    stop = threading.Event()
    t = threading.Thread(target=lambda: [ex.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)])
    t.start()
    return ex, stop, t


def wait(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_dead_cycle_thread_is_error_and_runs_again(context):
    node = TimingNode(namespace='/nodes_test/cell_01', context=context)
    ex, stop, t = spin(node, context)
    try:
        assert node.bring_up()
        assert wait(lambda: node._cycles > 3), 'no cycles'
        real = node._reports.try_publish
        died = threading.Event()

        def fail_once(payload):
            if not died.is_set():
                died.set()
                raise RuntimeError('publisher broke')
            return real(payload)
        node._reports.try_publish = fail_once
        assert wait(died.is_set)
        assert wait(lambda: node._worker.deaths == 1)
        cycles = node._cycles
        assert wait(lambda: node._cycles > cycles + 3), 'the cycle thread did not run again'
        assert node.tally.faults == 1
        assert node.boundary_report().level == ERROR   # the death is recent
        node._worker.stop()
        assert node._diagnose().level == ERROR and 'not running' in node._diagnose().message
    finally:
        stop.set()
        t.join()
        node.on_shutdown(None)
        node.destroy_node()


class BrokenCoordinator(CoordinatorNode):
    """Fails at the very end of its configure, after it built everything."""

    def _configure(self):
        super()._configure()
        raise RuntimeError('late failure')


def entities(node):
    return len(list(node.publishers)), len(list(node.subscriptions)), len(list(node.services))


def test_a_failed_configure_leaves_nothing_built(context, tmp_path):
    node = BrokenCoordinator(namespace='/nodes_test', context=context, parameter_overrides=[
        rclpy.parameter.Parameter('line_store', value=str(tmp_path / 'line.sqlite3'))])
    before = entities(node)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
    assert entities(node) == before and node._store is None
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE   # and again: nothing piles up
    assert entities(node) == before
    node.destroy_node()
