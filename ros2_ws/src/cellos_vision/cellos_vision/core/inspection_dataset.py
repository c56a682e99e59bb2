"""Labelled sets from the synthetic camera, and how a model is scored on them.

Shared by the training script (tools/train_inspection_model.py) and the shipped model's
accuracy test, so both score on exactly the same frames for the same seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from cellos_vision.core.synthetic_camera import CLASSES, SyntheticCamera
from cellos_vision.core.vision_preprocess import PreprocessSpec, preprocess_batch


def labelled_set(seeds: Iterable[int], per_class: int, spec: PreprocessSpec,
                 drift: float | tuple[float, float] = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced set: ``per_class`` frames of each class from every seed.

    ``drift`` is a level, or a (low, high) range drawn per frame (seeded).
    Returns (N x C x H x W float32, N int64 labels in CLASSES order).
    """
    images, labels = [], []
    for seed in seeds:
        camera = SyntheticCamera(seed)
        rng = np.random.default_rng([seed, 7])
        index = 0
        for _ in range(per_class):
            for label, name in enumerate(CLASSES):
                if isinstance(drift, tuple):
                    camera.set_drift(float(rng.uniform(*drift)))
                else:
                    camera.set_drift(float(drift))
                images.append(camera.frame(index, name).image)
                labels.append(label)
                index += 1
    return preprocess_batch(images, spec), np.asarray(labels, np.int64)


@dataclass(frozen=True)
class Score:
    accuracy: float
    confusion: np.ndarray      # rows: true class, columns: predicted class
    count: int

    def as_dict(self, classes=CLASSES) -> dict:
        return {'accuracy': round(self.accuracy, 4), 'count': self.count,
                'classes': list(classes),
                'confusion_rows_true_cols_pred': self.confusion.tolist()}


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)
    return m


def score(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
          batch: int = 256) -> Score:
    """``predict``: N x C x H x W -> N x classes logits."""
    preds = [np.argmax(predict(x[i:i + batch]), axis=1) for i in range(0, len(x), batch)]
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    m = confusion_matrix(y, pred, len(CLASSES))
    return Score(float(np.trace(m) / max(1, m.sum())), m, int(len(y)))


def format_confusion(m: np.ndarray, classes=CLASSES) -> str:
    width = max(len(c) for c in classes) + 2
    head = ' ' * width + ''.join(f'{c[:10]:>12}' for c in classes)
    rows = [f'{c:<{width}}' + ''.join(f'{v:>12d}' for v in row) for c, row in zip(classes, m)]
    return '\n'.join([head, *rows])
