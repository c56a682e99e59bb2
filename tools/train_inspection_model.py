#!/usr/bin/env python3
"""Train the shipped inspection CNN on synthetic-camera frames and export it to ONNX.

Runtime needs only ONNX Runtime; training needs PyTorch (CPU), which is NOT in
tools/requirements-py.txt. Install it into the venv first:

    . tools/env.sh
    pip install torch==2.13.0 'setuptools<80'   # torch pulls a setuptools colcon cannot use

Then, from the repo root (about 6 min per variant: 1 torch thread, measured on 2 shared cores):

    python tools/train_inspection_model.py                     # primary: inspection_cnn
    python tools/train_inspection_model.py --variant fallback  # drift-robust: inspection_cnn_fallback

Retraining on what operators reviewed (the review queue's labelled set: labels.jsonl + frames/,
README "Model rollout and review"), starting from the model in production:

    python tools/train_inspection_model.py --reviewed log/review/labelled_line1 \
        --init-from ros2_ws/src/cellos_vision/cellos_vision/models/inspection_cnn.onnx \
        --drift 0 0.8 --epochs 3 --model-id inspection_cnn_r1 --out-dir log/models
    # --head-only: refit only the classifier head in numpy (no PyTorch needed, seconds)

Writes ros2_ws/src/cellos_vision/cellos_vision/models/<model_id>.onnx and <model_id>.json (classes, input
contract, seeds, settings, held-out accuracy and confusion matrix on seeds never used for
training). Everything is seeded: the same settings give the same frames and, up to
floating-point reduction order, the same weights.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'ros2_ws' / 'src' / 'cellos_vision'))

from cellos_vision.core.inspection_dataset import format_confusion, labelled_set, score  # noqa: E402
from cellos_vision.core.labelled_set import read_labelled_set  # noqa: E402
from cellos_vision.core.synthetic_camera import CLASSES  # noqa: E402
from cellos_vision.core.vision_preprocess import PreprocessSpec, preprocess_batch  # noqa: E402

MODELS = REPO / 'ros2_ws' / 'src' / 'cellos_vision' / 'cellos_vision' / 'models'
TRAIN_SEEDS = list(range(1000, 1010))
VAL_SEEDS = [5000]                       # early feedback during training only
HELD_OUT_SEEDS = list(range(9000, 9004))  # never used for training or model selection
VARIANTS = {
    # model id, training drift range, confidence threshold recommended for the cell
    'primary': ('inspection_cnn', (0.0, 0.0), 0.70),
    'fallback': ('inspection_cnn_fallback', (0.0, 1.0), 0.80),
}


def build_model(torch, n_classes: int, width: int = 16):
    nn = torch.nn

    def block(cin, cout, pool=True):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    class InspectionCNN(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.features = nn.Sequential(*block(1, w), *block(w, 2 * w), *block(2 * w, 4 * w),
                                          *block(4 * w, 4 * w, pool=False))
            self.head = nn.Sequential(nn.Linear(8 * w, 64), nn.ReLU(), nn.Dropout(0.1),
                                      nn.Linear(64, n_classes))

        def forward(self, x):
            f = self.features(x)
            # mean and max over the image: position-free, so pose does not matter
            pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
            return self.head(pooled)

    return InspectionCNN()


def load_onnx_weights(torch, model, onnx_path: Path) -> None:
    """Fine-tuning start: the exported graph's weights into ``model``. The exporter folded each
    batch norm into its convolution, so the convolutions take the folded weights and bias and
    the batch norms become identities (kept frozen in eval mode while fine-tuning).
    """
    import onnx
    from onnx import numpy_helper
    g = onnx.load(str(onnx_path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    convs = [n for n in g.node if n.op_type == 'Conv']
    layers = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, torch.nn.BatchNorm2d)]
    if len(convs) != len(layers):
        raise SystemExit(f'{onnx_path}: {len(convs)} convolutions, this network has {len(layers)}')
    with torch.no_grad():
        for node, conv, bn in zip(convs, layers, norms):
            w, b = init[node.input[1]], init[node.input[2]]
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise SystemExit(f'{onnx_path}: convolution {tuple(w.shape)} != {tuple(conv.weight.shape)}')
            conv.weight.copy_(torch.from_numpy(w.copy()))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(b.copy()))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        for name, p in model.head.named_parameters():
            p.copy_(torch.from_numpy(init[f'head.{name}'].copy()))


def reviewed_set(folders, spec, repeat: int):
    """The operators' labelled frames, preprocessed; each repeated ``repeat`` times."""
    import numpy as np
    images, labels = [], []
    for folder in folders or ():
        for f in read_labelled_set(folder, CLASSES):
            images.append(f.image)
            labels.append(CLASSES.index(f.label))
    x = preprocess_batch(images, spec) if images else np.zeros((0, *spec.shape), np.float32)
    y = np.asarray(labels, np.int64)
    return np.repeat(x, repeat, axis=0), np.repeat(y, repeat), len(images)


