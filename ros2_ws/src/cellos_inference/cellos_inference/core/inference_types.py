"""Core types of one inference request and its one result (no ROS types).

Numbers mirror cellos_interfaces/InferenceRequest and InferenceResult, so the conversion
layer (cellos_inference.nodes.convert_inference) can copy them across unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class Priority(IntEnum):
    CRITICAL = 0
    NORMAL = 1
    BACKGROUND = 2


class Status(IntEnum):
    OK = 0
    DEADLINE = 1
    QUEUE_FULL = 2
    UNKNOWN_MODEL = 3
    BAD_DTYPE = 4
    BAD_SHAPE = 5
    BAD_SIZE = 6
    NON_FINITE = 7
    SHUTTING_DOWN = 8
    GATED = 9
    TIMEOUT = 10
    REJECTED = 11
    INTERNAL = 12
    DEFERRED = 13


@dataclass
class RawTensor:
    """A tensor as it travels: dtype name, shape, little-endian row-major bytes."""

    name: str
    dtype: str
    shape: tuple
    data: bytes | memoryview


@dataclass
class Job:
    """One inference request inside the executor. Times are seconds on the executor's monotonic
    clock (the node converts a request's wall-clock deadline once, on arrival).
    """

    request_id: int
    cell_ns: str                    # the client cell's namespace, 'line1/cell_01': its fair-share key
    task: str
    model: str                      # name or id as the request gave it
    priority: Priority
    deadline: float
    arrival: float
    inputs: list                    # RawTensor as received; arrays after the tensor check
    model_id: str = ''              # resolved content id
    arrays: dict = field(default_factory=dict)
    items: int = 1                  # batch rows this request carries
    batch_key: tuple = ()
    held_since: float | None = None  # first time a batch holding it was kept open for more
    seq: int = 0
    transport: object = None        # how the request came and its answer goes (shared memory slot)


@dataclass
class Outcome:
    """Exactly one per Job."""

    request_id: int
    cell_ns: str
    task: str
    model_id: str
    status: Status
    reason: str = ''
    outputs: list = field(default_factory=list)   # list[(name, np.ndarray)]
    queue_ms: float = 0.0
    batch_wait_ms: float = 0.0
    compute_ms: float = 0.0
    batch_size: int = 0
    backend: str = ''
    estimate_ms: float = 0.0     # the batch's modelled compute when it was dispatched
    arrival: float = 0.0         # executor clock
    transport: object = None     # the Job's
    energy_wh: float = 0.0          # set by the executor node (power_model.inference_energy_j)
    energy_source: str = ''

    @classmethod
    def reject(cls, job: Job, status: Status, reason: str, backend: str = '') -> 'Outcome':
        return cls(job.request_id, job.cell_ns, job.task, job.model_id or job.model,
                   Status(status), reason, backend=backend, arrival=job.arrival, transport=job.transport)


def as_array(t: RawTensor) -> np.ndarray:
    """Bytes -> array without checks (tensor_check.check_inputs is the checked path)."""
    return np.frombuffer(t.data, dtype=np.dtype(t.dtype).newbyteorder('<')).reshape(t.shape)
