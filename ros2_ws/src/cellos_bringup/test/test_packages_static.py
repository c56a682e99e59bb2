"""Every cellos package declares exactly what its Python modules import, and keeps its core pure.

A package's ``exec_depend`` keys are compared with the imports of its product modules (not
its tests): each imported ROS package or third-party library needs its rosdep key, and each
declared key must be imported by something (a timing-only cell computer must not be made to
install OpenCV). Libraries without a rosdep key are named in IMPORT_KEYS with ``None`` and
documented in the package.xml.
"""
from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / 'package.xml').is_file())

# third-party import -> rosdep key (None: no key exists; the package.xml says how it is installed)
IMPORT_KEYS = {
    'numpy': 'python3-numpy',
    'scipy': 'python3-scipy',
    'yaml': 'python3-yaml',
    'cv2': 'python3-opencv',
    'onnxruntime': 'python3-onnxruntime-pip',
    'pynvml': 'python3-pynvml',
    'tensorrt': None,        # GPU hosts only: docker/Dockerfile.gpu
    'pycuda': None,
    'openleadr': None,       # OpenADR VEN (source openadr only): tools/requirements-distro.txt
    'mcap_ros2': 'mcap-ros2-support',   # a pip key; it installs mcap too
    'mcap': None,            # no key of its own: the dependency of mcap-ros2-support (with lz4, zstandard)
    'matplotlib': 'python3-matplotlib',
}
# ROS packages imported as Python modules (message packages are found by their .msg/.srv import)
ROS_MODULES = {'rclpy', 'launch', 'launch_ros', 'ament_index_python', 'diagnostic_updater', 'cv_bridge'}
# keys a package may declare without importing them (runtime needs of what it imports)
IMPLIED = {'builtin_interfaces'}


def product_modules(package: str) -> list[Path]:
    return sorted((SRC / package / package).rglob('*.py'))


def imported(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def needed_keys(package: str) -> set[str]:
    keys = set()
    for path in product_modules(package):
        for module in imported(path):
            top, _, rest = module.partition('.')
            if top == package or top in sys.stdlib_module_names or top == '__future__':
                continue
            if rest.split('.')[0] in ('msg', 'srv', 'action') or top in ROS_MODULES or top.startswith('cellos_'):
                keys.add(top)
            elif top in IMPORT_KEYS:
                if IMPORT_KEYS[top]:
                    keys.add(IMPORT_KEYS[top])
            else:
                raise AssertionError(f'{path.relative_to(SRC)} imports {module!r}: add its rosdep key to '
                                     'IMPORT_KEYS of this test')
    return keys


def declared(package: str, tags=('exec_depend', 'depend')) -> set[str]:
    root = ET.parse(SRC / package / 'package.xml').getroot()
    return {e.text.strip() for e in root if e.tag in tags}


@pytest.mark.parametrize('package', PACKAGES)
def test_package_xml_declares_exactly_what_the_package_imports(package):
    need, have = needed_keys(package), declared(package)
    assert not need - have, f'{package}/package.xml lacks exec_depend {sorted(need - have)}'
    unused = have - need - IMPLIED
    if package == 'cellos_bringup':
        unused -= set(PACKAGES)   # the bring-up starts every package's executables
    assert not unused, f'{package}/package.xml declares {sorted(unused)} that none of its modules import'


@pytest.mark.parametrize('package', PACKAGES)
def test_package_xml_names_the_package_and_its_folder(package):
    root = ET.parse(SRC / package / 'package.xml').getroot()
    assert root.findtext('name') == package
    assert (SRC / package / 'resource' / package).is_file()
    assert (SRC / package / package / '__init__.py').is_file()


@pytest.mark.parametrize('package', PACKAGES)
def test_core_is_pure(package):
    """core/: no rclpy, no message imports: plain Python that tests without ROS."""
    for path in sorted((SRC / package / package / 'core').rglob('*.py')):
        for module in imported(path):
            top, _, rest = module.partition('.')
            assert top not in ROS_MODULES and rest.split('.')[0] not in ('msg', 'srv', 'action'), \
                f'{path.relative_to(SRC)} imports {module}'


def test_a_timing_cell_computer_needs_no_vision_or_inference_library():
    assert not {'python3-opencv', 'python3-onnxruntime-pip', 'cv_bridge'} & (
        declared('cellos_line') | declared('cellos_common'))


def test_no_product_module_imports_test_support():
    for package in PACKAGES:
        for path in product_modules(package):
            assert not {m for m in imported(path) if m.split('.')[0] in ('testmodels', 'pytest', 'onnx')}, path
