"""A task's models by role (its aliases), each by immutable content id, kept across restarts.

  production  serves the task
  candidate   on trial: in shadow (a sampled share of frames at background priority, whose
              answers never become a verdict) or on canary (it serves the canary cells)
  previous    production before the last promotion: what rolling production back restores

A request names a role as '<task>@production', '<task>@candidate' or '<task>@serving' (the
candidate on the task's canary cells, production everywhere else). The executor resolves the
role to a content id when the request arrives, so a rollout step takes effect with the next
request of every cell at once, without waiting for the cells to hear of it.

Every change is written to the store (SQLite) before it takes effect: a restarted executor
serves what was promoted, not what its parameters named at first. The models' paths are kept
with the ids, so a restart can load a promoted model that is not in the model list.
"""
from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field, replace

ROLE_SEP = '@'
PRODUCTION, CANDIDATE, SERVING = 'production', 'candidate', 'serving'
ROLES = (PRODUCTION, CANDIDATE, SERVING)
STORE_KEY = 'model_aliases'


class Mode(enum.IntEnum):
    # values match cellos_interfaces/ModelAlias MODE_*
    NONE = 0
    SHADOW = 1
    CANARY = 2


class AliasError(ValueError):
    pass


@dataclass(frozen=True)
class ModelRef:
    id: str = ''
    name: str = ''
    path: str = ''

    def __bool__(self) -> bool:
        return bool(self.id)

    def describe(self) -> str:
        return f'{self.name} {self.id[:12]}' if self.id else '(none)'


@dataclass(frozen=True)
class TaskAliases:
    task: str
    production: ModelRef = ModelRef()
    candidate: ModelRef = ModelRef()
    mode: Mode = Mode.NONE
    canary_cells: tuple[str, ...] = ()
    previous: ModelRef = ModelRef()
    reason: str = ''
    changed_s: float = 0.0

    def serving(self, cell_ns: str) -> ModelRef:
        """The model that decides for ``cell_ns``: the candidate on its canary cells, else production."""
        if self.candidate and self.mode == Mode.CANARY and cell_ns in self.canary_cells:
            return self.candidate
        return self.production

    def to_json(self) -> dict:
        d = asdict(self)
        d['mode'] = int(self.mode)
        d['canary_cells'] = list(self.canary_cells)
        return d

    @classmethod
    def from_json(cls, d: dict) -> 'TaskAliases':
        refs = {k: ModelRef(**d.get(k) or {}) for k in ('production', 'candidate', 'previous')}
        return cls(str(d['task']), mode=Mode(int(d.get('mode', 0))), canary_cells=tuple(d.get('canary_cells', ())),
                   reason=str(d.get('reason', '')), changed_s=float(d.get('changed_s', 0.0)), **refs)


def split_ref(ref: str) -> tuple[str, str] | None:
    """'inspection@serving' -> ('inspection', 'serving'); None for a plain model name or id."""
    task, sep, role = ref.rpartition(ROLE_SEP)
    return (task, role) if sep and task else None


def role_ref(task: str, role: str) -> str:
    return f'{task}{ROLE_SEP}{role}'


def incompatibility(production, candidate) -> str:
    """Why a loaded candidate cannot stand in for production (other inputs or outputs), or ''.
    Both are LoadedModel-like: ``inputs`` (name, dtype, shape) and ``outputs`` (names).
    """
    def inputs(m):
        return [(s.name, s.dtype, tuple(s.shape[1:])) for s in m.inputs]
    if inputs(production) != inputs(candidate):
        return f'inputs {inputs(candidate)} differ from production\'s {inputs(production)}'
    if list(production.outputs) != list(candidate.outputs):
        return f'outputs {list(candidate.outputs)} differ from production\'s {list(production.outputs)}'
    return ''


