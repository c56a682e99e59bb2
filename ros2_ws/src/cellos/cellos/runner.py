"""cellos_line: run a whole line without ros2 launch (no ROS install needed).

One process per cell plus one for the coordinator (``--mode process``, the default), or every
node composed in this process (``--mode composed``). The runner brings all nodes up through
their lifecycle services (configure all, then activate all), prints a live one-line progress
and, at the end (``--duration`` seconds, 0 = until Ctrl-C), a summary of the line.
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
from pathlib import Path

from cellos.composition import ROLE_EXECUTOR, node_class, role_nodes


def _share_config(name: str) -> str | None:
    here = Path(__file__).resolve()
    for base in (Path.cwd() / 'config', here.parents[3] / 'config' if len(here.parents) > 3 else None):
        if base is not None and (base / name).is_file():
            return str(base / name)
    try:
        from ament_index_python.packages import get_package_share_directory
        p = Path(get_package_share_directory('cellos')) / 'config' / name
        return str(p) if p.is_file() else None
    except Exception:
        return None


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog='cellos_line', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--cells', type=int, default=4, help='number of cells (default 4)')
    ap.add_argument('--duration', type=float, default=20.0, help='seconds to run; 0: until Ctrl-C')
    ap.add_argument('--mode', choices=('process', 'composed'), default='process')
    ap.add_argument('--line', default='line1', help='line namespace (default line1)')
    ap.add_argument('--period-ms', type=float, default=None, help='line period (default: from the params file)')
    ap.add_argument('--offset-mode', choices=('aligned', 'staggered', 'custom'), default=None)
    ap.add_argument('--params-file', default=None, help='ROS parameter YAML (default config/line.yaml)')
    ap.add_argument('--summary-json', default=None, help='also write the final summary here')
    ap.add_argument('--role', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--name', default=None, help=argparse.SUPPRESS)
    args, ros_args = ap.parse_known_args(argv)
    if args.cells < 1:
        ap.error(f'--cells must be >= 1, got {args.cells}')
    if args.duration < 0:
        ap.error(f'--duration must be >= 0, got {args.duration}')
    if args.period_ms is not None and not args.period_ms > 0:
        ap.error(f'--period-ms must be > 0, got {args.period_ms}')
    args.params_file = args.params_file or _share_config('line.yaml')
    return args, ros_args


def cell_ids(n: int) -> list[str]:
    return [f'cell_{i + 1:02d}' for i in range(n)]


def ros_args_for(args, namespace: str) -> list[str]:
    out = ['--ros-args', '-r', f'__ns:={namespace}']
    if args.params_file:
        out += ['--params-file', args.params_file]
    if args.period_ms is not None:
        out += ['-p', f'period_ms:={float(args.period_ms)}']
    if args.offset_mode is not None:
        out += ['-p', f'offset_mode:={args.offset_mode}']
    return out


def layout(args) -> list[tuple[str, str, str]]:
    """(process name, role, namespace) of every process of the line."""
    procs = [('coordinator', 'coordinator', f'/{args.line}')]
    procs += [(c, 'cell', f'/{args.line}/{c}') for c in cell_ids(args.cells)]
    return procs


def node_names(args) -> list[str]:
    return [f'{ns}/{name}' for _, role, ns in layout(args) for name, _ in role_nodes(role)]


# -- a process of one role -------------------------------------------------------------------
def run_role(role: str, ros_args: list[str]) -> int:
    import rclpy
    from cellos.nodes.base import spin_nodes
    # a waking cycle thread waits for the GIL up to the switch interval (5 ms by default)
    sys.setswitchinterval(0.0005)
    rclpy.init(args=['cellos_line', *ros_args],
               signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    try:
        nodes = [node_class(path)() for _, path in role_nodes(role)]
        spin_nodes(nodes, executor=ROLE_EXECUTOR.get(role, 'multi'))
    finally:
        rclpy.try_shutdown()
    return 0


# -- the line ---------------------------------------------------------------------------------
def main(argv=None) -> int:
    args, extra = parse_args(argv)
    if args.role:
        return run_role(args.role, extra)
    from cellos.line_monitor import LineMonitor  # rclpy only past this point
    import rclpy
    init_args = ['cellos_line', '--ros-args']
    if args.mode == 'composed' and args.params_file:
        init_args += ['--params-file', args.params_file]
    if '--ros-args' in extra:
        init_args += extra[extra.index('--ros-args') + 1:]
    rclpy.init(args=init_args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    cells = cell_ids(args.cells)
    print(f'cellos: line /{args.line}, {len(cells)} cells, mode {args.mode}, '
          f'params {args.params_file or "(defaults)"}, '
          f'{"until Ctrl-C" if not args.duration else f"{args.duration:g} s"}, ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}',
          flush=True)
    children: dict[str, subprocess.Popen] = {}
    composed = []
    monitor = LineMonitor(args.line, cells)
    try:
        if args.mode == 'process':
            log_dir = Path(os.environ.get('CELLOS_LOG_DIR', 'log/line'))
            log_dir.mkdir(parents=True, exist_ok=True)
            for name, role, ns in layout(args):
                cmd = [sys.executable, '-m', 'cellos.runner', '--role', role, *ros_args_for(args, ns)]
                log = open(log_dir / f'{name}.log', 'wb')
                children[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                  preexec_fn=_die_with_parent)
            print(f'cellos: {len(children)} processes started, logs in {log_dir}/', flush=True)
        else:
            composed = _compose(args)
        failed = monitor.bring_up(node_names(args), composed)
        if failed:
            print(f'cellos: could not bring up {", ".join(failed)}', file=sys.stderr)
            return 1
        print('cellos: all nodes active', flush=True)
        monitor.run(stop, args.duration, lambda: _dead(children))
    finally:
        stop.set()
        summary = monitor.summary()
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
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    return 0


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


def _compose(args):
    nodes = []
    for _, role, ns in layout(args):
        for _, path in role_nodes(role):
            overrides = []
            if args.period_ms is not None or args.offset_mode is not None:
                from rclpy.parameter import Parameter
                if args.period_ms is not None:
                    overrides.append(Parameter('period_ms', value=float(args.period_ms)))
                if args.offset_mode is not None and role == 'coordinator':
                    overrides.append(Parameter('offset_mode', value=args.offset_mode))
            nodes.append(node_class(path)(namespace=ns, parameter_overrides=overrides))
    return nodes


if __name__ == '__main__':
    sys.exit(main())
