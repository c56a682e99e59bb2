"""The one place converting inference messages <-> core types (Tensor, InferenceRequest,
InferenceResult, ModelInfo, ExecutorStatus/CellShare), and the one place checking them.

A request is checked once, on arrival, before anything else reads it: string lengths, the
number of tensors and their ranks against caps, the priority class, the deadline and its
stamp (finite, in range), and the tensors' bytes (inline, or a range of the cell's own
shared-memory region, never both) against the executor's byte cap. What fails is answered
with an explicit status and a reason (``Refusal``); it is never dropped silently.

Deadlines cross hosts as wall-clock stamps. The executor keeps its own times on its
monotonic clock, so a request's deadline is converted once, here, on arrival: the time left is
``deadline - header.stamp``, both stamped by the sender on its own clock when it sent the
request (the arbiter stamps the header as it forwards), and the deadline becomes
``arrival_monotonic + time left``. No wall clock of the executor enters it: a step of the
executor's clock (or an offset between hosts) changes nothing, and only the transport's own
time (a millisecond on a host, visible in the per-request breakdown) is not counted. Where the
sender left the stamp empty, the executor's wall clock stands in for it. The time left is
capped at MAX_BUDGET_S.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time

from cellos_common.core.cell_names import cell_ns, split_cell_ns
from cellos_common.nodes.convert_time import s_to_time, time_to_s
from cellos_interfaces.msg import (CellShare, ExecutorStatus, InferenceRequest, InferenceResult,
                                   ModelInfo, ModelRegistryChange, Tensor)
from cellos_inference.core.inference_types import Job, Outcome, Priority, RawTensor, Status
from cellos_inference.core.shm_transport import RegionError, TensorRef, decode
from cellos_inference.nodes.convert_rollout import alias_to_msg

MAX_ID = 64              # line_id, cell_id, task
MAX_NAME = 128           # model, tensor names
MAX_DTYPE = 16
MAX_TENSORS = 16
MAX_RANK = 8
MAX_BUDGET_S = 3600.0
INLINE_LIMIT_BYTES = 8 << 20   # make_request refuses to build a bigger inline request
STATUS_VALUES = {int(s) for s in Status}


class RequestTooLarge(ValueError):
    """A request the sender must not publish: its tensors exceed what the path carries."""


@dataclass
class Refusal:
    """A request that fails its checks: answered with ``status`` on the topic it came from."""

    status: Status
    reason: str


def _text(value, limit: int, what: str) -> str:
    if len(value) > limit:
        raise _Bad(Status.REJECTED, f'{what} is {len(value)} characters long (limit {limit})')
    return value


class _Bad(Exception):
    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


# -- tensors ------------------------------------------------------------------------------
def tensor_to_raw(t: Tensor) -> RawTensor:
    return RawTensor(t.name, t.dtype, tuple(int(d) for d in t.shape), memoryview(t.data).cast('B'))


def array_to_tensor(name: str, a: np.ndarray) -> Tensor:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == '>':
        a = a.astype(a.dtype.newbyteorder('<'))
    return Tensor(name=name, dtype=a.dtype.name, shape=list(a.shape), data=a.tobytes())


def ref_to_tensor(ref: TensorRef) -> Tensor:
    return Tensor(name=ref.name, dtype=ref.dtype, shape=list(ref.shape), shm_offset=ref.offset, shm_size=ref.size)


def tensor_ref(t: Tensor) -> TensorRef:
    return TensorRef(t.name, t.dtype, tuple(int(d) for d in t.shape), int(t.shm_offset), int(t.shm_size))


def tensor_to_array(t: Tensor) -> np.ndarray:
    """ValueError (with the reason) for an unknown dtype or bytes that do not match the shape."""
    try:
        return decode(memoryview(t.data).cast('B'), TensorRef(t.name, t.dtype, tuple(int(d) for d in t.shape),
                                                              0, len(t.data)))
    except RegionError as e:
        raise ValueError(str(e)) from None


# -- requests ---------------------------------------------------------------------------------
def request_to_job(msg: InferenceRequest, *, topic_cell_ns: str, arrival: float, wall_now: float,
                   max_request_bytes: int, regions=None) -> tuple[Job, Refusal | None]:
    """The Job a request asks for, checked; with a Refusal when it must be answered at once.

    The Job always comes back (a refusal is answered with its request_id and task, on the
    topic's cell, never on a cell the message claims). ``regions``: the executor's
    RegionTable; a request naming a region takes a reference on it (``job.transport``) that
    the caller gives back when the job is answered.
    """
    job = Job(request_id=int(msg.request_id), cell_ns=topic_cell_ns, task=msg.task[:MAX_ID],
              model=msg.model[:MAX_NAME], priority=None, deadline=arrival, arrival=arrival, inputs=[])
    try:
        _text(msg.line_id, MAX_ID, 'line_id')
        _text(msg.cell_id, MAX_ID, 'cell_id')
        _text(msg.task, MAX_ID, 'task')
        _text(msg.model, MAX_NAME, 'model')
        claimed = cell_ns(msg.line_id, msg.cell_id)
        if claimed != topic_cell_ns:
            raise _Bad(Status.REJECTED, f'cell {claimed!r} does not match the request topic of '
                                        f'{topic_cell_ns!r}')
        if int(msg.priority) not in {int(p) for p in Priority}:
            raise _Bad(Status.REJECTED, f'unknown priority class {msg.priority} '
                                        '(0 critical, 1 normal, 2 background)')
        job.priority = Priority(msg.priority)
        job.deadline = arrival + _budget(msg, wall_now)
        job.inputs, region = _inputs(msg, topic_cell_ns, max_request_bytes, regions)
        job.transport = region
    except _Bad as e:
        return job, Refusal(e.status, e.reason)
    return job, None


ENVELOPE_BYTES = 64 << 10   # a request's serialized bytes besides its tensors, at most (names, shapes, ids)


def request_head(data: bytes) -> InferenceRequest | None:
    """The fields of a serialized InferenceRequest (CDR, as rmw_fastrtps and rmw_cyclonedds send it)
    that come before its tensors: header, request_id, line_id, cell_id, task, model, priority,
    deadline; no inputs. The executor answers an oversized request from these without deserializing
    its tensors (0.12 s for 52 MB here, with the interpreter lock held). None: not readable.
    """
    if len(data) < 4 or data[0] != 0 or data[1] not in (0, 1):
        return None
    order = '<' if data[1] == 1 else '>'
    body, pos = memoryview(data)[4:], 0

    def take(fmt: str, size: int):
        nonlocal pos
        pos += (-pos) % size
        if pos + size > len(body):
            raise ValueError('truncated')
        (value,) = struct.unpack_from(order + fmt, body, pos)
        pos += size
        return value

    def text(limit: int) -> str:
        nonlocal pos
        n = take('I', 4)
        if n == 0 or pos + n > len(body):
            raise ValueError('bad string')
        value = bytes(body[pos:pos + min(n - 1, limit + 1)]).decode('utf-8', 'replace')
        pos += n
        return value
    try:
        msg = InferenceRequest()
        msg.header.stamp = Time(sec=take('i', 4), nanosec=take('I', 4))
        text(0)                                                       # frame_id
        msg.request_id = take('Q', 8)
        msg.line_id, msg.cell_id, msg.task = text(MAX_ID), text(MAX_ID), text(MAX_ID)
        msg.model = text(MAX_NAME)
        msg.priority = take('B', 1)
        msg.deadline = Time(sec=take('i', 4), nanosec=take('I', 4))
    except (ValueError, struct.error, AssertionError):
        return None
    return msg


def _budget(msg: InferenceRequest, wall_now: float) -> float:
    """Seconds the request has left, from the sender's own stamps (module docstring)."""
    deadline = time_to_s(msg.deadline)
    stamp = time_to_s(msg.header.stamp) or wall_now
    if deadline <= 0:
        raise _Bad(Status.REJECTED, 'the request has no deadline')
    budget = deadline - stamp
    if not math.isfinite(budget):
        raise _Bad(Status.REJECTED, 'deadline or stamp is not a finite time')
    if budget <= 0:
        raise _Bad(Status.DEADLINE, f'deadline passed {-1e3 * budget:.1f} ms before the request was sent')
    return min(budget, MAX_BUDGET_S)


def _inputs(msg: InferenceRequest, cell: str, max_bytes: int, regions):
    if len(msg.inputs) > MAX_TENSORS:
        raise _Bad(Status.REJECTED, f'{len(msg.inputs)} input tensors (limit {MAX_TENSORS})')
    total = 0
    for t in msg.inputs:
        _text(t.name, MAX_NAME, 'tensor name')
        _text(t.dtype, MAX_DTYPE, 'tensor dtype')
        if len(t.shape) > MAX_RANK:
            raise _Bad(Status.BAD_SHAPE, f"input '{t.name}': rank {len(t.shape)} (limit {MAX_RANK})")
        inline, shm = len(t.data), int(t.shm_size)
        if inline and shm:
            raise _Bad(Status.REJECTED, f"input '{t.name}' has both inline bytes and a shared-memory range")
        if shm and not msg.shm_region:
            raise _Bad(Status.REJECTED, f"input '{t.name}' names a shared-memory range but the request "
                                        'names no region')
        total += inline + shm
    if total > max_bytes:
        raise _Bad(Status.BAD_SIZE, f'{total} tensor bytes: this executor accepts at most {max_bytes} per request')
    if not msg.shm_region:
        return [tensor_to_raw(t) for t in msg.inputs], None
    if regions is None:
        raise _Bad(Status.REJECTED, 'this executor takes no shared-memory requests')
    try:
        region = regions.get(int(msg.shm_region), cell)
    except RegionError as e:
        raise _Bad(Status.REJECTED, str(e)) from None
    try:
        raw = [RawTensor(t.name, t.dtype, tuple(int(d) for d in t.shape),
                         region.view(int(t.shm_offset), int(t.shm_size)) if t.shm_size else
                         memoryview(t.data).cast('B')) for t in msg.inputs]
    except RegionError as e:
        regions.put(region)
        raise _Bad(Status.REJECTED, f'shared-memory input: {e}') from None
    return raw, region


def make_request(*, request_id: int, line_id: str, cell_id: str, task: str, model: str, priority: int,
                 deadline_s: float, inputs: dict, stamp: Time | None = None,
                 max_bytes: int = INLINE_LIMIT_BYTES) -> InferenceRequest:
    """What a cell's task (vision, a test client) sends to the cell's arbiter. Raises
    RequestTooLarge when the tensors exceed ``max_bytes``: DDS does not promise to deliver a
    message of tens of MB in time, and the sender must learn it now, not never.
    """
    total = sum(np.asarray(a).nbytes for a in inputs.values())
    if total > max_bytes:
        raise RequestTooLarge(f'request of {total} tensor bytes: the inline path carries at most {max_bytes}')
    msg = InferenceRequest(request_id=request_id, line_id=line_id, cell_id=cell_id, task=task, model=model,
                           priority=int(priority), deadline=s_to_time(deadline_s),
                           inputs=[array_to_tensor(n, a) for n, a in inputs.items()])
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def request_bytes(msg: InferenceRequest) -> int:
    return sum(len(t.data) + int(t.shm_size) for t in msg.inputs)


def request_arrays(msg: InferenceRequest) -> dict:
    """An inline request's tensors as arrays (ValueError for a tensor that does not decode)."""
    return {t.name: tensor_to_array(t) for t in msg.inputs}


def check_request_against(msg: InferenceRequest, info: ModelInfo) -> Refusal | None:
    """What the executor would refuse for ``info``'s input spec, found by the arbiter before
    anything travels: names, dtypes, ranks, fixed dimensions, byte sizes, max batch.
    """
    specs = {n: (d, s) for n, d, s in zip(info.input_names, info.input_dtypes, info.input_shapes)}
    tensors = {t.name: t for t in msg.inputs}
    if len(specs) == 1 and len(tensors) == 1 and next(iter(tensors)) in ('', next(iter(specs))):
        tensors = {next(iter(specs)): next(iter(tensors.values()))}
    if set(tensors) != set(specs):
        return Refusal(Status.BAD_SHAPE, f'inputs {sorted(tensors)}; model {info.name!r} expects {sorted(specs)}')
    for name, (dtype, shape_text) in specs.items():
        t = tensors[name]
        if t.dtype != dtype:
            return Refusal(Status.BAD_DTYPE,
                           f"input '{name}': dtype {t.dtype!r}, model {info.name!r} expects {dtype!r}")
        try:
            want = [int(d) for d in shape_text.strip('[]').split(',') if d.strip()]
        except ValueError:
            continue   # a spec this arbiter cannot read: the executor decides
        got = [int(d) for d in t.shape]
        if len(got) != len(want) or any(g <= 0 or (w != -1 and g != w) for g, w in zip(got, want)):
            return Refusal(Status.BAD_SHAPE, f"input '{name}': shape {got}, model {info.name!r} expects {want}")
        if info.max_batch and got and got[0] > info.max_batch:
            return Refusal(Status.BAD_SHAPE, f"input '{name}': batch {got[0]} exceeds the model's max batch "
                                             f'{info.max_batch}')
        try:
            itemsize = np.dtype(dtype).itemsize
        except TypeError:
            continue
        need = int(np.prod(got)) * itemsize
        if len(t.data) != need:
            return Refusal(Status.BAD_SIZE, f"input '{name}': {len(t.data)} bytes, shape {got} x {dtype} needs {need}")
    return None


# -- results ------------------------------------------------------------------------------
def outcome_to_result(o: Outcome, stamp: Time | None = None, *, received: Time | None = None,
                      shm_region: int = 0, shm_refs=None) -> InferenceResult:
    """``shm_refs``: the outputs as written into the cell's region ``shm_region`` (else inline)."""
    line_id, cell_id = split_cell_ns(o.cell_ns)
    outputs = ([ref_to_tensor(r) for r in shm_refs] if shm_refs is not None else
               [array_to_tensor(n, a) for n, a in o.outputs])
    msg = InferenceResult(request_id=o.request_id, line_id=line_id, cell_id=cell_id, task=o.task,
                          model_id=o.model_id, status=int(o.status), reason=o.reason,
                          outputs=outputs, queue_ms=float(o.queue_ms), batch_wait_ms=float(o.batch_wait_ms),
                          compute_ms=float(o.compute_ms), batch_size=int(o.batch_size),
                          backend=o.backend, estimate_ms=float(o.estimate_ms),
                          shm_region=int(shm_region) if shm_refs is not None else 0,
                          energy_wh=float(o.energy_wh), energy_source=o.energy_source)
    if stamp is not None:
        msg.header.stamp = stamp
    if received is not None:
        msg.received = received
    return msg


def check_result(msg: InferenceResult) -> str:
    """'' for a result a client can use; else why not (unknown status, too many outputs, names)."""
    if int(msg.status) not in STATUS_VALUES:
        return f'unknown status {msg.status}'
    if len(msg.outputs) > MAX_TENSORS:
        return f'{len(msg.outputs)} output tensors (limit {MAX_TENSORS})'
    for t in msg.outputs:
        if len(t.name) > MAX_NAME or len(t.dtype) > MAX_DTYPE or len(t.shape) > MAX_RANK:
            return f'output {t.name[:MAX_NAME]!r}: name, dtype or rank beyond the limits'
        if len(t.data) and t.shm_size:
            return f"output '{t.name}' has both inline bytes and a shared-memory range"
        if t.shm_size and not msg.shm_region:
            return f"output '{t.name}' names a shared-memory range but the result names no region"
    if len(msg.reason) > 4096:
        return 'reason longer than 4096 characters'
    return ''


def result_outputs(msg: InferenceResult) -> dict:
    """Inline outputs as arrays; ValueError (with the reason) for one that does not decode."""
    return {t.name: tensor_to_array(t) for t in msg.outputs}


def result_with_inline_outputs(msg: InferenceResult, arrays: dict) -> InferenceResult:
    """The result with its outputs inline (the arbiter copies them out of its region)."""
    msg.outputs = [array_to_tensor(n, a) for n, a in arrays.items()]
    msg.shm_region = 0
    return msg


def result_refs(msg: InferenceResult) -> list[TensorRef]:
    return [tensor_ref(t) for t in msg.outputs]


# -- models and status --------------------------------------------------------------------
def model_info(entry) -> ModelInfo:
    m = entry.model
    return ModelInfo(id=entry.id, name=entry.name, backend=entry.backend, precision=m.precision,
                     input_names=[s.name for s in m.inputs], input_dtypes=[s.dtype for s in m.inputs],
                     input_shapes=['[' + ','.join(str(d) for d in s.shape) + ']' for s in m.inputs],
                     output_names=list(m.outputs), service_ms=1e3 * entry.service.estimate(1),
                     max_batch=entry.max_batch)


REGISTRY_CHANGES = {'loaded': ModelRegistryChange.CHANGE_LOADED, 'unloaded': ModelRegistryChange.CHANGE_UNLOADED,
                    'load_failed': ModelRegistryChange.CHANGE_LOAD_FAILED,
                    'candidate_set': ModelRegistryChange.CHANGE_CANDIDATE_SET,
                    'promoted': ModelRegistryChange.CHANGE_PROMOTED,
                    'rolled_back': ModelRegistryChange.CHANGE_ROLLED_BACK,
                    'production_set': ModelRegistryChange.CHANGE_PRODUCTION_SET}


def registry_change(change: str, *, entry=None, name: str = '', executor_id: str, path: str = '',
                    cause: str, reason: str = '', models=(), stamp: Time, alias=None,
                    operator_name: str = '') -> ModelRegistryChange:
    """change: loaded | unloaded (``entry`` the registry entry) | load_failed (``name`` only) | a rollout
    step (candidate_set, promoted, rolled_back, production_set: ``alias`` the task's aliases after it).
    """
    msg = ModelRegistryChange(executor_id=executor_id, change=REGISTRY_CHANGES[change],
                              model=model_info(entry) if entry is not None else ModelInfo(name=name),
                              path=path, cause=cause, reason=reason, models=[model_info(e) for e in models],
                              alias=alias_to_msg(alias), operator_name=operator_name)
    msg.header.stamp = stamp
    return msg


def executor_status(snapshot, models, *, executor_id: str, backend: str, stamp: Time,
                    power_w: float = 0.0, power_measured: bool = False,
                    concurrency_limit: int = 0, instance_id: str = '',
                    max_request_bytes: int = 0) -> ExecutorStatus:
    msg = ExecutorStatus(executor_id=executor_id, backend=backend,
                         models=[model_info(e) for e in models],
                         mean_batch_size=float(snapshot.mean_batch_size),
                         max_batch_seen=int(snapshot.max_batch_seen), power_w=float(power_w),
                         power_measured=power_measured, concurrency_limit=concurrency_limit,
                         instance_id=instance_id, max_request_bytes=int(max_request_bytes))
    msg.header.stamp = stamp
    for c in snapshot.cells:
        line_id, cell_id = split_cell_ns(c.cell_ns)
        msg.cells.append(CellShare(
            line_id=line_id, cell_id=cell_id, weight=float(c.weight), compute_share=float(c.compute_share),
            queue_depth=int(c.queue_depth), served=int(c.served), rejected=int(c.rejected),
            queue_ms_p50=c.queue_ms[0], queue_ms_p99=c.queue_ms[1],
            batch_wait_ms_p50=c.batch_wait_ms[0], batch_wait_ms_p99=c.batch_wait_ms[1],
            compute_ms_p50=c.compute_ms[0], compute_ms_p99=c.compute_ms[1]))
    return msg


def status_models(msg: ExecutorStatus) -> dict:
    """The executor's models by name and by id, as a client looks them up (bounded)."""
    out = {}
    for m in msg.models[:256]:
        out[m.name] = m
        out[m.id] = m
    return out
