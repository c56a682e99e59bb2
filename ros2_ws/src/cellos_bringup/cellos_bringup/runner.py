"""line_runner: run a whole line without ros2 launch (no ROS install needed).

Starts the nodes of the launch plan (cellos_bringup.launch_plan: the same nodes, names, namespaces,
parameter files and defaults as `ros2 launch cellos_bringup line.launch.py`), each in a process of
its own group (--mode process, the default: per cell two processes, its timing node and its
vision, arbiter and energy gate; then one each for the coordinator, the plant simulation, the
executor and the site energy feed) or every node in this process (--mode composed). It brings
all nodes up through their lifecycle services (configure all, then activate all), prints a live
line every 2 s and, at the end (--duration seconds, 0 = until Ctrl-C), a summary. Logs of every
process go to log/line/ (CELLOS_LOG_DIR); the previous run's are kept as log/line.<date>.
A process that dies while the line runs is started again (cellos_bringup.supervisor: backoff,
at most 5 restarts a minute) and its nodes brought up again; the summary counts the restarts.

The line's audit recorder (part 'audit', on unless --without audit) records the run to
log/audit/<line>_<UTC time>/ (CELLOS_AUDIT_DIR moves it); the summary says where, and --report
draws the recording's figures there at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
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
from cellos_bringup.supervisor import ProcessSupervisor

PARTS = ('executor', 'vision', 'energy', 'flow', 'audit')
KEEP_RUNS = 5   # earlier runs' log folders kept beside log/line/

# What the live line and the summary show: printed by --help, the same text in README.md
LEGEND = """\
what the live line and the summary show:
  cell states (the summary's state column, RViz colours):
    starting      reporting, no schedule from the coordinator yet
    locking       following the schedule, phase error not (yet) within lock_threshold_ms
    locked        phase error within lock_threshold_ms (line.yaml): in step with the line
    held          held by the coordinator (backpressure, drift revalidation or the operator):
                  cycles on, starts no new part; counted as locked while in step
    free-running  no corrections from the coordinator: keeps its last period and phase
    lost          its cycle reports stopped: none for lost_after_periods (line.yaml) periods
    never seen    no report of it reached the coordinator
  cells 3/4 locked, 1 held (, 3/4 known): cells in step now; cells held now, locked or not;
                cells the coordinator has heard from (shown while not all)
  lost N times, M now: times cells were declared lost since the start (the summary's lost
                column, per cell), and cells lost at this moment
  phase p50/p99: inter-cell phase error, a cell's cycle start minus the line's median start
                of the same cycle (schedule offset removed); jit99: p99 of the cells' own
                timer lateness, the floor the phase error is compared with (ratio)
  lock s: first report to first lock; relock: locked again after being lost or restarted;
                cycles: cycle reports the monitor received
  clock offset: the cell's clock minus the coordinator's, as estimated (NTP exchange);
                sched offset: the cell's place on the line schedule (--offset-mode)
  parts in / out: parts into the first cell / out of the last; in buffers: waiting at a cell;
                in work: at a station; dropped: lost at a full buffer (in = out + in buffers
                + in work + dropped); overflows: parts that reached a full buffer; holds:
                times a cell went from running to held (released: back)
  inspection: camera frames vision inspected (every inspect_every-th cycle of each cell,
                vision.yaml), PASS / FAIL / UNDECIDED; the synthetic camera's frames are not
                the plant simulation's parts, so the two counts differ
  real-time: how the cycle threads and the coordinator's receive path are scheduled
                (SCHED_FIFO <priority>, or normal priority where the OS REFUSED it: docs/realtime.md);
                missed cycles: ticks cells skipped after a stall (never run late in a burst)
  audit: the line's recording (log/audit/<line>_<UTC time>/, README "Audit"): its files and
                size, and the commands that query it (cellos_lineage) and draw it
                (cellos_audit_report)
  process restarts: processes that died while the line ran and were started again, their
                nodes brought up again (backoff; more than 5 in a minute ends the run, code 1)
"""


def config_dir() -> str:
    """config/ of the checkout when run from it, else the installed share/cellos_bringup/config."""
    here = Path(__file__).resolve()
    for base in (Path.cwd() / 'config', *(p / 'config' for p in here.parents)):
        if (base / plan.PARAMS_FILES['line']).is_file():
            return str(base)
    return plan.share_config_dir()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog='line_runner', description=__doc__, epilog=LEGEND,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--cells', type=int, default=4, help='number of cells (default 4)')
    ap.add_argument('--duration', type=float, default=20.0, help='seconds to run (default 20); 0: until Ctrl-C')
    ap.add_argument('--mode', choices=('process', 'composed'), default='process',
                    help='process (default): a process per cell part, as on a real line; '
                         'composed: every node in this one process (its log: log/line/composed.log)')
    ap.add_argument('--line', default='line1', help='line namespace (default line1)')
    ap.add_argument('--period-ms', type=float, default=None,
                    help='line cycle period [ms] (default: period_ms of line.yaml in --config-dir)')
    ap.add_argument('--offset-mode', choices=('aligned', 'staggered', 'custom'), default=None,
                    help="the cells' places on the line schedule: aligned (all at once), staggered "
                         '(spread over the period, evens out GPU load), custom (cell_offsets in line.yaml); '
                         'default: offset_mode of line.yaml')
    ap.add_argument('--without', default='', help=f'comma separated parts to leave out: {", ".join(PARTS)}')
    ap.add_argument('--timing-only', action='store_true', help='coordinator and timing nodes only')
    ap.add_argument('--config-dir', default=None, help='parameter YAML folder (default: config/ of the checkout, '
                                                       'else the installed share/cellos_bringup/config)')
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
    if args.period_ms is None:   # one rate for every node, from line.yaml, as the launch file does
        args.period_ms = plan.line_period_ms(str(Path(args.config_dir) / plan.PARAMS_FILES['line']))
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
# vision's image work for the interpreter lock; so do the coordinator and the plant simulation
# (a PLC bridge in its place), each named by its node (log/line/line1.plant.log), and the audit
# recorder, whose file writes must delay no one
OWN_PROCESS = {'timing_node', 'coordinator_node', 'plant_node', 'audit_recorder_node'}


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


def fresh_log_dir(log_dir: Path, keep: int = KEEP_RUNS) -> Path | None:
    """Make ``log_dir`` empty for this run: a previous run's folder is renamed to
    <name>.<date of its last change>, and only the newest ``keep`` of those stay. Returns the
    name the previous run's logs now have, if there were any.
    """
    kept = None
    if log_dir.is_dir() and any(log_dir.iterdir()):
        stamp = time.strftime('%Y%m%d-%H%M%S', time.localtime(log_dir.stat().st_mtime))
        kept, n = log_dir.with_name(f'{log_dir.name}.{stamp}'), 1
        while kept.exists():
            kept, n = log_dir.with_name(f'{log_dir.name}.{stamp}-{n}'), n + 1
        log_dir.rename(kept)
    earlier = sorted(p for p in log_dir.parent.glob(f'{log_dir.name}.*') if p.is_dir())
    for old in earlier[:max(0, len(earlier) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    return kept


def log_to_file(path: Path) -> None:
    """Composed mode: the nodes' log output (stderr, where rcutils writes) goes to ``path``;
    the runner's own messages keep the terminal.
    """
    sys.stderr.flush()
    terminal = os.dup(2)
    with open(path, 'ab') as f:
        os.dup2(f.fileno(), 2)
    sys.stderr = os.fdopen(terminal, 'w', buffering=1)


# each process's output is its log in log/line/: no second copy in ROS_LOG_DIR
NO_LOG_FILE = '--disable-external-lib-logs'


# -- a process of the line --------------------------------------------------------------------
def run_process(executables: list[str], ros_args: list[str]) -> int:
    import rclpy
    from cellos_common.nodes.base import spin_nodes
    # a waking cycle thread waits for the GIL up to the switch interval (5 ms by default)
    sys.setswitchinterval(0.0005)
    rclpy.init(args=['line_runner', *ros_args], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
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
    from cellos_common.nodes.base import set_on_signals
    import rclpy
    specs = line_plan(args)
    groups = processes(specs)
    log_dir = Path(os.environ.get('CELLOS_LOG_DIR', 'log/line'))
    kept = fresh_log_dir(log_dir)
    init_args = ['line_runner', '--ros-args', NO_LOG_FILE]
    if args.mode == 'composed':
        init_args += [a for f in params_files(specs, args.config_dir) for a in ('--params-file', f)]
        log_to_file(log_dir / 'composed.log')
    rclpy.init(args=init_args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()
    set_on_signals(stop)

    cells = plan.cell_ids(args.cells)
    print(f'cellos: line /{args.line}, {len(cells)} cells with '
          f'{", ".join(["timing", *sorted(args.parts)])} at {args.period_ms:g} ms; {len(specs)} nodes in '
          f'{f"{len(groups)} processes" if args.mode == "process" else "this process"}; config {args.config_dir}; '
          f'{"until Ctrl-C" if not args.duration else f"{args.duration:g} s"}; '
          f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}', flush=True)
    print(f'cellos: logs in {log_dir}/' + (f' (the previous run\'s: {kept}/)' if kept else ''), flush=True)
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
               '--ros-args', NO_LOG_FILE, '-r', f'__ns:={group[0].namespace}',
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
            print(f'cellos: {len(children)} processes started', flush=True)
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
    print(f'process restarts: {supervisor.total_restarts}'
          + (f" ({', '.join(f'{n} x{k}' for n, k in supervisor.restarts.items())})" if supervisor.restarts else ''),
          flush=True)
    if 'audit' in args.parts:
        summary['audit'] = audit_summary(Path(args.audit_dir) / args.audit_name, args.report)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    return 1 if problem else 0


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


def _compose(specs, config: str):
    from rclpy.parameter import Parameter
    return [node_class(s.executable)(
                namespace=s.namespace,
                parameter_overrides=[Parameter(k, value=v)
                                     for k, v in plan.resolve_overrides(s.overrides, config).items()])
            for s in specs]


if __name__ == '__main__':
    sys.exit(main())
