"""Which queued requests the shared executor runs next, and which it refuses at once.

Pure and deterministic: the caller passes ``now`` (seconds) and a cost lookup; nothing here
reads a clock or sleeps. Two policies share one interface:

``FairScheduler`` (the executor's policy)
  1. priority classes are strict: critical before normal before background;
  2. within a class, weighted fair share across cells by virtual time (start-time fair
     queuing): each cell's virtual time grows by the compute it received / its weight; a
     cell becoming busy again starts at the class's virtual clock, so idling banks no credit.
     Only cells whose virtual time is within ``fair_window_s`` of the least-served busy
     cell are eligible, so a flooding cell cannot run ahead of the others by more than the
     window (plus one batch);
  3. among eligible cells, earliest deadline first;
  4. dynamic batching: the chosen request takes along same-model, same-shape requests of
     its class from eligible cells (EDF order) up to the model's max batch; a batch that is
     not full is held open up to ``max_queue_delay_s`` after its oldest member arrived, but
     only while nothing else is waiting and its earliest deadline still allows it;
  5. admission: a request is refused with DEADLINE at once when even the work that must
     run before it (in-flight batch, higher classes, same class with earlier deadline, at
     batched cost; of another cell only as much as fair share lets it run first, so a
     flooding cell's backlog does not get the others refused) plus its own compute ends
     after its deadline; QUEUE_FULL when its cell
     already has ``max_queue_per_cell`` queued (a higher-class request displaces the cell's
     lowest-class one instead, which is answered QUEUE_FULL); SHUTTING_DOWN after ``shutdown()``.
     Queued requests that can no longer make their deadline are answered DEADLINE instead
     of being run late;
  6. critical reserve: a non-critical batch is cut to the size whose modelled compute still
     lets a critical request arriving the moment it starts meet its deadline: the tightest
     critical budget (deadline - arrival) seen in the last ``critical_horizon_s``, less the
     compute of the largest critical burst seen then, less ``reserve_margin_s``. One
     non-critical request always may run (else critical traffic would starve the rest), so
     the reserve holds while a single non-critical request fits in that slack.

``FifoScheduler`` (the baseline): arrival order, same batching and queue limit, no classes,
no shares, no deadline awareness.
"""
from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Callable

from cellos_inference.core.inference_types import Job, Outcome, Priority, Status
from cellos_inference.core.service_time import ServiceTime

# model_id -> (service time estimate, max batch), or None when the model is gone
CostLookup = Callable[[str], 'tuple[ServiceTime, int] | None']


MIN_WEIGHT = 1e-3


@dataclass
class SchedulerConfig:
    weights: dict = field(default_factory=dict)    # cell_ns -> weight
    default_weight: float = 1.0
    max_queue_per_cell: int = 32
    max_queue_delay_s: float = 0.002
    fair_window_s: float = 0.02
    critical_reserve: bool = True
    critical_horizon_s: float = 10.0
    reserve_margin_s: float = 0.002

    def weight(self, cell: str) -> float:
        """Never zero, negative or NaN: a weight divides virtual time."""
        w = self.weights.get(cell, self.default_weight)
        try:
            w = float(w)
        except (TypeError, ValueError):
            w = 1.0
        return w if w >= MIN_WEIGHT else (MIN_WEIGHT if w == w else 1.0)


@dataclass
class Batch:
    model_id: str
    jobs: list
    priority: Priority
    dispatched_at: float
    estimate_s: float = 0.0

    @property
    def items(self) -> int:
        return sum(j.items for j in self.jobs)


@dataclass
class Decision:
    batch: Batch | None = None
    wait_until: float | None = None     # nothing to run before this time (None: idle)
    expired: list = field(default_factory=list)   # Outcomes to send now


class _PerItem:
    """Batched per-row cost by model, looked up once per admission decision."""

    def __init__(self, cost: CostLookup):
        self.cost, self.cache = cost, {}

    def __call__(self, model_id: str) -> float:
        v = self.cache.get(model_id)
        if v is None:
            c = self.cost(model_id)
            v = self.cache[model_id] = 0.0 if c is None else c[0].per_item(c[1])
        return v


