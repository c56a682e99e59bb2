"""Node classes behind the executables, for composing several nodes in one process
(the no-launch runner: one process per namespace of the launch plan)."""
from __future__ import annotations

import importlib

NODE_CLASSES = {
    'coordinator_node': 'cellos.nodes.coordinator_node:CoordinatorNode',
    'plant_node': 'cellos.nodes.plant_node:PlantNode',
    'timing_node': 'cellos.nodes.timing_node:TimingNode',
    'arbiter_node': 'cellos.nodes.arbiter_node:ArbiterNode',
    'vision_node': 'cellos.nodes.vision_node:VisionNode',
    'energy_gate_node': 'cellos.nodes.energy_gate_node:EnergyGateNode',
    'executor_node': 'cellos.nodes.executor_node:ExecutorNode',
    'energy_feed_node': 'cellos.nodes.energy_feed_node:EnergyFeedNode',
}

# nodes whose callbacks never block spin single-threaded (less CPU per message); a process
# with any other node spins multi-threaded
LIGHT = {'coordinator_node', 'plant_node', 'timing_node', 'energy_gate_node', 'energy_feed_node',
         'arbiter_node', 'vision_node'}


def node_class(executable: str):
    try:
        module, _, cls = NODE_CLASSES[executable].partition(':')
    except KeyError:
        raise ValueError(f"no node class for executable '{executable}' "
                         f"(one of {', '.join(NODE_CLASSES)})") from None
    return getattr(importlib.import_module(module), cls)


def executor_kind(executables) -> str:
    return 'single' if set(executables) <= LIGHT else 'multi'