def head_only(init_onnx: Path, out_onnx: Path, x, y, epochs: int, lr: float, batch: int, seed: int) -> dict:
    """Refit the classifier head (the two Gemm layers after the pooled features) of an exported
    model on (x, y), in numpy: softmax cross-entropy, plain SGD from the model's own head. The
    convolutions stay as they are. Writes the model with the new head to ``out_onnx``.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    m = onnx.load(str(init_onnx))
    gemms = [n for n in m.graph.node if n.op_type == 'Gemm']
    if len(gemms) != 2:
        raise SystemExit(f'{init_onnx}: expected a head of two Gemm layers, found {len(gemms)}')
    feature = gemms[0].input[0]
    probe = onnx.load(str(init_onnx))
    probe.graph.output.append(onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=['CPUExecutionProvider'])
    out_names = [o.name for o in sess.get_outputs()]
    f = np.concatenate([sess.run([out_names[-1]], {'image': x[i:i + 256]})[0] for i in range(0, len(x), 256)])
    init = {i.name: i for i in m.graph.initializer}
    names = [gemms[0].input[1], gemms[0].input[2], gemms[1].input[1], gemms[1].input[2]]
    w0, b0, w1, b1 = [numpy_helper.to_array(init[n]).astype(np.float64) for n in names]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(f))
        for i in range(0, len(f), batch):
            idx = order[i:i + batch]
            fb, yb = f[idx].astype(np.float64), y[idx]
            h = fb @ w0.T + b0
            a = np.maximum(h, 0.0)
            z = a @ w1.T + b1
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            g = p
            g[np.arange(len(idx)), yb] -= 1.0
            g /= len(idx)
            gh = (g @ w1) * (h > 0)
            w1 -= lr * (g.T @ a)
            b1 -= lr * g.sum(axis=0)
            w0 -= lr * (gh.T @ fb)
            b0 -= lr * gh.sum(axis=0)
    for n, v in zip(names, (w0, b0, w1, b1)):
        init[n].CopyFrom(numpy_helper.from_array(v.astype(np.float32), n))
    onnx.save(m, str(out_onnx))
    return {'method': 'head_only', 'features': feature, 'frames': int(len(x)), 'epochs': epochs, 'lr': lr,
            'batch': batch, 'optimizer': 'SGD (numpy)'}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--variant', choices=sorted(VARIANTS), default='primary')
    ap.add_argument('--per-class', type=int, default=240, help='training frames per class per seed')
    ap.add_argument('--held-out-per-class', type=int, default=200, help='held-out frames per class per seed')
    ap.add_argument('--epochs', type=int, default=12)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, help='learning rate (default: 3e-3 AdamW peak; 0.01 SGD with --head-only)')
    ap.add_argument('--seed', type=int, default=20261122, help='torch init/shuffle seed')
    ap.add_argument('--threads', type=int, default=1,
                    help='torch threads (1: robust on shared cores, where OpenMP spin-waits stall)')
    ap.add_argument('--time-limit-s', type=float, default=540.0,
                    help='stop training after this many seconds (the last full epoch is kept)')
    ap.add_argument('--out-dir', type=Path, default=MODELS)
    ap.add_argument('--model-id', help="the new model's name (default: the variant's)")
    ap.add_argument('--drift', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                    help="synthetic training drift range (default: the variant's)")
    ap.add_argument('--reviewed', type=Path, nargs='+', metavar='FOLDER',
                    help="operators' labelled sets (the review queue's labelled_dir) added to the training frames")
    ap.add_argument('--reviewed-repeat', type=int, default=4,
                    help='each reviewed frame counts this many times (they are few and the ones that matter)')
    ap.add_argument('--init-from', type=Path, metavar='ONNX',
                    help='fine-tune: start from this exported model (same network) instead of random weights')
    ap.add_argument('--head-only', action='store_true',
                    help='with --init-from: refit only the classifier head, in numpy (no PyTorch; seconds)')
    args = ap.parse_args(argv)
    if args.head_only and not args.init_from:
        ap.error('--head-only needs --init-from (the model whose features are kept)')
    args.lr = args.lr or (0.01 if args.head_only else 3e-3)

    import numpy as np
    model_id, drift_range, threshold = VARIANTS[args.variant]
    model_id = args.model_id or model_id
    drift_range = tuple(args.drift) if args.drift else drift_range
    spec = PreprocessSpec(width=80, height=60, color='gray', mean=0.5, std=0.25)
    drift = drift_range if drift_range[0] != drift_range[1] else drift_range[0]

    t0 = time.monotonic()
    x_train, y_train = labelled_set(TRAIN_SEEDS, args.per_class, spec, drift)
    x_rev, y_rev, n_reviewed = reviewed_set(args.reviewed, spec, args.reviewed_repeat)
    x_train, y_train = np.concatenate([x_train, x_rev]), np.concatenate([y_train, y_rev])
    x_val, y_val = labelled_set(VAL_SEEDS, 60, spec, drift)
    t_data = time.monotonic() - t0
    print(f'data: {len(x_train)} train ({n_reviewed} reviewed frames x {args.reviewed_repeat}), '
          f'{len(x_val)} val frames in {t_data:.1f} s', flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / f'{model_id}.onnx'
    if args.head_only:
        t1 = time.monotonic()
        training = head_only(args.init_from, onnx_path, x_train, y_train, args.epochs, args.lr, args.batch, args.seed)
        t_train = time.monotonic() - t1
        print(f'head refit: {args.epochs} epochs in {t_train:.1f} s', flush=True)
        n_params, torch_version, epochs_done = None, None, args.epochs
    else:
        n_params, torch_version, epochs_done, t_train, training = train_torch(
            args, x_train, y_train, x_val, y_val, spec, onnx_path)
    training.update({'frames': int(len(x_train)), 'reviewed_frames': n_reviewed,
                     'reviewed_sets': [str(p) for p in args.reviewed or ()], 'reviewed_repeat': args.reviewed_repeat,
                     'init_from': str(args.init_from or ''), 'per_class_per_seed': args.per_class,
                     'drift': list(drift_range), 'epochs': epochs_done, 'epochs_planned': args.epochs,
                     'threads': args.threads, 'data_s': round(t_data, 1), 'train_s': round(t_train, 1),
                     'torch': torch_version, 'camera': {'width': 160, 'height': 120}})
    return finish(args, model_id, threshold, spec, onnx_path, n_params, training, t_train)


def train_torch(args, x_train, y_train, x_val, y_val, spec, onnx_path: Path):
    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = build_model(torch, len(CLASSES))
    if args.init_from:
        load_onnx_weights(torch, model, args.init_from)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = (len(x_train) + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=steps_per_epoch)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(args.seed)
    t1 = time.monotonic()
    epochs_done = 0
    for epoch in range(args.epochs):
        model.train()
        if args.init_from:   # the folded batch norms stay identities
            for m in model.features:
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), args.batch):
            idx = order[i:i + args.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx], label_smoothing=0.05)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        epochs_done = epoch + 1
        model.eval()
        with torch.no_grad():
            val = score(lambda b: model(torch.from_numpy(b)).numpy(), x_val, y_val)
        print(f'epoch {epochs_done}/{args.epochs}: loss {total / len(xt):.4f} '
              f'val acc {val.accuracy:.4f} ({time.monotonic() - t1:.0f} s)', flush=True)
        if time.monotonic() - t1 > args.time_limit_s:
            print(f'time limit {args.time_limit_s:.0f} s reached after epoch {epochs_done}', flush=True)
            break
    t_train = time.monotonic() - t1
    model.eval()
    torch.onnx.export(model, torch.zeros(1, *spec.shape), str(onnx_path), input_names=['image'],
                      output_names=['logits'], opset_version=17, dynamo=False,
                      dynamic_axes={'image': {0: 'batch'}, 'logits': {0: 'batch'}})
    training = {'method': 'fine_tune' if args.init_from else 'full', 'batch': args.batch, 'optimizer': 'AdamW',
                'lr_max': args.lr, 'schedule': 'OneCycle', 'weight_decay': 1e-4, 'label_smoothing': 0.05}
    return int(n_params), torch.__version__, epochs_done, t_train, training


def finish(args, model_id, threshold, spec, onnx_path: Path, n_params, training: dict, t_train: float) -> int:
    # held-out score with the runtime the cells use, on the exported file
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    held_out = {}
    for level in (0.0, 0.5, 1.0):
        x_ho, y_ho = labelled_set(HELD_OUT_SEEDS, args.held_out_per_class, spec, level)
        s = score(lambda b: sess.run(['logits'], {'image': b})[0], x_ho, y_ho)
        held_out[f'drift_{level:.1f}'] = s.as_dict()
        print(f'held-out seeds {HELD_OUT_SEEDS} drift {level:.1f}: accuracy {s.accuracy:.4f} '
              f'({s.count} frames)\n{format_confusion(s.confusion)}', flush=True)

    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    meta = {
        'model_id': model_id,
        'variant': args.variant,
        'file': onnx_path.name,
        'sha256': digest,
        'classes': list(CLASSES),
        'ok_class': 'ok',
        'input': {'name': 'image', **spec.to_meta()},
        'output': {'name': 'logits', 'dtype': 'float32', 'shape': ['N', len(CLASSES)]},
        'confidence_threshold': threshold,
        'opset': 17,
        'parameters': n_params,
        'seeds': {'torch': args.seed, 'train_camera': TRAIN_SEEDS, 'validation_camera': VAL_SEEDS,
                  'held_out_camera': HELD_OUT_SEEDS},
        'training': training,
        'held_out': held_out,
    }
    (args.out_dir / f'{model_id}.json').write_text(json.dumps(meta, indent=2) + '\n')
    print(f'wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes, sha256 {digest[:12]}) '
          f'and {model_id}.json; training {t_train:.0f} s', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
