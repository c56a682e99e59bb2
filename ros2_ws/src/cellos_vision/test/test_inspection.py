import json
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from cellos_vision.core.inspection import (Decision, DriftBounds, DriftMonitor, DriftState, ModelMeta,
                                           Verdict, decide, ks_statistic, logits_from_bytes, softmax, undecided)

CLASSES = ('ok', 'scratch', 'spot', 'missing_hole', 'crack')


def logits_for(cls: int, margin: float = 8.0):
    x = np.zeros(len(CLASSES))
    x[cls] = margin
    return x


def test_ok_passes_defect_fails_low_confidence_is_undecided():
    d = decide(logits_for(0), CLASSES, 0.8, 'm1')
    assert d.verdict == Verdict.PASS and d.defect_class == 'ok' and d.confidence > 0.99 and d.reason == ''
    d = decide(logits_for(2), CLASSES, 0.8, 'm1')
    assert d.verdict == Verdict.FAIL and d.defect_class == 'spot' and d.model_id == 'm1'
    d = decide(logits_for(0, margin=1.0), CLASSES, 0.8)
    assert d.verdict == Verdict.UNDECIDED and d.defect_class == 'ok'
    assert 'low confidence' in d.reason and d.confidence < 0.8


@pytest.mark.parametrize('logits,needle', [
    ([1.0, 2.0], 'expected 5'),
    ([0, 0, math.nan, 0, 0], 'not finite'),
    ([0, 0, math.inf, 0, 0], 'not finite'),
])
def test_malformed_output_is_undecided(logits, needle):
    d = decide(logits, CLASSES, 0.5)
    assert d.verdict == Verdict.UNDECIDED and needle in d.reason and not d.decided


def test_undecided_needs_a_reason():
    d = undecided('late: no result', 'm')
    assert d.verdict == Verdict.UNDECIDED and d.confidence == 0.0 and d.defect_class == ''
    with pytest.raises(ValueError):
        undecided('')


@given(st.lists(st.floats(-30, 30), min_size=5, max_size=5), st.floats(0, 1))
def test_never_a_pass_below_threshold(logits, threshold):
    d = decide(logits, CLASSES, threshold)
    p = softmax(np.array(logits))
    assert d.confidence == pytest.approx(p.max())
    if d.confidence < threshold:
        assert d.verdict == Verdict.UNDECIDED and d.reason
    else:
        assert d.verdict == (Verdict.PASS if d.defect_class == 'ok' else Verdict.FAIL)


