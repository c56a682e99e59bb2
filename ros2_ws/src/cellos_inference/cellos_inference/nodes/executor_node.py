"""Shared inference executor of one GPU host (e.g. namespace /gpu0, node name executor).

Its clients are cells, each known by its namespace ``cell_ns`` (e.g. ``line1/cell_01``):
  /<cell_ns>/inference/request   InferenceRequest  in, from that cell's arbiter only
  /<cell_ns>/inference/result    InferenceResult   out, to that cell only
  ~/status                       ExecutorStatus    out (also the arbiters' heartbeat)
  ~/registry                     ModelRegistryChange out, every load / unload / rollout step (audit)
  ~/aliases                      ModelAliases      out, latched: each task's production and candidate
  /audit/operator_action         OperatorAction    out, every load_model / unload_model / rollout call
  /diagnostics
Services: ~/load_model, ~/unload_model, ~/list_models; ~/set_candidate, ~/promote, ~/rollback
(model rollout by role: cellos_inference.nodes.executor_rollout). A request naming a role
(<task>@serving, @production, @candidate) is resolved to a content id when it arrives.
Cells come from the ``cells`` parameter and, with ``discover_cells``, from any
``/<cell_ns>/inference/request`` topic that appears in the graph.
A request whose line_id/cell_id is not the namespace it came on is answered REJECTED on that
namespace's result topic, never on the claimed cell's.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup

from cellos_inference.core.backends.base import BackendError
from cellos_inference.core.backends.selection import (CHOICES, BackendUnavailable, choose_backend,
                                                      make_backend, probe_gpu)
from cellos_inference.core.executor_engine import ExecutorEngine
from cellos_inference.core.executor_scheduler import POLICIES, SchedulerConfig
from cellos_inference.core.inference_types import Outcome, Status
from cellos_inference.core.model_registry import ModelRegistry, ModelSpec, RegistryError, read_model_list
from cellos_common.core.params import ParameterError, ParamSpec
from cellos_inference.core.power_model import EnergyModel, PowerMeter, compute_limit, inference_energy_j
from cellos_common.nodes import qos
from cellos_common.nodes.base import CellosNode, main_for
from cellos_inference.nodes.convert_inference import (executor_status, model_info, outcome_to_result,
                                                      registry_change, request_to_job)
from cellos_inference.nodes import executor_rollout
from cellos_energy.core.site_budget import line_part
from cellos_energy.nodes.convert_energy import signal_from_msg
from cellos_common.nodes.diagnostics import OK, WARN, DiagReport
from cellos_common.nodes.operator_action import OperatorActions
from cellos_interfaces.msg import EnergySignal as EnergySignalMsg
from cellos_interfaces.msg import ExecutorStatus, InferenceRequest, InferenceResult, ModelRegistryChange
from cellos_interfaces.srv import ListModels, LoadModel, UnloadModel

REQUEST_SUFFIX = '/inference/request'


def request_topic(cell_ns: str) -> str:
    return f'/{cell_ns}{REQUEST_SUFFIX}'


def result_topic(cell_ns: str) -> str:
    return f'/{cell_ns}/inference/result'


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
        ParamSpec('gil_switch_ms', 0.5, 'Python GIL switch interval of this process: after each '
                  'model run the inference worker waits up to this long for the GIL held by ROS '
                  'callbacks (Python default 5 ms)', min=0.05, max=50.0, unit='ms', read_only=True),
        ParamSpec('model_list', '', 'YAML model list loaded at start (empty: none)', read_only=True),
        ParamSpec('model_dir', '', 'folder for relative model paths (empty: the list\'s folder)',
                  read_only=True),
        ParamSpec('default_max_batch', 8, 'max batch of a model loaded without one', min=1, max=256),
        ParamSpec('max_queue_delay_ms', 2.0, 'how long a partial batch may wait for more requests',
                  min=0.0, max=1000.0, unit='ms'),
        ParamSpec('max_queue_per_cell', 32, 'queued requests per cell before QUEUE_FULL', min=1,
                  max=100000),
        ParamSpec('fair_window_ms', 20.0, 'how far a cell may run ahead of the least-served busy '
                  'cell in weighted compute time', min=0.0, max=10000.0, unit='ms'),
        ParamSpec('policy', 'fair', 'scheduling policy (fifo: baseline for comparison)',
                  choices=tuple(POLICIES), read_only=True),
        ParamSpec('cells', [], "cells served, by namespace (e.g. ['line1/cell_01', 'line1/cell_02'])",
                  read_only=True, item=str),
        ParamSpec('cell_weights', 1.0, "the cell's fair-share weight (parameter cell_weights.line1.cell_01 for "
                  "cell 'line1/cell_01')", keys='cells', min=0.001, max=1000.0),
        ParamSpec('default_weight', 1.0, 'weight of a cell not in cells (found by discover_cells)',
                  min=0.001, max=1000.0),
        ParamSpec('discover_cells', True, 'also serve every /<cell id>/inference/request topic seen'),
        ParamSpec('discovery_period_s', 1.0, 'graph scan period for new cells', min=0.1, max=60.0,
                  unit='s'),
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

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _scheduler_config(self, p) -> SchedulerConfig:
        return SchedulerConfig(weights=dict(p.cell_weights),
                               default_weight=p.default_weight, max_queue_per_cell=p.max_queue_per_cell,
                               max_queue_delay_s=p.max_queue_delay_ms / 1e3,
                               fair_window_s=p.fair_window_ms / 1e3)

    # -- lifecycle ----------------------------------------------------------------------
    def configure(self) -> None:
        p = self.params
        log = self.get_logger()
        self.executor_id = p.executor_id or self.get_namespace().strip('/') or 'executor'
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
        self.registry = ModelRegistry(backend, p.default_max_batch)
        self._registry_pub = self.create_publisher(ModelRegistryChange, '~/registry', qos.audit_event())
        if p.model_list:
            try:
                specs = read_model_list(Path(p.model_list).expanduser(), p.model_dir or None)
            except RegistryError as e:
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

        self._requests_group = ReentrantCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._subs, self._pubs = {}, {}
        for cell_ns in p.cells:
            self._add_cell(cell_ns)
        self._status_pub = self.create_publisher(ExecutorStatus, '~/status', qos.status())
        self._executor_services = [
            self.create_service(LoadModel, '~/load_model', self._on_load,
                                callback_group=self._service_group),
            self.create_service(UnloadModel, '~/unload_model', self._on_unload,
                                callback_group=self._service_group),
            self.create_service(ListModels, '~/list_models', self._on_list,
                                callback_group=self._service_group)]
        self.actions = OperatorActions(self)
        try:
            self.rollout = executor_rollout.ExecutorRollout(self, self.registry, service_group=self._service_group)
        except RegistryError as e:
            raise ParameterError(str(e)) from None
        self._executor_timers = [self.create_timer(p.status_period_s, self._publish_status)]
        if p.discover_cells:
            self._executor_timers.append(self.create_timer(p.discovery_period_s, self._discover))
        self._limit = None
        self._reading = None
        self._budget_why = 'no energy signal yet'
        self._meter = PowerMeter(EnergyModel(p.power_idle_w, p.energy_per_inference_j))
        if p.energy_feed_topic:
            self._energy_sub = self.create_subscription(EnergySignalMsg, p.energy_feed_topic, self._on_energy,
                                                        qos.latched_state())
        self.diagnostics.add('scheduling', self._diag_scheduling)
        self.diagnostics.add('models', self._diag_models)

    def _on_energy(self, msg: EnergySignalMsg) -> None:
        p = self.params
        sig = signal_from_msg(msg)
        budget, self._budget_why = line_part(sig, p.line_id) if p.line_id else (sig.power_budget_w, 'site budget')
        limit, self._limit = self._limit, compute_limit(budget, p.power_idle_w, p.power_busy_w, p.workers)
        if limit is None or limit.power_cap_w != self._limit.power_cap_w:
            self.get_logger().info(f'{self._budget_why}: {self._limit.reason}')
        if self.engine is not None:
            self.engine.duty_cycle = self._limit.duty_cycle

    def _power(self):
        """(watts, measured?) from NVML / RAPL where readable, else the energy-per-inference model."""
        snap = self.engine.snapshot()
        now = time.monotonic()
        last_t, last_served = self._power_mark
        self._power_mark = (now, snap.served)
        rate = (snap.served - last_served) / (now - last_t) if now > last_t else 0.0
        reading = self._reading = self._meter.read(rate)
        return reading.watts, reading.measured

    def activate(self) -> None:
        sys.setswitchinterval(self.params.gil_switch_ms / 1e3)
        self.engine = ExecutorEngine(self.registry, self._scheduler_config(self.params),
                                     self._publish_result, policy=self.params.policy,
                                     clock=self._now, workers=self.params.workers,
                                     log=self.get_logger().error)
        if self._limit is not None:
            self.engine.duty_cycle = self._limit.duty_cycle
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
            self.destroy_subscription(self._subs.pop(cell_ns))
            self.destroy_publisher(self._pubs.pop(cell_ns))
        self.destroy_publisher(self._status_pub)
        self.destroy_publisher(self._registry_pub)
        if self.params.energy_feed_topic:
            self.destroy_subscription(self._energy_sub)
        self._meter.close()
        for entry in self.registry.list():
            self.registry.unload(entry.id)
        self.registry.backend.close()

    def on_params_changed(self, p) -> None:
        if self.engine is not None:
            cfg = self._scheduler_config(p)
            for name in ('weights', 'default_weight', 'max_queue_per_cell', 'max_queue_delay_s',
                         'fair_window_s'):
                setattr(self.engine.config, name, getattr(cfg, name))

    # -- cells --------------------------------------------------------------------------
    def _add_cell(self, cell_ns: str) -> None:
        if cell_ns in self._subs:
            return
        self._pubs[cell_ns] = self.create_publisher(InferenceResult, result_topic(cell_ns), qos.inference())
        self._subs[cell_ns] = self.create_subscription(
            InferenceRequest, request_topic(cell_ns), lambda msg, cell_ns=cell_ns: self._on_request(cell_ns, msg),
            qos.inference(), callback_group=self._requests_group)
        self.get_logger().info(f'serving cell {cell_ns}: {request_topic(cell_ns)} -> {result_topic(cell_ns)}')

    def _discover(self) -> None:
        for name, types in self.get_topic_names_and_types():
            if name.endswith(REQUEST_SUFFIX) and 'cellos_interfaces/msg/InferenceRequest' in types:
                cell_ns = name[1:-len(REQUEST_SUFFIX)]
                if cell_ns and cell_ns not in self._subs:
                    self._add_cell(cell_ns)

    # -- requests -----------------------------------------------------------------------
    def _on_request(self, cell_ns: str, msg: InferenceRequest) -> None:
        job = request_to_job(msg)
        if job.cell_ns != cell_ns:
            self.get_logger().warning(f'request #{job.request_id} on {request_topic(cell_ns)} claims '
                                      f'cell {job.cell_ns!r}: rejected')
            claimed, job.cell_ns = job.cell_ns, cell_ns   # answered where it came from, never to the claimed cell
            return self._publish_result(Outcome.reject(
                job, Status.REJECTED, f'cell {claimed!r} does not match the request topic {request_topic(cell_ns)}'))
        engine = self.engine
        if engine is None:
            return self._publish_result(Outcome.reject(job, Status.SHUTTING_DOWN,
                                                       'executor is not active'))
        refused = self.rollout.resolve(job)
        if refused is not None:
            return self._publish_result(refused)
        engine.submit(job)

    def _publish_result(self, outcome: Outcome) -> None:
        pub = self._pubs.get(outcome.cell_ns)
        if pub is None:
            self.get_logger().error(f'no result topic for cell {outcome.cell_ns!r}')
            return
        if not outcome.backend and self.registry is not None:
            outcome.backend = self.registry.backend.name
        joules, outcome.energy_source = inference_energy_j(self._reading, outcome.compute_ms, outcome.batch_size,
                                                           self._meter.model)
        outcome.energy_wh = joules / 3600.0
        pub.publish(outcome_to_result(outcome, self.get_clock().now().to_msg()))

    # -- services -----------------------------------------------------------------------
    def _on_load(self, req, resp):
        spec = ModelSpec(req.name, str(Path(req.path).expanduser()), int(req.max_batch))
        try:
            entry = (self.engine.load_model(spec) if self.engine is not None
                     else self.registry.load(spec)[0])
        except RegistryError as e:
            resp.success, resp.message = False, str(e)
            self.get_logger().error(f'load_model: {e}')
            self._registry_change('load_failed', name=req.name, path=spec.path, cause='service', reason=str(e))
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
        watts, measured = self._power()
        self._status_pub.publish(executor_status(
            engine.snapshot(), self.registry.list(), executor_id=self.executor_id,
            backend=self.registry.backend.describe(), stamp=self.get_clock().now().to_msg(),
            power_w=watts, power_measured=measured,
            concurrency_limit=self._limit.max_concurrency if self._limit else self.params.workers))

    def _diag_scheduling(self) -> DiagReport:
        if self.engine is None:
            return DiagReport(WARN, 'inactive')
        snap = self.engine.snapshot()
        values = {'policy': self.params.policy, 'backend': self.registry.backend.describe(),
                  'mean_batch_size': snap.mean_batch_size, 'max_batch_seen': snap.max_batch_seen,
                  'served': snap.served, 'rejected': snap.rejected, 'power_budget': self._budget_why}
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
        return DiagReport(OK, f'{len(snap.cells)} cell(s), {snap.served} served', values)

    def _diag_models(self) -> DiagReport:
        models = self.registry.list() if self.registry else []
        return DiagReport(OK if models else WARN, f'{len(models)} model(s) loaded',
                          {e.name: f'{e.id[:12]} max_batch {e.max_batch} '
                                   f'{1e3 * e.service.estimate(1):.2f} ms' for e in models})


def main(args=None):
    return main_for(ExecutorNode, args)
