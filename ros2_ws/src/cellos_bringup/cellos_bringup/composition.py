"""Node classes behind the executables, for composing several nodes in one process
(the no-launch runner: one process per namespace of the launch plan).
"""
from __future__ import annotations

import importlib

NODE_CLASSES = {
    'coordinator_node': 'cellos_line.nodes.coordinator_node:CoordinatorNode',
    'plant_node': 'cellos_line.nodes.plant_node:PlantNode',
    'timing_node': 'cellos_line.nodes.timing_node:TimingNode',
    'arbiter_node': 'cellos_inference.nodes.arbiter_node:ArbiterNode',
    'vision_node': 'cellos_vision.nodes.vision_node:VisionNode',
    'energy_gate_node': 'cellos_energy.nodes.energy_gate_node:EnergyGateNode',
    'executor_node': 'cellos_inference.nodes.executor_node:ExecutorNode',
    'energy_feed_node': 'cellos_energy.nodes.energy_feed_node:EnergyFeedNode',
    'audit_recorder_node': 'cellos_audit.nodes.recorder_node:AuditRecorderNode',
}


def node_class(executable: str):
    try:
        module, _, cls = NODE_CLASSES[executable].partition(':')
    except KeyError:
        raise ValueError(f"no node class for executable '{executable}' "
                         f"(one of {', '.join(NODE_CLASSES)})") from None
    return getattr(importlib.import_module(module), cls)


def executor_kind(executables) -> str:
    """The executor a process of these nodes spins with (each node's SPIN): events when every node
    asks for it, single-threaded when no callback of any of them blocks, else multi-threaded.
    """
    kinds = {node_class(e).SPIN for e in executables}
    if kinds == {'events'}:
        return 'events'
    return 'single' if kinds <= {'single', 'events'} else 'multi'