class _SchedulerBase:
    def __init__(self, config: SchedulerConfig, cost: CostLookup):
        self.config = config
        self.cost = cost
        self.shutting_down = False
        self._seq = 0
        self._depth: dict[str, int] = defaultdict(int)
        self.busy_until = 0.0   # estimated end of the batch(es) in flight
        self._in_flight: dict[int, float] = {}   # id(batch) -> its modelled compute

    # -- shared admission -------------------------------------------------------------
    def _precheck(self, job: Job, cost) -> Outcome | None:
        """``cost``: the model's cost, looked up once by the caller (an unload may run in
        between two lookups).
        """
        if self.shutting_down:
            return Outcome.reject(job, Status.SHUTTING_DOWN, 'executor is shutting down')
        if self._depth.get(job.cell_ns, 0) >= self.config.max_queue_per_cell:
            return Outcome.reject(job, Status.QUEUE_FULL,
                                  f'cell {job.cell_ns} already has {self._depth[job.cell_ns]} '
                                  f'requests queued (limit {self.config.max_queue_per_cell})')
        if cost is None:
            return Outcome.reject(job, Status.UNKNOWN_MODEL, f'model {job.model!r} is not loaded')
        return None

    def _enqueued(self, job: Job) -> None:
        self._seq += 1
        job.seq = self._seq
        self._depth[job.cell_ns] += 1

    def _dequeued(self, job: Job) -> None:
        self._depth[job.cell_ns] -= 1
        if self._depth[job.cell_ns] <= 0:
            del self._depth[job.cell_ns]     # a cell's state lives only while it has work queued

    def queue_depths(self) -> dict[str, int]:
        return {c: n for c, n in self._depth.items() if n}

    def forget(self, cell: str) -> None:
        """Drop what is kept of a cell that is gone (nothing of it may be queued)."""

    def queued(self) -> int:
        return sum(self._depth.values())

    def _held(self, decision: 'Decision', jobs: list, max_batch: int, others_waiting: bool,
              now: float, service: ServiceTime) -> bool:
        """Keep a partial batch open for more members? Marks them and sets wait_until."""
        hold = self._hold_until(jobs, max_batch, others_waiting, now, service)
        if hold is None:
            return False
        for j in jobs:
            if j.held_since is None:
                j.held_since = now
        decision.wait_until = hold
        return True

    def _hold_until(self, jobs: list, max_batch: int, others_waiting: bool, now: float,
                    service: ServiceTime) -> float | None:
        if others_waiting or self.config.max_queue_delay_s <= 0:
            return None
        if sum(j.items for j in jobs) >= max_batch:
            return None
        until = min(j.arrival for j in jobs) + self.config.max_queue_delay_s
        until = min(until, min(j.deadline for j in jobs) - service.estimate(max_batch))
        return until if until > now else None

    def started(self, batch: Batch, now: float) -> None:
        self.busy_until = max(self.busy_until, now) + batch.estimate_s
        self._in_flight[id(batch)] = batch.estimate_s

    def complete(self, batch: Batch, compute_s: float, now: float) -> None:
        self._in_flight.pop(id(batch), None)
        self.busy_until = now if self.busy_until <= now + 1e-9 or not self._in_flight else self.busy_until

    def busy_for(self, now: float) -> float:
        """Work in flight still to run: never more than the batches in flight (a clock that stepped
        back must not make every request look late).
        """
        return min(max(0.0, self.busy_until - now), sum(self._in_flight.values()))

    def shutdown(self) -> list[Outcome]:
        self.shutting_down = True
        return self.drain(lambda j: True, Status.SHUTTING_DOWN, 'executor is shutting down')

    def drain(self, which, status: Status, reason: str) -> list[Outcome]:
        raise NotImplementedError


