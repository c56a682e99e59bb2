"""Shared inference executor of one GPU host (e.g. namespace /gpu0, node name executor).

Its clients are cells, each known by its namespace ``cell_ns`` (e.g. ``line1/cell_01``):
  /<cell_ns>/inference/request   InferenceRequest  in, from that cell's arbiter only
  /<cell_ns>/inference/result    InferenceResult   out, to that cell only
  ~/status                       ExecutorStatus    out (also the arbiters' heartbeat)
  ~/registry                     ModelRegistryChange out, every load / unload / rollout step (audit)
  ~/aliases                      ModelAliases      out, latched: each task's production and candidate
  /audit/operator_action         OperatorAction    out, every load_model / unload_model / rollout call
  /diagnostics
Services: ~/load_model, ~/unload_model, ~/list_models, ~/register_shm; ~/set_candidate, ~/promote,
~/rollback (model rollout by role: cellos_inference.nodes.executor_rollout). A request naming a
role (<task>@serving, @production, @candidate) is resolved to a content id when it arrives.

Who is served (core.cell_access): the cells listed in ``cells``; cells matching an
``allowed_cells`` pattern once their request topic appears; every cell only with
``discover_cells`` (off in the shipped configuration). A request from any other namespace is
answered REJECTED with the reason and counted. A request whose line_id/cell_id is not the
namespace it came on is answered REJECTED on that namespace's result topic, never on the
claimed cell's.

Transport: inline (the tensors in the message, any host) or shared memory (a cell on this
host registers a region with ~/register_shm and sends only offsets; core.shm_transport).
"""
from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from rclpy.clock import Clock, ClockType
from rclpy.serialization import deserialize_message

from cellos_common.core.params import ParameterError, ParamSpec
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_common.nodes.convert_time import s_to_time
from cellos_common.nodes.diagnostics import OK, WARN, DiagReport
from cellos_common.nodes.intake import Intake
from cellos_common.nodes.operator_action import OperatorActions
from cellos_energy.core.site_budget import line_part
from cellos_energy.nodes.convert_energy import signal_from_msg
from cellos_inference.core.backends.base import BackendError
from cellos_inference.core.backends.selection import (CHOICES, BackendUnavailable, choose_backend,
                                                      make_backend, probe_gpu)
from cellos_inference.core.cell_access import REFUSE, SERVE, CellAccess
from cellos_inference.core.executor_engine import ExecutorEngine
from cellos_inference.core.executor_scheduler import POLICIES, SchedulerConfig
from cellos_inference.core.inference_types import Outcome, Status
from cellos_inference.core.model_registry import (ModelRegistry, ModelSpec, RegistryError, read_model_list,
                                                  resolve_model_path)
from cellos_inference.core.power_model import EnergyModel, PowerMeter, compute_limit, inference_energy_j
from cellos_inference.core.shm_transport import RegionError, RegionTable, supported as shm_supported
from cellos_inference.nodes.convert_inference import (ENVELOPE_BYTES, executor_status, model_info,
                                                      outcome_to_result, registry_change, request_head,
                                                      request_to_job)
from cellos_inference.nodes import executor_rollout
from cellos_interfaces.msg import EnergySignal as EnergySignalMsg
from cellos_interfaces.msg import ExecutorStatus, InferenceRequest, InferenceResult, ModelRegistryChange
from cellos_interfaces.srv import ListModels, LoadModel, RegisterShm, UnloadModel

REQUEST_SUFFIX = '/inference/request'
LOG_EVERY_S = 5.0     # per-message log lines: at most one per this many seconds per kind
# timers on the monotonic clock: a wall-clock step neither stalls nor bursts them
STEADY = Clock(clock_type=ClockType.STEADY_TIME)


def _wall_ns() -> int:
    """The one wall-clock read of the executor: arrival stamps (and a stamp-less request's budget)."""
    return time.time_ns()


def request_topic(cell_ns: str) -> str:
    return f'/{cell_ns}{REQUEST_SUFFIX}'


def result_topic(cell_ns: str) -> str:
    return f'/{cell_ns}/inference/result'


@dataclass
class _Reply:
    """How a job's answer goes back: the wall-clock arrival stamp, and its region (shared memory)."""

    received_ns: int
    region: object = None
    out_offset: int = 0
    out_size: int = 0


def _set_realtime(priority: int, tid: int = 0) -> str:
    """SCHED_FIFO for a thread (0: the calling one); '' or why not (it then runs at normal priority)."""
    if priority <= 0:
        return ''
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        return ''
    except (OSError, AttributeError) as e:
        return f'SCHED_FIFO {priority} refused ({e}): needs CAP_SYS_NICE or an rtprio limit'


