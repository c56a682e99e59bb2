"""On-disk cache of TensorRT plans.

A plan is only valid for the exact ONNX content, GPU model and compute capability, TensorRT
version, precision, optimization profile and build recipe (the builder flags the backend sets)
it was built for, so all of them are in the key. Each plan has a JSON
sidecar holding the key and the plan's own sha256: a truncated or foreign file is rebuilt,
never deserialized. The folder is the user's choice (executor parameter trt_plan_cache); with
none, plans are built at each start and kept nowhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlanKey:
    model_sha256: str
    gpu_name: str
    tensorrt_version: str
    precision: str          # fp32 | fp16 (TF32 cleared in both)
    max_batch: int
    compute_capability: str = ''     # '8.9'
    recipe: int = 0                  # tensorrt_backend.BUILD_RECIPE

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        gpu = re.sub(r'[^A-Za-z0-9]+', '_', self.gpu_name).strip('_').lower() or 'gpu'
        sm = f'-sm{self.compute_capability}' if self.compute_capability else ''
        return (f'{self.model_sha256[:16]}-{gpu}{sm}-trt{self.tensorrt_version}-{self.precision}'
                f'-b{self.max_batch}-r{self.recipe}-{self.digest()[:8]}.plan')


class PlanCache:
    def __init__(self, directory: str | os.PathLike | None):
        self.dir = Path(directory).expanduser() if directory else None   # None: no cache

    def paths(self, key: PlanKey) -> tuple[Path, Path]:
        plan = self.dir / key.filename()
        return plan, plan.with_suffix('.json')

    def load(self, key: PlanKey) -> tuple[bytes | None, str]:
        """(plan bytes, '') when a valid plan is cached, else (None, why not)."""
        if self.dir is None:
            return None, 'no plan cache folder (trt_plan_cache is empty)'
        plan, meta = self.paths(key)
        if not plan.exists() or not meta.exists():
            return None, f'no cached plan {plan.name}'
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError) as e:
            return None, f'unreadable sidecar {meta.name}: {e}'
        if info.get('key') != asdict(key):
            return None, f'sidecar {meta.name} was written for another key'
        data = plan.read_bytes()
        if hashlib.sha256(data).hexdigest() != info.get('plan_sha256'):
            return None, f'plan {plan.name} does not match its recorded hash (truncated or replaced)'
        return data, ''

    def store(self, key: PlanKey, data: bytes) -> Path | None:
        if self.dir is None:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        plan, meta = self.paths(key)
        for path, payload in ((plan, data), (meta, json.dumps(
                {'key': asdict(key), 'plan_sha256': hashlib.sha256(data).hexdigest()},
                indent=1).encode())):
            tmp = path.with_name(path.name + f'.tmp{os.getpid()}')
            tmp.write_bytes(payload)
            os.replace(tmp, path)   # atomic: a concurrent reader sees the old or the new file
        return plan
