"""A node's small durable state (what an operator or a monitor decided: a drift hold, an energy
override) in SQLite (stdlib sqlite3): one file per node, one row per key, a JSON value.

Journal WAL with synchronous=FULL: a write is on disk before the node acts on it, so the state
survives a killed process and a power cut. The writes are rare (a state change, an operator
call), so the fsync each costs nothing that matters.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

MEMORY = ''   # a store parameter with this value: kept in memory only, lost on a restart

_SCHEMA = 'CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, saved_s REAL NOT NULL)'


class StateStoreError(RuntimeError):
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


class StateStore:
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
                    raise StateStoreError(f'{path}: journal mode {mode}, WAL refused')
            self._db.execute('PRAGMA synchronous=FULL')
            self._db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise StateStoreError(f'state store {path}: {e}') from None

    def _run(self, sql: str, args=()) -> list:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StateStoreError(f'state store {self.path}: {e}') from None

    def put(self, key: str, value) -> None:
        """Store a JSON-serialisable value under ``key`` (committed on return)."""
        self._run('INSERT INTO state (key, value, saved_s) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET '
                  'value = excluded.value, saved_s = excluded.saved_s',
                  (key, json.dumps(value, allow_nan=False), time.time()))

    def get(self, key: str):
        """The value stored under ``key``, or None. StateStoreError for a row that is not JSON."""
        rows = self._run('SELECT value FROM state WHERE key = ?', (key,))
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except ValueError as e:
            raise StateStoreError(f'state store {self.path}: key {key!r} is not JSON ({e})') from None

    def delete(self, key: str) -> None:
        self._run('DELETE FROM state WHERE key = ?', (key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
