"""The two Python dependency paths stay consistent: with the PyPI wheels every library comes from
tools/requirements-py.txt; with a ROS 2 distro rosdep installs the ones with a key (package.xml)
and tools/setup.sh only tools/requirements-distro.txt, the ones without. A pip that installs a
library rosdep already provided replaces the distro's build of it (numpy 2 over the apt numpy
breaks cv_bridge and the generated messages), and a library in neither list is missing.
"""
from __future__ import annotations

import ast
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from test_packages_static import IMPORT_KEYS

SRC = Path(__file__).resolve().parents[2]
REPO = SRC.parents[1]
TOOLS = REPO / 'tools'
PACKAGE_XMLS = [REPO / 'msg' / 'package.xml', *sorted(SRC.glob('*/package.xml'))]

# every requirement of tools/requirements-py.txt and its rosdep key (None: rosdistro has none)
PIP_KEYS = {
    'numpy': 'python3-numpy',
    'scipy': 'python3-scipy',
    'pyyaml': 'python3-yaml',
    'onnxruntime': 'python3-onnxruntime-pip',
    'onnx': None,
    'opencv-python-headless': 'python3-opencv',
    'mcap': None,
    'mcap-ros2-support': 'mcap-ros2-support',
    'openleadr': None,
    'pytest': 'python3-pytest',
    'hypothesis': 'python3-hypothesis',
    'nvidia-ml-py': 'python3-pynvml',
    'flake8': 'python3-flake8',      # through ament_flake8
    'pydocstyle': 'pydocstyle',      # through ament_pep257
    'matplotlib': 'python3-matplotlib',
    'cryptography': 'python3-cryptography',   # tests only: the OpenADR TLS certificates
    'lxml': 'python3-lxml',                   # tests only: the SROS2 policies against sros2's schema
}
# libraries without a key that come with a pip-type key's package (pip installs them with it)
WITH = {'mcap': 'mcap-ros2-support'}
# the Python module each requirement provides, where it differs from its name
MODULE = {'pyyaml': 'yaml', 'opencv-python-headless': 'cv2', 'nvidia-ml-py': 'pynvml', 'mcap-ros2-support': 'mcap_ros2'}
# keys rosdep installs with pip; the set-up script puts them into the venv where rosdep skipped them
PIP_TYPE_KEYS = {'python3-onnxruntime-pip': 'onnxruntime', 'mcap-ros2-support': 'mcap-ros2-support'}
# keys a package gets through the ROS package it declares
THROUGH = {'python3-flake8': 'ament_flake8', 'pydocstyle': 'ament_pep257'}


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, _, version = line.partition('==')
            assert version, f'{path.name}: {line!r} is not pinned'
            out[name.strip().lower()] = version.strip()
    return out


def declared_keys() -> set[str]:
    return {e.text.strip() for p in PACKAGE_XMLS for e in ET.parse(p).getroot()
            if e.tag.endswith('depend') and e.text}


def imported_modules(paths) -> set[str]:
    out = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add(node.module.split('.')[0])
            elif isinstance(node, ast.Import):
                out.update(a.name.split('.')[0] for a in node.names)
    return out


def python_files():
    return [*SRC.glob('*/**/*.py'), *(REPO / 'tests').rglob('*.py'), *TOOLS.glob('*.py')]


def test_every_requirement_has_a_rosdep_decision():
    assert set(pins(TOOLS / 'requirements-py.txt')) == set(PIP_KEYS)


def test_the_distro_list_is_exactly_the_used_libraries_without_a_key():
    used = imported_modules(python_files())
    distro = pins(TOOLS / 'requirements-distro.txt')
    want = {n for n, key in PIP_KEYS.items() if key is None and MODULE.get(n, n) in used and n not in WITH}
    assert set(distro) == want
    assert want == {'onnx', 'openleadr'}
    every = pins(TOOLS / 'requirements-py.txt')
    assert {n: every[n] for n in distro} == distro, 'pins differ from tools/requirements-py.txt'


def test_keys_agree_with_the_import_table_of_the_package_check():
    for name, key in PIP_KEYS.items():
        module = MODULE.get(name, name)
        if module in IMPORT_KEYS:
            assert IMPORT_KEYS[module] == key, f'{name}: {key} here, {IMPORT_KEYS[module]} in test_packages_static'


def test_every_declared_third_party_key_has_its_wheel_requirement():
    """What rosdep installs on a distro, the wheel set-up must install too."""
    keys = declared_keys()
    third_party = {k for k in keys if k.startswith('python3-') or k in PIP_KEYS.values()}
    assert third_party <= set(PIP_KEYS.values()), sorted(third_party - set(PIP_KEYS.values()))
    for key, through in THROUGH.items():
        assert through in keys, f'{key} comes through {through}, which no package.xml declares'


def test_libraries_without_a_key_are_named_in_the_package_xml_of_their_importer():
    no_key = {MODULE.get(n, n) for n, key in PIP_KEYS.items() if key is None}
    no_key |= {m for m, key in IMPORT_KEYS.items() if key is None}
    for xml in sorted(SRC.glob('*/package.xml')):
        used = imported_modules(xml.parent.rglob('*.py')) & no_key
        comments = ' '.join(re.findall(r'<!--(.*?)-->', xml.read_text(), re.S))
        for module in sorted(used):
            assert re.search(rf'\b{module}\b', comments), f'{xml.parent.name}/package.xml does not say how ' \
                f'{module} (no rosdep key) is installed'


