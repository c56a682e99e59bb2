"""A line's review queue (namespace /<line>, node name review_queue): verdicts a person should look
at, kept with their frames in SQLite until an operator decides (cellos_vision.core.review_queue).

  review/submit   ReviewItem         in   from each cell's vision: UNDECIDED and low-confidence verdicts
  review/queue    ReviewQueue        out  latched: counts and the oldest pending items, on every change
  review/image    sensor_msgs/Image  out  latched: the frame of the oldest pending item, annotated
                                          (an RViz Image display shows it)
  review/list     ListReviews        srv  pending items (and the latest decided ones), without frames
  review/decide   DecideReview       srv  an operator's class for an item
  <cell>/vision/feedback  Inspection out  the decision as the part's truth, to the cell's vision
                                          (drift monitor, rollout figures)
  /audit/operator_action  OperatorAction out  every decision: who, which part, why

A decision is stored, then appended to the labelled set (``labelled_dir``, the folder
tools/train_inspection_model.py --reviewed trains on), then marked exported; decisions not yet
exported when the node stopped are exported when it starts again.
"""
from __future__ import annotations

import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import Image

from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.core.state_store import StoreError, store_path
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_common.nodes.diagnostics import OK, WARN, DiagReport
from cellos_common.nodes.operator_action import OperatorActions
from cellos_interfaces.msg import Inspection, ReviewItem, ReviewQueue as ReviewQueueMsg
from cellos_interfaces.srv import DecideReview, ListReviews
from cellos_vision.core import vision_preprocess as vp
from cellos_vision.core.inspection import ModelMeta
from cellos_vision.core.labelled_set import LabelledSet
from cellos_vision.core.review_queue import ReviewError, ReviewQueue, encode_frame
from cellos_vision.nodes.convert_review import feedback_msg, inspection_fields, item_msg, queue_msg
from cellos_vision.nodes.convert_vision import BadFrame, array_to_image, image_to_array

VERDICT_NAMES = ('PASS', 'FAIL', 'UNDECIDED')