def _realtime_process(priority: int) -> str:
    """SCHED_FIFO for the Python threads of this process (callbacks) and its DDS threads; threads they
    make later inherit it. Not ONNX Runtime's own threads (a busy real-time compute thread is frozen
    by the kernel once it used its real-time budget). '' or why not.
    """
    tids = {t.native_id for t in threading.enumerate() if t.native_id}
    for tid in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                dds = f.read().startswith('dds.')
        except OSError:
            continue
        if dds or int(tid) in tids:
            why = _set_realtime(priority, int(tid))
            if why:
                return why
    return ''


def rt_budget() -> float | None:
    """Share of each second a real-time thread may run before the kernel throttles it, less a margin
    (None: no throttling configured).
    """
    try:
        with open('/proc/sys/kernel/sched_rt_runtime_us') as f:
            runtime = int(f.read())
        with open('/proc/sys/kernel/sched_rt_period_us') as f:
            period = int(f.read())
    except (OSError, ValueError):
        return 0.85
    return None if runtime < 0 else max(0.1, runtime / period - 0.1)


class _NormalPriority:
    """The calling thread at normal priority for a while: ONNX Runtime threads made meanwhile (a
    model loaded at runtime from a real-time callback thread) must not inherit SCHED_FIFO.
    """

    def __enter__(self):
        self.policy, self.param = os.sched_getscheduler(0), os.sched_getparam(0)
        if self.policy != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    def __exit__(self, *exc):
        if self.policy != os.SCHED_OTHER:
            try:
                os.sched_setscheduler(0, self.policy, self.param)
            except OSError:
                pass


