"""The executor's model rollout: a task's models by role (production, candidate), resolved for each
request when it arrives, and the services that change them (cellos_inference.core.model_aliases).

  ~/aliases         ModelAliases     out, latched: every task's roles, at start and after each change
  ~/set_candidate   SetCandidate     srv: a loaded model becomes a task's candidate (shadow or canary)
  ~/promote         RolloutStep      srv: the candidate becomes production (previous kept)
  ~/rollback        RolloutStep      srv: the candidate is removed; with none, production returns
                                     to the previous one
Every step is a ModelRegistryChange on ~/registry (with the aliases after it and who asked) and an
OperatorAction on /audit/operator_action, with the reason the request gave.
The roles are kept in SQLite (``alias_store``): a restarted executor loads what its roles name
(from the paths they were loaded from, checked against the content id) and serves them.
"""
from __future__ import annotations

from cellos_common.core.params import ParamSpec
from cellos_common.core.state_store import StateStore, StoreError, store_path
from cellos_common.nodes import qos
from cellos_inference.core.inference_types import Outcome, Status
from cellos_inference.core.model_aliases import (CANDIDATE, AliasError, AliasTable, Mode, ModelRef,
                                                 incompatibility)
from cellos_inference.core.model_registry import ModelSpec, RegistryError
from cellos_inference.nodes.convert_rollout import alias_to_msg, aliases_msg
from cellos_interfaces.msg import ModelAliases
from cellos_interfaces.srv import RolloutStep, SetCandidate

PARAMS = [
    ParamSpec('rollout_tasks', ['inspection'], 'tasks whose models are chosen by role: requests name '
              '<task>@serving (production, or the candidate on canary cells), <task>@production, '
              '<task>@candidate', read_only=True),
    ParamSpec('production_model', '', "the task's first production model (a loaded model's name or id), "
              'used while the alias store holds none for the task (parameter production_model.inspection)',
              keys='rollout_tasks', key_defaults=(('inspection', 'inspection_cnn'),), read_only=True),
    ParamSpec('alias_store', '', "SQLite file of the tasks' roles; '{ns}' = the node namespace (e.g. "
              "log/state/model_aliases_{ns}.sqlite3); empty: in memory, a restart forgets promotions",
              read_only=True),
]


def ref_of(entry) -> ModelRef:
    return ModelRef(entry.id, entry.name, entry.path)


