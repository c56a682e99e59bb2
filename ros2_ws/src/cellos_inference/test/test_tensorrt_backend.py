"""TensorRT backend: plan cache keys and backend selection run everywhere; the engine
build and inference run only where tensorrt, pycuda and a CUDA GPU exist.
"""
import json

import numpy as np
import pytest

import testmodels
from cellos_inference.core.backends.plan_cache import PlanCache, PlanKey
from cellos_inference.core.backends.selection import (BackendUnavailable, GpuProbe, choose_backend,
                                                      make_backend, probe_gpu)
from cellos_inference.core.backends.base import BackendError
from cellos_inference.core.backends.tensorrt_backend import batch_profile, precision_for, static_batch

KEY = PlanKey('ab' * 32, 'NVIDIA H100 80GB HBM3', '10.3.0', 'fp16', 8, compute_capability='9.0', recipe=2)


@pytest.mark.parametrize('field, value', [('model_sha256', 'cd' * 32), ('gpu_name', 'NVIDIA L4'),
                                          ('tensorrt_version', '10.4.0'), ('precision', 'fp32'),
                                          ('max_batch', 16), ('compute_capability', '8.9'), ('recipe', 3)])
def test_every_key_part_changes_the_plan_file(field, value):
    other = PlanKey(**{**KEY.__dict__, field: value})
    assert other.filename() != KEY.filename() and other.digest() != KEY.digest()


def test_filename_is_readable_and_safe():
    name = KEY.filename()
    assert name.startswith('abababababababab-nvidia_h100_80gb_hbm3-sm9.0-trt10.3.0-fp16-b8-r2-')
    assert '/' not in name and name.endswith('.plan')


def test_cache_reuses_valid_plan_and_refuses_damaged_or_foreign(tmp_path):
    cache = PlanCache(tmp_path / 'plans')
    assert cache.load(KEY)[0] is None
    cache.store(KEY, b'engine-bytes')
    assert cache.load(KEY) == (b'engine-bytes', '')
    plan, meta = cache.paths(KEY)
    plan.write_bytes(b'engine-by')                         # truncated
    data, why = cache.load(KEY)
    assert data is None and 'does not match its recorded hash' in why
    cache.store(KEY, b'engine-bytes')
    info = json.loads(meta.read_text())
    info['key']['precision'] = 'fp32'
    meta.write_text(json.dumps(info))
    assert 'another key' in cache.load(KEY)[1]


def test_no_cache_folder_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    cache = PlanCache('')
    assert cache.store(KEY, b'engine-bytes') is None
    data, why = cache.load(KEY)
    assert data is None and 'trt_plan_cache is empty' in why
    assert not any(tmp_path.iterdir())


def test_precision_choice():
    assert precision_for('auto', True) == 'fp16' and precision_for('auto', False) == 'fp32'
    assert precision_for('on', False) == 'fp16' and precision_for('off', True) == 'fp32'
    with pytest.raises(ValueError):
        precision_for('bf16', True)


def test_profiles_dynamic_and_static_batch_dimensions():
    assert batch_profile('x', (-1, 3, 8, 8), 8) == (8, ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)))
    assert batch_profile('x', (1, 3, 8, 8), 8) == (1, None)          # static: no profile, batch fixed
    with pytest.raises(BackendError, match='only the batch dimension'):
        batch_profile('x', (-1, -1, 8), 8)
    with pytest.raises(BackendError, match='scalar'):
        batch_profile('x', (), 8)
    assert static_batch({'a': (8, ((1,), (4,), (8,)))}) is None
    assert static_batch({'a': (1, None), 'b': (1, None)}) == 1
    with pytest.raises(BackendError, match='mix static and dynamic'):
        static_batch({'a': (1, None), 'b': (8, ((1,), (4,), (8,)))})


GPU = GpuProbe('10.3.0', True, 'NVIDIA H100')
NO_GPU = GpuProbe(missing='tensorrt not importable (ModuleNotFoundError)')


def test_backend_selection():
    assert choose_backend('auto', GPU).backend == 'tensorrt'
    auto = choose_backend('auto', NO_GPU)
    assert auto.backend == 'onnxruntime' and 'tensorrt not importable' in auto.reason
    assert choose_backend('onnxruntime', GPU).backend == 'onnxruntime'
    with pytest.raises(BackendUnavailable, match='tensorrt not importable'):
        choose_backend('tensorrt', NO_GPU)
    with pytest.raises(ValueError):
        choose_backend('cuda', GPU)
    assert not GpuProbe('10.3.0', True, None, 'no CUDA device').tensorrt_usable


def test_probe_on_this_host_matches_what_imports():
    probe = probe_gpu()
    try:
        import tensorrt  # noqa: F401
        has_trt = True
    except Exception:
        has_trt = False
    assert has_trt or (not probe.tensorrt_usable and probe.missing)
    assert make_backend(choose_backend('onnxruntime', probe)).name == 'onnxruntime-cpu'


_PROBE = probe_gpu()


@pytest.mark.skipif(not _PROBE.tensorrt_usable,
                    reason=f'TensorRT GPU path not runnable here: {_PROBE.missing}')
def test_tensorrt_builds_caches_and_matches_onnxruntime(tmp_path):
    from cellos_inference.core.backends.onnxruntime_backend import OnnxRuntimeBackend
    from cellos_inference.core.backends.tensorrt_backend import TensorRTBackend
    from cellos_inference.core.model_registry import file_sha256
    path = testmodels.conv_net(tmp_path / 'conv.onnx', size=32, channels=8, layers=2)
    mid = file_sha256(path)
    trt_backend = TensorRTBackend(plan_cache_dir=str(tmp_path / 'plans'), fp16='off', streams=2)
    model = trt_backend.load(path, mid, 4)
    assert trt_backend.last_load_source == 'built'
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = model.run({'image': x})[0]
    want = OnnxRuntimeBackend().load(path, mid, 4).run({'image': x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    model.close()
    again = TensorRTBackend(plan_cache_dir=str(tmp_path / 'plans'), fp16='off')
    again.load(path, mid, 4).close()
    assert again.last_load_source == 'cache'