class ExecutorNode(CellosNode):

    PARAMS = [
        ParamSpec('executor_id', '', 'name in status and diagnostics; empty: the node namespace'),
        ParamSpec('backend', 'auto', 'inference backend; auto takes TensorRT where usable',
                  choices=CHOICES, read_only=True),
        ParamSpec('cpu_threads', 1, 'ONNX Runtime intra-op threads', min=1, max=64, read_only=True),
        ParamSpec('trt_plan_cache', '', 'TensorRT plan cache folder (e.g. ~/.cache/cellos/trt_plans); '
                  'empty: plans are built at each start and kept nowhere', read_only=True),
        ParamSpec('trt_fp16', 'auto', 'TensorRT FP16: auto (where the GPU has fast FP16), on, off',
                  choices=('auto', 'on', 'off'), read_only=True),
        ParamSpec('trt_streams', 2, 'CUDA streams (one execution context each) per model',
                  min=1, max=8, read_only=True),
        ParamSpec('workers', 1, 'inference worker threads (batches in flight at once)',
                  min=1, max=8, read_only=True),
        ParamSpec('thread_priority', 0, 'SCHED_FIFO priority (1-99) of the executor\'s threads (inference, '
                  'delivery, callbacks, DDS), so other processes on the host can neither slow the compute critical '
                  'work was admitted with nor hold up a request or a result (its Python threads share one lock: '
                  'one left at normal priority would hold up the rest). The inference worker then keeps its '
                  'compute under the kernel\'s real-time budget (resting, critical work excepted) rather than '
                  'be frozen by it. 0: normal priority. Refused by the OS: normal priority, said once',
                  min=0, max=99, read_only=True),
        ParamSpec('gil_switch_ms', 0.5, 'Python GIL switch interval of this process: after each '
                  'model run the inference worker waits up to this long for the GIL held by ROS '
                  'callbacks (Python default 5 ms)', min=0.05, max=50.0, unit='ms', read_only=True),
        ParamSpec('model_list', '', 'YAML model list loaded at start (empty: none)', read_only=True),
        ParamSpec('model_dir', '', 'folder for relative model paths (empty: the list\'s folder)',
                  read_only=True),
        ParamSpec('max_models', 32, 'models loaded at once; a load beyond is refused', min=1, max=1024,
                  read_only=True),
        ParamSpec('default_max_batch', 8, 'max batch of a model loaded without one', min=1, max=256),
        ParamSpec('max_request_mb', 8.0, 'tensor bytes one request may carry (inline or shared memory); '
                  'more is answered BAD_SIZE', min=0.001, max=4096.0, unit='MB'),
        ParamSpec('max_queue_delay_ms', 2.0, 'how long a partial batch may wait for more requests',
                  min=0.0, max=1000.0, unit='ms'),
        ParamSpec('max_queue_per_cell', 32, 'queued requests per cell before QUEUE_FULL', min=1,
                  max=100000),
        ParamSpec('fair_window_ms', 20.0, 'how far a cell may run ahead of the least-served busy '
                  'cell in weighted compute time', min=0.0, max=10000.0, unit='ms'),
        ParamSpec('critical_reserve', True, 'cut non-critical batches so that a critical request '
                  'arriving as one starts still meets its deadline'),
        ParamSpec('critical_horizon_s', 10.0, 'how long a critical request seen keeps its reserve',
                  min=0.1, max=3600.0, unit='s'),
        ParamSpec('reserve_margin_ms', 2.0, 'safety margin of the critical reserve', min=0.0, max=1000.0,
                  unit='ms'),
        ParamSpec('policy', 'fair', 'scheduling policy (fifo: baseline for comparison)',
                  choices=tuple(POLICIES), read_only=True),
        ParamSpec('cells', [], "cells served, by namespace (e.g. ['line1/cell_01', 'line1/cell_02'])",
                  read_only=True, item=str),
        ParamSpec('cell_weights', 1.0, "the cell's fair-share weight (parameter cell_weights.line1.cell_01 for "
                  "cell 'line1/cell_01')", keys='cells', min=0.001, max=1000.0),
        ParamSpec('allowed_cells', [], "patterns of further cells served once their request topic appears "
                  "(fnmatch, e.g. ['line2/cell_*'])", read_only=True, item=str),
        ParamSpec('default_weight', 1.0, 'weight of a cell not in cells (allowed_cells, discover_cells)',
                  min=0.001, max=1000.0),
        ParamSpec('discover_cells', False, 'serve EVERY /<cell ns>/inference/request that appears: any '
                  'process on the domain can then take a share; off: only cells and allowed_cells',
                  read_only=True),
        ParamSpec('max_cells', 64, 'cells served at most (listed ones included)', min=1, max=4096,
                  read_only=True),
        ParamSpec('max_refused_cells', 16, 'unknown cells answered REJECTED at once (beyond: not received)',
                  min=0, max=1024, read_only=True),
        ParamSpec('cell_prune_s', 60.0, 'a cell that appeared and has had no request publisher for this '
                  'long is forgotten (its subscription, queue state and statistics)', min=1.0, max=1e6,
                  unit='s'),
        ParamSpec('discovery_period_s', 1.0, 'graph scan period for cells appearing and going',
                  min=0.1, max=60.0, unit='s'),
        ParamSpec('shm', True, 'accept shared-memory regions of cells on this host (zero-copy requests)',
                  read_only=True),
        ParamSpec('shm_max_region_mb', 256.0, 'largest shared-memory region a cell may register',
                  min=1.0, max=65536.0, unit='MB', read_only=True),
        ParamSpec('status_period_s', 0.25, 'ExecutorStatus period (arbiters use it as heartbeat)',
                  min=0.02, max=10.0, unit='s'),
        ParamSpec('energy_feed_topic', '/site/energy_feed',
                  "site EnergySignal whose power budget limits the executor's busy share (empty: none)"),
        ParamSpec('line_id', '', "line whose part of the site power budget caps this executor; empty: it "
                  "serves the whole site and takes the whole budget"),
        ParamSpec('power_idle_w', 20.0, 'executor host idle power (power model)', min=0.0, max=1e5, unit='W'),
        ParamSpec('power_busy_w', 60.0, 'extra power of one busy inference stream (budget limit)',
                  min=0.001, max=1e5, unit='W'),
        ParamSpec('energy_per_inference_j', 0.3, 'energy of one inference (power model where NVML/RAPL '
                  'cannot be read)', min=0.0, max=1e4, unit='J'),
        *executor_rollout.PARAMS,
    ]

    def __init__(self, **kwargs):
        super().__init__('executor', **kwargs)
        self.engine: ExecutorEngine | None = None
        self.registry: ModelRegistry | None = None

    def _scheduler_config(self, p) -> SchedulerConfig:
        return SchedulerConfig(weights=dict(p.cell_weights),
                               default_weight=p.default_weight, max_queue_per_cell=p.max_queue_per_cell,
                               max_queue_delay_s=p.max_queue_delay_ms / 1e3,
                               fair_window_s=p.fair_window_ms / 1e3, critical_reserve=p.critical_reserve,
                               critical_horizon_s=p.critical_horizon_s,
                               reserve_margin_s=p.reserve_margin_ms / 1e3)

    def check_params(self, p) -> None:
        for pattern in p.allowed_cells:
            if not pattern or len(pattern) > 128:
                raise ParameterError(f"parameter 'allowed_cells': {pattern!r} is not a pattern")

    def _throttled(self, level: str, text: str) -> None:
        getattr(self.get_logger(), level)(text, throttle_duration_sec=LOG_EVERY_S)

    # -- lifecycle ----------------------------------------------------------------------
    def configure(self) -> None:
        p = self.params
        log = self.get_logger()
        self.executor_id = p.executor_id or self.get_namespace().strip('/') or 'executor'
        self.instance_id = secrets.token_hex(8)
        try:
            choice = choose_backend(p.backend, probe_gpu())
        except BackendUnavailable as e:
            raise ParameterError(str(e)) from None
        try:
            backend = make_backend(choice, cpu_threads=p.cpu_threads, plan_cache_dir=p.trt_plan_cache,
                                   fp16=p.trt_fp16, streams=p.trt_streams)
        except BackendError as e:
            raise ParameterError(f'backend {choice.backend}: {e}') from None
        log.info(f'backend {backend.describe()}: {choice.reason}')
        self.registry = ModelRegistry(backend, p.default_max_batch, max_models=p.max_models)
        self._registry_pub = self.create_publisher(ModelRegistryChange, '~/registry', qos.audit_event())
        if p.model_list:
            try:
                specs = read_model_list(Path(p.model_list).expanduser(), p.model_dir or None)
            except (RegistryError, RuntimeError) as e:
                raise ParameterError(str(e)) from None
            for spec in specs:
                try:
                    entry, _ = self.registry.load(spec)
                except RegistryError as e:
                    log.error(f'model list: {e} (skipped; the executor serves the others)')
                    self._registry_change('load_failed', name=spec.name, path=spec.path, cause='model_list',
                                          reason=str(e))
                    continue
                self._registry_change('loaded', entry=entry, path=spec.path, cause='model_list')
                log.info(f'loaded {entry.name} {entry.id[:12]} max_batch {entry.max_batch} '
                         f'service {1e3 * entry.service.estimate(1):.2f} ms/batch of 1')

        self.access = CellAccess(tuple(p.cells), tuple(p.allowed_cells), p.discover_cells, p.max_cells,
                                 p.max_refused_cells, p.cell_prune_s)
        if p.discover_cells:
            log.warning('discover_cells is on: any process on this ROS domain can join as a cell and take a share')
        shm_ok, shm_why = shm_supported()
        self.regions = RegionTable(int(p.shm_max_region_mb * (1 << 20))) if p.shm and shm_ok else None
        if p.shm and not shm_ok:
            log.warning(f'shared-memory requests off: {shm_why}')
        self.counts: dict[str, int] = {}
        # The cells' requests come in on a node and a thread of their own (executor_intake): the
        # services and timers of this node cost them nothing per message, and a model load
        # (seconds; minutes for a TensorRT build) never holds them up. Here, a model load holds
        # only its own group, never list_models or register_shm.
        prio = p.thread_priority
        self.intake = Intake(self, 'executor_intake', thread_setup=lambda: _set_realtime(prio))
        self._models_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._subs, self._pubs = {}, {}
        for cell_ns in p.cells:
            self._add_cell(cell_ns)
        self.intake.start()
        self._status_pub = self.create_publisher(ExecutorStatus, '~/status', qos.status())
        self._executor_services = [
            self.create_service(LoadModel, '~/load_model', self._on_load,
                                callback_group=self._models_group),
            self.create_service(UnloadModel, '~/unload_model', self._on_unload,
                                callback_group=self._models_group),
            self.create_service(ListModels, '~/list_models', self._on_list,
                                callback_group=self._service_group),
            self.create_service(RegisterShm, '~/register_shm', self._on_register_shm,
                                callback_group=self._service_group)]
        self.actions = OperatorActions(self)
        try:
            self.rollout = executor_rollout.ExecutorRollout(self, self.registry, service_group=self._service_group)
        except RegistryError as e:
            raise ParameterError(str(e)) from None
        self._executor_timers = [self.create_timer(p.status_period_s, self._publish_status, clock=STEADY),
                                 self.create_timer(p.discovery_period_s, self._scan_cells, clock=STEADY)]
        if self.regions is not None:
            self._executor_timers.append(self.create_timer(0.2, self._reap_regions, clock=STEADY))
        self._limit = None
        self._reading = None
        self._budget_why = 'no energy signal yet'
        self._meter = PowerMeter(EnergyModel(p.power_idle_w, p.energy_per_inference_j))
        if p.energy_feed_topic:
            self._energy_sub = self.create_subscription(EnergySignalMsg, p.energy_feed_topic, self._on_energy,
                                                        qos.latched_state())
        self._worker_note = ''
        self.diagnostics.add('scheduling', self._diag_scheduling)
        self.diagnostics.add('models', self._diag_models)
        self.diagnostics.add('cells', self._diag_cells)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _on_energy(self, msg: EnergySignalMsg) -> None:
        p = self.params
        try:
            sig = signal_from_msg(msg)
            budget, why = line_part(sig, p.line_id) if p.line_id else (sig.power_budget_w, 'site budget')
            new = compute_limit(budget, p.power_idle_w, p.power_busy_w, p.workers)
        except (ValueError, TypeError, ArithmeticError) as e:
            self._count('energy signals refused')
            self.reject('energy signal', str(e))
            return
        limit, self._limit, self._budget_why = self._limit, new, why
        if limit is None or limit.power_cap_w != self._limit.power_cap_w:
            self.get_logger().info(f'{self._budget_why}: {self._limit.reason}')
        if self.engine is not None:
            self.engine.duty_cycle = self._limit.duty_cycle

    def _power(self, snap):
        """(watts, measured?) from NVML / RAPL where readable, else the energy-per-inference model."""
        now = time.monotonic()
        last_t, last_served = self._power_mark
        self._power_mark = (now, snap.served)
        rate = (snap.served - last_served) / (now - last_t) if now > last_t else 0.0
        reading = self._reading = self._meter.read(rate)
        return reading.watts, reading.measured

    def activate(self) -> None:
        sys.setswitchinterval(self.params.gil_switch_ms / 1e3)
        prio = self.params.thread_priority
        self._worker_note = _realtime_process(prio)
        if self._worker_note:
            self.get_logger().warning(f'{self._worker_note}; the executor runs at normal priority')

        def thread_setup(role: str):
            why = _set_realtime(prio)
            if why and not self._worker_note:
                self._worker_note = why
                self.get_logger().warning(f'inference {role} thread: {why}; it runs at normal priority')
        self.engine = ExecutorEngine(self.registry, self._scheduler_config(self.params),
                                     self._publish_result, policy=self.params.policy,
                                     clock=time.monotonic, workers=self.params.workers,
                                     log=self.get_logger().error, thread_setup=thread_setup, spawn=self.supervise)
        if self._limit is not None:
            self.engine.duty_cycle = self._limit.duty_cycle
        if prio:
            self.engine.rt_budget = rt_budget()
        self._power_mark = (time.monotonic(), 0)
        self.engine.start()

    def deactivate(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.stop()

    def cleanup(self) -> None:
        for t in self._executor_timers:
            self.destroy_timer(t)
        for s in self._executor_services:
            self.destroy_service(s)
        self.actions.destroy()
        self.rollout.destroy()
        for cell_ns in list(self._subs):
            self._remove_cell(cell_ns)
        if not self.intake.close():
            self.get_logger().error('the request intake thread did not stop in 2 s')
        self.destroy_publisher(self._status_pub)
        self.destroy_publisher(self._registry_pub)
        if self.params.energy_feed_topic:
            self.destroy_subscription(self._energy_sub)
        self._meter.close()
        if self.regions is not None:
            self.regions.close()
        for entry in self.registry.list():
            self.registry.unload(entry.id)
        self.registry.backend.close()

    def on_params_changed(self, p) -> None:
        if self.engine is not None:
            self.engine.reconfigure(self._scheduler_config(p))

    # -- cells --------------------------------------------------------------------------
    def _add_cell(self, cell_ns: str, refuse: bool = False) -> None:
        if cell_ns in self._subs:
            return
        self._pubs[cell_ns] = self.create_publisher(InferenceResult, result_topic(cell_ns), qos.inference())
        self._subs[cell_ns] = self.intake.subscribe(
            InferenceRequest, request_topic(cell_ns), lambda data, cell_ns=cell_ns: self._on_serialized(
                cell_ns, data, refuse), qos.inference(), raw=True)
        if refuse:
            self.get_logger().warning(f'{self.access.why_refused(cell_ns)}: its requests are answered REJECTED')
        else:
            self.get_logger().info(f'serving cell {cell_ns}: {request_topic(cell_ns)} -> {result_topic(cell_ns)}')

    def _remove_cell(self, cell_ns: str) -> None:
        sub, pub = self._subs.pop(cell_ns, None), self._pubs.pop(cell_ns, None)
        if sub is not None:
            self.intake.unsubscribe(sub)
        if pub is not None:
            self.destroy_publisher(pub)

    def _scan_cells(self) -> None:
        """Cells appearing (served, refused or ignored by core.cell_access) and going (pruned)."""
        now = time.monotonic()
        for name, types in self.get_topic_names_and_types():
            if name.endswith(REQUEST_SUFFIX) and 'cellos_interfaces/msg/InferenceRequest' in types:
                cell_ns = name[1:-len(REQUEST_SUFFIX)]
                decision = self.access.appeared(cell_ns, now)
                if decision == SERVE:
                    self._add_cell(cell_ns)
                elif decision == REFUSE:
                    self._count('cells refused')
                    self._add_cell(cell_ns, refuse=True)
        for cell_ns in self.access.tracked():
            if self.count_publishers(request_topic(cell_ns)) > 0:
                self.access.still_there(cell_ns, now)
        for cell_ns in self.access.to_prune(now):
            self._remove_cell(cell_ns)
            if self.engine is not None:
                self.engine.forget_cell(cell_ns)
            self._count('cells pruned')
            self.get_logger().info(f'cell {cell_ns}: no request publisher for {self.params.cell_prune_s:.0f} s, '
                                   'forgotten')

    # -- requests -----------------------------------------------------------------------
    def _on_serialized(self, cell_ns: str, data: bytes, refused: bool) -> None:
        """A request as it came off the wire. Its tensors are deserialized only if they may be
        served: an oversized request (or any from a refused cell) is answered from the fields
        before them, so a 50 MB message holds the intake (and the status heartbeat, which needs
        the interpreter lock) for a copy, not for a 0.1 s deserialization.
        """
        limit = int(self.params.max_request_mb * (1 << 20))
        if not refused and len(data) <= limit + ENVELOPE_BYTES:
            return self._on_request(cell_ns, deserialize_message(data, InferenceRequest))
        head = request_head(data)
        if head is None:
            self._count('requests unreadable')
            self.reject('request (unreadable)', f'{len(data)} bytes on {request_topic(cell_ns)}: no request in them')
            return
        if refused:
            return self._on_refused(cell_ns, head)
        wall_ns = _wall_ns()
        job, _ = request_to_job(head, topic_cell_ns=cell_ns, arrival=time.monotonic(), wall_now=wall_ns * 1e-9,
                                max_request_bytes=0)
        job.transport = _Reply(wall_ns)
        self._refuse(cell_ns, job, Status.BAD_SIZE,
                     f'{len(data)} bytes: this executor accepts at most {limit} tensor bytes per request')

    def _on_refused(self, cell_ns: str, msg: InferenceRequest) -> None:
        self._count('requests from unknown cells')
        why = self.access.why_refused(cell_ns)
        self.reject('request from an unknown cell', f'{request_topic(cell_ns)}: {why}')
        job, _ = request_to_job(msg, topic_cell_ns=cell_ns, arrival=time.monotonic(), wall_now=_wall_ns() * 1e-9,
                                max_request_bytes=0)
        self._answer(Outcome.reject(job, Status.REJECTED, why))

    def _on_request(self, cell_ns: str, msg: InferenceRequest) -> None:
        wall_ns = _wall_ns()
        job, refusal = request_to_job(msg, topic_cell_ns=cell_ns, arrival=time.monotonic(), wall_now=wall_ns * 1e-9,
                                      max_request_bytes=int(self.params.max_request_mb * (1 << 20)),
                                      regions=self.regions)
        job.transport = _Reply(wall_ns, job.transport, int(msg.shm_output_offset), int(msg.shm_output_size))
        if refusal is not None:
            return self._refuse(cell_ns, job, refusal.status, refusal.reason)
        self._count('requests in shared memory' if job.transport.region is not None else 'requests inline')
        engine = self.engine
        if engine is None:
            return self._answer(Outcome.reject(job, Status.SHUTTING_DOWN, 'executor is not active'))
        refused = self.rollout.resolve(job)
        if refused is not None:
            return self._answer(refused)
        engine.submit(job)

    def _refuse(self, cell_ns: str, job, status: Status, reason: str) -> None:
        self._count(f'requests refused ({status.name})')
        self.reject(f'request ({status.name})', f'#{job.request_id} on {request_topic(cell_ns)}: {reason}')
        self._answer(Outcome.reject(job, status, reason))

    def _answer(self, outcome: Outcome) -> None:
        engine = self.engine
        if engine is not None:
            engine.answer(outcome)
        else:
            self._publish_result(outcome)

    def _publish_result(self, outcome: Outcome) -> None:
        reply = outcome.transport
        region = reply.region if isinstance(reply, _Reply) else None
        try:
            pub = self._pubs.get(outcome.cell_ns)
            if pub is None:
                self._throttled('error', f'no result topic for cell {outcome.cell_ns!r} (pruned meanwhile)')
                return
            if not outcome.backend and self.registry is not None:
                outcome.backend = self.registry.backend.name
            joules, outcome.energy_source = inference_energy_j(self._reading, outcome.compute_ms, outcome.batch_size,
                                                               self._meter.model)
            outcome.energy_wh = joules / 3600.0
            refs = None
            if region is not None and outcome.outputs:
                refs = region.write(reply.out_offset, reply.out_size, outcome.outputs)
            received = s_to_time(reply.received_ns * 1e-9) if isinstance(reply, _Reply) else None
            pub.publish(outcome_to_result(outcome, self.get_clock().now().to_msg(), received=received,
                                          shm_region=region.handle if region is not None else 0, shm_refs=refs))
        finally:
            if region is not None:
                self.regions.put(region)

    # -- shared memory ----------------------------------------------------------------------
    def _on_register_shm(self, req, resp):
        cell = f'{req.line_id}/{req.cell_id}' if req.line_id else req.cell_id
        resp.success, resp.handle = False, 0
        if self.regions is None:
            resp.message = 'this executor takes no shared-memory requests (parameter shm, or the platform)'
            return resp
        if cell not in self.access.served:
            resp.message = self.access.why_refused(cell)
            self._count('regions refused')
            self.reject('register_shm', f'from {cell}: {resp.message}')
            return resp
        try:
            if req.release:
                self.regions.release(int(req.handle), cell)
                self._drain_region(int(req.handle), 'the cell released its shared-memory region')
                resp.success, resp.message = True, f'region {req.handle:#x} released'
                return resp
            region, replaced = self.regions.register(cell, int(req.pid), int(req.fd), int(req.size),
                                                     bytes(req.nonce), req.boot_id)
        except RegionError as e:
            self._count('regions refused')
            resp.message = str(e)
            self.reject('register_shm', f'from {cell}: {e}')
            return resp
        for r in replaced:
            self._drain_region(r.handle, 'the cell registered a new shared-memory region')
        self._count('regions registered')
        resp.success, resp.handle = True, region.handle
        resp.message = f'region {region.handle:#x} of {region.size} bytes mapped for {cell}'
        self.get_logger().info(resp.message)
        return resp

    def _drain_region(self, handle: int, why: str) -> None:
        if self.engine is not None:
            self.engine.drain_where(lambda j: isinstance(j.transport, _Reply) and j.transport.region is not None
                                    and j.transport.region.handle == handle, Status.REJECTED, why)

    def _reap_regions(self) -> None:
        for r in self.regions.reap():
            self._count('regions reclaimed (owner ended)')
            self.get_logger().info(f'cell {r.cell_ns}: process {r.owner_pid} ended, its region {r.handle:#x} released')
            self._drain_region(r.handle, 'the cell process ended')

    # -- services -----------------------------------------------------------------------
    def _on_load(self, req, resp):
        spec = None
        try:
            path = resolve_model_path(req.path, Path.cwd())
            spec = ModelSpec(req.name, str(path), int(req.max_batch))
            with _NormalPriority():
                entry = (self.engine.load_model(spec) if self.engine is not None
                         else self.registry.load(spec)[0])
        except RegistryError as e:
            resp.success, resp.message = False, str(e)
            self.reject('load_model', str(e))
            self._registry_change('load_failed', name=req.name, path=spec.path if spec else req.path, cause='service',
                                  reason=str(e))
            self.actions.record('~/load_model', 'load_model', target=req.name, request=req, success=False,
                                message=resp.message)
            return resp
        resp.success, resp.message, resp.model = True, f'loaded {entry.name} {entry.id[:12]}', model_info(entry)
        self.get_logger().info(resp.message)
        self._registry_change('loaded', entry=entry, path=spec.path, cause='service')
        self.actions.record('~/load_model', 'load_model', target=f'{entry.name} {entry.id}', request=req,
                            message=resp.message)
        return resp

    def _on_unload(self, req, resp):
        roles = self.rollout.roles_of(req.model)
        try:
            if roles:
                raise RegistryError(f'{req.model} is {" and ".join(roles)}: promote or roll back first')
            entry = (self.engine.unload_model(req.model) if self.engine is not None
                     else self.registry.unload(req.model))
        except RegistryError as e:
            resp.success, resp.message = False, str(e)
            self.reject('unload_model', str(e))
            self.actions.record('~/unload_model', 'unload_model', target=req.model, request=req, success=False,
                                message=resp.message)
            return resp
        resp.success, resp.message = True, f'unloaded {entry.name} {entry.id[:12]}'
        self.get_logger().info(resp.message)
        self._registry_change('unloaded', entry=entry, cause='service')
        self.actions.record('~/unload_model', 'unload_model', target=f'{entry.name} {entry.id}', request=req,
                            message=resp.message)
        return resp

    def _registry_change(self, change: str, **what) -> None:
        self._registry_pub.publish(registry_change(change, executor_id=self.executor_id, models=self.registry.list(),
                                                   stamp=self.get_clock().now().to_msg(), **what))

    def _on_list(self, req, resp):
        resp.models = [model_info(e) for e in self.registry.list()]
        return resp

    # -- status -------------------------------------------------------------------------
    def _publish_status(self) -> None:
        engine = self.engine
        if engine is None:
            return
        snap = engine.snapshot()
        watts, measured = self._power(snap)
        self._status_pub.publish(executor_status(
            snap, self.registry.list(), executor_id=self.executor_id,
            backend=self.registry.backend.describe(), stamp=self.get_clock().now().to_msg(),
            power_w=watts, power_measured=measured,
            concurrency_limit=self._limit.max_concurrency if self._limit else self.params.workers,
            instance_id=self.instance_id, max_request_bytes=int(self.params.max_request_mb * (1 << 20))))

    def _diag_scheduling(self) -> DiagReport:
        if self.engine is None:
            return DiagReport(WARN, 'inactive')
        snap = self.engine.snapshot()
        values = {'policy': self.params.policy, 'backend': self.registry.backend.describe(),
                  'mean_batch_size': snap.mean_batch_size, 'max_batch_seen': snap.max_batch_seen,
                  'served': snap.served, 'rejected': snap.rejected, 'power_budget': self._budget_why,
                  'worker_errors': self.engine.worker_errors,
                  'thread_priority': self._worker_note or (f'SCHED_FIFO {self.params.thread_priority}'
                                                           if self.params.thread_priority else 'normal')}
        if self._limit is not None:
            values.update(power_cap_w=self._limit.power_cap_w, concurrency_limit=self._limit.max_concurrency,
                          duty_cycle=self._limit.duty_cycle)
        for c in snap.cells:
            values.update({f'{c.cell_ns} share': c.compute_share, f'{c.cell_ns} queue': c.queue_depth,
                           f'{c.cell_ns} queue_ms p50/p99': f'{c.queue_ms[0]:.2f}/{c.queue_ms[1]:.2f}',
                           f'{c.cell_ns} batch_wait_ms p50/p99':
                               f'{c.batch_wait_ms[0]:.2f}/{c.batch_wait_ms[1]:.2f}',
                           f'{c.cell_ns} compute_ms p50/p99': f'{c.compute_ms[0]:.2f}/{c.compute_ms[1]:.2f}',
                           f'{c.cell_ns} statuses': c.by_status})
        if self.engine.last_worker_error:
            values['last_worker_error'] = self.engine.last_worker_error
        return DiagReport(OK, f'{len(snap.cells)} cell(s), {snap.served} served', values)

    def _diag_cells(self) -> DiagReport:
        values = {'served': ', '.join(sorted(self.access.served)) or 'none',
                  'refused': ', '.join(sorted(self.access.refused)) or 'none',
                  'discover_cells': self.access.discover,
                  'shm regions': len(self.regions.regions()) if self.regions is not None else 'off'}
        values.update(sorted(self.counts.items()))
        unknown = self.counts.get('requests from unknown cells', 0)
        if unknown:
            return DiagReport(WARN, f'{unknown} request(s) from unknown cells refused', values)
        return DiagReport(OK, f'{len(self.access.served)} cell(s) served', values)

    def _diag_models(self) -> DiagReport:
        models = self.registry.list() if self.registry else []
        return DiagReport(OK if models else WARN, f'{len(models)} model(s) loaded',
                          {e.name: f'{e.id[:12]} max_batch {e.max_batch} '
                                   f'{1e3 * e.service.estimate(1):.2f} ms' for e in models})


def main(args=None):
    return main_for(ExecutorNode, args)
