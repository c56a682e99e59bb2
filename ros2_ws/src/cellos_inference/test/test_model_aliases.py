from types import SimpleNamespace

import pytest

from cellos_common.core.state_store import StateStore
from cellos_inference.core.model_aliases import (AliasError, AliasTable, Mode, ModelRef, incompatibility,
                                                 split_ref)

PROD = ModelRef('a' * 64, 'inspection_cnn', '/m/a.onnx')
CAND = ModelRef('b' * 64, 'inspection_cnn_r1', '/m/b.onnx')
OTHER = ModelRef('c' * 64, 'other', '/m/c.onnx')


def table(store=None) -> AliasTable:
    t = AliasTable(store, clock=lambda: 100.0)
    t.set_production('inspection', PROD, 'first production')
    return t


def test_roles_resolve_per_cell():
    t = table()
    assert split_ref('inspection@serving') == ('inspection', 'serving') and split_ref('inspection_cnn') is None
    assert t.resolve('inspection_cnn', 'line1/cell_01') is None      # a plain name: the registry's
    assert t.resolve('inspection@serving', 'line1/cell_01') == PROD.id
    with pytest.raises(AliasError, match='no candidate'):
        t.resolve('inspection@candidate', 'line1/cell_01')
    with pytest.raises(AliasError, match="task 'sorting' has no production"):
        t.resolve('sorting@serving', 'line1/cell_01')
    with pytest.raises(AliasError, match='unknown role'):
        t.resolve('inspection@best', 'line1/cell_01')
    t.set_candidate('inspection', CAND, Mode.CANARY, ['/line1/cell_02/'], 'try on cell 2')
    assert t.resolve('inspection@serving', 'line1/cell_02') == CAND.id
    assert t.resolve('inspection@serving', 'line1/cell_01') == PROD.id
    assert t.resolve('inspection@candidate', 'line1/cell_01') == CAND.id
    assert t.resolve('inspection@production', 'line1/cell_02') == PROD.id
    assert t.roles_of(CAND.id) == ['inspection candidate'] and t.roles_of(OTHER.id) == []


def test_candidate_rules():
    t = AliasTable()
    with pytest.raises(AliasError, match='no production'):
        t.set_candidate('inspection', CAND, Mode.SHADOW, [], 'x')
    t = table()
    with pytest.raises(AliasError, match='production of .* already'):
        t.set_candidate('inspection', PROD, Mode.SHADOW, [], 'x')
    with pytest.raises(AliasError, match='at least one cell'):
        t.set_candidate('inspection', CAND, Mode.CANARY, [], 'x')
    with pytest.raises(AliasError, match='canary_cells are for mode canary'):
        t.set_candidate('inspection', CAND, Mode.SHADOW, ['line1/cell_01'], 'x')
    with pytest.raises(AliasError, match='shadow or canary'):
        t.set_candidate('inspection', CAND, Mode.NONE, [], 'x')
    with pytest.raises(AliasError, match='without'):
        t.set_production('a@b', PROD, 'x')
    assert t.get('inspection').candidate == ModelRef()      # refused steps change nothing


def test_promote_then_rollback_production_and_expected_ids():
    t = table()
    t.set_candidate('inspection', CAND, Mode.SHADOW, [], 'retrained on reviews')
    with pytest.raises(AliasError, match='not cccccccccccc'):
        t.promote('inspection', 'auto', expected_id=OTHER.id)
    a = t.promote('inspection', 'shadow figures pass', expected_id=CAND.id[:12])
    assert (a.production, a.previous, a.candidate, a.mode) == (CAND, PROD, ModelRef(), Mode.NONE)
    assert a.reason == 'shadow figures pass' and a.changed_s == 100.0
    a, what = t.rollback('inspection', 'worse on the line')
    assert what == 'production' and a.production == PROD and a.previous == ModelRef()
    with pytest.raises(AliasError, match='no candidate and no previous'):
        t.rollback('inspection', 'again')


def test_rollback_removes_the_candidate_first():
    t = table()
    t.set_candidate('inspection', CAND, Mode.CANARY, ['line1/cell_02'], 'x')
    with pytest.raises(AliasError, match='nothing done'):
        t.rollback('inspection', 'auto', expected_id=OTHER.id)
    a, what = t.rollback('inspection', 'accuracy 0.10 < 0.90', expected_id=CAND.id)
    assert what == 'candidate' and a.production == PROD and not a.candidate and a.canary_cells == ()
    assert t.resolve('inspection@serving', 'line1/cell_02') == PROD.id


def test_state_survives_a_restart(tmp_path):
    store = StateStore(str(tmp_path / 'aliases.sqlite3'))
    t = table(store)
    t.set_candidate('inspection', CAND, Mode.SHADOW, [], 'x')
    t.promote('inspection', 'y')
    store.close()
    again = AliasTable(StateStore(str(tmp_path / 'aliases.sqlite3')))
    a = again.get('inspection')
    assert (a.production, a.previous, a.mode, a.reason) == (CAND, PROD, Mode.NONE, 'y')
    assert [r.id for r in again.model_refs()] == [CAND.id, PROD.id]


def test_a_failed_write_changes_nothing():
    class Full:
        def get(self, key):
            return None

        def put(self, key, value):
            raise OSError('disk full')
    t = AliasTable(Full())
    with pytest.raises(OSError):
        t.set_production('inspection', PROD, 'x')
    assert t.get('inspection') is None


def test_incompatible_candidates():
    spec = SimpleNamespace

    def model(shape, outputs=('logits',), name='image'):
        return spec(inputs=[spec(name=name, dtype='float32', shape=shape)], outputs=list(outputs))
    assert incompatibility(model((-1, 1, 60, 80)), model((1, 1, 60, 80))) == ''   # batch dim free
    assert 'inputs' in incompatibility(model((-1, 1, 60, 80)), model((-1, 3, 60, 80)))
    assert 'outputs' in incompatibility(model((-1, 1, 60, 80)), model((-1, 1, 60, 80), ('probs',)))
