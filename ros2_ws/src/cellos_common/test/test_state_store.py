"""StateStore: a node's durable state in SQLite (real files, a second connection as a restart)."""
import sqlite3

import pytest

from cellos_common.core.state_store import MEMORY, StateStore, StoreError, store_path


def test_values_survive_a_reopen_and_are_replaced(tmp_path):
    path = str(tmp_path / 'state' / 'vision_drift_line1_cell_01.sqlite3')
    s = StateStore(path)
    assert s.durable and s.get('drift') is None
    s.put('drift', {'state': 2, 'reference': [0.9, 0.95]})
    s.put('drift', {'state': 3, 'reference': [0.9, 0.95]})
    s.close()                              # the process ends (or is killed: committed on return)
    again = StateStore(path)
    assert again.get('drift') == {'state': 3, 'reference': [0.9, 0.95]}
    again.delete('drift')
    assert again.get('drift') is None
    assert sqlite3.connect(path).execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    again.close()


def test_memory_store_and_paths(tmp_path):
    s = StateStore(MEMORY)
    assert not s.durable
    s.put('k', [1, 2])
    assert s.get('k') == [1, 2]
    assert store_path('', 'line1/cell_01') == ''
    assert store_path(str(tmp_path / 'drift_{ns}.db'), '/line1/cell_01') == str(tmp_path / 'drift_line1_cell_01.db')


def test_unusable_paths_and_values_are_errors(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(StoreError, match='state store'):
        StateStore(str(blocker / 'sub' / 'db.sqlite3'))
    not_db = tmp_path / 'not.sqlite3'
    not_db.write_bytes(b'this is not a database file, just bytes' * 100)
    with pytest.raises(StoreError):
        StateStore(str(not_db))
    s = StateStore(MEMORY)
    with pytest.raises(ValueError):
        s.put('k', float('nan'))            # never a value the reader cannot take back
