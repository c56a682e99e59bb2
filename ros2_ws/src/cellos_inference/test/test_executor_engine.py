"""The executor work loop with real ONNX Runtime: every job gets exactly one outcome."""
import threading
import time

import numpy as np
import pytest

import testmodels
from cellos_inference.core.backends.onnxruntime_backend import OnnxRuntimeBackend
from cellos_inference.core.executor_engine import ExecutorEngine
from cellos_inference.core.executor_scheduler import SchedulerConfig
from cellos_inference.core.inference_types import Job, Priority, RawTensor, Status
from cellos_inference.core.model_registry import ModelRegistry, ModelSpec


class Collector:
    def __init__(self):
        self.lock = threading.Lock()
        self.out = {}
        self.dupes = 0

    def __call__(self, o):
        with self.lock:
            key = (o.cell_ns, o.request_id)
            self.dupes += key in self.out
            self.out[key] = o

    def wait(self, n, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.out) >= n:
                    return dict(self.out)
            time.sleep(0.005)
        raise AssertionError(f'{len(self.out)} of {n} outcomes')


@pytest.fixture
def engine(tmp_path):
    reg = ModelRegistry(OnnxRuntimeBackend(), default_max_batch=4)
    reg.load(ModelSpec('affine', testmodels.affine(tmp_path / 'a.onnx')))
    got = Collector()
    eng = ExecutorEngine(reg, SchedulerConfig(max_queue_delay_s=0.02, max_queue_per_cell=8), got)
    eng.start()
    yield eng, got
    eng.stop()


def job(rid, x=None, cell='c1', model='affine', deadline=None, name='x', **kw):
    x = np.full((1, 4), float(rid), np.float32) if x is None else x
    return Job(rid, cell, 't', model, kw.get('prio', Priority.NORMAL),
               deadline if deadline is not None else time.monotonic() + 5.0, 0.0,
               [RawTensor(name, x.dtype.name, x.shape, x.tobytes())])


def test_results_are_correct_and_batched(engine):
    eng, got = engine
    for i in range(4):
        eng.submit(job(i))
    out = got.wait(4)
    for i in range(4):
        o = out[('c1', i)]
        assert o.status == Status.OK, o.reason
        np.testing.assert_allclose(o.outputs[0][1], 2.0 * i + 1.0)
        assert o.backend == 'onnxruntime-cpu' and o.compute_ms > 0
    assert max(o.batch_size for o in out.values()) >= 2      # held for the 20 ms batching window
    snap = eng.snapshot()
    assert snap.served == 4 and snap.cells[0].compute_share == pytest.approx(1.0)


def test_bad_inputs_each_get_their_status(engine):
    eng, got = engine
    eng.submit(job(1, model='nope'))
    eng.submit(job(2, x=np.zeros((1, 4), np.float64)))
    eng.submit(job(3, x=np.zeros((1, 5), np.float32)))
    j = job(4)
    j.inputs[0].data = j.inputs[0].data[:8]
    eng.submit(j)
    eng.submit(job(5, x=np.array([[np.nan, 0, 0, 0]], np.float32)))
    eng.submit(job(6, deadline=time.monotonic() - 0.001))
    j = job(7)
    j.priority = None
    eng.submit(j)
    out = got.wait(7)
    assert [out[('c1', i)].status for i in range(1, 8)] == [
        Status.UNKNOWN_MODEL, Status.BAD_DTYPE, Status.BAD_SHAPE, Status.BAD_SIZE,
        Status.NON_FINITE, Status.DEADLINE, Status.REJECTED]
    assert all(out[('c1', i)].reason for i in range(1, 8))
    eng.submit(job(8))                                       # and it keeps serving
    assert got.wait(8)[('c1', 8)].status == Status.OK


def conv_engine(tmp_path, queue_limit):
    """An engine serving a ~2 ms conv net one image at a time, and its image."""
    reg = ModelRegistry(OnnxRuntimeBackend(), default_max_batch=1)
    reg.load(ModelSpec('conv', testmodels.conv_net(tmp_path / 'c.onnx', size=96, channels=32)))
    got = Collector()
    eng = ExecutorEngine(reg, SchedulerConfig(max_queue_delay_s=0, max_queue_per_cell=queue_limit), got)
    eng.start()
    return eng, got, np.zeros((1, 3, 96, 96), np.float32)


