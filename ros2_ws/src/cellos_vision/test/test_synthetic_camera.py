import numpy as np
import pytest

from cellos_vision.core.synthetic_camera import CLASSES, PART_KINDS, SyntheticCamera


def test_same_seed_and_index_give_the_same_frame_in_any_order():
    a, b = SyntheticCamera(7), SyntheticCamera(7)
    forward = [a.next() for _ in range(5)]
    backward = [b.frame(i) for i in reversed(range(5))][::-1]
    for fa, fb in zip(forward, backward):
        assert np.array_equal(fa.image, fb.image)
        assert (fa.part_id, fa.defect_class, fa.part_kind) == (fb.part_id, fb.defect_class, fb.part_kind)


def test_other_seed_gives_other_frames():
    assert not np.array_equal(SyntheticCamera(1).frame(0).image, SyntheticCamera(2).frame(0).image)


def test_frame_format_and_ground_truth():
    cam = SyntheticCamera(3, width=200, height=150, first_part_id=100)
    f = cam.frame(4)
    assert f.image.shape == (150, 200, 3) and f.image.dtype == np.uint8
    assert f.part_id == 104 and f.index == 4
    assert f.defect_class in CLASSES and f.part_kind in PART_KINDS
    assert f.is_ok == (f.defect_class == 'ok')


def test_forced_class_is_the_ground_truth_and_the_defect_changes_the_image():
    cam = SyntheticCamera(5)
    ok = cam.frame(3, 'ok')
    for name in CLASSES[1:]:
        f = cam.frame(3, name)
        assert f.defect_class == name
        # same part, pose and light (same rng stream up to the defect): only the defect differs
        assert np.abs(f.image.astype(int) - ok.image.astype(int)).max() > 40
    with pytest.raises(ValueError, match='unknown class'):
        cam.frame(0, 'dent')


def test_defect_rate_sets_the_class_mix():
    cam = SyntheticCamera(11, defect_rate=0.2)
    labels = [cam.frame(i).defect_class for i in range(400)]
    rate = sum(c != 'ok' for c in labels) / len(labels)
    assert 0.13 < rate < 0.27
    assert set(labels) == set(CLASSES)
    assert all(SyntheticCamera(1, defect_rate=0.0).frame(i).defect_class == 'ok' for i in range(30))


def test_drift_darkens_the_light_and_raises_the_defect_rate():
    nominal, drifted = SyntheticCamera(9), SyntheticCamera(9, drift=1.0)
    mean_n = np.mean([nominal.frame(i).image.mean() for i in range(40)])
    mean_d = np.mean([drifted.frame(i).image.mean() for i in range(40)])
    assert mean_d < 0.75 * mean_n
    assert drifted.effective_defect_rate() > nominal.effective_defect_rate()
    nominal.set_drift(1.0)
    assert np.array_equal(nominal.frame(2).image, drifted.frame(2).image)


@pytest.mark.parametrize('kwargs', [dict(width=10), dict(defect_rate=1.5), dict(drift=-0.1)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        SyntheticCamera(0, **kwargs)
