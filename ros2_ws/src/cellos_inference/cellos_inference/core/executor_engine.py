"""The executor's work loop: check a request, queue it, batch, run the model, answer.

No ROS here: the node hands in Jobs and gets Outcomes through ``on_result`` (called from
the submitting thread for immediate refusals, from the delivery thread for everything else,
so the inference worker goes on to the next batch while results are published).
Inference runs only in the worker thread(s). Every submitted Job produces exactly one
Outcome, including at shutdown, when its model is unloaded and when a worker fails.

Times are on ``clock``, the monotonic clock by default: sleeps, timeouts and ages must not
move with a wall-clock step. The node converts a request's wall-clock deadline once.

Workers are supervised twice: an exception inside the loop answers the batch in hand
INTERNAL, is counted and the loop goes on; a thread that still dies (an error escaping the
loop itself) is a SupervisedThread's death (cellos_common.core.supervised_thread): counted,
restarted with backoff, and past its budget the node's process exits non-zero. The node
passes its ``supervise`` as ``spawn`` so deaths show in its 'boundary' diagnostics.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from typing import Callable

import numpy as np

from cellos_common.core.supervised_thread import SupervisedThread
from cellos_inference.core.executor_scheduler import POLICIES, Batch, SchedulerConfig
from cellos_inference.core.executor_stats import ExecutorStats
from cellos_inference.core.inference_types import Priority, Job, Outcome, Status
from cellos_inference.core.model_registry import ModelEntry, ModelRegistry, ModelSpec
from cellos_inference.core.tensor_check import batch_key, check_inputs

PACE_WINDOW_S = 0.1
RECONFIGURABLE = ('weights', 'default_weight', 'max_queue_per_cell', 'max_queue_delay_s', 'fair_window_s',
                  'critical_reserve', 'critical_horizon_s', 'reserve_margin_s')


class ExecutorEngine:
    def __init__(self, registry: ModelRegistry, config: SchedulerConfig,
                 on_result: Callable[[Outcome], None], *, policy: str = 'fair',
                 clock: Callable[[], float] = time.monotonic, workers: int = 1, log=None,
                 thread_setup: Callable[[str], None] | None = None,
                 spawn: Callable[[str, Callable[[threading.Event], None]], SupervisedThread] | None = None):
        self.registry = registry
        self.config = config
        self.on_result = on_result
        self.clock = clock
        self.log = log or (lambda msg: None)
        # runs first in each thread of the engine, with its role ('worker' | 'delivery'): priority
        self.thread_setup = thread_setup
        self.stats = ExecutorStats()
        self.backend = registry.backend.name
        self.scheduler = POLICIES[policy](config, self._cost)
        self._cv = threading.Condition()
        self._stop = False
        self.duty_cycle = 1.0   # share of time the worker may compute (site power budget)
        # share of each second a real-time (SCHED_FIFO) worker may compute: the kernel freezes a
        # real-time thread that used its budget (sched_rt_runtime_us, 95 %) for the rest of the
        # second; the worker rests before that, at a moment of its choosing (None: not real-time)
        self.rt_budget: float | None = None
        self._busy: deque = deque()      # (end, CPU seconds) of the last PACE_WINDOW_S's batches
        self._rest_until = 0.0
        self.worker_errors = 0
        self.last_worker_error = ''
        spawn = spawn or (lambda name, target: SupervisedThread(name, target))
        self._workers = [spawn(f'inference-{i}', self._work) for i in range(workers)]
        self._outbox: deque = deque()
        self._outbox_cv = threading.Condition()
        self._delivery_stop = False
        self._delivery = spawn('delivery', self._deliver)

    def _cost(self, model_id: str):
        entry = self.registry.resolve(model_id)
        return None if entry is None else (entry.service, entry.max_batch)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self._delivery.start()
        for w in self._workers:
            w.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new work, answer everything queued SHUTTING_DOWN, finish the batch in flight."""
        for t in (*self._workers, self._delivery):   # asked to stop first: leaving is not a death
            t.stop(timeout=0)
        with self._cv:
            refused = self.scheduler.shutdown()
            self._stop = True
            self._cv.notify_all()
        self._send(refused)
        for w in self._workers:
            w.stop(timeout)
        with self._outbox_cv:
            self._delivery_stop = True
            self._outbox_cv.notify()
        self._delivery.stop(timeout)
        self._send(self._take_outbox())   # never started, or timed out: deliver here

    def reconfigure(self, config: SchedulerConfig) -> None:
        """Apply changed scheduling settings, under the lock the worker decides under."""
        with self._cv:
            for name in RECONFIGURABLE:
                setattr(self.config, name, getattr(config, name))
            self._cv.notify_all()

    # -- models ---------------------------------------------------------------------
    def load_model(self, spec: ModelSpec) -> ModelEntry:
        entry, replaced = self.registry.load(spec)
        if replaced is not None:
            self._drop_model(replaced.id, f'model {replaced.name!r} was replaced by {entry.id[:12]}')
        return entry

    def unload_model(self, ref: str) -> ModelEntry:
        entry = self.registry.unload(ref)
        self._drop_model(entry.id, f'model {entry.name!r} was unloaded')
        return entry

    def _drop_model(self, model_id: str, reason: str) -> None:
        self.drain_where(lambda j: j.model_id == model_id, Status.UNKNOWN_MODEL, reason)

    def drain_where(self, which, status: Status, reason: str) -> int:
        """Answer every queued job ``which`` selects with ``status``; how many."""
        with self._cv:
            gone = self.scheduler.drain(which, status, reason)
        self._send(gone)
        return len(gone)

    def forget_cell(self, cell_ns: str) -> None:
        with self._cv:
            self.scheduler.forget(cell_ns)
        self.stats.forget(cell_ns)

    # -- requests -------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        now = self.clock()
        job.arrival = now
        if job.priority is None:
            return self._send([Outcome.reject(job, Status.REJECTED, 'unknown priority class '
                                              '(0 critical, 1 normal, 2 background)', self.backend)])
        entry = self.registry.resolve(job.model)
        if entry is None:
            known = ', '.join(e.name for e in self.registry.list()) or 'none'
            return self._send([Outcome.reject(job, Status.UNKNOWN_MODEL,
                                              f'no model {job.model!r} loaded (loaded: {known})',
                                              self.backend)])
        job.model_id = entry.id
        check = check_inputs(entry.model.inputs, job.inputs,
                             allow_non_finite=entry.allow_non_finite, max_batch=entry.max_batch)
        if not check.ok:
            return self._send([Outcome.reject(job, check.status, check.reason, self.backend)])
        job.arrays, job.items, job.batch_key = check.arrays, check.items, batch_key(check.arrays)
        with self._cv:
            refused = self.scheduler.submit(job, now)
            displaced = self.scheduler.take_displaced()
            if refused is None:
                self._cv.notify()
        self._send(displaced + ([refused] if refused is not None else []))

    def answer(self, outcome: Outcome) -> None:
        """Deliver an outcome decided outside the engine (a request refused on arrival), counted."""
        self._send([outcome])

    def _send(self, outcomes) -> None:
        for o in outcomes:
            o.backend = o.backend or self.backend
            self.stats.record(o)
            try:
                self.on_result(o)
            except Exception as e:  # a broken publisher must not kill the worker
                self.log(f'result delivery failed for {o.cell_ns}#{o.request_id}: {type(e).__name__}: {e}')

    def _post(self, outcomes) -> None:
        """From the worker: hand results to the delivery thread."""
        if not outcomes:
            return
        with self._outbox_cv:
            direct = self._delivery_stop or not self._delivery.alive
            if not direct:
                self._outbox.extend(outcomes)
                self._outbox_cv.notify()
        if direct:
            self._send(outcomes)

    def _take_outbox(self) -> list:
        with self._outbox_cv:
            out = list(self._outbox)
            self._outbox.clear()
        return out

    def _deliver(self, stop: threading.Event) -> None:
        self._setup('delivery')
        while True:
            with self._outbox_cv:
                while not self._outbox and not self._delivery_stop:
                    self._outbox_cv.wait()
                if not self._outbox and self._delivery_stop:
                    return
                out = list(self._outbox)
                self._outbox.clear()
            self._send(out)

    # -- worker ---------------------------------------------------------------------
    def _setup(self, role: str) -> None:
        if self.thread_setup is not None:
            try:
                self.thread_setup(role)
            except Exception as e:
                self.log(f'{role} thread set-up failed (runs without it): {type(e).__name__}: {e}')

    def _work(self, stop: threading.Event) -> None:
        self._setup('worker')
        cpu_mark = time.thread_time()
        while True:
            batch = None
            try:
                d = self._next()
                if d is None:
                    return
                self._post(d.expired)
                batch = d.batch
                if batch is not None:
                    compute_s = self._run(batch)
                    batch = None
                    self._rest_for_power(d.batch, compute_s)
                    # all this thread ran since the last batch, its own handling included: the
                    # kernel's real-time budget counts it all (compute alone under-counts it)
                    cpu = time.thread_time()
                    self._pace(cpu - cpu_mark)
                    cpu_mark = cpu
            except Exception as e:  # supervised: answer what was in hand, count, go on
                self.worker_errors += 1
                self.last_worker_error = f'{type(e).__name__}: {e}'
                self.log(f'inference worker error (recovered): {self.last_worker_error}\n'
                         + ''.join(traceback.format_exc(limit=4)))
                if batch is not None:   # answered first: should the recovery fail too, nothing in hand is lost
                    self._post([Outcome.reject(j, Status.INTERNAL, f'executor worker error: {self.last_worker_error}')
                                for j in batch.jobs])
                    with self._cv:
                        self.scheduler.complete(batch, 0.0, self.clock())
                time.sleep(0.001)

    def _next(self):
        """Wait for the next decision with a batch or expired outcomes; None: stop."""
        with self._cv:
            while True:
                if self._stop:
                    return None
                now = self.clock()
                resting = now < self._rest_until
                d = self.scheduler.poll(now, only_critical=resting)
                if d.batch is not None:
                    self.scheduler.started(d.batch, now)
                if d.batch is not None or d.expired:
                    return d
                wake = d.wait_until
                if resting:
                    wake = self._rest_until if wake is None else min(wake, self._rest_until)
                self._cv.wait(None if wake is None else max(0.0, wake - now))

    def _rest_for_power(self, batch: Batch, compute_s: float) -> None:
        """Under a site power budget below one busy stream, rest after each non-critical batch so
        the busy share stays at ``duty_cycle``. Only critical work may run during the rest (it
        never waits for the budget).
        """
        duty = self.duty_cycle
        if duty >= 1.0 or batch.priority == Priority.CRITICAL or not compute_s:
            return
        rest = compute_s * (1.0 / max(duty, 0.05) - 1.0)
        with self._cv:
            self._rest_until = max(self._rest_until, self.clock() + rest)

    def _pace(self, cpu_s: float) -> None:
        """A real-time worker rests when the CPU time it used over the last ``PACE_WINDOW_S`` nears
        ``rt_budget`` of it (critical work still runs during the rest, inside the kernel's remaining
        margin). The kernel counts over a second; pacing over a tenth of it keeps each rest short
        (15 ms at 0.85, not one 150 ms gap a second that every queued request would wait out) and
        still within the second's budget. ``cpu_s``: this thread's CPU time since the last call.
        """
        if self.rt_budget is None:
            return
        now = self.clock()
        self._busy.append((now, cpu_s))
        while self._busy and self._busy[0][0] < now - PACE_WINDOW_S:
            self._busy.popleft()
        over = sum(s for _, s in self._busy) - self.rt_budget * PACE_WINDOW_S
        if over > 0:
            with self._cv:
                self._rest_until = max(self._rest_until, now + over + 0.001)

    def _run(self, batch: Batch) -> float:
        with self.registry.lease(batch.model_id) as entry:
            return self._run_leased(batch, entry)

    def _run_leased(self, batch: Batch, entry: ModelEntry | None) -> float:
        outcomes = []
        if entry is None:
            outcomes = [Outcome.reject(j, Status.UNKNOWN_MODEL, f'model {j.model!r} was unloaded')
                        for j in batch.jobs]
            with self._cv:
                self.scheduler.complete(batch, 0.0, self.clock())
            self._post(outcomes)
            return 0.0
        items = batch.items
        t0 = time.perf_counter()
        try:
            feeds = {name: (batch.jobs[0].arrays[name] if len(batch.jobs) == 1 else
                            np.concatenate([j.arrays[name] for j in batch.jobs]))
                     for name in batch.jobs[0].arrays}
            outputs = entry.model.run(feeds)
            error = None
            for name, out in zip(entry.model.outputs, outputs):
                if out.ndim == 0 or out.shape[0] != items:
                    error = f"output '{name}' {list(out.shape)} has no batch dimension of {items}"
        except Exception as e:
            outputs, error = [], f'{type(e).__name__}: {e}'
        compute_s = time.perf_counter() - t0
        now = self.clock()
        with self._cv:
            self.scheduler.complete(batch, compute_s, now)
        if error is None:
            entry.service.observe(items, compute_s)
        cells: dict[str, int] = {}
        row = 0
        for j in batch.jobs:
            cells[j.cell_ns] = cells.get(j.cell_ns, 0) + j.items
            if error is not None:
                o = Outcome.reject(j, Status.INTERNAL, f'inference failed: {error}')
            else:
                o = Outcome(j.request_id, j.cell_ns, j.task, entry.id, Status.OK,
                            outputs=[(n, out[row:row + j.items])
                                     for n, out in zip(entry.model.outputs, outputs)],
                            arrival=j.arrival, transport=j.transport)
                if now > j.deadline:   # ran, but late: the outputs go along with the status
                    o.status = Status.DEADLINE
                    o.reason = f'completed {1e3 * (now - j.deadline):.1f} ms after its deadline'
            start = j.held_since if j.held_since is not None else batch.dispatched_at
            o.queue_ms = 1e3 * (start - j.arrival)
            o.batch_wait_ms = 1e3 * (batch.dispatched_at - start)
            o.compute_ms = 1e3 * compute_s
            o.estimate_ms = 1e3 * batch.estimate_s
            o.batch_size = items
            row += j.items
            outcomes.append(o)
        self.stats.record_batch(now, cells, items, compute_s)
        self._post(outcomes)
        return compute_s

    def snapshot(self):
        with self._cv:
            depths = self.scheduler.queue_depths()
        return self.stats.snapshot(self.clock(), depths, self.config.weight)