def test_queue_full_and_shutdown_answer_everything(tmp_path):
    eng, got, x = conv_engine(tmp_path, 3)
    for i in range(10):
        eng.submit(job(i, x=x, model='conv', name='image', deadline=time.monotonic() + 60))
    eng.stop()
    out = got.wait(10)
    statuses = [out[('c1', i)].status for i in range(10)]
    assert Status.QUEUE_FULL in statuses and Status.SHUTTING_DOWN in statuses
    assert set(statuses) <= {Status.OK, Status.QUEUE_FULL, Status.SHUTTING_DOWN}
    assert got.dupes == 0
    eng.submit(job(11, x=x, model='conv', name='image'))
    assert got.wait(11)[('c1', 11)].status == Status.SHUTTING_DOWN


def test_unload_answers_queued_requests(tmp_path):
    eng, got, x = conv_engine(tmp_path, 50)
    for i in range(20):
        eng.submit(job(i, x=x, model='conv', name='image', deadline=time.monotonic() + 60))
    eng.unload_model('conv')
    out = got.wait(20)
    eng.stop()
    assert {o.status for o in out.values()} <= {Status.OK, Status.UNKNOWN_MODEL}
    assert any(o.status == Status.UNKNOWN_MODEL and 'unloaded' in o.reason for o in out.values())


def test_a_power_budget_below_one_stream_rests_the_worker_but_never_critical_work(engine):
    from cellos_inference.core.executor_scheduler import Batch
    from cellos_inference.core.power_model import compute_limit
    eng, got = engine
    limit = compute_limit(budget_w=35.0, idle_w=20.0, busy_w_per_stream=60.0, max_streams=1)
    assert limit.duty_cycle == pytest.approx(0.25)
    eng.duty_cycle = limit.duty_cycle
    eng._rest_for_power(Batch('affine', [], Priority.CRITICAL, 0.0), compute_s=0.2)
    assert eng._rest_until < time.monotonic()             # critical work is never followed by a rest
    eng._rest_for_power(Batch('affine', [], Priority.NORMAL, 0.0), compute_s=0.2)
    assert eng._rest_until - time.monotonic() == pytest.approx(0.6, abs=0.05)
    t0 = time.monotonic()
    eng.submit(job(1, deadline=t0 + 5.0))                  # normal: waits for the rest to end
    eng.submit(job(2, prio=Priority.CRITICAL, deadline=t0 + 5.0, cell='c2'))
    out = got.wait(1)
    assert list(out) == [('c2', 2)] and time.monotonic() - t0 < 0.3   # critical ran during the rest
    got.wait(2)
    assert time.monotonic() - t0 >= 0.5


def test_unload_waits_for_the_run_in_progress_and_replace_never_breaks_it(tmp_path):
    """The registry closes a model only after the runs holding it end (lease)."""
    reg = ModelRegistry(OnnxRuntimeBackend(), default_max_batch=1)
    reg.load(ModelSpec('conv', testmodels.conv_net(tmp_path / 'c.onnx', size=96, channels=32)))
    closed = []
    with reg.lease('conv') as entry:
        entry.model.close = lambda: closed.append(time.monotonic())
        t = threading.Thread(target=reg.unload, args=('conv',))
        t.start()
        time.sleep(0.1)
        assert reg.resolve('conv') is None and not closed     # gone for new requests, open for this run
        entry.model.run({'image': np.zeros((1, 3, 96, 96), np.float32)})
    t.join(5)
    assert closed


