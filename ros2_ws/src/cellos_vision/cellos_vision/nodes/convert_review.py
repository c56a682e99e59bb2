"""The one place converting review messages <-> core types (ReviewItem, ReviewQueue)."""
from __future__ import annotations

from cellos_common.nodes.convert_time import s_to_time, time_to_s
from cellos_interfaces.msg import Inspection, ReviewItem, ReviewQueue
from cellos_vision.core.review_queue import DECIDED, EVICTED, PENDING, ReviewEntry

STATES = {PENDING: ReviewItem.STATE_PENDING, DECIDED: ReviewItem.STATE_DECIDED, EVICTED: ReviewItem.STATE_EVICTED}
_FIELDS = ('line_id', 'cell_id', 'part_id', 'verdict', 'defect_class', 'confidence', 'model_id', 'reason',
           'capture_ms', 'preprocess_ms', 'inference_ms', 'has_ground_truth', 'ground_truth_class',
           'frame_sha256', 'request_id')


def inspection_fields(msg: Inspection) -> dict:
    d = {f: getattr(msg, f) for f in _FIELDS}
    d['confidence'] = float(d['confidence'])
    d['stamp_s'] = time_to_s(msg.header.stamp)
    d['frame_id'] = msg.header.frame_id
    return d


def inspection_from_fields(d: dict) -> Inspection:
    msg = Inspection(**{f: d[f] for f in _FIELDS if f in d})
    msg.header.stamp = s_to_time(float(d.get('stamp_s', 0.0)))
    msg.header.frame_id = d.get('frame_id', '')
    return msg


def item_msg(e: ReviewEntry) -> ReviewItem:
    """A queued item without its frame (list answers, the queue's state)."""
    return ReviewItem(item_id=e.item_id, state=STATES[e.state], why=e.why,
                      inspection=inspection_from_fields(e.inspection), model_content_id=e.model_content_id,
                      queued_s=e.queued_s, label=e.label, operator_name=e.operator_name,
                      decision_reason=e.decision_reason, decided_s=e.decided_s)


def queue_msg(*, line_id: str, counts: dict, evicted_total: int, capacity: int, head, labelled_set: str,
              stamp) -> ReviewQueue:
    msg = ReviewQueue(line_id=line_id, pending=counts[PENDING], decided=counts[DECIDED], evicted=evicted_total,
                      capacity=capacity, head=[item_msg(e) for e in head], labelled_set=labelled_set)
    msg.header.stamp = stamp
    return msg


def feedback_msg(e: ReviewEntry, stamp) -> Inspection:
    """An operator's decision as a finding on the part (the cell's vision/feedback: its truth)."""
    msg = Inspection(line_id=e.line_id, cell_id=e.cell_id, part_id=e.part_id, defect_class=e.label,
                     has_ground_truth=True, ground_truth_class=e.label,
                     frame_sha256=e.frame_sha256, model_id=e.inspection.get('model_id', ''),
                     reason=f'review by {e.operator_name}')
    msg.header.stamp = stamp
    return msg
