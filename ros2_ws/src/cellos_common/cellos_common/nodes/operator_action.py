"""Operator actions for the audit: a node that serves an operator service (hold, release, period,
override, model load/unload, ...) publishes one OperatorAction per call from the service handler,
with what was asked, why, when, by which node, and the answer. The one place the message is made.
"""
from __future__ import annotations

import json

from cellos_common.nodes import qos
from cellos_interfaces.msg import OperatorAction

TOPIC = '/audit/operator_action'


def _fields(request) -> dict:
    out = {}
    for name in request.get_fields_and_field_types():
        value = getattr(request, name)
        if hasattr(value, 'get_fields_and_field_types'):
            value = _fields(value)
        elif isinstance(value, (bytes, bytearray)):
            value = value.hex()
        elif not isinstance(value, (str, int, float, bool, type(None))):
            value = list(value) if hasattr(value, '__iter__') else str(value)
        out[name] = value
    return out


class OperatorActions:
    """Create in ``configure`` (after the node's services), ``destroy`` in ``cleanup``."""

    def __init__(self, node):
        self.node = node
        self._pub = node.create_publisher(OperatorAction, TOPIC, qos.audit_event())

    def record(self, service: str, action: str, *, target: str = '', reason: str = '', request=None,
               success: bool = True, message: str = '', operator_name: str = '', part_id: int = 0) -> None:
        msg = OperatorAction(node=self.node.get_fully_qualified_name(),
                             service=self.node.resolve_service_name(service), action=action, target=target,
                             reason=reason, request=json.dumps(_fields(request)) if request is not None else '',
                             success=bool(success), message=message, operator_name=operator_name,
                             part_id=int(part_id))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(msg)

    def destroy(self) -> None:
        self.node.destroy_publisher(self._pub)
