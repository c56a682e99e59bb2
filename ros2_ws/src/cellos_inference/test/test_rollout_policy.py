import pytest

from cellos_inference.core.rollout_policy import RolloutFigures, Thresholds, judge, merge, wilson


def figures(n, correct=None, agreed=None, undecided=0, latency=5.0, prod_correct=None):
    decided = n - undecided
    return RolloutFigures(window=200, samples=n, undecided=undecided, compared=decided,
                          agreed=decided if agreed is None else agreed, with_truth=decided,
                          correct=decided if correct is None else correct,
                          production_with_truth=decided,
                          production_correct=decided if prod_correct is None else prod_correct,
                          mean_confidence=0.9, latency_p95_ms=latency)


def test_wilson_bounds():
    assert wilson(0, 0, 2.0) == (0.0, 1.0)
    lo, hi = wilson(0, 10, 2.0)
    assert lo == 0.0 and hi == pytest.approx(4 / 14)
    lo, hi = wilson(95, 100, 2.0)
    assert 0.87 < lo < 0.9 < 0.95 < hi < 0.99


def test_a_clearly_bad_candidate_goes_after_rollback_min_samples():
    t = Thresholds()
    assert judge(figures(9, correct=0, agreed=0), t).action == 'wait'
    j = judge(figures(10, correct=0, agreed=1), t)
    assert j.action == 'rollback' and 'accuracy 0.00 < 0.90 (0/10 right)' in j.reason
    assert 'agreement 0.10 < 0.70' in j.reason


def test_one_unlucky_error_is_not_evidence():
    t = Thresholds()
    assert judge(figures(10, correct=8, agreed=8), t).action == 'wait'       # 0.8 point, bound above 0.9


def test_undecided_and_latency():
    t = Thresholds()
    assert 'undecided 0.80 > 0.30' in judge(figures(20, undecided=16), t).reason
    assert 'latency p95 80.0 ms > SLO 50.0 ms' in judge(figures(20, latency=80.0), t).reason
    assert judge(figures(20, latency=80.0), Thresholds(latency_slo_ms=0.0)).action == 'wait'


def test_promotion_needs_volume_and_no_worse_than_production():
    t = Thresholds(promote_min_samples=100)
    assert 'before promotion' in judge(figures(99), t).reason
    j = judge(figures(100, correct=94, prod_correct=84, agreed=88), t)
    assert j.action == 'promote' and 'accuracy 0.94' in j.reason
    j = judge(figures(100, correct=91, prod_correct=99), t)
    assert j.action == 'wait' and 'below production 0.99' in j.reason
    no_truth = RolloutFigures(samples=150, compared=0, with_truth=0)
    assert 'neither accuracy nor agreement' in judge(no_truth, t).reason


def test_merge_adds_cells():
    a = figures(10, correct=9, latency=4.0)
    b = RolloutFigures(samples=30, correct=3, with_truth=30, mean_confidence=0.5, latency_p95_ms=9.0, last_part_id=7)
    m = merge([a, b])
    assert (m.samples, m.correct, m.with_truth) == (40, 12, 40)
    assert m.mean_confidence == pytest.approx((0.9 * 10 + 0.5 * 30) / 40) and m.latency_p95_ms == 9.0
    assert merge([]).samples == 0 and merge([]).mean_confidence is None


def test_threshold_checks():
    with pytest.raises(ValueError):
        Thresholds(min_accuracy=1.5)
    with pytest.raises(ValueError):
        Thresholds(rollback_min_samples=50, promote_min_samples=10)
