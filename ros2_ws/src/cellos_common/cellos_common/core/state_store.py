"""A node's small durable state in SQLite (stdlib sqlite3): what an operator or a monitor decided
(a drift hold, an energy override: StateStore, one row per key, a JSON value) and the energy
gate's deferred jobs (cellos_energy.core.job_store, a table of its own on the same SqliteStore).

Journal WAL with synchronous=FULL: a write is committed and on disk (the WAL fsynced) before the
node acts on it or answers, so the state survives a killed process and a power cut. The writes
are rare (a state change, an operator call, a deferred job), so the fsync each costs nothing that
matters; synchronous=NORMAL would only survive a process crash.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

MEMORY = ''   # a store parameter with this value: kept in memory only, lost on a restart


class StoreError(RuntimeError):
    """The store cannot be opened, read or written (path, permissions, disk full, corrupt file)."""


def store_path(template: str, namespace: str) -> str:
    """The store parameter with '{ns}' replaced by the node's namespace ('/line1/cell_01' ->
    'line1_cell_01', '/site' -> 'site'); relative paths are taken from the working directory;
    '' stays '' (in memory).
    """
    if template == MEMORY:
        return MEMORY
    name = namespace.strip('/').replace('/', '_') or 'root'
    return str(Path(template.replace('{ns}', name)).expanduser().resolve())


class SqliteStore:
    """One SQLite file (or memory, for MEMORY) with the subclass's SCHEMA (one or more statements);
    every statement under one lock (a node's callbacks and lifecycle transitions may run on different threads) and
    committed on return; sqlite3 and OS errors become StoreError naming the store.
    """

    SCHEMA = ''
    KIND = 'store'

    def __init__(self, path: str):
        self.path = path or ':memory:'
        self.durable = path != MEMORY
        self._lock = threading.Lock()
        try:
            if self.durable:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if self.durable:
                mode = self._db.execute('PRAGMA journal_mode=WAL').fetchone()[0]
                if mode.lower() != 'wal':
                    raise StoreError(f'{self.KIND} {path}: journal mode {mode}, WAL refused')
            self._db.execute('PRAGMA synchronous=FULL')
            self._db.executescript(self.SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f'{self.KIND} {path}: {e}') from None

    def _run(self, sql: str, args=()) -> list:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f'{self.KIND} {self.path}: {e}') from None

    @contextmanager
    def _transaction(self):
        """The connection, for several statements committed together (BEGIN IMMEDIATE .. COMMIT)
        under the lock; rolled back when anything raises.
        """
        with self._lock:
            try:
                self._db.execute('BEGIN IMMEDIATE')
                try:
                    yield self._db
                    self._db.execute('COMMIT')
                except BaseException:
                    self._db.execute('ROLLBACK')
                    raise
            except sqlite3.Error as e:
                raise StoreError(f'{self.KIND} {self.path}: {e}') from None

    def close(self) -> None:
        with self._lock:
            self._db.close()


class StateStore(SqliteStore):
    """Key -> JSON value, one file per node."""

    SCHEMA = 'CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, saved_s REAL NOT NULL)'
    KIND = 'state store'

    def put(self, key: str, value) -> None:
        """Store a JSON-serialisable value under ``key`` (committed on return)."""
        self._run('INSERT INTO state (key, value, saved_s) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET '
                  'value = excluded.value, saved_s = excluded.saved_s',
                  (key, json.dumps(value, allow_nan=False), time.time()))

    def get(self, key: str):
        """The value stored under ``key``, or None. StoreError for a row that is not JSON."""
        rows = self._run('SELECT value FROM state WHERE key = ?', (key,))
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except ValueError as e:
            raise StoreError(f'{self.KIND} {self.path}: key {key!r} is not JSON ({e})') from None

    def delete(self, key: str) -> None:
        self._run('DELETE FROM state WHERE key = ?', (key,))
