"""The deferred-job store: jobs and deadlines kept across a killed process, ids used once."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from cellos_energy.core.deferral import DeferrableJob
from cellos_common.core.state_store import MEMORY, StoreError, store_path
from cellos_energy.core.job_store import JobStore


def job(i: int, finish: float = 1000.0) -> DeferrableJob:
    return DeferrableJob(f'job{i}', 10.0, finish + i, 100.0 + i)


def test_pending_released_missed_and_reopened(tmp_path):
    path = str(tmp_path / 'jobs.sqlite3')
    store = JobStore(path)
    for i in range(4):
        store.add(job(i))
    store.finish('job1', 'released', 150.0, 'cheapest window')
    store.finish('job2', 'missed', 160.0, 'missed its deadline: gate HALT')
    store.finish('job1', 'missed', 170.0, 'no')          # only a pending job changes
    store.close()
    again = JobStore(path)
    assert again.pending() == [job(0), job(3)], 'the deadlines come back exactly'
    assert again.state('job1') == ('released', 'cheapest window')
    assert again.recent_released(5) == ['job1']
    assert again.counts() == {'pending': 2, 'released': 1, 'missed': 1}
    with pytest.raises(StoreError, match='job1 was already released'):
        again.add(job(1))
    with pytest.raises(ValueError):
        again.finish('job0', 'lost', 0.0, '')


def test_wal_and_full_sync(tmp_path):
    store = JobStore(str(tmp_path / 'j.sqlite3'))
    assert store._db.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    assert store._db.execute('PRAGMA synchronous').fetchone()[0] == 2   # FULL


def test_an_accepted_job_survives_sigkill(tmp_path):
    path = tmp_path / 'k.sqlite3'
    code = textwrap.dedent(f"""
        import os, signal
        from cellos_energy.core.deferral import DeferrableJob
        from cellos_energy.core.job_store import JobStore
        s = JobStore({str(path)!r})
        s.add(DeferrableJob('a', 5.0, 500.0, 1.0))
        s.add(DeferrableJob('b', 5.0, 600.0, 2.0))
        s.finish('a', 'released', 3.0, 'now')
        os.kill(os.getpid(), signal.SIGKILL)     # no close, no checkpoint
    """)
    proc = subprocess.run([sys.executable, '-c', code], env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL
    store = JobStore(str(path))
    assert [j.job_id for j in store.pending()] == ['b'] and store.recent_released(1) == ['a']


def test_bad_paths_and_memory(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(StoreError):
        JobStore(str(tmp_path / 'file' / 'jobs.sqlite3'))
    (tmp_path / 'garbage.sqlite3').write_bytes(b'not a database' * 100)
    with pytest.raises(StoreError):
        JobStore(str(tmp_path / 'garbage.sqlite3'))
    mem = JobStore(MEMORY)
    mem.add(job(1))
    assert not mem.durable and mem.pending() == [job(1)]
    assert store_path(MEMORY, '/line1/cell_01') == MEMORY
    p = store_path('log/state/jobs_{ns}.sqlite3', '/line1/cell_01')
    assert p.endswith('log/state/jobs_line1_cell_01.sqlite3') and os.path.isabs(p)
    assert sqlite3.sqlite_version_info >= (3, 7, 0)   # WAL