class FairScheduler(_SchedulerBase):
    name = 'fair'

    def __init__(self, config: SchedulerConfig, cost: CostLookup):
        super().__init__(config, cost)
        # queues[class][cell] -> list of jobs
        self._queues: dict[Priority, dict[str, list]] = {p: defaultdict(list) for p in Priority}
        self.vtime: dict[Priority, dict[str, float]] = {p: defaultdict(float) for p in Priority}
        self._vclock: dict[Priority, float] = {p: 0.0 for p in Priority}
        self._displaced: list[Outcome] = []
        self._critical_seen: deque = deque()   # (time, slack_s) of recent critical requests

    def forget(self, cell: str) -> None:
        if any(self._queues[p].get(cell) for p in Priority):
            return
        for p in Priority:
            self._queues[p].pop(cell, None)
            self.vtime[p].pop(cell, None)
        self._depth.pop(cell, None)

    # -- admission ------------------------------------------------------------------
    def _displace_for(self, job: Job) -> bool:
        """A full cell queue makes room for a higher class: the cell's lowest-class,
        latest-deadline request leaves with QUEUE_FULL (see ``take_displaced``).
        """
        victims = [j for p in Priority if p > job.priority for j in self._queues[p][job.cell_ns]]
        if not victims:
            return False
        v = max(victims, key=lambda j: (j.priority, j.deadline, j.seq))
        self._queues[v.priority][v.cell_ns].remove(v)
        self._dequeued(v)
        self._displaced.append(Outcome.reject(
            v, Status.QUEUE_FULL, f'displaced from the full queue of cell {v.cell_ns} by a '
                                  f'{job.priority.name.lower()} request'))
        return True

    def take_displaced(self) -> list[Outcome]:
        out, self._displaced = self._displaced, []
        return out

    def submit(self, job: Job, now: float) -> Outcome | None:
        cost = self.cost(job.model_id)
        if (not self.shutting_down and self._depth.get(job.cell_ns, 0) >= self.config.max_queue_per_cell
                and cost is not None):
            self._displace_for(job)
        refused = self._precheck(job, cost)
        if refused is not None:
            return refused
        service, max_batch = cost
        if job.priority == Priority.CRITICAL:
            self._note_critical(job, now, service)
        ahead = self.busy_for(now) + self._work_ahead(job, max_batch)
        finish = now + ahead + service.estimate(job.items)
        if finish > job.deadline:
            return Outcome.reject(job, Status.DEADLINE,
                                  f'cannot meet deadline: {1e3 * (job.deadline - now):.1f} ms left, '
                                  f'{1e3 * ahead:.1f} ms of work ahead + '
                                  f'{1e3 * service.estimate(job.items):.1f} ms compute')
        cells = self._queues[job.priority]
        if not cells[job.cell_ns]:   # busy again: start at the class clock, bank no idle credit
            v = self.vtime[job.priority]
            v[job.cell_ns] = max(v[job.cell_ns], self._vclock[job.priority])
        self._enqueued(job)
        cells[job.cell_ns].append(job)
        return None

    # -- critical reserve -------------------------------------------------------------
    def _note_critical(self, job: Job, now: float, service) -> None:
        """Remember how much slack a critical request arriving now would leave: its budget
        less the compute of every critical request queued with it (a burst batches).
        """
        burst = job.items + sum(q.items for jobs in self._queues[Priority.CRITICAL].values() for q in jobs)
        self._critical_seen.append((now, job.deadline - now - service.estimate(burst)))

    def critical_slack(self, now: float) -> float | None:
        """How long a non-critical batch may run, or None when no critical work is expected."""
        seen = self._critical_seen
        while seen and seen[0][0] < now - self.config.critical_horizon_s:
            seen.popleft()
        if not seen or not self.config.critical_reserve:
            return None
        return min(s for _, s in seen) - self.config.reserve_margin_s

    def _work_ahead(self, job: Job, max_batch: int) -> float:
        """Queued compute (s) that runs before ``job``: every higher class; in its own class
        its cell's earlier deadlines, and of each other cell the earlier deadlines only up
        to what fair share lets that cell run first: it is served only while its virtual
        time is within the window of the least-served busy cell, which is at most ``job``'s
        cell at the point ``job`` runs (plus one batch of granularity).
        """
        per_item = _PerItem(self.cost)
        p, cell = job.priority, job.cell_ns
        ahead = sum(per_item(q.model_id) * q.items for h in Priority if h < p
                    for jobs in self._queues[h].values() for q in jobs)
        cells = self._queues[p]
        own = sum(per_item(q.model_id) * q.items for q in cells.get(cell, ())
                  if q.deadline <= job.deadline)
        vt = self.vtime[p]
        v_job = (vt[cell] if cells.get(cell) else max(vt[cell], self._vclock[p])) \
            + own / self.config.weight(cell)
        busy = [vt[c] for c, q in cells.items() if q] + [v_job]
        job_eligible = v_job - own / self.config.weight(cell) <= min(busy) + self.config.fair_window_s
        ahead += own
        for other, jobs in cells.items():
            if other == cell or not jobs:
                continue
            edf = sum(per_item(q.model_id) * q.items for q in jobs
                      if q.deadline <= job.deadline or not job_eligible)
            w = self.config.weight(other)
            share = max(0.0, v_job + self.config.fair_window_s - vt[other]) * w \
                + per_item(job.model_id) * max_batch
            ahead += min(edf, share)
        return ahead

    # -- dispatch -------------------------------------------------------------------
    def _expire(self, now: float) -> list[Outcome]:
        out, costs = [], {}
        for p in Priority:
            for cell, jobs in self._queues[p].items():
                keep = []
                for j in jobs:
                    if j.model_id not in costs:
                        costs[j.model_id] = self.cost(j.model_id)
                    c = costs[j.model_id]
                    if c is None:
                        out.append(Outcome.reject(j, Status.UNKNOWN_MODEL,
                                                  f'model {j.model!r} was unloaded'))
                    elif now + c[0].estimate(j.items) > j.deadline:
                        late = now + c[0].estimate(j.items) - j.deadline
                        out.append(Outcome.reject(j, Status.DEADLINE,
                                                  f'deadline cannot be met any more (queued '
                                                  f'{1e3 * (now - j.arrival):.1f} ms, would end '
                                                  f'{1e3 * late:.1f} ms late)'))
                    else:
                        keep.append(j)
                        continue
                    self._dequeued(j)
                jobs[:] = keep
        return out

    def eligible_cells(self, p: Priority) -> list[str]:
        busy = {c: self.vtime[p][c] for c, q in self._queues[p].items() if q}
        if not busy:
            return []
        floor = min(busy.values())
        return [c for c, v in busy.items() if v <= floor + self.config.fair_window_s]

    def poll(self, now: float, only_critical: bool = False) -> Decision:
        """The next batch, or when to look again. ``only_critical``: the worker rests for the
        power budget, and only critical work may interrupt the rest.
        """
        decision = Decision(expired=self._expire(now))
        for p in Priority:
            if only_critical and p != Priority.CRITICAL:
                break
            cells = self.eligible_cells(p)
            if not cells:
                continue
            self._vclock[p] = min(self.vtime[p][c] for c in cells)
            candidates = sorted((j for c in cells for j in self._queues[p][c]),
                                key=lambda j: (j.deadline, j.seq))
            head = candidates[0]
            cost = self.cost(head.model_id)
            if cost is None:   # unloaded since _expire looked: answered at the next poll
                decision.expired += self.drain(lambda j: j.model_id == head.model_id, Status.UNKNOWN_MODEL,
                                               f'model {head.model!r} was unloaded')
                decision.wait_until = now
                return decision
            service, max_batch = cost
            jobs, items = [], 0
            for j in candidates:
                if j.model_id == head.model_id and j.batch_key == head.batch_key \
                        and items + j.items <= max_batch:
                    jobs.append(j)
                    items += j.items
            # never a batch so large that its most urgent member ends late (run alone it may not):
            # the rest, with later deadlines, go in the next batch
            while len(jobs) > 1 and now + service.estimate(items) > head.deadline:
                items -= jobs.pop().items
            if p != Priority.CRITICAL:
                jobs, items = self._within_reserve(jobs, service, now)
            if self._held(decision, jobs, max_batch, self.queued() > len(jobs), now, service):
                return decision
            for j in jobs:
                self._queues[p][j.cell_ns].remove(j)
                self._dequeued(j)
            est = service.estimate(items)
            self._charge(p, jobs, est)
            decision.batch = Batch(head.model_id, jobs, p, now, est)
            return decision
        return decision

    def _within_reserve(self, jobs: list, service, now: float) -> tuple[list, int]:
        """Cut a non-critical batch to what the critical reserve allows (at least one job)."""
        items = sum(j.items for j in jobs)
        slack = self.critical_slack(now)
        if slack is None:
            return jobs, items
        while len(jobs) > 1 and service.estimate(items) > slack:
            items -= jobs.pop().items
        return jobs, items

    def _charge(self, p: Priority, jobs: list, seconds: float) -> None:
        items = sum(j.items for j in jobs)
        for j in jobs:
            self.vtime[p][j.cell_ns] += seconds * j.items / items / self.config.weight(j.cell_ns)

    def complete(self, batch: Batch, compute_s: float, now: float) -> None:
        super().complete(batch, compute_s, now)
        self._charge(batch.priority, batch.jobs, compute_s - batch.estimate_s)

    def drain(self, which, status: Status, reason: str) -> list[Outcome]:
        out = []
        for p in Priority:
            for jobs in self._queues[p].values():
                gone = [j for j in jobs if which(j)]
                for j in gone:
                    jobs.remove(j)
                    self._dequeued(j)
                    out.append(Outcome.reject(j, status, reason))
        return out


