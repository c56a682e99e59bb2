"""The checks on every message vision takes in (convert_vision), on real message objects."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cellos_inference.nodes.convert_inference import array_to_tensor
from cellos_interfaces.msg import CellCycle, InferenceResult, Inspection, Tensor
from cellos_vision.nodes.convert_vision import (BadFrame, BadMessage, check_image, feedback_from_msg,
                                                result_from_msg, tick_from_msg)
from sensor_msgs.msg import Image

CLASSES = ('ok', 'scratch', 'spot')


def ok_result(**fields):
    return InferenceResult(request_id=7, line_id='line1', cell_id='cell_01', task='inspection',
                           status=InferenceResult.STATUS_OK, **fields)


def test_a_good_result_decodes():
    r = result_from_msg(ok_result(outputs=[array_to_tensor('logits', np.array([[0, 9, 0]], np.float32))]),
                        'line1', 'cell_01')
    assert r.problem == '' and r.request_id == 7 and r.outputs['logits'].tolist() == [[0.0, 9.0, 0.0]]


@pytest.mark.parametrize('tensor,needle', [
    (Tensor(name='logits', dtype='complex128', shape=[1, 3], data=bytes(48)), "dtype 'complex128'"),
    (Tensor(name='logits', dtype='bogus', shape=[1, 3], data=bytes(12)), "dtype 'bogus'"),
    (Tensor(name='logits', dtype='float32', shape=[1, 3], data=bytes(13)), '13 bytes'),
    (Tensor(name='logits', dtype='float32', shape=[4294967295, 4294967295], data=bytes(4)), 'values >'),
])
def test_an_ok_result_with_an_unusable_output_names_the_problem(tensor, needle):
    r = result_from_msg(ok_result(outputs=[tensor]), 'line1', 'cell_01')
    assert r.request_id == 7 and needle in r.problem and r.problem.startswith("bad output 'logits'")


def test_unknown_status_and_other_cells():
    r = result_from_msg(InferenceResult(request_id=3, status=14), 'line1', 'cell_01')
    assert r.status is None and r.problem == 'unknown result status 14'
    r = result_from_msg(InferenceResult(request_id=3, status=InferenceResult.STATUS_GATED, reason='x' * 10000),
                        'line1', 'cell_01')
    assert r.problem == '' and len(r.reason) == 256
    with pytest.raises(BadMessage, match='result for line1/cell_02, this is line1/cell_01'):
        result_from_msg(InferenceResult(line_id='line1', cell_id='cell_02'), 'line1', 'cell_01')
    with pytest.raises(BadMessage, match='task is 100000 characters'):
        result_from_msg(InferenceResult(task='t' * 100000), 'line1', 'cell_01')


DTYPES = st.sampled_from(['float32', 'float16', 'float64', 'uint8', 'int64', '', 'bool', 'object', 'V3', 'S9',
                          'float32\x00', 'x' * 300])


@settings(max_examples=300, deadline=None)
@given(status=st.integers(0, 255), dtype=DTYPES, shape=st.lists(st.integers(0, 2**32 - 1), max_size=9),
       data=st.binary(max_size=64), n=st.integers(0, 12), name=st.text(max_size=300))
def test_any_result_is_a_view_or_a_bad_message(status, dtype, shape, data, n, name):
    msg = ok_result(outputs=[Tensor(name=name, dtype=dtype, shape=shape, data=data)] * n)
    msg.status = status
    try:
        r = result_from_msg(msg, 'line1', 'cell_01')
    except BadMessage:
        return
    assert r.request_id == 7
    if r.problem == '' and r.status is not None and r.status == 0:
        assert all(a.dtype == np.float64 for a in r.outputs.values())


def test_feedback_and_ticks():
    fb = Inspection(line_id='line1', cell_id='cell_01', part_id=42, has_ground_truth=True, ground_truth_class='spot')
    assert feedback_from_msg(fb, 'line1', 'cell_01', CLASSES) == (42, 'spot')
    fb.ground_truth_class = 'hole_in_the_universe'
    with pytest.raises(BadMessage, match='not one of the model'):
        feedback_from_msg(fb, 'line1', 'cell_01', CLASSES)
    with pytest.raises(BadMessage, match='feedback for line2/cell_01'):
        feedback_from_msg(Inspection(line_id='line2', cell_id='cell_01'), 'line1', 'cell_01', CLASSES)
    assert tick_from_msg(CellCycle(cycle_index=2**64 - 1, state=CellCycle.STATE_HELD), 'line1', 'cell_01') == \
        (2**64 - 1, True)
    with pytest.raises(BadMessage, match='state 200'):
        tick_from_msg(CellCycle(state=200), 'line1', 'cell_01')


def test_a_frame_header_that_lies_about_its_data_is_a_bad_frame():
    with pytest.raises(BadFrame, match='larger than 16384 per side'):
        check_image(Image(height=2**32 - 1, width=1, encoding='mono8', step=1, data=bytes(10)))
    with pytest.raises(BadFrame, match='data has 10 bytes'):
        check_image(Image(height=100, width=1, encoding='mono8', step=1, data=bytes(10)))
    with pytest.raises(BadFrame) as e:
        check_image(Image(height=1, width=1, encoding='e' * 100000, step=1, data=bytes(1)))
    assert len(str(e.value)) < 200
