"""The models an executor holds: ONNX files known by content id (sha256) and a name.

A request may name a model by its name, its full id, or an unambiguous id prefix of at
least 8 hex digits. Loading a name again with other content replaces the old model.
One content is loaded once, under one name: loading the same file under a second name is
refused (it would replace the first entry, and unloading the second name would unload the
first); to give a loaded model a role, name it by its id in an alias (model_aliases).

A run holds its model by ``lease``: unloading or replacing a model takes it out of the
registry at once (no new request resolves it), and closes it only when the runs in progress
have ended (or after ``close_timeout_s``; the backend then refuses the late run itself).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cellos_inference.core.backends.base import Backend, BackendError, LoadedModel
from cellos_inference.core.service_time import ServiceTime

MIN_ID_PREFIX = 8
MAX_NAME = 128
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.\-]*')


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
    users: int = field(default=0, repr=False)     # runs holding a lease


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise RegistryError(f'model name {str(name)[:MAX_NAME]!r} is not a name (1 to {MAX_NAME} letters, '
                            "digits, '_', '.', '-')")
    return name


PACKAGE_PREFIX = 'pkg://'


def resolve_model_path(text: str, base: Path) -> Path:
    """``pkg://<python package>/<file>`` (models shipped inside a package, e.g.
    pkg://cellos_vision/models/inspection_cnn.onnx), an absolute path, or a path relative to ``base``.
    """
    if text.startswith(PACKAGE_PREFIX):
        package, _, rel = text[len(PACKAGE_PREFIX):].partition('/')
        try:
            return Path(str(importlib.resources.files(package))) / rel
        except (ImportError, ValueError, TypeError):   # no such package, a relative or malformed name
            raise RegistryError(f"model path {text}: no Python package '{package}'") from None
    try:
        p = Path(text).expanduser()
    except RuntimeError as e:   # '~nouser/...': no such user
        raise RegistryError(f'model path {text!r}: {e}') from None
    return p if p.is_absolute() else base / p


def read_model_list(path: str | Path, model_dir: str | Path | None = None) -> list[ModelSpec]:
    """YAML ``models: [{name, path, max_batch?, allow_non_finite?}]``; relative paths are
    taken from ``model_dir`` if given, else from the list file's folder.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise RegistryError(f'model list {path}: {e}') from e
    if not isinstance(doc, dict):
        raise RegistryError(f'model list {path}: expected a mapping with a models list')
    base = Path(model_dir).expanduser() if model_dir else path.parent
    specs = []
    for i, item in enumerate(doc.get('models') or []):
        if not isinstance(item, dict) or 'name' not in item or 'path' not in item:
            raise RegistryError(f'model list {path}: entry {i} needs name and path, got {item!r}')
        unknown = set(item) - {'name', 'path', 'max_batch', 'allow_non_finite'}
        if unknown:
            raise RegistryError(f'model list {path}: entry {i} has unknown key(s) {sorted(unknown)}')
        try:
            max_batch = int(item.get('max_batch', 0))
        except (TypeError, ValueError):
            raise RegistryError(f"model list {path}: entry {i}: max_batch {item.get('max_batch')!r} is not "
                                'an integer') from None
        specs.append(ModelSpec(str(item['name']), str(resolve_model_path(str(item['path']), base)),
                               max_batch, bool(item.get('allow_non_finite', False))))
    return specs


def _zeros(model: LoadedModel, batch: int) -> dict:
    return {s.name: np.zeros(tuple(batch if i == 0 and d == -1 else (1 if d == -1 else d)
                                   for i, d in enumerate(s.shape)), dtype=s.dtype)
            for s in model.inputs}