class FifoScheduler(_SchedulerBase):
    """Baseline: one queue in arrival order, batching the head with same-shape followers."""

    name = 'fifo'

    def __init__(self, config: SchedulerConfig, cost: CostLookup):
        super().__init__(config, cost)
        self._queue: deque = deque()

    def take_displaced(self) -> list[Outcome]:
        return []

    def submit(self, job: Job, now: float) -> Outcome | None:
        refused = self._precheck(job, self.cost(job.model_id))
        if refused is not None:
            return refused
        self._enqueued(job)
        self._queue.append(job)
        return None

    def poll(self, now: float, only_critical: bool = False) -> Decision:
        decision = Decision()
        while self._queue:
            cost = self.cost(self._queue[0].model_id)
            if cost is not None:
                break
            j = self._queue.popleft()
            self._dequeued(j)
            decision.expired.append(Outcome.reject(j, Status.UNKNOWN_MODEL, f'model {j.model!r} was unloaded'))
        if not self._queue or only_critical:
            return decision
        head = self._queue[0]
        service, max_batch = cost
        jobs, items = [], 0
        for j in self._queue:
            if j.model_id != head.model_id or j.batch_key != head.batch_key \
                    or items + j.items > max_batch:
                break
            jobs.append(j)
            items += j.items
        if self._held(decision, jobs, max_batch, len(self._queue) > len(jobs), now, service):
            return decision
        for j in jobs:
            self._queue.popleft()
            self._dequeued(j)
        decision.batch = Batch(head.model_id, jobs, head.priority, now, service.estimate(items))
        return decision

    def drain(self, which, status: Status, reason: str) -> list[Outcome]:
        gone = [j for j in self._queue if which(j)]
        for j in gone:
            self._queue.remove(j)
            self._dequeued(j)
        return [Outcome.reject(j, status, reason) for j in gone]


POLICIES = {'fair': FairScheduler, 'fifo': FifoScheduler}
