import numpy as np
import pytest

from cellos_inference.core.inference_types import RawTensor, Status
from cellos_inference.core.tensor_check import InputSpec, batch_key, check_inputs

SPEC = [InputSpec('image', 'float32', (-1, 3, 4, 4))]


def raw(a, name='image', dtype=None, shape=None, data=None):
    return RawTensor(name, dtype or a.dtype.name, shape or a.shape, a.tobytes() if data is None else data)


def test_ok_returns_arrays_and_items():
    a = np.arange(2 * 3 * 16, dtype=np.float32).reshape(2, 3, 4, 4)
    r = check_inputs(SPEC, [raw(a)])
    assert r.ok and r.items == 2
    np.testing.assert_array_equal(r.arrays['image'], a)


def test_single_unnamed_input_is_accepted():
    a = np.zeros((1, 3, 4, 4), np.float32)
    assert check_inputs(SPEC, [raw(a, name='')]).ok


@pytest.mark.parametrize('case, status, words', [
    ('dtype', Status.BAD_DTYPE, "dtype 'float64'"),
    ('rank', Status.BAD_SHAPE, 'rank 3'),
    ('dim', Status.BAD_SHAPE, 'axis 2'),
    ('zero', Status.BAD_SHAPE, 'axis 0'),
    ('size', Status.BAD_SIZE, 'needs 192'),
    ('nan', Status.NON_FINITE, '1 non-finite'),
    ('inf', Status.NON_FINITE, 'non-finite'),
    ('missing', Status.BAD_SHAPE, 'missing input'),
    ('batch', Status.BAD_SHAPE, 'max batch 2'),
])
def test_each_bad_input_has_its_status_and_reason(case, status, words):
    a = np.zeros((1, 3, 4, 4), np.float32)
    t = {
        'dtype': lambda: raw(a.astype(np.float64)),
        'rank': lambda: raw(a[0]),
        'dim': lambda: raw(np.zeros((1, 3, 5, 4), np.float32)),
        'zero': lambda: raw(a, shape=(0, 3, 4, 4), data=b''),
        'size': lambda: raw(a, data=a.tobytes()[:-4]),
        'nan': lambda: raw(np.where(np.arange(48).reshape(1, 3, 4, 4) == 7, np.nan, a).astype(np.float32)),
        'inf': lambda: raw(np.full((1, 3, 4, 4), np.inf, np.float32)),
        'missing': lambda: raw(a, name='other'),
        'batch': lambda: raw(np.zeros((3, 3, 4, 4), np.float32)),
    }[case]()
    r = check_inputs(SPEC, [t], max_batch=2)
    assert r.status == status and words in r.reason, r.reason
    assert r.arrays is None


def test_non_finite_allowed_when_model_allows():
    a = np.full((1, 3, 4, 4), np.nan, np.float32)
    assert check_inputs(SPEC, [raw(a)], allow_non_finite=True).ok


def test_integer_input_skips_finiteness_and_batch_key_ignores_batch():
    spec = [InputSpec('ids', 'int64', (-1, 5))]
    a = np.arange(10, dtype=np.int64).reshape(2, 5)
    r = check_inputs(spec, [raw(a, name='ids')])
    assert r.ok
    b = check_inputs(spec, [raw(a[:1], name='ids')])
    assert batch_key(r.arrays) == batch_key(b.arrays)
