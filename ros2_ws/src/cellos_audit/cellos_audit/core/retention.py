"""Disk budget of a line's recordings: the oldest split files go first, never the one being
written. Every deletion is returned, so the recorder logs it and notes it in the recording.
"""
from __future__ import annotations

from pathlib import Path

from cellos_audit.core.bag_metadata import read_metadata, write_metadata


def recordings_size(root: Path, prefix: str) -> int:
    return sum(p.stat().st_size for p in _splits(root, prefix))


def _splits(root: Path, prefix: str) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for d in root.iterdir() if d.is_dir() and d.name.startswith(prefix) for p in d.glob('*.mcap')]


def enforce_budget(root: Path, prefix: str, budget_bytes: int, keep: Path) -> list[Path]:
    """Delete the oldest splits of the bags ``root/<prefix>*`` until they fit ``budget_bytes``."""
    files = sorted(_splits(root, prefix), key=lambda p: (p.stat().st_mtime_ns, p.name))
    total = sum(p.stat().st_size for p in files)
    deleted = []
    for p in files:
        if total <= budget_bytes:
            break
        if p.resolve() == keep.resolve():
            continue
        total -= p.stat().st_size
        p.unlink()
        deleted.append(p)
    for folder in {p.parent for p in deleted} - {keep.parent}:
        _drop_from_metadata(folder, {p.name for p in deleted if p.parent == folder})
    return deleted


def _drop_from_metadata(folder: Path, names: set[str]) -> None:
    if not any(folder.glob('*.mcap')):
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        return
    meta = read_metadata(folder)
    if meta is None:
        return
    gone = [f for f in meta.get('files', []) if f.get('path') in names]
    meta['relative_file_paths'] = [f for f in meta.get('relative_file_paths', []) if f not in names]
    meta['files'] = [f for f in meta.get('files', []) if f.get('path') not in names]
    meta['message_count'] = max(0, meta.get('message_count', 0) - sum(f.get('message_count', 0) for f in gone))
    custom = meta.setdefault('custom_data', {}) or {}
    custom['deleted_by_disk_budget'] = ','.join(sorted(set(filter(None, custom.get(
        'deleted_by_disk_budget', '').split(','))) | names))
    meta['custom_data'] = custom
    write_metadata(folder, {'rosbag2_bagfile_information': meta})
