"""Validation of a request's tensors against a model's input spec.

Every failure names the tensor and the rule it broke and carries its own status, so a
cell can tell a wrong dtype from a wrong shape from a truncated buffer.
Shapes: -1 in a spec dimension means dynamic; dimension 0 is the batch dimension.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellos_inference.core.inference_types import RawTensor, Status

SUPPORTED_DTYPES = ('float32', 'float16', 'float64', 'uint8', 'int8', 'int32', 'int64', 'bool')


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str          # numpy dtype name
    shape: tuple        # -1 = dynamic


@dataclass
class CheckResult:
    status: Status
    reason: str = ''
    arrays: dict | None = None   # name -> np.ndarray (read-only view of the request bytes)
    items: int = 0               # rows in the batch dimension

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


def _bad(status: Status, reason: str) -> CheckResult:
    return CheckResult(status, reason)


def check_inputs(specs: list[InputSpec], tensors: list[RawTensor], *,
                 allow_non_finite: bool = False, max_batch: int = 0) -> CheckResult:
    """Check names, dtypes, shapes, byte sizes and finiteness; return arrays when all pass."""
    by_name = {t.name: t for t in tensors}
    if len(specs) == 1 and len(tensors) == 1 and tensors[0].name in ('', specs[0].name):
        by_name = {specs[0].name: tensors[0]}   # a single unnamed input is unambiguous
    missing = [s.name for s in specs if s.name not in by_name]
    if missing:
        return _bad(Status.BAD_SHAPE, f'missing input tensor(s) {missing}; model expects '
                                      f'{[s.name for s in specs]}')
    extra = sorted(set(by_name) - {s.name for s in specs})
    if extra:
        return _bad(Status.BAD_SHAPE, f'unknown input tensor(s) {extra}; model expects '
                                      f'{[s.name for s in specs]}')
    arrays, items = {}, None
    for spec in specs:
        t = by_name[spec.name]
        if t.dtype != spec.dtype:
            return _bad(Status.BAD_DTYPE,
                        f"input '{spec.name}': dtype {t.dtype!r}, model expects {spec.dtype!r}")
        shape = tuple(int(d) for d in t.shape)
        if len(shape) != len(spec.shape):
            return _bad(Status.BAD_SHAPE, f"input '{spec.name}': rank {len(shape)} {list(shape)}, "
                                          f'model expects rank {len(spec.shape)} {list(spec.shape)}')
        for axis, (got, want) in enumerate(zip(shape, spec.shape)):
            if got <= 0 or (want != -1 and got != want):
                return _bad(Status.BAD_SHAPE, f"input '{spec.name}': shape {list(shape)}, model "
                                              f'expects {list(spec.shape)} (axis {axis})')
        if items is None:
            items = shape[0]
        elif shape[0] != items:
            return _bad(Status.BAD_SHAPE, f"input '{spec.name}': batch {shape[0]} differs from "
                                          f'the other inputs ({items})')
        dtype = np.dtype(spec.dtype).newbyteorder('<')
        want_bytes = int(np.prod(shape)) * dtype.itemsize
        if len(t.data) != want_bytes:
            return _bad(Status.BAD_SIZE, f"input '{spec.name}': {len(t.data)} bytes, shape "
                                         f'{list(shape)} x {spec.dtype} needs {want_bytes}')
        arr = np.frombuffer(t.data, dtype=dtype).reshape(shape)
        if not allow_non_finite and arr.dtype.kind == 'f' and not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            return _bad(Status.NON_FINITE, f"input '{spec.name}': {bad} non-finite value(s) "
                                           '(NaN/Inf); this model does not accept them')
        arrays[spec.name] = arr
    if max_batch and items > max_batch:
        return _bad(Status.BAD_SHAPE, f'batch of {items} exceeds the model\'s max batch {max_batch}')
    return CheckResult(Status.OK, arrays=arrays, items=items or 0)


def batch_key(arrays: dict) -> tuple:
    """Requests batch together only when every non-batch dimension agrees."""
    return tuple((name, a.shape[1:]) for name, a in sorted(arrays.items()))
