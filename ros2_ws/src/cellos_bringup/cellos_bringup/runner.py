"""cellos_line: run a whole line without ros2 launch (no ROS install needed).

Starts the nodes of the launch plan (cellos_bringup.launch_plan: the same nodes, names, namespaces and
parameter files as launch/line.launch.py), one process per namespace (``--mode process``, the
default: a process per cell, one for the coordinator and the plant, one for the executor, one
for the site energy feed) or every node in this process (``--mode composed``). It brings all
nodes up through their lifecycle services (configure all, then activate all), prints a live
one-line progress and, at the end (``--duration`` seconds, 0 = until Ctrl-C), a summary.

The line's audit recorder (part 'audit', on unless ``--without audit``) records the run to
log/audit/<line>_<UTC time>/ (``CELLOS_AUDIT_DIR`` moves it); the summary says where, and
``--report`` draws the recording's figures there at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import yaml

from cellos_bringup import launch_plan as plan
from cellos_bringup.composition import executor_kind, node_class

PARTS = ('executor', 'vision', 'energy', 'flow', 'audit')


def config_dir() -> str:
    """config/ of the checkout when run from it, else the installed share/cellos_bringup/config."""
    here = Path(__file__).resolve()
    for base in (Path.cwd() / 'config', *(p / 'config' for p in here.parents)):
        if (base / plan.PARAMS_FILES['line']).is_file():
            return str(base)
    return plan.share_config_dir()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog='cellos_line', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--cells', type=int, default=4, help='number of cells (default 4)')
    ap.add_argument('--duration', type=float, default=20.0, help='seconds to run; 0: until Ctrl-C')
    ap.add_argument('--mode', choices=('process', 'composed'), default='process')
    ap.add_argument('--line', default='line1', help='line namespace (default line1)')
    ap.add_argument('--period-ms', type=float, default=None, help='line period (default: from line.yaml)')
    ap.add_argument('--offset-mode', choices=('aligned', 'staggered', 'custom'), default=None)
    ap.add_argument('--without', default='', help=f'comma separated parts to leave out: {", ".join(PARTS)}')
    ap.add_argument('--timing-only', action='store_true', help='coordinator and timing nodes only')
    ap.add_argument('--config-dir', default=None, help='parameter YAML folder (default: config/)')
    ap.add_argument('--summary-json', default=None, help='also write the final summary here')
    ap.add_argument('--report', action='store_true', help="draw the audit recording's figures at the end "
                    '(cellos_audit_report, into <recording>/report/)')
    ap.add_argument('--process', default=None, help=argparse.SUPPRESS)  # internal: one process's nodes
    args, ros_args = ap.parse_known_args(argv)
    if args.process:
        return args, ros_args
    if args.cells < 1:
        ap.error(f'--cells must be >= 1, got {args.cells}')
    if args.duration < 0:
        ap.error(f'--duration must be >= 0, got {args.duration}')
    if args.period_ms is not None and not args.period_ms > 0:
        ap.error(f'--period-ms must be > 0, got {args.period_ms}')
    without = {p.strip() for p in args.without.split(',') if p.strip()}
    if without - set(PARTS):
        ap.error(f"--without: unknown part(s) {', '.join(sorted(without - set(PARTS)))} (one of {', '.join(PARTS)})")
    args.parts = set() if args.timing_only else set(PARTS) - without
    args.config_dir = args.config_dir or config_dir()
    args.audit_dir = str(Path(os.environ.get('CELLOS_AUDIT_DIR', 'log/audit')).resolve())
    args.audit_name = f'{args.line.strip("/")}_{time.strftime("%Y%m%d-%H%M%S", time.gmtime())}'
    return args, ros_args


def line_plan(args) -> list[plan.NodeSpec]:
    return plan.line_nodes(args.line, args.cells, period_ms=args.period_ms, offset_mode=args.offset_mode,
                           with_executor='executor' in args.parts or 'vision' in args.parts,
                           with_vision='vision' in args.parts, with_energy='energy' in args.parts,
                           with_flow='flow' in args.parts, with_audit='audit' in args.parts,
                           audit_dir=args.audit_dir, audit_name=args.audit_name)


def node_names(args) -> list[str]:
    return [s.fqn for s in line_plan(args)]


# a cell's timing node gets a process of its own: its cycle thread must not wait behind
# vision's image work for the interpreter lock; the audit recorder's file writes must not
# delay the plant simulation of its namespace
OWN_PROCESS = {'timing_node', 'coordinator_node', 'audit_recorder_node'}


def processes(specs) -> 'OrderedDict[str, list[plan.NodeSpec]]':
    """Process name -> its nodes: one process per namespace (timing nodes apart), in plan order."""
    out: OrderedDict[str, list] = OrderedDict()
    for s in specs:
        name = s.namespace.strip('/').replace('/', '.') or 'root'
        if s.executable in OWN_PROCESS and len([x for x in specs if x.namespace == s.namespace]) > 1:
            name += '.' + s.name
        out.setdefault(name, []).append(s)
    return out


def params_files(specs, config: str) -> list[str]:
    keys = list(OrderedDict.fromkeys(k for s in specs for k in s.params))
    return [str(Path(config) / plan.PARAMS_FILES[k]) for k in keys]


def overrides_yaml(specs, config: str) -> dict:
    return {s.fqn: {'ros__parameters': plan.resolve_overrides(s.overrides, config)} for s in specs if s.overrides}


# -- a process of the line --------------------------------------------------------------------
def run_process(executables: list[str], ros_args: list[str]) -> int:
    import rclpy
    from cellos_common.nodes.base import spin_nodes
    # a waking cycle thread waits for the GIL up to the switch interval (5 ms by default)
    sys.setswitchinterval(0.0005)
    rclpy.init(args=['cellos_line', *ros_args], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    try:
        nodes = [node_class(e)() for e in executables]
        spin_nodes(nodes, executor=executor_kind(executables))
    finally:
        rclpy.try_shutdown()
    return 0


# -- the line ---------------------------------------------------------------------------------
def main(argv=None) -> int:
    args, extra = parse_args(argv)
    if args.process:
        return run_process(args.process.split(','), extra)
    from cellos_bringup.line_monitor import LineMonitor  # rclpy only past this point
    import rclpy
    specs = line_plan(args)
    groups = processes(specs)
    log_dir = Path(os.environ.get('CELLOS_LOG_DIR', 'log/line'))
    log_dir.mkdir(parents=True, exist_ok=True)
    init_args = ['cellos_line', '--ros-args']
    if args.mode == 'composed':
        init_args += [a for f in params_files(specs, args.config_dir) for a in ('--params-file', f)]
    rclpy.init(args=init_args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    cells = plan.cell_ids(args.cells)
    print(f'cellos: line /{args.line}, {len(cells)} cells with '
          f'{", ".join(["timing", *sorted(args.parts)])}; {len(specs)} nodes in '
          f'{len(groups) if args.mode == "process" else 1} process(es); config {args.config_dir}; '
          f'{"until Ctrl-C" if not args.duration else f"{args.duration:g} s"}; '
          f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}', flush=True)
    children: dict[str, subprocess.Popen] = {}
    composed = []
    monitor = LineMonitor(args.line, cells, executor_ns=plan.EXECUTOR_NS if 'executor' in args.parts else None,
                          composed=args.mode == 'composed')
    try:
        if args.mode == 'process':
            for name, group in groups.items():
                ns = group[0].namespace
                overrides = log_dir / f'{name}.params.yaml'
                overrides.write_text(yaml.safe_dump(overrides_yaml(group, args.config_dir)))
                cmd = [sys.executable, '-m', 'cellos_bringup.runner',
                       '--process', ','.join(s.executable for s in group),
                       '--ros-args', '-r', f'__ns:={ns}',
                       *[a for f in params_files(group, args.config_dir) for a in ('--params-file', f)],
                       '--params-file', str(overrides)]
                log = open(log_dir / f'{name}.log', 'wb')
                children[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                  preexec_fn=_die_with_parent)
            print(f'cellos: {len(children)} processes started, logs in {log_dir}/', flush=True)
        else:
            composed = _compose(specs, args.config_dir)
        failed = monitor.bring_up([s.fqn for s in specs], composed)
        if failed:
            print(f'cellos: could not bring up {", ".join(failed)} (see {log_dir}/)', file=sys.stderr)
            return 1
        print('cellos: all nodes active', flush=True)
        monitor.run(stop, args.duration, lambda: _dead(children))
    finally:
        stop.set()
        summary = monitor.summary()
        # the audit recorder stops last: it hears the decisions the others publish as they stop
        recorders = [n for n in children if any(s.executable == 'audit_recorder_node' for s in groups[n])]
        for group in ([n for n in children if n not in recorders], recorders):
            for name in group:
                if children[name].poll() is None:
                    children[name].send_signal(signal.SIGINT)
            for name in group:
                try:
                    children[name].wait(timeout=10)
                except subprocess.TimeoutExpired:
                    print(f'cellos: {name} did not stop on SIGINT, killing it', file=sys.stderr)
                    children[name].kill()
                    children[name].wait()
        monitor.close()
        rclpy.try_shutdown()
    print(monitor.format_summary(summary), flush=True)
    if 'audit' in args.parts:
        summary['audit'] = audit_summary(Path(args.audit_dir) / args.audit_name, args.report)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    return 0


def audit_summary(folder: Path, report: bool) -> dict:
    """Where the recording is, what it holds, and (``report``) its figures."""
    files = sorted(folder.glob('*.mcap'))
    size = sum(f.stat().st_size for f in files)
    out = {'recording': str(folder), 'files': len(files), 'mb': round(size / 1e6, 3)}
    if not files:
        print(f'audit: no recording in {folder}/ (see the audit_recorder log)', flush=True)
        return out
    print(f'audit: recording {folder}/ ({len(files)} file(s), {size / 1e6:.2f} MB); '
          f'query: {_tool("cellos_lineage")} model {folder}; figures: {_tool("cellos_audit_report")} {folder}',
          flush=True)
    if report:
        from cellos_audit.report_cli import draw_report
        pngs = draw_report([folder], folder / 'report')
        out['report'] = [str(p) for p in pngs]
        print(f'audit: {len(pngs)} figure(s) in {folder}/report/', flush=True)
    return out


def _tool(name: str) -> str:
    """How to start a cellos_audit command here: ros2 run where the ros2 CLI is, else its installed path."""
    import shutil
    if shutil.which('ros2'):
        return f'ros2 run cellos_audit {name}'
    try:
        from ament_index_python.packages import get_package_prefix
        return f'{get_package_prefix("cellos_audit")}/lib/cellos_audit/{name}'
    except (ImportError, LookupError):
        return f'python -m cellos_audit.{name.replace("cellos_audit_", "").replace("cellos_", "")}_cli'


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the runner dies, even by SIGKILL."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _dead(children) -> str | None:
    for name, p in children.items():
        if p.poll() is not None:
            return f'{name} exited with code {p.returncode}'
    return None


def _compose(specs, config: str):
    from rclpy.parameter import Parameter
    return [node_class(s.executable)(
                namespace=s.namespace,
                parameter_overrides=[Parameter(k, value=v)
                                     for k, v in plan.resolve_overrides(s.overrides, config).items()])
            for s in specs]


if __name__ == '__main__':
    sys.exit(main())
