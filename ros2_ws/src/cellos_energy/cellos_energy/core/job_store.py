"""Durable deferred jobs of one energy gate: SQLite (stdlib sqlite3), one row per job, so the jobs
waiting and their deadlines survive a restart of the gate, SIGKILL included.

  pending   accepted, not yet released: restored into the queue when the gate starts again
  released  handed out once (the gate publishes its id); never released again
  missed    past its deadline while gated

A job is stored before the gate answers "accepted", and marked released before its release is
published: a crash between the two leaves it released in the store and the restarted gate
publishes the id again (its recent releases are restored), so the owner hears of it, once.
A job id is used once: submitting an id the store already holds is refused with its state.

The file is a cellos_common SqliteStore (WAL, synchronous=FULL: an accepted job survives a power
cut as well as a killed process).
"""
from __future__ import annotations

from cellos_common.core.state_store import SqliteStore, StoreError
from cellos_energy.core.deferral import DeferrableJob


class JobStore(SqliteStore):
    SCHEMA = """
CREATE TABLE IF NOT EXISTS deferred_jobs (
    job_id TEXT PRIMARY KEY,
    duration_s REAL NOT NULL,
    latest_finish_s REAL NOT NULL,
    submitted_s REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'released', 'missed')),
    done_s REAL,
    reason TEXT NOT NULL DEFAULT ''
)"""
    KIND = 'deferred job store'

    def add(self, job: DeferrableJob) -> None:
        """Store an accepted job (committed on return). StoreError when the id was used before."""
        before = self.state(job.job_id)
        if before is not None:
            raise StoreError(f'job {job.job_id} was already {before[0]}'
                             + (f' ({before[1]})' if before[1] else ''))
        self._run('INSERT INTO deferred_jobs (job_id, duration_s, latest_finish_s, submitted_s, state) '
                  "VALUES (?, ?, ?, ?, 'pending')",
                  (job.job_id, job.duration_s, job.latest_finish_s, job.submitted_s))

    def state(self, job_id: str) -> tuple[str, str] | None:
        """(state, reason) of a job the store holds, or None."""
        rows = self._run('SELECT state, reason FROM deferred_jobs WHERE job_id = ?', (job_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def finish(self, job_id: str, state: str, at_s: float, reason: str) -> None:
        """Mark a pending job released or missed (committed on return)."""
        if state not in ('released', 'missed'):
            raise ValueError(f'state {state!r}: released or missed')
        self._run("UPDATE deferred_jobs SET state = ?, done_s = ?, reason = ? WHERE job_id = ? AND state = 'pending'",
                  (state, at_s, reason, job_id))

    def pending(self) -> list[DeferrableJob]:
        return [DeferrableJob(*row) for row in self._run(
            'SELECT job_id, duration_s, latest_finish_s, submitted_s FROM deferred_jobs '
            "WHERE state = 'pending' ORDER BY submitted_s, job_id")]

    def recent_released(self, n: int) -> list[str]:
        """The ids of the last ``n`` releases, oldest first."""
        rows = self._run("SELECT job_id FROM deferred_jobs WHERE state = 'released' "
                         'ORDER BY done_s DESC, job_id DESC LIMIT ?', (int(n),))
        return [r[0] for r in reversed(rows)]

    def counts(self) -> dict[str, int]:
        return dict(self._run('SELECT state, COUNT(*) FROM deferred_jobs GROUP BY state'))
