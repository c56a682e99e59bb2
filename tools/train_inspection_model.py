#!/usr/bin/env python3
"""Train the shipped inspection CNN on synthetic-camera frames and export it to ONNX.

Runtime needs only ONNX Runtime; training needs PyTorch (CPU), which is NOT in
tools/requirements-py.txt. Install it into the venv first:

    . tools/env.sh
    pip install torch==2.13.0 'setuptools<80'   # torch pulls a setuptools colcon cannot use

Then, from the repo root (about 6 min per variant: 1 torch thread, measured on 2 shared cores):

    python tools/train_inspection_model.py                     # primary: inspection_cnn
    python tools/train_inspection_model.py --variant fallback  # drift-robust: inspection_cnn_fallback

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
from cellos_vision.core.synthetic_camera import CLASSES  # noqa: E402
from cellos_vision.core.vision_preprocess import PreprocessSpec  # noqa: E402

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--variant', choices=sorted(VARIANTS), default='primary')
    ap.add_argument('--per-class', type=int, default=240, help='training frames per class per seed')
    ap.add_argument('--held-out-per-class', type=int, default=200, help='held-out frames per class per seed')
    ap.add_argument('--epochs', type=int, default=12)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--seed', type=int, default=20261122, help='torch init/shuffle seed')
    ap.add_argument('--threads', type=int, default=1,
                    help='torch threads (1: robust on shared cores, where OpenMP spin-waits stall)')
    ap.add_argument('--time-limit-s', type=float, default=540.0,
                    help='stop training after this many seconds (the last full epoch is kept)')
    ap.add_argument('--out-dir', type=Path, default=MODELS)
    args = ap.parse_args(argv)

    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model_id, drift_range, threshold = VARIANTS[args.variant]
    spec = PreprocessSpec(width=80, height=60, color='gray', mean=0.5, std=0.25)
    drift = drift_range if drift_range[0] != drift_range[1] else drift_range[0]

    t0 = time.monotonic()
    x_train, y_train = labelled_set(TRAIN_SEEDS, args.per_class, spec, drift)
    x_val, y_val = labelled_set(VAL_SEEDS, 60, spec, drift)
    t_data = time.monotonic() - t0
    print(f'data: {len(x_train)} train, {len(x_val)} val frames in {t_data:.1f} s', flush=True)

    model = build_model(torch, len(CLASSES))
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

    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / f'{model_id}.onnx'
    model.eval()
    torch.onnx.export(model, torch.zeros(1, *spec.shape), str(onnx_path), input_names=['image'],
                      output_names=['logits'], opset_version=17, dynamo=False,
                      dynamic_axes={'image': {0: 'batch'}, 'logits': {0: 'batch'}})

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
        'parameters': int(n_params),
        'seeds': {'torch': args.seed, 'train_camera': TRAIN_SEEDS, 'validation_camera': VAL_SEEDS,
                  'held_out_camera': HELD_OUT_SEEDS},
        'training': {'frames': int(len(x_train)), 'per_class_per_seed': args.per_class,
                     'drift': list(drift_range), 'epochs': epochs_done, 'epochs_planned': args.epochs,
                     'batch': args.batch, 'optimizer': 'AdamW', 'lr_max': args.lr,
                     'schedule': 'OneCycle', 'weight_decay': 1e-4, 'label_smoothing': 0.05,
                     'threads': args.threads, 'data_s': round(t_data, 1), 'train_s': round(t_train, 1),
                     'torch': torch.__version__, 'camera': {'width': 160, 'height': 120}},
        'held_out': held_out,
    }
    (args.out_dir / f'{model_id}.json').write_text(json.dumps(meta, indent=2) + '\n')
    print(f'wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes, sha256 {digest[:12]}) '
          f'and {model_id}.json; training {t_train:.0f} s', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
