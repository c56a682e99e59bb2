import numpy as np
import pytest

from cellos_vision.core.image_codec import BadFrame, ImageFields, check, decode, encode, to_bgr


@pytest.mark.parametrize('encoding,shape', [('mono8', (5, 7)), ('bgr8', (5, 7, 3)), ('rgb8', (4, 9, 3))])
def test_round_trip(encoding, shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    f = encode(a, encoding)
    assert (f.height, f.width, f.encoding) == shape[:2] + (encoding,)
    assert f.step * f.height == len(f.data)
    assert np.array_equal(decode(f), a)


def test_padded_rows_are_stripped():
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = b''.join(row.tobytes() + b'\xff' * 3 for row in a)
    assert np.array_equal(decode(ImageFields(2, 3, 'bgr8', 12, padded)), a)


def test_rgb_becomes_bgr_and_mono_stays():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    assert to_bgr(rgb, 'rgb8')[0, 0].tolist() == [30, 20, 10]
    mono = np.ones((2, 2), np.uint8)
    assert to_bgr(mono, 'mono8') is mono


@pytest.mark.parametrize('fields,kind', [
    (ImageFields(0, 0, 'bgr8', 0, b''), 'empty'),
    (ImageFields(2, 2, 'bgr8', 6, b''), 'empty'),
    (ImageFields(2, 2, '16UC1', 4, b'\0' * 8), 'encoding'),
    (ImageFields(2, 2, 'yuv422', 4, b'\0' * 8), 'encoding'),
    (ImageFields(2, 2, 'bgr8', 6, b'\0' * 11), 'size'),
    (ImageFields(2, 2, 'bgr8', 4, b'\0' * 8), 'size'),       # step shorter than a row
    (ImageFields(2, 2, 'mono8', 2, b'\0' * 5), 'size'),
    (ImageFields(20000, 1, 'mono8', 1, b'\0' * 20000), 'size'),
])
def test_bad_frames_raise_with_their_kind(fields, kind):
    with pytest.raises(BadFrame) as e:
        decode(fields)
    assert e.value.kind == kind
    assert str(e.value)


def test_encode_refuses_what_does_not_fit():
    with pytest.raises(BadFrame, match='unsupported'):
        encode(np.zeros((2, 2), np.uint8), 'bgra8')
    with pytest.raises(BadFrame) as e:
        encode(np.zeros((2, 2), np.uint8), 'bgr8')
    assert e.value.kind == 'size'
    with pytest.raises(BadFrame):
        encode(np.zeros((2, 2, 3), np.float32), 'bgr8')
    with pytest.raises(BadFrame):
        encode(np.zeros((0, 2, 3), np.uint8), 'bgr8')
    with pytest.raises(BadFrame):
        to_bgr(np.zeros((2, 2), np.uint8), 'mono16')


def test_check_returns_channels():
    assert check(2, 3, 'mono8', 3, 6) == 1
    assert check(2, 3, 'rgb8', 9, 18) == 3
