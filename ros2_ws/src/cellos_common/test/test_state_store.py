"""StateStore: a node's durable state in SQLite (real files, a second connection as a restart)."""
import sqlite3

import pytest

from cellos_common.core.state_store import MEMORY, SqliteStore, StateStore, StoreError, store_path


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


class _TwoTables(SqliteStore):
    SCHEMA = """CREATE TABLE IF NOT EXISTS a (k INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS b (k INTEGER PRIMARY KEY)"""
    KIND = 'two-table store'


def test_a_schema_of_several_tables_and_a_transaction_that_fails_is_rolled_back(tmp_path):
    path = str(tmp_path / 'two.sqlite3')
    s = _TwoTables(path)
    with s._transaction() as db:
        db.execute('INSERT INTO a VALUES (1)')
        db.execute('INSERT INTO b VALUES (1)')
    with pytest.raises(StoreError, match='two-table store'):
        with s._transaction() as db:
            db.execute('INSERT INTO a VALUES (2)')
            db.execute('INSERT INTO b VALUES (1)')          # a duplicate key: nothing of it is kept
    with pytest.raises(KeyError):
        with s._transaction() as db:
            db.execute('INSERT INTO a VALUES (3)')
            raise KeyError('the caller gives up')
    s.close()
    again = _TwoTables(path)
    assert again._run('SELECT k FROM a') == [(1,)] and again._run('SELECT k FROM b') == [(1,)]
    again.close()