def test_setup_script_distro_mode():
    text = (TOOLS / 'setup.sh').read_text()
    assert subprocess.run(['bash', '-n', str(TOOLS / 'setup.sh')]).returncode == 0
    distro = text[text.index('mode="distro-'):]
    assert '--system-site-packages' in text
    assert 'requirements-distro.txt' in distro and '-c "$venv/constraints.txt"' in distro
    assert 'import numpy' in distro, "the venv's pip must hold numpy at the distro's version"
    # the pip-type keys it installs where rosdep skipped them: exactly those declared
    fallback = set(re.findall(r"\^([\w-]+)==", distro))
    assert fallback == {PIP_TYPE_KEYS[k] for k in declared_keys() if k in PIP_TYPE_KEYS} == {
        'onnxruntime', 'mcap-ros2-support'}


def test_docker_images_use_rosdep_and_the_distro_list():
    for name in ('Dockerfile', 'Dockerfile.gpu'):
        text = (REPO / 'docker' / name).read_text()
        assert 'PIP_BREAK_SYSTEM_PACKAGES=1 rosdep install' in text, name
        assert 'install_python_deps.sh tools/requirements-distro.txt' in text, name
        assert 'COPY tools/requirements-distro.txt' in text, name


def test_readme_gives_the_distro_path():
    readme = (REPO / 'README.md').read_text()
    section = readme[readme.index('## With a ROS 2 distro'):]
    section = section[:section.index('\n## ', 4)]
    for step in ('sudo apt install python3-rosdep python3-colcon-common-extensions python3-venv',
                 'sudo rosdep init', 'rosdep update',
                 'rosdep install --from-paths msg ros2_ws/src -y -i --skip-keys python3-onnxruntime-pip '
                 '--skip-keys mcap-ros2-support',
                 'make build', 'PIP_BREAK_SYSTEM_PACKAGES=1 rosdep install'):
        assert step in section, step
    for name in [*pins(TOOLS / 'requirements-distro.txt'), 'onnxruntime', 'TensorRT', 'pycuda', 'mcap']:
        assert name in section, name
    bare = [line for line in section.splitlines() if line.lstrip().startswith('pip install')]
    assert not bare, f'a bare pip install in the distro section: {bare}'


# -- README: which package on which machine ---------------------------------------------------------
LIBRARY_KEYS = {'OpenCV': 'python3-opencv', 'ONNX Runtime': 'python3-onnxruntime-pip', 'cv_bridge': 'cv_bridge',
                'pynvml': 'python3-pynvml', 'numpy': 'python3-numpy', 'SciPy': 'python3-scipy',
                'diagnostic_updater': 'diagnostic_updater',
                'visualization_msgs': 'visualization_msgs'}


def closure(packages) -> set[str]:
    """Every key a package needs at run time, through the cellos packages it depends on."""
    deps = {x.parent.name: {e.text.strip() for e in ET.parse(x).getroot() if e.tag in ('exec_depend', 'depend')}
            for x in SRC.glob('*/package.xml')}
    deps['cellos_interfaces'] = set()
    out, todo = set(), list(packages)
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo += [d for d in deps.get(p, ()) if d not in out]
    return out


def machine_rows() -> list[dict]:
    readme = (REPO / 'README.md').read_text()
    section = readme[readme.index('### Which package goes on which machine'):]
    section = section[:section.index('\n#', 4)]
    rows = [line for line in section.splitlines() if line.startswith('| ') and '---' not in line]
    head = [c.strip() for c in rows[0].strip('|').split('|')]
    return [dict(zip(head, (c.strip() for c in r.strip('|').split('|')))) for r in rows[1:]]


def test_the_machine_table_says_what_each_package_pulls_in():
    rows = machine_rows()
    assert {r['machine'] for r in rows} >= {'cell computer, timing only', 'line server', 'GPU host', 'site server'}
    for r in rows:
        packages = re.findall(r'`(cellos_\w+)`', r['packages'])
        assert packages and all((SRC / p / 'package.xml').is_file() for p in packages), r
        needed = closure(packages)
        for pulled in re.findall(r'`(cellos_\w+)`', r['pulls in']):
            assert pulled in needed, f"{r['machine']}: {pulled} is not pulled in by {packages}"
        for name, key in LIBRARY_KEYS.items():
            if re.search(rf'\b{re.escape(name)}\b', r['pulls in']):
                assert key in needed, f"{r['machine']}: {name} is not pulled in"
            if re.search(rf'\b{re.escape(name)}\b', r['no']):
                assert key not in needed, f"{r['machine']}: says no {name}, but {packages} pull it in"
        for exe in re.findall(r'(\w+_node|lifecycle_manager)', r['nodes']):
            assert any(exe in entry_points(p) for p in needed if (SRC / p).is_dir()), f'{exe} not in {packages}'
    assert closure(['cellos_bringup']) >= {p.parent.name for p in SRC.glob('*/package.xml')}


def entry_points(package: str) -> str:
    return (SRC / package / 'setup.py').read_text()