class ReviewQueueNode(CellosNode):
    SPIN = 'single'
    PARAMS = [
        ParamSpec('store', 'log/state/review_queue_{ns}.sqlite3', "SQLite file of the queue; '{ns}' = the node "
                  "namespace; relative: from the working directory; empty: in memory (lost on a restart)",
                  read_only=True),
        ParamSpec('labelled_dir', 'log/review/labelled_{ns}', 'folder the decisions are appended to (labels.jsonl '
                  '+ frames/); the set tools/train_inspection_model.py --reviewed trains on', read_only=True),
        ParamSpec('capacity', 200, 'pending items kept; a new one beyond evicts the oldest (counted, logged)',
                  min=1, max=100000, read_only=True),
        ParamSpec('keep_decided', 2000, 'decided and evicted items remembered (without frames)', min=1,
                  max=1000000, read_only=True),
        ParamSpec('model_meta', 'inspection_cnn', "model metadata whose classes are the labels an operator may "
                  'give (a shipped model id or a JSON path)', read_only=True),
        ParamSpec('head_items', 20, 'pending items listed on review/queue', min=0, max=1000),
    ]

    def __init__(self, **kwargs):
        super().__init__('review_queue', **kwargs)

    def check_params(self, p) -> None:
        if not p.labelled_dir:
            raise ParameterError('labelled_dir: a folder is needed (the decisions go there)')

    def configure(self) -> None:
        p = self.params
        ns = self.get_namespace()
        self.line_id = ns.strip('/').split('/')[0] if ns.strip('/') else ''
        try:
            self.classes = ModelMeta.load(p.model_meta).classes
        except ValueError as e:
            raise ParameterError(str(e)) from None
        path = store_path(p.store, ns)
        try:
            self.queue = ReviewQueue(path, p.capacity, p.keep_decided)
        except StoreError as e:
            raise ParameterError(str(e)) from None
        self.labelled_dir = store_path(p.labelled_dir, ns)
        self.labelled = LabelledSet(self.labelled_dir)
        log = self.get_logger()
        log.info(f'review queue in {path or "memory (NOT durable)"}; decisions appended to {self.labelled_dir}; '
                 f'labels {list(self.classes)}')
        group = MutuallyExclusiveCallbackGroup()
        self.queue_pub = self.create_publisher(ReviewQueueMsg, 'review/queue', qos.latched_state())
        self.image_pub = self.create_publisher(Image, 'review/image', qos.latched_state())
        self._feedback_pubs = {}
        self._entities = [
            self.create_subscription(ReviewItem, 'review/submit', self._on_submit, qos.audit_event(),
                                     callback_group=group),
            self.create_service(ListReviews, 'review/list', self._on_list, callback_group=group),
            self.create_service(DecideReview, 'review/decide', self._on_decide, callback_group=group)]
        self.actions = OperatorActions(self)
        self.submitted = self.duplicates = self.refused = 0
        self._export_unexported()
        self.diagnostics.add('review', self._diag)
        self._publish_state()

    def cleanup(self) -> None:
        for e in self._entities:
            if hasattr(e, 'srv_type'):
                self.destroy_service(e)
            else:
                self.destroy_subscription(e)
        for pub in (self.queue_pub, self.image_pub, *self._feedback_pubs.values()):
            self.destroy_publisher(pub)
        self.actions.destroy()
        self.queue.close()

    # -- submissions --------------------------------------------------------------------------
    def _on_submit(self, msg: ReviewItem) -> None:
        i = msg.inspection
        try:
            image = image_to_array(msg.frame)
            item_id, evicted = self.queue.add(
                line_id=i.line_id, cell_id=i.cell_id, part_id=i.part_id, frame_sha256=i.frame_sha256, why=msg.why,
                inspection=inspection_fields(i), frame_png=encode_frame(image), model_content_id=msg.model_content_id,
                now=time.time())
        except (BadFrame, ReviewError, StoreError) as e:
            self.refused += 1
            self.get_logger().error(f'review submission {i.line_id}/{i.cell_id} part {i.part_id} refused: {e}')
            return
        if item_id is None:
            self.duplicates += 1
            return
        self.submitted += 1
        if evicted:
            self.get_logger().warning(f'review queue full ({self.params.capacity} pending): evicted unreviewed '
                                      f'item(s) {evicted} (their verdicts stand as published)')
        self._publish_state()

    # -- services ---------------------------------------------------------------------------
    def _on_list(self, req, resp):
        limit = int(req.max_items) if req.max_items else -1
        items = self.queue.pending(limit)
        if req.include_decided:
            items = self.queue.decided(limit) + items
        counts = self.queue.counts()
        resp.items = [item_msg(e) for e in items]
        resp.pending, resp.decided, resp.evicted = counts['pending'], counts['decided'], self.queue.evicted_total()
        return resp

    def _on_decide(self, req, resp):
        entry = self.queue.get(req.item_id)
        target = f'{entry.line_id}/{entry.cell_id}' if entry else f'{self.line_id} item {req.item_id}'
        part = entry.part_id if entry else 0
        try:
            if req.label not in self.classes:
                raise ReviewError(f'label {req.label!r} is not one of {list(self.classes)}')
            entry = self.queue.decide(req.item_id, req.label, req.operator_name, req.reason, time.time())
            self._export(entry)
        except (ReviewError, StoreError, OSError, ValueError) as e:
            resp.success, resp.message = False, str(e)
            self.get_logger().error(f'review/decide item {req.item_id}: {e}')
            self.actions.record('review/decide', 'review', target=target, reason=req.reason, request=req,
                                success=False, message=resp.message, operator_name=req.operator_name, part_id=part)
            return resp
        was = entry.inspection
        resp.success, resp.item = True, item_msg(entry)
        resp.message = (f'item {entry.item_id} ({target} part {entry.part_id}): {entry.label} '
                        f'by {entry.operator_name}; the cell said {VERDICT_NAMES[was.get("verdict", 2)]} '
                        f'{was.get("defect_class", "")} {was.get("confidence", 0.0):.2f}')
        self.get_logger().info(resp.message)
        self.actions.record('review/decide', 'review', target=target, reason=req.reason, request=req,
                            message=resp.message, operator_name=req.operator_name, part_id=entry.part_id)
        self._feedback(entry)
        self._publish_state()
        return resp

    # -- decisions out ------------------------------------------------------------------------
    def _export(self, entry) -> None:
        image = self.queue.frame(entry.item_id)
        if image is None:
            raise StoreError(f'item {entry.item_id}: its frame is missing from the store')
        self.labelled.append(image, entry.label, entry.labelled_meta())
        self.queue.mark_exported(entry.item_id)

    def _export_unexported(self) -> None:
        done = self.labelled.item_ids()
        for entry in self.queue.unexported():
            if entry.item_id not in done:   # a crash after the append, before it was marked: not twice
                self._export(entry)
            self.queue.mark_exported(entry.item_id)
            self.get_logger().info(f'item {entry.item_id}: decision exported after a restart')

    def _feedback(self, entry) -> None:
        topic = f'/{entry.line_id}/{entry.cell_id}/vision/feedback'
        pub = self._feedback_pubs.get(topic)
        if pub is None:
            pub = self._feedback_pubs[topic] = self.create_publisher(Inspection, topic, qos.status())
        pub.publish(feedback_msg(entry, self.get_clock().now().to_msg()))

    def _publish_state(self) -> None:
        stamp = self.get_clock().now().to_msg()
        head = self.queue.pending(max(1, self.params.head_items))
        self.queue_pub.publish(queue_msg(line_id=self.line_id, counts=self.queue.counts(),
                                         evicted_total=self.queue.evicted_total(), capacity=self.params.capacity,
                                         head=head[:self.params.head_items], labelled_set=self.labelled_dir,
                                         stamp=stamp))
        first = head[0] if head else None
        image = self.queue.frame(first.item_id) if first else None
        if first is None:
            canvas = vp.annotate(None, 'NO REVIEW', ['queue empty'])
        else:
            i = first.inspection
            canvas = vp.annotate(image, 'REVIEW', [
                f'item {first.item_id} {first.cell_id} part {first.part_id}',
                f'{VERDICT_NAMES[i.get("verdict", 2)]} {i.get("defect_class") or "-"} {i.get("confidence", 0.0):.2f}',
                first.why])
        self.image_pub.publish(array_to_image(canvas, stamp, f'/{self.line_id}'))

    def _diag(self) -> DiagReport:
        counts = self.queue.counts()
        values = {**counts, 'evicted_total': self.queue.evicted_total(), 'submitted': self.submitted,
                  'duplicates': self.duplicates, 'refused': self.refused, 'labelled_set': self.labelled_dir}
        if counts['pending'] >= self.params.capacity:
            return DiagReport(WARN, f'queue full: {counts["pending"]} pending, oldest being evicted', values)
        return DiagReport(OK, f'{counts["pending"]} pending, {counts["decided"]} decided', values)


def main(args=None):
    return main_for(ReviewQueueNode, args)
