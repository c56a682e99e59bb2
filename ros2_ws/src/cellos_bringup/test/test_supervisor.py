"""The runner's process supervision (pure: processes and bring-up are stand-ins with a clock)."""
from cellos_bringup.supervisor import ProcessSupervisor


class Proc:
    def __init__(self):
        self.returncode = None
        self.terminated = False

    def poll(self):
        return self.returncode

    def terminate(self):
        self.terminated = True
        self.returncode = -15


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def make(bring_up=lambda name: []):
    clock = Clock()
    started, lines = [], []

    def spawn(name):
        started.append(name)
        return Proc()
    sup = ProcessSupervisor(spawn, bring_up, log=lines.append, max_restarts=3, window_s=60.0, clock=clock)
    return sup, clock, started, lines


def test_a_crashed_process_is_started_again_after_a_doubling_backoff_and_counted():
    sup, clock, started, lines = make()
    sup.start('line1.cell_01')
    sup.start('gpu0')
    assert sup.check() is None and started == ['line1.cell_01', 'gpu0']
    sup.procs['line1.cell_01'].returncode = -9                 # SIGKILL
    assert sup.check() is None and 'exited with code -9; starting it again in 1 s' in lines[-1]
    clock.t = 0.5
    assert sup.check() is None and started.count('line1.cell_01') == 1     # still backing off
    clock.t = 1.0
    assert sup.check() is None and started.count('line1.cell_01') == 2
    assert sup.restarts == {'line1.cell_01': 1} and 'nodes are active again' in lines[-1]
    sup.procs['line1.cell_01'].returncode = 1
    clock.t = 2.0
    sup.check()
    assert 'in 2 s' in lines[-1]                                # second crash within the window


def test_a_process_that_keeps_crashing_is_given_up():
    sup, clock, started, lines = make()
    sup.start('p')
    for i in range(3):
        sup.procs['p'].returncode = 1
        assert sup.check() is None
        clock.t += 10.0
        assert sup.check() is None
    sup.procs['p'].returncode = 1
    problem = sup.check()
    assert problem and 'its 4th crash within 60 s: given up' in problem
    assert sup.total_restarts == 3


def test_crashes_outside_the_window_do_not_add_up():
    sup, clock, started, lines = make()
    sup.start('p')
    for i in range(10):
        sup.procs['p'].returncode = 1
        assert sup.check() is None
        clock.t += 100.0
        assert sup.check() is None
    assert sup.restarts == {'p': 10}


def test_a_restart_whose_nodes_do_not_come_up_is_stopped_and_counts_as_a_crash():
    sup, clock, started, lines = make(bring_up=lambda name: ['/line1/cell_01/vision'])
    sup.start('p')
    sup.procs['p'].returncode = -9
    sup.check()
    clock.t = 5.0
    sup.check()
    assert sup.procs['p'].terminated and 'did not come up: stopping it' in lines[-1]
    sup.check()
    assert 'exited with code -15' in lines[-1]
