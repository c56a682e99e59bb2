"""Which nodes make up each kind of process of a line (the no-launch runner's view).

A role lists (node name, class path); a process of that role composes those nodes. The
launch files in launch/ start the same node executables one by one.
"""
from __future__ import annotations

import importlib

ROLES = {
    'coordinator': [('coordinator', 'cellos.nodes.coordinator_node:CoordinatorNode')],
    'cell': [('timing', 'cellos.nodes.timing_node:TimingNode')],
}

# executor per role: light, non-blocking callbacks spin single-threaded (less CPU per message)
ROLE_EXECUTOR = {'coordinator': 'single', 'cell': 'single'}


def node_class(path: str):
    module, _, cls = path.partition(':')
    return getattr(importlib.import_module(module), cls)


def role_nodes(role: str):
    try:
        return ROLES[role]
    except KeyError:
        raise ValueError(f"unknown role '{role}' (one of {', '.join(ROLES)})") from None
