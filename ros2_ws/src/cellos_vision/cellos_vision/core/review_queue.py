"""A line's review queue: verdicts a person should look at, with their frames, in SQLite (stdlib
sqlite3), so nothing queued or decided is lost to a restart, SIGKILL included.

  pending   waiting for an operator
  decided   an operator gave the part's class; exported once to the labelled set
  evicted   dropped unreviewed because ``capacity`` pending items were queued already (the oldest
            goes first; its verdict stands as published: an UNDECIDED part was never passed)

The queue is bounded: at most ``capacity`` pending items (with frames) and ``keep_decided``
decided or evicted ones (without frames, kept so a submission seen again is not queued twice).
A submission is known by (line, cell, part, frame digest): the same one delivered twice (a
restarted queue gets the vision node's recent ones again) is queued once.

A decision is committed here first, then appended to the labelled set, then marked exported: a
crash in between leaves it unexported, and ``unexported()`` gives it to the next start.
The file is a cellos_common SqliteStore (WAL, synchronous=FULL: an operator's decision is on disk
before the answer goes out).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import cv2
import numpy as np

from cellos_common.core.state_store import SqliteStore
PENDING, DECIDED, EVICTED = 'pending', 'decided', 'evicted'
STATES = (PENDING, DECIDED, EVICTED)
WHY = ('undecided', 'low_confidence')

_SCHEMA = """CREATE TABLE IF NOT EXISTS review_items (
    item_id INTEGER PRIMARY KEY AUTOINCREMENT,
    line_id TEXT NOT NULL, cell_id TEXT NOT NULL, part_id INTEGER NOT NULL, frame_sha256 TEXT NOT NULL,
    why TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'decided', 'evicted')),
    queued_s REAL NOT NULL, inspection TEXT NOT NULL, model_content_id TEXT NOT NULL DEFAULT '',
    frame_png BLOB, label TEXT NOT NULL DEFAULT '', operator_name TEXT NOT NULL DEFAULT '',
    decision_reason TEXT NOT NULL DEFAULT '', decided_s REAL NOT NULL DEFAULT 0,
    exported INTEGER NOT NULL DEFAULT 0,
    UNIQUE (line_id, cell_id, part_id, frame_sha256)
);
CREATE TABLE IF NOT EXISTS review_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"""
_COLUMNS = ('item_id', 'line_id', 'cell_id', 'part_id', 'frame_sha256', 'why', 'state', 'queued_s', 'inspection',
            'model_content_id', 'label', 'operator_name', 'decision_reason', 'decided_s', 'exported')


class ReviewError(ValueError):
    """A request the queue refuses (unknown item, decided already, bad label), with the reason."""


@dataclass
class ReviewEntry:
    item_id: int
    line_id: str
    cell_id: str
    part_id: int
    frame_sha256: str
    why: str
    state: str
    queued_s: float
    inspection: dict = field(default_factory=dict)   # the published verdict's fields
    model_content_id: str = ''
    label: str = ''
    operator_name: str = ''
    decision_reason: str = ''
    decided_s: float = 0.0
    exported: bool = False

    def labelled_meta(self) -> dict:
        """What the labelled set keeps with the frame."""
        i = self.inspection
        return {'item_id': self.item_id, 'line_id': self.line_id, 'cell_id': self.cell_id,
                'part_id': self.part_id, 'frame_sha256': self.frame_sha256, 'why': self.why,
                'verdict': i.get('verdict'), 'defect_class': i.get('defect_class', ''),
                'confidence': i.get('confidence'), 'model_id': i.get('model_id', ''),
                'model_content_id': self.model_content_id, 'operator_name': self.operator_name,
                'reason': self.decision_reason, 'decided_s': self.decided_s}


def encode_frame(image: np.ndarray) -> bytes:
    ok, png = cv2.imencode('.png', image)
    if not ok:
        raise ReviewError('the frame cannot be encoded as PNG')
    return png.tobytes()


class ReviewQueue(SqliteStore):
    SCHEMA = _SCHEMA
    KIND = 'review queue'

    def __init__(self, path: str, capacity: int = 200, keep_decided: int = 2000):
        if capacity < 1 or keep_decided < 1:
            raise ValueError('capacity and keep_decided must be >= 1')
        self.capacity = capacity
        self.keep_decided = keep_decided
        super().__init__(path)

    def _entries(self, where: str, args=(), order: str = 'item_id', limit: int = -1) -> list[ReviewEntry]:
        rows = self._run(f'SELECT {", ".join(_COLUMNS)} FROM review_items WHERE {where} ORDER BY {order} LIMIT ?',
                         (*args, int(limit)))
        out = []
        for r in rows:
            d = dict(zip(_COLUMNS, r))
            d['inspection'] = json.loads(d['inspection'])
            d['exported'] = bool(d['exported'])
            out.append(ReviewEntry(**d))
        return out

    # -- submissions -------------------------------------------------------------------------
    def add(self, *, line_id: str, cell_id: str, part_id: int, frame_sha256: str, why: str, inspection: dict,
            frame_png: bytes, model_content_id: str, now: float) -> tuple[int | None, list[int]]:
        """Queue a submission: (its item id, or None when it was queued before; the ids evicted to
        make room). Committed on return.
        """
        if why not in WHY:
            raise ReviewError(f'why {why!r}: one of {WHY}')
        with self._transaction() as db:
            cur = db.execute(
                'INSERT OR IGNORE INTO review_items (line_id, cell_id, part_id, frame_sha256, why, state, '
                'queued_s, inspection, model_content_id, frame_png) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (line_id, cell_id, int(part_id), frame_sha256, why, PENDING, float(now),
                 json.dumps(inspection), model_content_id, frame_png))
            item_id = cur.lastrowid if cur.rowcount else None
            evicted = [r[0] for r in db.execute(
                'SELECT item_id FROM review_items WHERE state = ? ORDER BY item_id DESC LIMIT -1 OFFSET ?',
                (PENDING, self.capacity)).fetchall()]
            for i in evicted:
                db.execute('UPDATE review_items SET state = ?, frame_png = NULL WHERE item_id = ?', (EVICTED, i))
            if evicted:
                db.execute("INSERT INTO review_counters VALUES ('evicted', ?) ON CONFLICT(name) "
                           'DO UPDATE SET value = value + excluded.value', (len(evicted),))
            self._trim(db)
        return item_id, sorted(evicted)

    def _trim(self, db) -> None:
        """Keep the newest ``keep_decided`` finished items (decided ones only once exported)."""
        db.execute('DELETE FROM review_items WHERE item_id IN (SELECT item_id FROM review_items WHERE '
                   '(state = ? OR (state = ? AND exported = 1)) ORDER BY item_id DESC LIMIT -1 OFFSET ?)',
                   (EVICTED, DECIDED, self.keep_decided))

    # -- reading -----------------------------------------------------------------------------
    def get(self, item_id: int) -> ReviewEntry | None:
        found = self._entries('item_id = ?', (int(item_id),))
        return found[0] if found else None

    def pending(self, limit: int = -1) -> list[ReviewEntry]:
        return self._entries('state = ?', (PENDING,), limit=limit)

    def decided(self, limit: int = -1) -> list[ReviewEntry]:
        """The latest decided items, oldest first."""
        return list(reversed(self._entries('state = ?', (DECIDED,), order='decided_s DESC, item_id DESC',
                                           limit=limit)))

    def frame(self, item_id: int) -> np.ndarray | None:
        rows = self._run('SELECT frame_png FROM review_items WHERE item_id = ?', (int(item_id),))
        if not rows or rows[0][0] is None:
            return None
        return cv2.imdecode(np.frombuffer(rows[0][0], np.uint8), cv2.IMREAD_UNCHANGED)

    def counts(self) -> dict[str, int]:
        got = dict(self._run('SELECT state, COUNT(*) FROM review_items GROUP BY state'))
        return {s: int(got.get(s, 0)) for s in STATES}

    def evicted_total(self) -> int:
        """Items evicted unreviewed since the store was made (trimmed ones included)."""
        rows = self._run("SELECT value FROM review_counters WHERE name = 'evicted'")
        return int(rows[0][0]) if rows else 0

    # -- decisions ---------------------------------------------------------------------------
    def decide(self, item_id: int, label: str, operator_name: str, reason: str, now: float) -> ReviewEntry:
        """Record an operator's decision on a pending item (committed on return)."""
        if not operator_name.strip():
            raise ReviewError('operator_name is required: the audit says who decided')
        entry = self.get(item_id)
        if entry is None:
            raise ReviewError(f'no review item {item_id}')
        if entry.state == DECIDED:
            raise ReviewError(f'item {item_id} was decided already: {entry.label} by {entry.operator_name}')
        if entry.state == EVICTED:
            raise ReviewError(f'item {item_id} was evicted unreviewed (the queue was full); its frame is gone')
        self._run("UPDATE review_items SET state = ?, label = ?, operator_name = ?, decision_reason = ?, "
                  "decided_s = ? WHERE item_id = ? AND state = 'pending'",
                  (DECIDED, label, operator_name, reason, float(now), int(item_id)))
        return self.get(item_id)

    def unexported(self) -> list[ReviewEntry]:
        return self._entries('state = ? AND exported = 0', (DECIDED,))

    def mark_exported(self, item_id: int) -> None:
        """After the labelled set has the decision: the frame is no longer kept here."""
        self._run('UPDATE review_items SET exported = 1, frame_png = NULL WHERE item_id = ?', (int(item_id),))
