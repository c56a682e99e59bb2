"""README.md says what is true: the counts, defaults, commands, files and words it names are
checked here against the launch plan, the runner, the launch file, the Makefile and config/.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from cellos_bringup import launch_plan as plan
from cellos_bringup import runner

PKG = Path(__file__).resolve().parents[1]
REPO = PKG.parents[2]
README = (REPO / 'README.md').read_text()
MAKEFILE = (REPO / 'Makefile').read_text()
LINE_YAML = REPO / 'config' / 'line.yaml'


def make_default(name: str) -> str:
    m = re.search(rf'^{name} \?=[ \t]*(.*)$', MAKEFILE, re.M)
    assert m, f'Makefile has no default for {name}'
    return m.group(1).strip()


def launch_defaults() -> dict[str, str]:
    """DeclareLaunchArgument name -> default_value of launch/line.launch.py (read with ast)."""
    out = {}
    for node in ast.walk(ast.parse((REPO / 'launch' / 'line.launch.py').read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'DeclareLaunchArgument':
            default = next((k.value for k in node.keywords if k.arg == 'default_value'), None)
            if isinstance(default, ast.Constant):
                out[node.args[0].value] = default.value
    return out


def make_run_args():
    """The runner's arguments as `make run` passes them with its defaults."""
    args = ['--cells', make_default('CELLS'), '--duration', make_default('DURATION')]
    if make_default('PERIOD_MS'):
        args += ['--period-ms', make_default('PERIOD_MS')]
    return runner.parse_args(args)[0]


def test_make_run_defaults_are_the_runners():
    defaults = runner.parse_args([])[0]
    run = make_run_args()
    assert (run.cells, run.duration, run.period_ms) == (defaults.cells, defaults.duration, defaults.period_ms)
    assert make_default('PERIOD_MS') == '', 'make run must take the period from config/line.yaml'
    assert f"`CELLS={defaults.cells}`, `DURATION={defaults.duration:g}`" in README
    assert f"`ROS_DOMAIN_ID={make_default('ROS_DOMAIN_ID')}`" in README


def test_the_period_is_line_yamls_and_the_readme_says_which():
    period = plan.line_period_ms(str(LINE_YAML))
    assert make_run_args().period_ms == period
    doc = yaml.safe_load(LINE_YAML.read_text())
    assert doc['/**/timing']['ros__parameters']['period_ms'] == period, 'line.yaml: timing and coordinator differ'
    stated = re.findall(r'`period_ms: ([0-9.]+)`, ([0-9.]+) Hz', README)
    assert stated, 'README does not state the line period'
    for ms, hz in stated:
        assert float(ms) == period and float(hz) == 1e3 / period, (ms, hz, period)


def test_ros2_launch_without_arguments_is_the_line_of_make_run():
    d = launch_defaults()
    run = make_run_args()
    assert int(d['cells']) == run.cells and d['line'] == run.line
    assert d['period_ms'] == '' and d['offset_mode'] == '', 'the launch must take both from params_file'
    launched = plan.line_nodes(d['line'], int(d['cells']), period_ms=plan.line_period_ms(str(LINE_YAML)),
                               with_executor=plan.parse_bool(d['with_executor'], 'with_executor'),
                               with_vision=plan.parse_bool(d['with_vision'], 'with_vision'),
                               with_energy=plan.parse_bool(d['with_energy'], 'with_energy'),
                               with_flow=plan.parse_bool(d['with_flow'], 'with_flow'),
                               with_audit=plan.parse_bool(d['with_audit'], 'with_audit'),
                               audit_dir=run.audit_dir, audit_name=run.audit_name)   # the runner names its bag
    assert launched == runner.line_plan(run)


def test_process_and_node_counts():
    run = make_run_args()
    specs = runner.line_plan(run)
    procs = runner.processes(specs)
    m = re.search(r'(\d+) nodes in (\d+) processes', README)
    assert m, 'README does not give the node and process counts'
    assert (int(m.group(1)), int(m.group(2))) == (len(specs), len(procs))
    assert f'a {run.cells}-cell line for {run.duration:g} s' in README
    # the log files the README names are the processes' names
    for name in re.findall(r'`((?:line1|gpu0|site)[\w.]*)\.log`', README):
        assert name in procs, f'README names log/line/{name}.log; the processes are {list(procs)}'


def test_the_legend_is_the_runners():
    m = re.search(r'## Reading the output\n.*?```\n(.*?)```', README, re.S)
    assert m, 'README has no "Reading the output" block'
    assert m.group(1) == runner.LEGEND
    assert 'epilog=LEGEND' in (PKG / 'cellos_bringup' / 'runner.py').read_text()   # --help prints it


def test_commands_and_files_the_readme_names_exist():
    targets = set(re.findall(r'^([\w-]+):', MAKEFILE, re.M))
    for t in re.findall(r'`make ([\w-]+)', README):
        assert t in targets, f'make {t}: no such target'
    for f in re.findall(r'ros2 launch cellos_bringup ([\w.]+)', README):
        assert (REPO / 'launch' / f).is_file(), f
    for mod in re.findall(r'python -m (cellos_[\w.]+)', README):
        assert (REPO / 'ros2_ws' / 'src' / mod.split('.')[0] / (mod.replace('.', '/') + '.py')).is_file(), mod
    for path in re.findall(r'`((?:tools|config|docs|tests|launch|docker|msg|ros2_ws)/[\w./*<>-]*)`', README):
        if '<' not in path:
            assert list(REPO.glob(path.rstrip('/'))), f'README names {path}, which does not exist'
    flags = set(re.findall(r"add_argument\('(--[\w-]+)'", (PKG / 'cellos_bringup' / 'runner.py').read_text()))
    flags.add('--help')
    for line in README.splitlines():
        if 'RUN_ARGS' in line or 'cellos_bringup.runner' in line or 'line_runner' in line:
            for flag in re.findall(r'(--[a-z][\w-]*)', line):
                assert flag in flags, f'README: {flag} is not an option of line_runner'


def test_test_domains_are_the_ones_documented():
    conftest = (REPO / 'tests' / 'conftest.py').read_text()
    lo, hi = map(int, re.search(r'TEST_DOMAINS = range\((\d+), (\d+)\)', conftest).groups())
    assert 0 <= lo and hi - 1 <= 101, 'ROS 2 on Linux: domain ids 0-101'
    assert f'in {lo}-{hi - 1}' in README and 'CELLOS_TEST_DOMAIN' in README
    assert int(make_default('ROS_DOMAIN_ID')) not in range(lo, hi), 'make run must not share a test domain'


def test_log_locations():
    assert "os.environ.get('CELLOS_LOG_DIR', 'log/line')" in (PKG / 'cellos_bringup' / 'runner.py').read_text()
    assert f'the last {runner.KEEP_RUNS} of those are kept' in README
    assert 'ROS_LOG_DIR:-$_cellos_root/log/ros' in (REPO / 'tools' / 'env.sh').read_text()
    assert '`log/ros/`' in README