def test_a_worker_error_answers_the_batch_and_the_worker_goes_on(engine):
    eng, got = engine
    real = eng.scheduler.complete
    calls = {'n': 0}

    def flaky(batch, compute_s, now):
        calls['n'] += 1
        if calls['n'] == 1:
            raise ZeroDivisionError('boom')
        return real(batch, compute_s, now)
    eng.scheduler.complete = flaky
    eng.submit(job(1))
    out = got.wait(1)
    assert out[('c1', 1)].status == Status.INTERNAL and 'boom' in out[('c1', 1)].reason
    assert eng.worker_errors == 1 and eng._workers[0].deaths == 0
    eng.submit(job(2))
    assert got.wait(2)[('c1', 2)].status == Status.OK


def test_a_dead_worker_is_reported_and_restarted(engine):
    """An error escaping the worker's loop (here: its own recovery fails too) is a SupervisedThread
    death: the batch in hand is not lost silently, the thread is counted dead and runs again.
    """
    eng, got = engine
    real = eng.scheduler.complete
    calls = {'n': 0}

    def broken(batch, compute_s, now):
        calls['n'] += 1
        if calls['n'] <= 2:                   # the run's completion and the recovery's
            raise ZeroDivisionError('boom')
        return real(batch, compute_s, now)
    eng.scheduler.complete = broken
    eng.submit(job(3))
    worker = eng._workers[0]
    deadline = time.monotonic() + 3.0
    while worker.restarts < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.deaths == 1 and worker.restarts == 1 and 'ZeroDivisionError' in worker.last_error
    healthy, text = worker.health()
    assert not healthy and 'inference-0' in text
    out = got.wait(1)
    assert out[('c1', 3)].status == Status.INTERNAL and 'boom' in out[('c1', 3)].reason
    eng.submit(job(4))
    assert got.wait(2)[('c1', 4)].status == Status.OK


def test_reconfigure_takes_the_lock_and_applies(engine):
    from cellos_inference.core.executor_scheduler import SchedulerConfig
    eng, _ = engine
    eng.reconfigure(SchedulerConfig(weights={'c1': 3.0}, max_queue_per_cell=2, fair_window_s=0.5))
    assert eng.config.weight('c1') == 3.0 and eng.config.max_queue_per_cell == 2


def test_the_real_time_budget_counts_all_the_worker_thread_ran(engine):
    """The kernel throttles a SCHED_FIFO thread by all its CPU time, not only the model's."""
    eng, got = engine
    run = eng._run

    def run_and_burn(batch):
        end = time.thread_time() + 0.03
        while time.thread_time() < end:
            pass
        return run(batch)          # reports only the model's own compute (well under 1 ms here)
    eng._run = run_and_burn
    eng.rt_budget = 10.0
    eng.submit(job(1))
    got.wait(1)
    end = time.monotonic() + 2.0
    while not eng._busy and time.monotonic() < end:
        time.sleep(0.005)
    assert sum(s for _, s in eng._busy) >= 0.03


def test_a_real_time_worker_rests_before_the_kernel_would_freeze_it(engine):
    eng, got = engine
    eng.rt_budget = 0.5
    for _ in range(3):
        eng._pace(0.03)                        # 90 ms of compute within 100 ms, budget 50 ms of it
    assert eng._rest_until - time.monotonic() == pytest.approx(0.041, abs=0.01)
    eng.rt_budget = None
    eng._rest_until = 0.0
    eng._pace(10.0)
    assert eng._rest_until == 0.0


def test_a_busy_real_time_worker_rests_often_and_briefly(engine):
    """Back-to-back 10 ms batches for 3 s: the worker keeps within its budget of every second
    without a long gap (a request with a 150 ms deadline must not wait out one rest).
    """
    eng, _ = engine
    eng.stop()
    t = [0.0]
    eng.clock = lambda: t[0]
    eng.rt_budget, eng._rest_until = 0.85, 0.0
    busy, rests = [], []
    while t[0] < 3.0:
        t[0] += 0.010
        busy.append(t[0])
        eng._pace(0.010)
        if eng._rest_until > t[0]:
            rests.append(eng._rest_until - t[0])
            t[0] = eng._rest_until
    assert rests and max(rests) <= 0.02
    for start in (0.0, 1.0, 1.5):
        assert sum(start < b <= start + 1.0 for b in busy) * 0.010 <= 0.86
