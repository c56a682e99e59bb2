"""rclpy's Node keeps its entities in attributes such as ``_timers`` and ``_services``: a
subclass that assigns one of those names silently hides its own lifecycle services or
timers from the executor. Every cellos node must use names of its own.
"""
import ast
from pathlib import Path

import pytest

NODE_BASES = {'Node', 'LifecycleNode', 'CellosNode'}
NODES = sorted(p for p in Path(__file__).resolve().parents[2].glob('cellos_*/cellos_*/nodes/*.py')
               if p.name != '__init__.py')


@pytest.fixture(scope='module')
def node_attributes():
    rclpy = pytest.importorskip('rclpy', reason='rclpy is needed to list the Node attributes')
    from rclpy.lifecycle import LifecycleNode
    rclpy.init(args=['attribute_probe', '--ros-args', '--disable-external-lib-logs'])   # no log file
    try:
        node = LifecycleNode('attribute_probe')
        names = set(vars(node)) | set(dir(LifecycleNode))
        node.destroy_node()
    finally:
        rclpy.shutdown()
    return names


@pytest.mark.parametrize('path', NODES, ids=lambda p: f'{p.parents[1].name}/{p.name}')
def test_no_node_assigns_an_attribute_rclpy_uses(path, node_attributes):
    node_classes = [c for c in ast.walk(ast.parse(path.read_text())) if isinstance(c, ast.ClassDef)
                    and any(getattr(b, 'id', getattr(b, 'attr', '')) in NODE_BASES for b in c.bases)]
    assigned = {t.attr for c in node_classes for n in ast.walk(c)
                if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == 'self'}
    clash = sorted(assigned & node_attributes)
    assert not clash, f'{path.name} assigns {clash}, which rclpy.Node uses itself'