class ExecutorRollout:
    """Created by the executor node in ``configure`` (after its model list is loaded)."""

    def __init__(self, node, registry, *, service_group):
        self.node = node
        self.registry = registry
        p = node.params
        log = node.get_logger()
        path = store_path(p.alias_store, node.get_namespace())
        try:
            self.store = StateStore(path)
        except StoreError as e:
            raise RegistryError(str(e)) from None
        self.table = AliasTable(self.store)
        log.info(f'model roles kept in {path}' if path else
                 'model roles kept in memory only (alias_store empty): a restart forgets promotions')
        self._restore_models()
        for task in p.rollout_tasks:
            self._first_production(task, dict(p.production_model).get(task, ''))
        self.pub = node.create_publisher(ModelAliases, '~/aliases', qos.latched_state())
        self.services = [
            node.create_service(SetCandidate, '~/set_candidate', self._on_set_candidate, callback_group=service_group),
            node.create_service(RolloutStep, '~/promote', self._on_promote, callback_group=service_group),
            node.create_service(RolloutStep, '~/rollback', self._on_rollback, callback_group=service_group)]
        self.publish()

    def destroy(self) -> None:
        for s in self.services:
            self.node.destroy_service(s)
        self.node.destroy_publisher(self.pub)
        self.store.close()

    # -- start-up ---------------------------------------------------------------------------
    def _restore_models(self) -> None:
        """Load what a stored role names and the model list did not (e.g. a promoted retrain)."""
        log = self.node.get_logger()
        for ref in self.table.model_refs():
            if self.registry.resolve(ref.id) is not None:
                continue
            taken = self.registry.resolve(ref.name) is not None
            name = f'{ref.name}.{ref.id[:8]}' if taken else ref.name
            try:
                entry, _ = self.registry.load(ModelSpec(name, ref.path))
            except RegistryError as e:
                log.error(f'stored role model {ref.describe()} cannot be loaded: {e}')
                continue
            if entry.id != ref.id:
                self.registry.unload(entry.id)
                log.error(f'stored role model {ref.describe()}: {ref.path} now holds other content '
                          f'({entry.id[:12]}); not served')
                continue
            log.info(f'loaded {entry.name} {entry.id[:12]} from {ref.path}: a stored role names it')
            self.node._registry_change('loaded', entry=entry, path=ref.path, cause='alias_store')

    def _first_production(self, task: str, model: str) -> None:
        log = self.node.get_logger()
        a = self.table.get(task)
        if a is not None and a.production and self.registry.resolve(a.production.id) is not None:
            log.info(f'task {task}: production {a.production.describe()} (stored)'
                     + (f', candidate {a.candidate.describe()} ({a.mode.name.lower()})' if a.candidate else ''))
            return
        why = (f'stored production {a.production.describe()} is not loaded' if a is not None and a.production
               else 'first production')
        entry = self.registry.resolve(model) if model else None
        if entry is None:
            log.warning(f'task {task}: {why}, and production_model {model!r} is not loaded: '
                        f'requests for {task}@serving are answered UNKNOWN_MODEL until one is set')
            return
        reason = f'{why}: production_model {model}'
        try:
            a = self.table.set_production(task, ref_of(entry), reason)
        except (AliasError, StoreError) as e:
            log.error(f'task {task}: {e}')
            return
        log.info(f'task {task}: production {a.production.describe()} ({reason})')
        self._change('production_set', a, entry, cause='parameters', reason=reason)

    # -- requests -------------------------------------------------------------------------
    def resolve(self, job) -> Outcome | None:
        """Rewrite a role reference in ``job.model`` to the content id it names for the job's cell
        now; an Outcome (UNKNOWN_MODEL, with the reason) when it names nothing.
        """
        try:
            model_id = self.table.resolve(job.model, job.cell_ns)
        except AliasError as e:
            return Outcome.reject(job, Status.UNKNOWN_MODEL, str(e), self.registry.backend.name)
        if model_id is not None:
            job.model = model_id
        return None

    def roles_of(self, ref: str) -> list[str]:
        entry = self.registry.resolve(ref)
        return self.table.roles_of(entry.id) if entry is not None else []

    def publish(self) -> None:
        self.pub.publish(aliases_msg(self.table.all(), executor_id=self.node.executor_id,
                                     stamp=self.node.get_clock().now().to_msg()))

    def _change(self, change: str, aliases, entry, *, cause: str = 'service', reason: str = '',
                operator_name: str = '') -> None:
        self.node._registry_change(change, entry=entry, name='' if entry else aliases.task, cause=cause,
                                   reason=reason, alias=aliases, operator_name=operator_name)

    # -- services -------------------------------------------------------------------------
    def _answer(self, service: str, action: str, req, resp, target: str, step):
        """Run ``step`` (-> (aliases, model entry or None, change, message)); answer, publish, audit."""
        log = self.node.get_logger()
        try:
            aliases, entry, change, message = step()
        except (AliasError, RegistryError, StoreError) as e:
            resp.success, resp.message = False, str(e)
            log.error(f'{action} {target}: {e}')
            self.node.actions.record(service, action, target=target, reason=req.reason, request=req,
                                     success=False, message=resp.message, operator_name=req.operator_name)
            return resp
        resp.success, resp.message, resp.alias = True, message, alias_to_msg(aliases)
        log.info(f'{message} (reason: {req.reason or "none given"}; by {req.operator_name or "unnamed"})')
        self.publish()
        self._change(change, aliases, entry, reason=req.reason, operator_name=req.operator_name)
        self.node.actions.record(service, action, target=target, reason=req.reason, request=req,
                                 message=message, operator_name=req.operator_name)
        return resp

    def _entry(self, ref: str):
        entry = self.registry.resolve(ref) if ref else None
        if entry is None:
            raise RegistryError(f'no model {ref!r} loaded (load it with ~/load_model first)')
        return entry

    def _on_set_candidate(self, req, resp):
        def step():
            entry = self._entry(req.model)
            a = self.table.get(req.task)
            prod = self.registry.resolve(a.production.id) if a is not None and a.production else None
            if prod is not None:
                why = incompatibility(prod.model, entry.model)
                if why:
                    raise AliasError(f'{entry.name} {entry.id[:12]} cannot stand in for production: {why}')
            try:
                mode = Mode(req.mode)
            except ValueError:
                raise AliasError(f'mode {req.mode}: 1 (shadow) or 2 (canary)') from None
            a = self.table.set_candidate(req.task, ref_of(entry), mode, req.canary_cells, req.reason)
            where = f' on {", ".join(a.canary_cells)}' if a.canary_cells else ''
            return a, entry, 'candidate_set', (f'{req.task}: candidate {a.candidate.describe()} in '
                                               f'{a.mode.name.lower()}{where}')
        return self._answer('~/set_candidate', 'set_candidate', req, resp, f'{req.task} {req.model}', step)

    def _on_promote(self, req, resp):
        def step():
            a = self.table.promote(req.task, req.reason, req.expected_id)
            return a, self.registry.resolve(a.production.id), 'promoted', (
                f'{req.task}: promoted {a.production.describe()} to production (was {a.previous.describe()})')
        return self._answer('~/promote', 'promote', req, resp, req.task, step)

    def _on_rollback(self, req, resp):
        def step():
            before = self.table.get(req.task)
            a, what = self.table.rollback(req.task, req.reason, req.expected_id)
            gone = before.candidate if what == CANDIDATE else before.production
            return a, self.registry.resolve(gone.id), 'rolled_back', (
                f'{req.task}: rolled back {what} {gone.describe()}; production {a.production.describe()}')
        return self._answer('~/rollback', 'rollback', req, resp, req.task, step)