class ModelRegistry:
    def __init__(self, backend: Backend, default_max_batch: int = 8, warmup_runs: int = 3,
                 max_models: int = 32, max_batch_limit: int = 1024, close_timeout_s: float = 10.0):
        self.backend = backend
        self.default_max_batch = default_max_batch
        self.warmup_runs = warmup_runs
        self.max_models = max_models
        self.max_batch_limit = max_batch_limit
        self.close_timeout_s = close_timeout_s
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._by_id: dict[str, ModelEntry] = {}
        self.last_close_error = ''

    def load(self, spec: ModelSpec) -> tuple[ModelEntry, ModelEntry | None]:
        """Load (or find) a model; returns (entry, replaced entry or None). Raises RegistryError,
        never anything else: a bad path, an unreadable file or a backend failure all say why.
        """
        check_model_name(spec.name)
        if not 0 <= int(spec.max_batch) <= self.max_batch_limit:
            raise RegistryError(f"model '{spec.name}': max_batch {spec.max_batch} is not within 0 .. "
                                f'{self.max_batch_limit}')
        try:
            path = Path(spec.path).expanduser()
            if not path.is_file():
                raise RegistryError(f"model '{spec.name}': no file at {spec.path}")
            model_id = file_sha256(path)
        except (OSError, RuntimeError, ValueError) as e:   # unreadable, '~nouser', NUL in the path
            raise RegistryError(f"model '{spec.name}': cannot read {spec.path!r}: {e}") from None
        with self._lock:
            same = self._by_id.get(model_id)
            if same is not None and same.name == spec.name:
                return same, None
            if same is not None:
                raise RegistryError(f"model '{spec.name}': {spec.path} is loaded already as '{same.name}' "
                                    f'(same content, id {same.id[:12]}); name it by that name or id')
            if len(self._by_id) >= self.max_models and not any(e.name == spec.name for e in self._by_id.values()):
                raise RegistryError(f"model '{spec.name}': {len(self._by_id)} models loaded already "
                                    f'(max_models {self.max_models}); unload one first')
        max_batch = spec.max_batch or self.default_max_batch
        try:
            loaded = self.backend.load(str(path), model_id, max_batch)
        except BackendError as e:
            raise RegistryError(f"model '{spec.name}': {e}") from e
        except Exception as e:  # a backend bug must not take the executor down with a service call
            raise RegistryError(f"model '{spec.name}': backend {self.backend.name} failed: "
                                f'{type(e).__name__}: {e}') from e
        if loaded.max_batch and loaded.max_batch < max_batch:   # a static batch dimension
            max_batch = loaded.max_batch
        entry = ModelEntry(model_id, spec.name, str(path), max_batch, spec.allow_non_finite,
                           self.backend.name, loaded)
        self._warm_up(entry)
        with self._lock:
            replaced = next((e for e in self._by_id.values() if e.name == spec.name), None)
            if replaced is not None:
                del self._by_id[replaced.id]
            self._by_id[model_id] = entry
        if replaced is not None:
            self._close_when_idle(replaced)
        return entry, replaced

    @contextlib.contextmanager
    def lease(self, ref: str):
        """The entry ``ref`` names (None when gone), kept open until the block ends."""
        with self._lock:
            entry = self._resolve_locked(ref)
            if entry is not None:
                entry.users += 1
        try:
            yield entry
        finally:
            if entry is not None:
                with self._lock:
                    entry.users -= 1
                    self._idle.notify_all()

    def _close_when_idle(self, entry: ModelEntry) -> None:
        with self._lock:
            self._idle.wait_for(lambda: entry.users <= 0, timeout=self.close_timeout_s)
        try:
            entry.model.close()
        except Exception as e:   # the model is out of the registry either way; say what was left
            self.last_close_error = f"model '{entry.name}': close: {type(e).__name__}: {e}"

    def _warm_up(self, entry: ModelEntry) -> None:
        """First runs are slow (allocations, kernel selection): run them here, and seed the
        service time estimate for batch 1 and max batch from the later runs.
        """
        static = {s.shape[0] for s in entry.model.inputs if s.shape and s.shape[0] > 0}
        for batch in sorted(static or {1, entry.max_batch}):
            feeds = _zeros(entry.model, batch)
            try:
                entry.model.run(feeds)
                for _ in range(self.warmup_runs):
                    t0 = time.perf_counter()
                    entry.model.run(feeds)
                    entry.service.observe(batch, time.perf_counter() - t0)
            except Exception as e:
                try:
                    entry.model.close()
                except Exception:
                    pass
                raise RegistryError(f"model '{entry.name}': warm-up at batch {batch} failed: "
                                    f'{type(e).__name__}: {e}') from e

    def unload(self, ref: str) -> ModelEntry:
        with self._lock:
            entry = self._resolve_locked(ref)
            if entry is None:
                raise RegistryError(f'no model {ref!r} loaded')
            del self._by_id[entry.id]
        self._close_when_idle(entry)
        return entry

    def resolve(self, ref: str) -> ModelEntry | None:
        with self._lock:
            return self._resolve_locked(ref)

    def _resolve_locked(self, ref: str) -> ModelEntry | None:
        if not isinstance(ref, str) or not ref or len(ref) > MAX_NAME:
            return None
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
