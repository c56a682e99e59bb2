"""Small ONNX models built with the onnx helper API, for tests, benchmarks and the demo.

No download: each model is a few KB, written deterministically (fixed seed), batch
dimension dynamic ("N").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 17
IR_VERSION = 9      # readable by ONNX Runtime >= 1.15 and TensorRT 10


def _save(graph, path: str | Path) -> str:
    import onnx
    from onnx import helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='cellos.testmodels')
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return str(path)


def affine(path: str | Path, features: int = 4, scale: float = 2.0, bias: float = 1.0) -> str:
    """y = scale * x + bias, x: float32 [N, features]. Cheap, exact: for plumbing tests."""
    from onnx import TensorProto, helper
    g = helper.make_graph(
        [helper.make_node('Mul', ['x', 'scale'], ['xs']), helper.make_node('Add', ['xs', 'bias'], ['y'])],
        'affine',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['N', features])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['N', features])],
        [helper.make_tensor('scale', TensorProto.FLOAT, [], [scale]),
         helper.make_tensor('bias', TensorProto.FLOAT, [], [bias])])
    return _save(g, path)


def conv_net(path: str | Path, size: int = 64, channels: int = 32, layers: int = 3,
             classes: int = 8, seed: int = 0) -> str:
    """A vision-like net: ``layers`` 3x3 conv + ReLU, global average pool, dense.
    Input 'image' float32 [N, 3, size, size] -> 'scores' float32 [N, classes]. Its cost
    scales with size^2 * channels^2 * layers (about 5 ms per image on one core at 96/32/3).
    """
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    nodes, inits, prev, cin = [], [], 'image', 3
    for i in range(layers):
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = np.zeros(channels, np.float32)
        inits += [numpy_helper.from_array(w, f'w{i}'), numpy_helper.from_array(b, f'b{i}')]
        nodes += [helper.make_node('Conv', [prev, f'w{i}', f'b{i}'], [f'c{i}'], pads=[1, 1, 1, 1]),
                  helper.make_node('Relu', [f'c{i}'], [f'r{i}'])]
        prev, cin = f'r{i}', channels
    wd = (rng.standard_normal((channels, classes)) / np.sqrt(channels)).astype(np.float32)
    inits += [numpy_helper.from_array(wd, 'wd'), numpy_helper.from_array(np.zeros(classes, np.float32), 'bd')]
    nodes += [helper.make_node('GlobalAveragePool', [prev], ['pool']),
              helper.make_node('Flatten', ['pool'], ['flat'], axis=1),
              helper.make_node('Gemm', ['flat', 'wd', 'bd'], ['scores'])]
    g = helper.make_graph(nodes, 'conv_net',
                          [helper.make_tensor_value_info('image', TensorProto.FLOAT, ['N', 3, size, size])],
                          [helper.make_tensor_value_info('scores', TensorProto.FLOAT, ['N', classes])],
                          inits)
    return _save(g, path)


def maintenance_mlp(path: str | Path, features: int = 16, hidden: int = 32, seed: int = 1) -> str:
    """Predictive-maintenance scorer: 'features' float32 [N, 16] -> 'wear' float32 [N, 1] in (0, 1)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node('Gemm', ['features', 'w1', 'b1'], ['h']),
         helper.make_node('Relu', ['h'], ['hr']),
         helper.make_node('Gemm', ['hr', 'w2', 'b2'], ['logit']),
         helper.make_node('Sigmoid', ['logit'], ['wear'])],
        'maintenance_mlp',
        [helper.make_tensor_value_info('features', TensorProto.FLOAT, ['N', features])],
        [helper.make_tensor_value_info('wear', TensorProto.FLOAT, ['N', 1])],
        [numpy_helper.from_array(w1, 'w1'), numpy_helper.from_array(np.zeros(hidden, np.float32), 'b1'),
         numpy_helper.from_array(w2, 'w2'), numpy_helper.from_array(np.zeros(1, np.float32), 'b2')])
    return _save(g, path)


def write_all(directory: str | Path) -> dict:
    """The models config/models.yaml lists, written into ``directory``."""
    d = Path(directory)
    return {'affine': affine(d / 'affine.onnx'),
            'conv_net': conv_net(d / 'conv_net.onnx'),
            'maintenance': maintenance_mlp(d / 'maintenance.onnx')}


if __name__ == '__main__':  # python -m testmodels DIR
    import sys
    for name, p in write_all(sys.argv[1] if len(sys.argv) > 1 else 'models').items():
        print(name, p)