def test_ks_statistic():
    assert ks_statistic([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == 0.0
    assert ks_statistic([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert ks_statistic([0.1, 0.2, 0.3, 0.4], [0.3, 0.4, 0.5, 0.6]) == pytest.approx(0.5)
    assert math.isnan(ks_statistic([], [1.0]))
    # one-sided: only a shift of the second sample towards lower values counts
    assert ks_statistic([0.8, 0.9], [0.1, 0.2], lower_only=True) == 1.0
    assert ks_statistic([0.1, 0.2], [0.8, 0.9], lower_only=True) == 0.0


def conf(c: float, cls: str = 'ok') -> Decision:
    return Decision(Verdict.PASS, cls, c)


BOUNDS = DriftBounds(reference_size=20, window_size=10, max_ks=0.5, max_mean_drop=0.15,
                     feedback_window=10, min_feedback=5, max_mismatch=0.3, revalidate_samples=5,
                     revalidate_min_confidence=0.7)


def learned(rng) -> DriftMonitor:
    m = DriftMonitor(BOUNDS)
    for _ in range(20):
        assert m.status().state == DriftState.LEARNING
        m.observe(conf(rng.uniform(0.9, 1.0)))
    assert m.status().state == DriftState.NOMINAL
    return m


def test_stable_confidence_stays_nominal():
    # default-sized windows: no false alarm over a long stable run (one-sided KS)
    rng = np.random.default_rng(0)
    m = DriftMonitor(DriftBounds())
    for _ in range(3000):
        s = m.observe(conf(float(np.clip(rng.normal(0.93, 0.05), 0.2, 1.0))))
        assert s.state in (DriftState.LEARNING, DriftState.NOMINAL), s
    assert s.state == DriftState.NOMINAL and not s.hold and not s.use_fallback
    assert s.ks < 0.45 and abs(s.mean_drop) < 0.05
    # a more confident model is not drift
    for _ in range(100):
        s = m.observe(conf(0.999))
    assert s.state == DriftState.NOMINAL


def test_confidence_shift_switches_to_fallback_and_holds_until_revalidated():
    rng = np.random.default_rng(1)
    m = learned(rng)
    for i in range(10):
        s = m.observe(conf(rng.uniform(0.5, 0.75)))
    assert s.state == DriftState.REVALIDATING and s.hold and s.use_fallback
    assert 'KS' in s.reason and 'mean confidence dropped' in s.reason
    assert m.switches == 1
    for i in range(4):
        s = m.observe(conf(0.95))
        assert s.hold and f'{i + 1}/5' in s.reason
    s = m.observe(conf(0.95))
    assert s.state == DriftState.FALLBACK and not s.hold and s.use_fallback
    m.reset()
    assert m.status().state == DriftState.LEARNING and m.switches == 0


def test_fallback_with_low_confidence_keeps_holding():
    rng = np.random.default_rng(2)
    m = learned(rng)
    for _ in range(10):
        m.observe(conf(0.5))
    for _ in range(10):
        s = m.observe(conf(0.6))
    assert s.state == DriftState.REVALIDATING and 'mean confidence 0.60 < 0.70' in s.reason


def test_downstream_mismatch_is_drift_even_with_confident_model():
    rng = np.random.default_rng(3)
    m = learned(rng)
    for i in range(4):
        s = m.feedback('ok', 'scratch')
    assert s.state == DriftState.NOMINAL and math.isnan(s.mismatch_rate)   # too little feedback yet
    s = m.feedback('ok', 'ok')
    assert s.state == DriftState.REVALIDATING and 'downstream mismatch 0.80' in s.reason
    # the fallback is judged on its own feedback: fresh window
    assert math.isnan(m.status().mismatch_rate)
    m.feedback('spot', 'spot')
    for _ in range(5):
        m.observe(conf(0.95))
    s = m.status()
    assert s.state == DriftState.REVALIDATING and '1/5 downstream feedback' in s.reason
    for _ in range(4):
        s = m.feedback('spot', 'crack')
    assert s.state == DriftState.REVALIDATING and 'downstream mismatch 0.80' in s.reason
    for _ in range(10):
        s = m.feedback('spot', 'spot')
    assert s.state == DriftState.FALLBACK


def test_answers_without_a_model_output_are_not_evidence():
    m = DriftMonitor(BOUNDS)
    for _ in range(50):
        m.observe(undecided('late'))
    assert m.status().state == DriftState.LEARNING and '0/20' in m.status().reason


@pytest.mark.parametrize('kwargs', [dict(window_size=0), dict(min_feedback=50), dict(max_ks=1.5)])
def test_bad_bounds(kwargs):
    with pytest.raises(ValueError):
        DriftBounds(**kwargs)


def test_model_meta(tmp_path):
    good = {'model_id': 'm', 'classes': list(CLASSES), 'ok_class': 'ok',
            'input': {'name': 'image'}, 'output': {'name': 'logits'}, 'confidence_threshold': 0.9}
    p = tmp_path / 'm.json'
    p.write_text(json.dumps(good))
    meta = ModelMeta.load(p)
    assert meta.classes == CLASSES and meta.output_name == 'logits' and meta.confidence_threshold == 0.9
    p.write_text(json.dumps({**good, 'ok_class': 'fine'}))
    with pytest.raises(ValueError, match='ok class'):
        ModelMeta.load(p)
    p.write_text('{')
    with pytest.raises(ValueError, match='m.json'):
        ModelMeta.load(p)
    with pytest.raises(ValueError, match='no_such_model'):
        ModelMeta.load('no_such_model')


# -- a restart keeps the drift state ----------------------------------------------------------

def test_a_restarted_monitor_keeps_its_hold_and_its_learned_reference():
    rng = np.random.default_rng(4)
    m = learned(rng)
    reference = list(m._reference)
    assert m.record()['state'] == DriftState.NOMINAL and m.record()['reference'] == reference
    again = DriftMonitor(m.bounds)
    again.restore(m.record())                                # NOMINAL: no new reference to learn
    assert again.state == DriftState.NOMINAL and again._reference == reference
    for _ in range(10):                                     # drifted data after the restart
        s = again.observe(conf(rng.uniform(0.5, 0.75)))
    assert s.state == DriftState.REVALIDATING               # judged against the old reference
    held = DriftMonitor(m.bounds)
    held.restore(again.record())
    s = held.status()
    assert s.hold and s.use_fallback and held.switches == 1 and s.reason.startswith('drift:')
    for i in range(4):                                      # revalidation starts over: held longer, not less
        assert held.observe(conf(0.95)).hold


def test_a_record_that_does_not_fit_is_refused_and_changes_nothing():
    m = learned(np.random.default_rng(5))
    rec = m.record()
    other = DriftMonitor(DriftBounds(reference_size=40, window_size=10, revalidate_samples=5))
    with pytest.raises(ValueError, match='reference of 20 confidences, the bounds want 40'):
        other.restore(rec)
    assert other.state == DriftState.LEARNING
    for bad in ({}, {**rec, 'state': 9}, {**rec, 'reference': [2.0] * 20}, {**rec, 'switches': 'x'}):
        with pytest.raises(ValueError):
            DriftMonitor(m.bounds).restore(bad)
    learning = DriftMonitor(m.bounds)
    learning.observe(conf(0.9))
    assert learning.record()['reference'] == []             # a half-learned reference is not kept


# -- model output bytes -----------------------------------------------------------------------

def test_logits_from_bytes_decodes_floats_and_refuses_what_is_not_a_classifier_output():
    x = np.array([[0.5, 1.0, -2.0]], np.float32)
    assert logits_from_bytes('float32', (1, 3), x.tobytes()).tolist() == [[0.5, 1.0, -2.0]]
    assert logits_from_bytes('float16', (3,), x.astype(np.float16).tobytes()).shape == (3,)
    with pytest.raises(ValueError, match="dtype 'complex64'"):
        logits_from_bytes('complex64', (1, 3), bytes(24))
    with pytest.raises(ValueError, match="dtype 'no_such_dtype'"):
        logits_from_bytes('no_such_dtype', (1, 3), bytes(12))
    with pytest.raises(ValueError, match='11 bytes, shape \\[1, 3\\] x float32 needs 12'):
        logits_from_bytes('float32', (1, 3), bytes(11))
    with pytest.raises(ValueError, match='rank 9'):
        logits_from_bytes('float32', (1,) * 9, bytes(4))
    with pytest.raises(ValueError, match='values >'):
        logits_from_bytes('float32', (2**32 - 1, 2**32 - 1), bytes(4))


@given(st.text(max_size=20), st.lists(st.integers(0, 2**32 - 1), max_size=10), st.binary(max_size=64))
def test_logits_from_bytes_never_raises_anything_but_value_error(dtype, shape, data):
    try:
        out = logits_from_bytes(dtype, shape, data)
    except ValueError:
        return
    assert out.dtype == np.float64 and out.size * np.dtype(dtype).itemsize == len(data)
