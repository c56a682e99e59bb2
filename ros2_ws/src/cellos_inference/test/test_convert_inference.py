"""The one place inference messages are checked: every malformed request gets its status; deadlines
become the executor's monotonic time once, from the sender's own stamps; results and sizes checked.
"""
import math

import numpy as np
import pytest

from cellos_common.nodes.convert_time import s_to_time
from cellos_inference.core.inference_types import Priority, Status
from cellos_inference.nodes.convert_inference import (MAX_BUDGET_S, MAX_NAME, RequestTooLarge,
                                                      check_request_against, check_result, make_request,
                                                      request_head, request_to_job, result_outputs)
from cellos_interfaces.msg import InferenceResult, ModelInfo, Tensor

X = {'x': np.zeros((1, 4), np.float32)}


def req(stamp=1000.0, deadline=1000.5, **kw):
    m = make_request(request_id=7, line_id='line1', cell_id='cell_01', task='inspection', model='m', priority=0,
                     deadline_s=deadline, inputs=X, stamp=s_to_time(stamp))
    for k, v in kw.items():
        setattr(m, k, v)
    return m


def convert(m, wall=1000.0, arrival=50.0, max_bytes=1 << 20, cell='line1/cell_01'):
    return request_to_job(m, topic_cell_ns=cell, arrival=arrival, wall_now=wall, max_request_bytes=max_bytes)


def test_deadline_counts_from_the_senders_stamp_whatever_the_executor_wall_clock():
    for wall in (1000.0, 970.0, 1030.0, 0.0):           # the executor's wall clock stepped or off
        job, refusal = convert(req(), wall=wall)
        assert refusal is None and job.deadline == pytest.approx(50.5) and job.priority == Priority.CRITICAL
    job, _ = convert(req(stamp=0.0, deadline=1000.2), wall=1000.0)   # no stamp: the executor's wall clock
    assert job.deadline == pytest.approx(50.2)
    job, _ = convert(req(deadline=1e9))
    assert job.deadline == 50.0 + MAX_BUDGET_S
    job, refusal = convert(req(deadline=999.0))
    assert refusal.status == Status.DEADLINE and 'before the request was sent' in refusal.reason


@pytest.mark.parametrize('change, status, words', [
    (dict(priority=7), Status.REJECTED, 'unknown priority'),
    (dict(cell_id='cell_02'), Status.REJECTED, 'does not match'),
    (dict(task='t' * 65), Status.REJECTED, 'task is 65 characters'),
    (dict(model='m' * 129), Status.REJECTED, 'model is 129'),
    (dict(inputs=[Tensor(name='x', dtype='float32', shape=[1, 4], data=b'\0' * 16)] * 17), Status.REJECTED,
     '17 input tensors'),
    (dict(inputs=[Tensor(name='x', dtype='float32', shape=[1] * 9, data=b'\0' * 4)]), Status.BAD_SHAPE, 'rank 9'),
    (dict(inputs=[Tensor(name='x', dtype='f' * 17, shape=[1], data=b'\0' * 4)]), Status.REJECTED, 'dtype'),
    (dict(inputs=[Tensor(name='x', dtype='float32', shape=[4], data=b'\0' * 16, shm_size=16)]), Status.REJECTED,
     'both inline'),
    (dict(inputs=[Tensor(name='x', dtype='float32', shape=[4], shm_offset=64, shm_size=16)]), Status.REJECTED,
     'names no region'),
    (dict(shm_region=5), Status.REJECTED, 'no shared-memory requests'),
    (dict(inputs=[Tensor(name='x', dtype='uint8', shape=[2 << 20], data=bytes(2 << 20))]), Status.BAD_SIZE,
     'at most'),
])
def test_each_malformed_request_has_its_status(change, status, words):
    job, refusal = convert(req(**change))
    assert refusal.status == status and words in refusal.reason, refusal
    assert job.cell_ns == 'line1/cell_01' and job.request_id == 7   # answered where it came from


def test_sender_refuses_what_the_inline_path_cannot_carry():
    with pytest.raises(RequestTooLarge, match='at most'):
        make_request(request_id=1, line_id='l', cell_id='c', task='t', model='m', priority=1, deadline_s=5.0,
                     inputs={'x': np.zeros(3 << 20, np.float32)})


def test_arbiter_checks_against_the_model_spec():
    info = ModelInfo(name='m', input_names=['x'], input_dtypes=['float32'], input_shapes=['[-1,4]'], max_batch=2)
    assert check_request_against(req(), info) is None
    bad = [(dict(inputs=[Tensor(name='x', dtype='float64', shape=[1, 4], data=bytes(32))]), Status.BAD_DTYPE),
           (dict(inputs=[Tensor(name='x', dtype='float32', shape=[1, 5], data=bytes(20))]), Status.BAD_SHAPE),
           (dict(inputs=[Tensor(name='x', dtype='float32', shape=[3, 4], data=bytes(48))]), Status.BAD_SHAPE),
           (dict(inputs=[Tensor(name='x', dtype='float32', shape=[1, 4], data=bytes(12))]), Status.BAD_SIZE),
           (dict(inputs=[Tensor(name='y', dtype='float32', shape=[1, 4], data=bytes(16))] * 2), Status.BAD_SHAPE)]
    for change, status in bad:
        assert check_request_against(req(**change), info).status == status


def test_results_checked_before_use():
    assert check_result(InferenceResult(status=0)) == ''
    assert 'unknown status' in check_result(InferenceResult(status=14))
    assert 'names no region' in check_result(InferenceResult(outputs=[Tensor(name='y', shm_size=4)]))
    with pytest.raises(ValueError, match='unknown dtype'):
        result_outputs(InferenceResult(outputs=[Tensor(name='y', dtype='complex999', shape=[1], data=b'1234')]))
    with pytest.raises(ValueError, match='needs'):
        result_outputs(InferenceResult(outputs=[Tensor(name='y', dtype='float32', shape=[2], data=b'1234')]))
    assert math.isclose(float(result_outputs(InferenceResult(outputs=[Tensor(
        name='y', dtype='float32', shape=[1], data=np.float32(2.5).tobytes())]))['y'][0]), 2.5)


def test_request_head_reads_the_fields_before_the_tensors_and_nothing_else():
    from rclpy.serialization import serialize_message
    m = req(model='m' * 300, priority=2, request_id=2**64 - 1)
    m.header.frame_id = 'camera'
    m.inputs = [Tensor(name='x', dtype='float32', shape=[1, 1 << 20], data=bytes(4 << 20))]
    data = serialize_message(m)
    head = request_head(data)
    assert (head.request_id, head.line_id, head.cell_id, head.task, head.priority) == \
        (2**64 - 1, 'line1', 'cell_01', 'inspection', 2)
    assert (head.header.stamp, head.deadline) == (m.header.stamp, m.deadline) and not head.inputs
    assert head.model == 'm' * (MAX_NAME + 1)          # clipped: request_to_job refuses it by its length
    job, refusal = request_to_job(head, topic_cell_ns='line1/cell_01', arrival=0.0, wall_now=1000.0,
                                  max_request_bytes=0)
    assert job.request_id == 2**64 - 1 and refusal is not None
    for bad in (data[:40], b'', b'\x07\x01\x00\x00' + data[4:], data[:4] + b'\xff' * 64):
        assert request_head(bad) is None
