import numpy as np
import pytest

import testmodels
from cellos_inference.core.backends.onnxruntime_backend import OnnxRuntimeBackend
from cellos_inference.core.model_registry import (ModelRegistry, ModelSpec, RegistryError, file_sha256,
                                                  read_model_list)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp('models')
    return {'affine': testmodels.affine(d / 'affine.onnx'),
            'affine3': testmodels.affine(d / 'affine3.onnx', scale=3.0),
            'conv': testmodels.conv_net(d / 'conv.onnx', size=16, channels=4, layers=1)}


def test_load_resolve_by_name_id_and_prefix(models):
    reg = ModelRegistry(OnnxRuntimeBackend(), default_max_batch=4)
    entry, replaced = reg.load(ModelSpec('affine', models['affine']))
    assert replaced is None and entry.id == file_sha256(models['affine'])
    assert entry.model.inputs[0].shape == (-1, 4) and entry.model.inputs[0].dtype == 'float32'
    assert reg.resolve('affine') is entry and reg.resolve(entry.id) is entry
    assert reg.resolve(entry.id[:8]) is entry and reg.resolve(entry.id[:7]) is None
    assert set(entry.service.sizes()) == {1, 4}          # warm-up measured batch 1 and max
    out = entry.model.run({'x': np.ones((2, 4), np.float32)})[0]
    np.testing.assert_allclose(out, 3.0)


def test_same_name_new_content_replaces(models):
    reg = ModelRegistry(OnnxRuntimeBackend())
    old, _ = reg.load(ModelSpec('a', models['affine']))
    new, replaced = reg.load(ModelSpec('a', models['affine3']))
    assert replaced is old and reg.resolve(old.id) is None and [e.id for e in reg.list()] == [new.id]
    assert reg.load(ModelSpec('a', models['affine3']))[0] is new   # same content: no reload


def test_same_content_under_a_second_name_is_refused_and_the_first_stays(models):
    reg = ModelRegistry(OnnxRuntimeBackend())
    production, _ = reg.load(ModelSpec('production', models['affine']))
    with pytest.raises(RegistryError, match="loaded already as 'production'"):
        reg.load(ModelSpec('candidate', models['affine']))
    assert reg.resolve('production') is production and reg.resolve('candidate') is None
    with pytest.raises(RegistryError, match='no model'):
        reg.unload('candidate')
    assert [e.name for e in reg.list()] == ['production']
    out = production.model.run({'x': np.ones((1, 4), np.float32)})[0]   # still open
    np.testing.assert_allclose(out, 3.0)


def test_unload_and_errors(models, tmp_path):
    reg = ModelRegistry(OnnxRuntimeBackend())
    reg.load(ModelSpec('conv', models['conv'], max_batch=2))
    assert reg.unload('conv').name == 'conv' and reg.list() == []
    with pytest.raises(RegistryError, match='no model'):
        reg.unload('conv')
    with pytest.raises(RegistryError, match='no file'):
        reg.load(ModelSpec('x', str(tmp_path / 'none.onnx')))
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not onnx')
    with pytest.raises(RegistryError, match='onnxruntime cannot load'):
        reg.load(ModelSpec('bad', str(bad)))


def test_model_list_yaml(tmp_path):
    (tmp_path / 'models.yaml').write_text(
        'models:\n  - {name: a, path: a.onnx, max_batch: 4}\n  - {name: b, path: /abs/b.onnx, '
        'allow_non_finite: true}\n')
    specs = read_model_list(tmp_path / 'models.yaml')
    assert specs[0] == ModelSpec('a', str(tmp_path / 'a.onnx'), 4, False)
    assert specs[1].path == '/abs/b.onnx' and specs[1].allow_non_finite
    assert read_model_list(tmp_path / 'models.yaml', '/m')[0].path == '/m/a.onnx'
    (tmp_path / 'bad.yaml').write_text('models:\n  - {name: a}\n')
    with pytest.raises(RegistryError, match='needs name and path'):
        read_model_list(tmp_path / 'bad.yaml')


def test_shipped_models_resolve_from_their_package(tmp_path):
    from cellos_inference.core.model_registry import RegistryError, resolve_model_path
    p = resolve_model_path('pkg://cellos_vision/models/inspection_cnn.onnx', tmp_path)
    assert p.is_file() and p.name == 'inspection_cnn.onnx'
    assert resolve_model_path('rel.onnx', tmp_path) == tmp_path / 'rel.onnx'
    with pytest.raises(RegistryError, match="no Python package 'nosuchpkg'"):
        resolve_model_path('pkg://nosuchpkg/x.onnx', tmp_path)


def test_bad_paths_and_names_are_registry_errors_never_others(models, tmp_path):
    reg = ModelRegistry(OnnxRuntimeBackend(), max_models=2)
    for path in ('~nouser_xyz/m.onnx', str(tmp_path), 'bad\0path', str(tmp_path / 'none.onnx')):
        with pytest.raises(RegistryError):
            reg.load(ModelSpec('m', path))
    unreadable = tmp_path / 'locked.onnx'
    unreadable.write_bytes(b'x')
    unreadable.chmod(0)
    with pytest.raises(RegistryError):       # root reads it anyway: then the backend refuses the bytes
        reg.load(ModelSpec('m', str(unreadable)))
    for name in ('', 'a' * 200, 'a b', '../x'):
        with pytest.raises(RegistryError, match='not a name'):
            reg.load(ModelSpec(name, models['affine']))
    reg.load(ModelSpec('a', models['affine']))
    reg.load(ModelSpec('b', models['affine3']))
    with pytest.raises(RegistryError, match='max_models 2'):
        reg.load(ModelSpec('c', models['conv']))
    assert reg.load(ModelSpec('a', models['conv']))[1] is not None     # a replacement is not one more
    assert reg.resolve('x' * 500) is None and reg.resolve('') is None