@dataclass
class AliasTable:
    """The aliases of every task of one executor. ``store``: a StateStore-like object (get/put of
    JSON values) or None (in memory). Each method returns the task's aliases after the change
    and raises AliasError with the reason when the step is refused (nothing changed then).
    """

    store: object = None
    clock: object = time.time
    _tasks: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.store is not None:
            for d in self.store.get(STORE_KEY) or []:
                a = TaskAliases.from_json(d)
                self._tasks[a.task] = a

    # -- reading ----------------------------------------------------------------------------
    def get(self, task: str) -> TaskAliases | None:
        return self._tasks.get(task)

    def all(self) -> list[TaskAliases]:
        return [self._tasks[t] for t in sorted(self._tasks)]

    def resolve(self, ref: str, cell_ns: str) -> str | None:
        """The content id a role reference names for ``cell_ns``; None when ``ref`` names no role
        (a model name or id: the registry resolves it). AliasError when the role names nothing.
        """
        split = split_ref(ref)
        if split is None:
            return None
        task, role = split
        a = self._tasks.get(task)
        if a is None or not a.production:
            raise AliasError(f'task {task!r} has no production model' + (
                f' (tasks with one: {", ".join(t for t, x in self._tasks.items() if x.production)})'
                if any(x.production for x in self._tasks.values()) else ''))
        if role == PRODUCTION:
            return a.production.id
        if role == SERVING:
            return a.serving(cell_ns).id
        if role == CANDIDATE:
            if not a.candidate:
                raise AliasError(f'task {task!r} has no candidate now')
            return a.candidate.id
        raise AliasError(f'{ref!r}: unknown role {role!r} (roles: {", ".join(ROLES)})')

    def roles_of(self, model_id: str) -> list[str]:
        """'inspection production', ... for every role ``model_id`` holds (unload is refused then)."""
        out = []
        for a in self.all():
            for role, ref in ((PRODUCTION, a.production), (CANDIDATE, a.candidate)):
                if ref.id == model_id:
                    out.append(f'{a.task} {role}')
        return out

    def model_refs(self) -> list[ModelRef]:
        """Every model a role names (production, candidate, previous): what a restart must load."""
        return [r for a in self.all() for r in (a.production, a.candidate, a.previous) if r]

    # -- steps --------------------------------------------------------------------------------
    def _commit(self, new: TaskAliases) -> TaskAliases:
        new = replace(new, changed_s=float(self.clock()))
        tasks = {**self._tasks, new.task: new}
        if self.store is not None:
            self.store.put(STORE_KEY, [tasks[t].to_json() for t in sorted(tasks)])
        self._tasks = tasks
        return new

    def set_production(self, task: str, model: ModelRef, reason: str) -> TaskAliases:
        """A task's production outright (first production from parameters, or a stored one that
        cannot be loaded any more); the candidate, if any, stays.
        """
        _check_task(task)
        old = self._tasks.get(task) or TaskAliases(task)
        previous = old.production if old.production and old.production.id != model.id else old.previous
        return self._commit(replace(old, production=model, previous=previous, reason=reason))

    def set_candidate(self, task: str, model: ModelRef, mode: Mode, canary_cells, reason: str) -> TaskAliases:
        a = self._tasks.get(task)
        if a is None or not a.production:
            raise AliasError(f'task {task!r} has no production model: a candidate is judged against production')
        if model.id == a.production.id:
            raise AliasError(f'{model.describe()} is production of {task!r} already')
        mode = Mode(mode)
        cells = tuple(dict.fromkeys(c.strip('/') for c in canary_cells if c.strip('/')))
        if mode == Mode.NONE:
            raise AliasError('mode: shadow or canary (to remove a candidate, roll it back)')
        if mode == Mode.CANARY and not cells:
            raise AliasError('a canary needs at least one cell (canary_cells)')
        if mode == Mode.SHADOW and cells:
            raise AliasError('canary_cells are for mode canary; a shadow candidate serves no cell')
        return self._commit(replace(a, candidate=model, mode=mode, canary_cells=cells, reason=reason))

    def promote(self, task: str, reason: str, expected_id: str = '') -> TaskAliases:
        a = self._tasks.get(task)
        if a is None or not a.candidate:
            raise AliasError(f'task {task!r} has no candidate to promote')
        _expect(expected_id, a.candidate, 'candidate')
        return self._commit(replace(a, previous=a.production, production=a.candidate, candidate=ModelRef(),
                                    mode=Mode.NONE, canary_cells=(), reason=reason))

    def rollback(self, task: str, reason: str, expected_id: str = '') -> tuple[TaskAliases, str]:
        """Remove the candidate; with none, production returns to the previous one. Returns the
        aliases after and what was rolled back ('candidate' or 'production').
        """
        a = self._tasks.get(task)
        if a is None:
            raise AliasError(f'task {task!r} has no aliases')
        if a.candidate:
            _expect(expected_id, a.candidate, 'candidate')
            return self._commit(replace(a, candidate=ModelRef(), mode=Mode.NONE, canary_cells=(),
                                        reason=reason)), CANDIDATE
        if not a.previous:
            raise AliasError(f'task {task!r} has no candidate and no previous production to return to')
        _expect(expected_id, a.production, 'production')
        return self._commit(replace(a, production=a.previous, previous=ModelRef(), reason=reason)), PRODUCTION


def _check_task(task: str) -> None:
    if not task or ROLE_SEP in task or task != task.strip():
        raise AliasError(f'task {task!r}: a name without {ROLE_SEP!r} or spaces')


def _expect(expected_id: str, ref: ModelRef, what: str) -> None:
    if expected_id and not ref.id.startswith(expected_id.lower()):
        raise AliasError(f'the {what} is {ref.describe()}, not {expected_id[:12]}: nothing done '
                         '(the step was decided on figures of another model)')
