"""Every callback of a CellosNode runs behind a boundary: what escapes is caught, counted and
shown as ERROR, and the node goes on (in-process, real rclpy, real messages); a process whose
worker dies beyond repair exits non-zero (real processes).
"""
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import Int32
from std_srvs.srv import SetBool, Trigger

from cellos_common.nodes.base import CellosNode
from cellos_common.nodes.diagnostics import ERROR, OK, WARN


class FragileNode(CellosNode):
    def __init__(self, **kwargs):
        super().__init__('fragile', namespace='/boundary_test', **kwargs)
        self.seen = []

    def configure(self):
        self.create_subscription(Int32, 'numbers', self._on_number, 10)
        self.create_service(SetBool, 'set', self._on_set)
        self.create_service(Trigger, 'trigger', self._on_trigger)
        self.tick_timer = self.create_timer(0.01, self._tick)

    def _on_number(self, msg):
        if msg.data < 0:
            self.reject('numbers', f'{msg.data} is negative')
            return
        self.seen.append(10 // msg.data)        # 0 raises ZeroDivisionError

    def _on_set(self, request, response):
        if request.data:
            raise KeyError('no such model')
        response.success, response.message = True, 'done'
        return response

    def _on_trigger(self, request, response):
        raise RuntimeError('handler bug')

    def _tick(self):
        self.tick_timer.cancel()
        raise ValueError('4 is not a valid GateLevel')


@pytest.fixture
def running():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = FragileNode(context=context)
    peer = rclpy.create_node('peer', namespace='/boundary_test', context=context)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(node)
    ex.add_node(peer)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.02)
    t = threading.Thread(target=spin)
    t.start()
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    yield node, peer
    stop.set()
    t.join()
    ex.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.shutdown(context=context)


def call(peer, srv_type, name, request):
    client = peer.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(request)
    end = time.monotonic() + 5.0
    while not future.done() and time.monotonic() < end:
        time.sleep(0.01)
    peer.destroy_client(client)
    return future.result()


def wait_until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_exceptions_in_callbacks_are_caught_counted_and_the_node_goes_on(running):
    node, peer = running
    assert wait_until(lambda: node.tally.faults_by_kind().get('timer _tick') == 1)
    pub = peer.create_publisher(Int32, 'numbers', 10)
    assert wait_until(lambda: pub.get_subscription_count() == 1)
    for v in (5, 0, -3, 2, 0, 1):
        pub.publish(Int32(data=v))
    assert wait_until(lambda: node.seen == [2, 5, 10])     # the zeros raised, the rest went on
    assert node.tally.faults_by_kind() == {'timer _tick': 1, 'topic numbers': 2}
    assert node.tally.rejected_by_kind() == {'numbers': 1}

    bad = call(peer, SetBool, 'set', SetBool.Request(data=True))
    assert not bad.success and bad.message == "internal error: KeyError: 'no such model'"
    good = call(peer, SetBool, 'set', SetBool.Request(data=False))
    assert good.success and good.message == 'done'
    assert not call(peer, Trigger, 'trigger', Trigger.Request()).success

    report = node.boundary_report()
    assert report.level == ERROR and 'fault(s) caught' in report.message
    assert report.values['faults'] == 5 and report.values['rejected'] == 1
    assert report.values['faults service set'] == 1


def test_boundary_levels():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = FragileNode(context=context)
    try:
        assert node.boundary_report().level == OK
        node.reject('numbers', 'negative')
        assert node.boundary_report().level == WARN
        node.fault('timer x', RuntimeError('boom'))
        assert node.boundary_report().level == ERROR
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


PROCESS = textwrap.dedent('''
    import sys, threading, time
    from cellos_common.nodes.base import CellosNode, main_for

    MODE = sys.argv[1]

    class Worker(CellosNode):
        def __init__(self, **kw):
            super().__init__('worker', **kw)

        def configure(self):
            if MODE == 'supervised':
                def work(stop):
                    time.sleep(0.05)
                    raise ZeroDivisionError('cell weight 0')
                self.worker = self.supervise('scheduler', work, max_restarts=2)

        def activate(self):
            if MODE == 'plain_thread':
                threading.Thread(target=lambda: 1 / 0, name='scheduler').start()
            elif MODE == 'supervised':
                self.worker.start()
            print('ACTIVE', flush=True)

    sys.exit(main_for(Worker, ['x', '--ros-args', '-p', 'autostart:=true']))
''')


@pytest.mark.parametrize('mode', ['plain_thread', 'supervised'])
def test_a_process_whose_worker_dies_exits_non_zero(tmp_path, mode):
    script = tmp_path / 'worker.py'
    script.write_text(PROCESS)
    p = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert 'ACTIVE' in p.stdout
    if mode == 'supervised':
        assert p.stderr.count('scheduler thread died: ZeroDivisionError: cell weight 0') == 3
        assert 'restarting it' in p.stderr and 'not restarted' in p.stderr
    assert 'exiting with code 1' in p.stderr


def test_ctrl_c_exits_zero(tmp_path):
    script = tmp_path / 'worker.py'
    script.write_text(PROCESS)
    p = subprocess.Popen([sys.executable, str(script), 'idle'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == 'ACTIVE'
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
