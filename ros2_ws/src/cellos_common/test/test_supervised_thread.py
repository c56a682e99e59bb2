"""SupervisedThread: a worker that dies is reported, restarted within its budget, then given up."""
import threading
import time

import pytest

from cellos_common.core.supervised_thread import SupervisedThread


def wait_until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False


def test_a_worker_that_raises_is_reported_and_restarted():
    runs, deaths = [], []

    def work(stop):
        runs.append(1)
        if len(runs) == 1:
            raise ZeroDivisionError('weight 0')
        stop.wait()

    w = SupervisedThread('worker', work, backoff_s=0.01, on_death=lambda *a: deaths.append(a))
    w.start()
    assert wait_until(lambda: len(runs) == 2)
    assert deaths[0][0] == 'worker' and deaths[0][1].startswith('ZeroDivisionError: weight 0 at ')
    assert deaths[0][2] is True
    assert w.deaths == 1 and w.restarts == 1 and w.alive and w.fatal is None
    healthy, text = w.health()
    assert not healthy and 'died 1 time(s), restarted 1' in text
    assert w.stop(2.0) and not w.alive


def test_a_worker_that_keeps_dying_is_given_up_and_says_so():
    fatal = []
    w = SupervisedThread('cycle', lambda stop: 1 / 0, max_restarts=2, window_s=60.0, backoff_s=0.0,
                         on_fatal=lambda name, reason: fatal.append((name, reason)))
    w.start()
    assert wait_until(lambda: fatal)
    assert wait_until(lambda: not w.alive)
    assert w.deaths == 3 and w.restarts == 2
    assert fatal[0][0] == 'cycle' and fatal[0][1].startswith('died 3 times within 60 s, last: ZeroDivisionError')
    assert w.health() == (False, f'cycle thread given up: {w.fatal}')


def test_returning_while_meant_to_run_is_a_death_and_no_restart_means_fatal():
    fatal = []
    w = SupervisedThread('worker', lambda stop: None, restart=False, on_fatal=lambda *a: fatal.append(a))
    w.start()
    assert wait_until(lambda: fatal)
    assert fatal == [('worker', 'died: returned while it was meant to run')]


def test_stop_is_prompt_is_not_a_death_and_the_thread_can_start_again():
    started = threading.Event()

    def work(stop):
        started.set()
        while not stop.wait(0.01):
            pass
    w = SupervisedThread('worker', work)
    for _ in range(2):
        started.clear()
        w.start()
        assert started.wait(2.0)
        t0 = time.monotonic()
        assert w.stop(2.0)
        assert time.monotonic() - t0 < 1.0
    assert w.deaths == 0 and w.health()[0]


def test_an_exception_while_stopping_is_not_a_death():
    def work(stop):
        stop.wait()
        raise RuntimeError('interrupted')
    w = SupervisedThread('worker', work)
    w.start()
    assert w.stop(2.0) and w.deaths == 0


def test_a_hung_worker_is_reported_by_stop():
    release = threading.Event()
    w = SupervisedThread('worker', lambda stop: release.wait())
    w.start()
    assert not w.stop(0.1)
    release.set()
    assert wait_until(lambda: not w.alive)


def test_backoff_doubles_up_to_its_cap():
    w = SupervisedThread('w', lambda stop: None, backoff_s=0.1, max_backoff_s=0.3, max_restarts=10)
    w._recent = [0.0]
    assert w._backoff() == pytest.approx(0.1)
    w._recent = [0.0] * 2
    assert w._backoff() == pytest.approx(0.2)
    w._recent = [0.0] * 5
    assert w._backoff() == pytest.approx(0.3)
