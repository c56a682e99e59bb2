"""cellos_line: run a whole line without ros2 launch (no ROS install needed).

Starts the nodes of the launch plan (cellos_bringup.launch_plan: the same nodes, names, namespaces and
parameter files as launch/line.launch.py), one process per namespace (``--mode process``, the
default: a process per cell, one for the coordinator and the plant, one for the executor, one
for the site energy feed) or every node in this process (``--mode composed``). It brings all
nodes up through their lifecycle services (configure all, then activate all), prints a live
one-line progress and, at the end (``--duration`` seconds, 0 = until Ctrl-C), a summary.
A process that dies while the line runs is started again (cellos_bringup.supervisor: backoff,
at most 5 restarts a minute) and its nodes brought up again; the summary counts the restarts.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import yaml

from cellos_bringup import launch_plan as plan
from cellos_bringup.composition import executor_kind, node_class
from cellos_bringup.supervisor import ProcessSupervisor

PARTS = ('executor', 'vision', 'energy', 'flow')


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
    return args, ros_args


def line_plan(args) -> list[plan.NodeSpec]:
    return plan.line_nodes(args.line, args.cells, period_ms=args.period_ms, offset_mode=args.offset_mode,
                           with_executor='executor' in args.parts or 'vision' in args.parts,
                           with_vision='vision' in args.parts, with_energy='energy' in args.parts,
                           with_flow='flow' in args.parts)


def node_names(args) -> list[str]:
    return [s.fqn for s in line_plan(args)]


# a cell's timing node gets a process of its own: its cycle thread must not wait behind
# vision's image work for the interpreter lock
OWN_PROCESS = {'timing_node', 'coordinator_node'}


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
        code = spin_nodes(nodes, executor=executor_kind(executables))
    finally:
        rclpy.try_shutdown()
    return code


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
    children: dict[str, subprocess.Popen] = {}   # the supervisor's current process of each name
    composed = []
    monitor = LineMonitor(args.line, cells, executor_ns=plan.EXECUTOR_NS if 'executor' in args.parts else None,
                          composed=args.mode == 'composed')

    def spawn(name):
        group = groups[name]
        overrides = log_dir / f'{name}.params.yaml'
        overrides.write_text(yaml.safe_dump(overrides_yaml(group, args.config_dir)))
        cmd = [sys.executable, '-m', 'cellos_bringup.runner',
               '--process', ','.join(s.executable for s in group),
               '--ros-args', '-r', f'__ns:={group[0].namespace}',
               *[a for f in params_files(group, args.config_dir) for a in ('--params-file', f)],
               '--params-file', str(overrides)]
        with open(log_dir / f'{name}.log', 'ab' if name in children else 'wb') as log:   # a restart appends
            children[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                              preexec_fn=_die_with_parent)
        return children[name]

    supervisor = ProcessSupervisor(
        spawn, lambda name: monitor.bring_up([s.fqn for s in groups[name]], []),
        log=lambda text: print(f'\ncellos: {text}', file=sys.stderr, flush=True))
    problem = None
    try:
        if args.mode == 'process':
            for name in groups:
                supervisor.start(name)
            print(f'cellos: {len(children)} processes started, logs in {log_dir}/', flush=True)
        else:
            composed = _compose(specs, args.config_dir)
        failed = monitor.bring_up([s.fqn for s in specs], composed)
        if failed:
            print(f'cellos: could not bring up {", ".join(failed)} (see {log_dir}/)', file=sys.stderr)
            return 1
        print('cellos: all nodes active', flush=True)
        problem = monitor.run(stop, args.duration, supervisor.check)
    finally:
        stop.set()
        summary = monitor.summary()
        summary['process_restarts'] = dict(supervisor.restarts)
        for name, p in children.items():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for name, p in children.items():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f'cellos: {name} did not stop on SIGINT, killing it', file=sys.stderr)
                p.kill()
                p.wait()
        monitor.close()
        rclpy.try_shutdown()
    print(monitor.format_summary(summary), flush=True)
    print(f'process restarts: {supervisor.total_restarts}'
          + (f" ({', '.join(f'{n} x{k}' for n, k in supervisor.restarts.items())})" if supervisor.restarts else ''),
          flush=True)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    return 1 if problem else 0


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the runner dies, even by SIGKILL."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _compose(specs, config: str):
    from rclpy.parameter import Parameter
    return [node_class(s.executable)(
                namespace=s.namespace,
                parameter_overrides=[Parameter(k, value=v)
                                     for k, v in plan.resolve_overrides(s.overrides, config).items()])
            for s in specs]


if __name__ == '__main__':
    sys.exit(main())
