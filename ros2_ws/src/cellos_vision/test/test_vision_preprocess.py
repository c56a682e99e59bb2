import numpy as np
import pytest

from cellos_vision.core import vision_preprocess as vp
from cellos_vision.core.synthetic_camera import SyntheticCamera


def frame():
    return SyntheticCamera(2).frame(0).image


def test_gray_nchw_float32_normalised():
    spec = vp.PreprocessSpec(width=80, height=60, color='gray', mean=0.5, std=0.25)
    x = vp.preprocess(frame(), spec)
    assert x.shape == (1, 1, 60, 80) and x.dtype == np.float32 and x.flags['C_CONTIGUOUS']
    white = vp.preprocess(np.full((120, 160, 3), 255, np.uint8), spec)
    black = vp.preprocess(np.zeros((120, 160), np.uint8), spec)
    assert np.allclose(white, (1.0 - 0.5) / 0.25) and np.allclose(black, -2.0)


def test_colour_layouts_keep_channel_order():
    img = np.zeros((40, 40, 3), np.uint8)
    img[..., 0] = 255        # blue in BGR
    bgr = vp.preprocess(img, vp.PreprocessSpec(width=16, height=16, color='bgr', mean=0.0, std=1.0))
    rgb = vp.preprocess(img, vp.PreprocessSpec(width=16, height=16, color='rgb', mean=0.0, std=1.0))
    assert bgr.shape == (1, 3, 16, 16)
    assert np.allclose(bgr[0, 0], 1.0) and np.allclose(bgr[0, 2], 0.0)
    assert np.allclose(rgb[0, 2], 1.0) and np.allclose(rgb[0, 0], 0.0)
    mono_as_bgr = vp.preprocess(np.full((20, 20), 128, np.uint8),
                                vp.PreprocessSpec(width=8, height=8, color='bgr', mean=0.0, std=1.0))
    assert mono_as_bgr.shape == (1, 3, 8, 8)


@pytest.mark.parametrize('color', ['gray', 'bgr', 'rgb'])
def test_to_image_inverts_preprocess_at_model_resolution(color):
    import cv2
    spec = vp.PreprocessSpec(width=40, height=30, color=color)
    img = frame()
    back = vp.to_image(vp.preprocess(img, spec), spec)
    ref = cv2.resize(img, (40, 30), interpolation=cv2.INTER_AREA)
    if color == 'gray':
        ref = cv2.cvtColor(ref, cv2.COLOR_BGR2GRAY)
    assert back.shape == ref.shape
    assert np.abs(back.astype(int) - ref.astype(int)).max() <= 2


def test_batch_and_errors():
    spec = vp.PreprocessSpec()
    assert vp.preprocess_batch([frame(), frame()], spec).shape == (2, 1, 60, 80)
    assert vp.preprocess_batch([], spec).shape == (0, 1, 60, 80)
    with pytest.raises(ValueError, match='empty'):
        vp.preprocess(np.zeros((0, 0, 3), np.uint8), spec)
    with pytest.raises(ValueError, match='dtype'):
        vp.preprocess(np.zeros((10, 10), np.float32), spec)
    with pytest.raises(ValueError, match='shape'):
        vp.preprocess(np.zeros((10, 10, 4), np.uint8), spec)
    with pytest.raises(ValueError):
        vp.to_image(np.zeros((1, 3, 60, 80), np.float32), spec)
    for bad in (dict(width=2), dict(color='hsv'), dict(layout='NHWC'), dict(std=0.0)):
        with pytest.raises(ValueError):
            vp.PreprocessSpec(**bad)


def test_meta_round_trip_and_point_mapping():
    spec = vp.PreprocessSpec(width=64, height=48, color='rgb', mean=0.4, std=0.2)
    assert vp.PreprocessSpec.from_meta({'input': spec.to_meta()}) == spec
    assert vp.model_to_frame((32, 24), spec, (640, 480)) == (320.0, 240.0)


def test_annotate_draws_verdict_colour_and_survives_bad_frames():
    out = vp.annotate(frame(), 'FAIL', ['scratch 0.97'])
    assert out.shape == (120, 160, 3)
    assert tuple(out[0, 0]) == vp.VERDICT_COLORS_BGR['FAIL']
    assert not np.array_equal(out, frame())
    for bad in (None, np.zeros((0, 0), np.uint8), np.zeros((5, 5), np.float32), np.zeros((5, 5, 4), np.uint8)):
        blank = vp.annotate(bad, 'UNDECIDED', ['bad frame'], blank_size=(100, 80))
        assert blank.shape == (80, 100, 3)
        assert tuple(blank[0, 0]) == vp.VERDICT_COLORS_BGR['UNDECIDED']
    mono = vp.annotate(np.zeros((50, 60), np.uint8), 'PASS', [])
    assert mono.shape == (50, 60, 3)
