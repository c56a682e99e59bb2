"""The one place converting inference messages <-> core types (Tensor, InferenceRequest,
InferenceResult, ModelInfo, ExecutorStatus/CellShare).
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time

from cellos_common.core.cell_names import cell_ns, split_cell_ns
from cellos_common.nodes.convert_time import s_to_time, time_to_s
from cellos_interfaces.msg import (CellShare, ExecutorStatus, InferenceRequest, InferenceResult,
                                   ModelInfo, ModelRegistryChange, Tensor)
from cellos_inference.core.inference_types import Job, Outcome, Priority, RawTensor
from cellos_inference.nodes.convert_rollout import alias_to_msg


# -- tensors ------------------------------------------------------------------------------
def tensor_to_raw(t: Tensor) -> RawTensor:
    return RawTensor(t.name, t.dtype, tuple(int(d) for d in t.shape), memoryview(t.data).cast('B'))


def array_to_tensor(name: str, a: np.ndarray) -> Tensor:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == '>':
        a = a.astype(a.dtype.newbyteorder('<'))
    return Tensor(name=name, dtype=a.dtype.name, shape=list(a.shape), data=a.tobytes())


def tensor_to_array(t: Tensor) -> np.ndarray:
    return np.frombuffer(memoryview(t.data).cast('B'),
                         dtype=np.dtype(t.dtype).newbyteorder('<')).reshape(tuple(t.shape))


# -- requests / results -------------------------------------------------------------------
def request_to_job(msg: InferenceRequest) -> Job:
    """The job's cell_ns is the cell the request names (line_id/cell_id), not yet checked."""
    try:
        prio = Priority(msg.priority)
    except ValueError:
        prio = None
    return Job(request_id=msg.request_id, cell_ns=cell_ns(msg.line_id, msg.cell_id), task=msg.task, model=msg.model,
               priority=prio, deadline=time_to_s(msg.deadline), arrival=0.0,
               inputs=[tensor_to_raw(t) for t in msg.inputs])


def make_request(*, request_id: int, line_id: str, cell_id: str, task: str, model: str, priority: int,
                 deadline_s: float, inputs: dict, stamp: Time | None = None) -> InferenceRequest:
    """What a cell's task (vision, a test client) sends to the cell's arbiter."""
    msg = InferenceRequest(request_id=request_id, line_id=line_id, cell_id=cell_id, task=task, model=model,
                           priority=int(priority), deadline=s_to_time(deadline_s),
                           inputs=[array_to_tensor(n, a) for n, a in inputs.items()])
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def outcome_to_result(o: Outcome, stamp: Time | None = None) -> InferenceResult:
    line_id, cell_id = split_cell_ns(o.cell_ns)
    msg = InferenceResult(request_id=o.request_id, line_id=line_id, cell_id=cell_id, task=o.task,
                          model_id=o.model_id, status=int(o.status), reason=o.reason,
                          outputs=[array_to_tensor(n, a) for n, a in o.outputs],
                          queue_ms=float(o.queue_ms), batch_wait_ms=float(o.batch_wait_ms),
                          compute_ms=float(o.compute_ms), batch_size=int(o.batch_size),
                          backend=o.backend, energy_wh=float(o.energy_wh), energy_source=o.energy_source)
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def result_outputs(msg: InferenceResult) -> dict:
    return {t.name: tensor_to_array(t) for t in msg.outputs}


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
                    concurrency_limit: int = 0) -> ExecutorStatus:
    msg = ExecutorStatus(executor_id=executor_id, backend=backend,
                         models=[model_info(e) for e in models],
                         mean_batch_size=float(snapshot.mean_batch_size),
                         max_batch_seen=int(snapshot.max_batch_seen), power_w=float(power_w),
                         power_measured=power_measured, concurrency_limit=concurrency_limit)
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
