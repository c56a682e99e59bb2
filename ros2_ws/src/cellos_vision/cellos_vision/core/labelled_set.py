"""The labelled set that operators' review decisions grow, and that
tools/train_inspection_model.py trains on (--reviewed FOLDER).

A folder:
  labels.jsonl     one JSON object per decision, appended: file, label, item_id, line_id, cell_id,
                   part_id, frame_sha256, verdict and confidence the cell published, model_id (what
                   the cell asked for) and model_content_id (the model that answered), operator_name,
                   reason, decided_s
  frames/*.png     each frame as captured (lossless: its pixel bytes hash to frame_sha256)

Plain files on purpose: any tool reads them, a person opens a frame in an image viewer, and a line
appended is on disk (fsynced) before the decision is marked exported. A reader takes an item id
once (the last line wins), so a line written twice by a crash between the two never counts twice.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LABELS = 'labels.jsonl'
FRAMES = 'frames'


@dataclass(frozen=True)
class LabelledFrame:
    image: np.ndarray      # H x W x 3 BGR (or H x W mono) uint8, as captured
    label: str
    meta: dict


def frame_file(line_id: str, cell_id: str, part_id: int, frame_sha256: str, item_id: int) -> str:
    return f'{FRAMES}/{line_id}_{cell_id}_part{int(part_id)}_{frame_sha256[:12] or "noframe"}_{int(item_id)}.png'


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LabelledSet:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        (self.folder / FRAMES).mkdir(parents=True, exist_ok=True)

    def item_ids(self) -> set[int]:
        return {int(m['item_id']) for m in _lines(self.folder / LABELS) if 'item_id' in m}

    def append(self, image: np.ndarray, label: str, meta: dict) -> str:
        """Write the frame, then its line; both on disk when this returns. The file name (relative)."""
        rel = frame_file(meta.get('line_id', ''), meta.get('cell_id', ''), meta.get('part_id', 0),
                         meta.get('frame_sha256', ''), meta.get('item_id', 0))
        ok, png = cv2.imencode('.png', image)
        if not ok:
            raise ValueError(f'frame of item {meta.get("item_id")} cannot be encoded as PNG')
        path = self.folder / rel
        tmp = path.with_suffix('.tmp')
        with open(tmp, 'wb') as f:
            f.write(png.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        line = json.dumps({'file': rel, 'label': label, **meta}, sort_keys=True)
        labels = self.folder / LABELS
        cut = labels.is_file() and labels.stat().st_size > 0 and _last_byte(labels) != b'\n'
        with open(labels, 'a') as f:
            f.write(('\n' if cut else '') + line + '\n')
            f.flush()
            os.fsync(f.fileno())
        return rel


def _last_byte(path: Path) -> bytes:
    with open(path, 'rb') as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for text in path.read_text().splitlines():
        if not text.strip():
            continue
        try:
            out.append(json.loads(text))
        except ValueError:   # a line cut by a crash mid-write: its decision is exported again
            continue
    return out


def read_labelled_set(folder: str | Path, classes=None) -> list[LabelledFrame]:
    """Every decision of the folder, each item once (the last line for it), oldest first.
    ``classes``: labels outside it raise ValueError (a set made for another model).
    """
    folder = Path(folder)
    if not (folder / LABELS).is_file():
        raise ValueError(f'{folder}: no {LABELS} (not a labelled set)')
    by_item: dict = {}
    for i, m in enumerate(_lines(folder / LABELS)):
        by_item[m.get('item_id', f'line{i}')] = m
    out = []
    for m in by_item.values():
        if classes is not None and m['label'] not in classes:
            raise ValueError(f'{folder}: label {m["label"]!r} of item {m.get("item_id")} is not one of {list(classes)}')
        image = cv2.imread(str(folder / m['file']), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f'{folder}: frame {m["file"]} of item {m.get("item_id")} cannot be read')
        out.append(LabelledFrame(image, m['label'], m))
    return out
