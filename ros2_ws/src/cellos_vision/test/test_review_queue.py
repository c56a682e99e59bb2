import hashlib
import json

import numpy as np
import pytest

from cellos_common.core.state_store import SqliteStore, StoreError
from cellos_vision.core.labelled_set import LABELS, LabelledSet, read_labelled_set
from cellos_vision.core.review_queue import ReviewError, ReviewQueue, encode_frame
from cellos_vision.core.synthetic_camera import CLASSES, SyntheticCamera


def frame(i: int) -> np.ndarray:
    return SyntheticCamera(7).frame(i).image


def sha(image) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def submit(q: ReviewQueue, part: int, cell: str = 'cell_01', why: str = 'undecided'):
    image = frame(part)
    return q.add(line_id='line1', cell_id=cell, part_id=part, frame_sha256=sha(image), why=why,
                 inspection={'verdict': 2, 'defect_class': 'scratch', 'confidence': 0.41,
                             'model_id': 'inspection@serving'},
                 frame_png=encode_frame(image), model_content_id='ab' * 32, now=1000.0 + part)


def test_queue_is_durable_deduplicated_and_bounded(tmp_path):
    path = str(tmp_path / 'review.sqlite3')
    q = ReviewQueue(path, capacity=3)
    ids = [submit(q, part)[0] for part in (1, 2, 3)]
    assert submit(q, 2) == (None, [])                        # delivered again: queued once
    item, evicted = submit(q, 4)
    assert evicted == [ids[0]] and q.counts() == {'pending': 3, 'decided': 0, 'evicted': 1}
    assert q.frame(ids[0]) is None and q.evicted_total() == 1
    with pytest.raises(ReviewError, match='evicted unreviewed'):
        q.decide(ids[0], 'ok', 'ana', '', 2000.0)
    q.close()
    q = ReviewQueue(path, capacity=3)                         # a restart keeps everything
    assert [e.part_id for e in q.pending()] == [2, 3, 4] and q.evicted_total() == 1
    np.testing.assert_array_equal(q.frame(ids[1]), frame(2))   # lossless: the same pixels, the same digest
    assert sha(q.frame(ids[1])) == q.get(ids[1]).frame_sha256


def test_decisions_once_with_an_operator(tmp_path):
    q = ReviewQueue('', capacity=10)
    item, _ = submit(q, 5)
    with pytest.raises(ReviewError, match='operator_name is required'):
        q.decide(item, 'spot', ' ', 'x', 1.0)
    with pytest.raises(ReviewError, match='no review item 99'):
        q.decide(99, 'spot', 'ana', 'x', 1.0)
    e = q.decide(item, 'spot', 'ana', 'dark blob near the hole', 1.0)
    assert (e.state, e.label, e.operator_name, e.exported) == ('decided', 'spot', 'ana', False)
    with pytest.raises(ReviewError, match='decided already: spot by ana'):
        q.decide(item, 'ok', 'bo', '', 2.0)
    assert [x.item_id for x in q.unexported()] == [item]
    q.mark_exported(item)
    assert q.unexported() == [] and q.frame(item) is None and q.decided()[0].exported


def test_finished_items_are_trimmed_but_pending_ones_never():
    q = ReviewQueue('', capacity=100, keep_decided=2)
    items = [submit(q, p)[0] for p in range(1, 6)]
    for i in items[:4]:
        q.decide(i, 'ok', 'ana', '', 1.0)
        q.mark_exported(i)
    submit(q, 6)
    counts = q.counts()
    assert counts['decided'] == 2 and counts['pending'] == 2


def test_labelled_set_round_trip_and_each_item_once(tmp_path):
    s = LabelledSet(tmp_path / 'set')
    image = frame(3)
    meta = {'item_id': 7, 'line_id': 'line1', 'cell_id': 'cell_02', 'part_id': 3, 'frame_sha256': sha(image)}
    rel = s.append(image, 'crack', meta)
    s.append(image, 'crack', meta)                             # exported twice by a crash: read once
    with open(tmp_path / 'set' / LABELS, 'a') as f:
        f.write('{"cut by a cra')                              # a line cut mid-write
    s.append(frame(4), 'ok', {**meta, 'item_id': 8, 'part_id': 4, 'frame_sha256': sha(frame(4))})
    got = read_labelled_set(tmp_path / 'set', CLASSES)
    assert [(g.label, g.meta['item_id']) for g in got] == [('crack', 7), ('ok', 8)]
    np.testing.assert_array_equal(got[0].image, image)
    assert sha(got[0].image) == meta['frame_sha256'] and got[0].meta['file'] == rel
    assert s.item_ids() == {7, 8}
    lines = (tmp_path / 'set' / LABELS).read_text().splitlines()
    assert json.loads(lines[-1])['item_id'] == 8
    with pytest.raises(ValueError, match='not one of'):
        read_labelled_set(tmp_path / 'set', ('ok',))
    with pytest.raises(ValueError, match='not a labelled set'):
        read_labelled_set(tmp_path / 'none')


def test_the_queue_is_a_cellos_sqlite_store_and_its_errors_are_store_errors(tmp_path):
    q = ReviewQueue('')
    assert isinstance(q, SqliteStore) and not q.durable
    q.close()
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(StoreError, match='review queue'):
        ReviewQueue(str(blocker / 'sub' / 'review.sqlite3'))
