"""The models an executor holds: ONNX files known by content id (sha256) and a name.

A request may name a model by its name, its full id, or an unambiguous id prefix of at
least 8 hex digits. Loading a name again with other content replaces the old model.
One content is loaded once, under one name: loading the same file under a second name is
refused (it would replace the first entry, and unloading the second name would unload the
first); to give a loaded model a role, name it by its id in an alias (model_aliases).
"""
from __future__ import annotations

import hashlib
import importlib.resources
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cellos_inference.core.backends.base import Backend, BackendError, LoadedModel
from cellos_inference.core.service_time import ServiceTime

MIN_ID_PREFIX = 8


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    """One line of a model list."""

    name: str
    path: str
    max_batch: int = 0               # 0: the executor's default
    allow_non_finite: bool = False


@dataclass
class ModelEntry:
    id: str
    name: str
    path: str
    max_batch: int
    allow_non_finite: bool
    backend: str
    model: LoadedModel = field(repr=False)
    service: ServiceTime = field(default_factory=ServiceTime)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


PACKAGE_PREFIX = 'pkg://'


def resolve_model_path(text: str, base: Path) -> Path:
    """``pkg://<python package>/<file>`` (models shipped inside a package, e.g.
    pkg://cellos_vision/models/inspection_cnn.onnx), an absolute path, or a path relative to ``base``.
    """
    if text.startswith(PACKAGE_PREFIX):
        package, _, rel = text[len(PACKAGE_PREFIX):].partition('/')
        try:
            return Path(str(importlib.resources.files(package))) / rel
        except ModuleNotFoundError:
            raise RegistryError(f"model path {text}: no Python package '{package}'") from None
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def read_model_list(path: str | Path, model_dir: str | Path | None = None) -> list[ModelSpec]:
    """YAML ``models: [{name, path, max_batch?, allow_non_finite?}]``; relative paths are
    taken from ``model_dir`` if given, else from the list file's folder.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RegistryError(f'model list {path}: {e}') from e
    base = Path(model_dir).expanduser() if model_dir else path.parent
    specs = []
    for i, item in enumerate(doc.get('models') or []):
        if not isinstance(item, dict) or 'name' not in item or 'path' not in item:
            raise RegistryError(f'model list {path}: entry {i} needs name and path, got {item!r}')
        unknown = set(item) - {'name', 'path', 'max_batch', 'allow_non_finite'}
        if unknown:
            raise RegistryError(f'model list {path}: entry {i} has unknown key(s) {sorted(unknown)}')
        specs.append(ModelSpec(str(item['name']), str(resolve_model_path(str(item['path']), base)),
                               int(item.get('max_batch', 0)), bool(item.get('allow_non_finite', False))))
    return specs


def _zeros(model: LoadedModel, batch: int) -> dict:
    return {s.name: np.zeros(tuple(batch if i == 0 and d == -1 else (1 if d == -1 else d)
                                   for i, d in enumerate(s.shape)), dtype=s.dtype)
            for s in model.inputs}


class ModelRegistry:
    def __init__(self, backend: Backend, default_max_batch: int = 8, warmup_runs: int = 3):
        self.backend = backend
        self.default_max_batch = default_max_batch
        self.warmup_runs = warmup_runs
        self._lock = threading.Lock()
        self._by_id: dict[str, ModelEntry] = {}

    def load(self, spec: ModelSpec) -> tuple[ModelEntry, ModelEntry | None]:
        """Load (or find) a model; returns (entry, replaced entry or None). Raises RegistryError."""
        if not spec.name:
            raise RegistryError('a model needs a name')
        if not Path(spec.path).is_file():
            raise RegistryError(f"model '{spec.name}': no file at {spec.path}")
        model_id = file_sha256(spec.path)
        with self._lock:
            same = self._by_id.get(model_id)
            if same is not None and same.name == spec.name:
                return same, None
            if same is not None:
                raise RegistryError(f"model '{spec.name}': {spec.path} is loaded already as '{same.name}' "
                                    f'(same content, id {same.id[:12]}); name it by that name or id')
        max_batch = spec.max_batch or self.default_max_batch
        try:
            loaded = self.backend.load(spec.path, model_id, max_batch)
        except BackendError as e:
            raise RegistryError(f"model '{spec.name}': {e}") from e
        entry = ModelEntry(model_id, spec.name, spec.path, max_batch, spec.allow_non_finite,
                           self.backend.name, loaded)
        self._warm_up(entry)
        with self._lock:
            replaced = next((e for e in self._by_id.values() if e.name == spec.name), None)
            if replaced is not None:
                del self._by_id[replaced.id]
            self._by_id[model_id] = entry
        if replaced is not None:
            replaced.model.close()
        return entry, replaced

    def _warm_up(self, entry: ModelEntry) -> None:
        """First runs are slow (allocations, kernel selection): run them here, and seed the
        service time estimate for batch 1 and max batch from the later runs.
        """
        for batch in sorted({1, entry.max_batch}):
            feeds = _zeros(entry.model, batch)
            try:
                entry.model.run(feeds)
                for _ in range(self.warmup_runs):
                    t0 = time.perf_counter()
                    entry.model.run(feeds)
                    entry.service.observe(batch, time.perf_counter() - t0)
            except Exception as e:
                entry.model.close()
                raise RegistryError(f"model '{entry.name}': warm-up at batch {batch} failed: "
                                    f'{type(e).__name__}: {e}') from e

    def unload(self, ref: str) -> ModelEntry:
        with self._lock:
            entry = self._resolve_locked(ref)
            if entry is None:
                raise RegistryError(f'no model {ref!r} loaded')
            del self._by_id[entry.id]
        entry.model.close()
        return entry

    def resolve(self, ref: str) -> ModelEntry | None:
        with self._lock:
            return self._resolve_locked(ref)

    def _resolve_locked(self, ref: str) -> ModelEntry | None:
        if ref in self._by_id:
            return self._by_id[ref]
        for e in self._by_id.values():
            if e.name == ref:
                return e
        if len(ref) >= MIN_ID_PREFIX:
            hits = [e for i, e in self._by_id.items() if i.startswith(ref.lower())]
            if len(hits) == 1:
                return hits[0]
        return None

    def list(self) -> list[ModelEntry]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda e: e.name)
