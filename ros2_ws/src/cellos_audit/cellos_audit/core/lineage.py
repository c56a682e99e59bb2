"""Lineage of the decisions in one or more recordings: each inspection joined, at the moment the
recorder received it, with

  - the inference result that decided it (same cell, same request id): the executor's content
    id of the model, status, queue / batch / compute times, backend, and its energy;
  - the cell's energy gate state then in force (level, reason, price, carbon);
  - the site feed's carbon intensity then in force (the gate's when the feed was not recorded):
    carbon of the decision = energy (kWh) x intensity (g/kWh);
  - when and how that model was loaded (registry change, and the operator action behind it);
  - any operator action naming the part (reviews).

Cells are named by their topics (<line>/<cell>/...), so a line's cells keep apart whatever the
messages' cell_id says. Status, verdict and change names come from the constants of the
definitions stored in the recording.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from cellos_audit.core.audit_topics import IFACE, split_cell_topic
from cellos_audit.core.message_definitions import constants
from cellos_audit.core.recording_reader import Decoder, FileReport, read_records, type_short
from cellos_common.core.gate_level import label as gate_label

TYPES = {IFACE + t for t in ('Inspection', 'InferenceResult', 'GateState', 'EnergySignal', 'OperatorAction',
                             'ModelRegistryChange')}
MEASURED = ('nvml', 'rapl')
SHADOW_TASK_SUFFIX = '_shadow'   # a cell's shadow requests (cellos_vision vision_rollout)


@dataclass
class Decision:
    time: str                   # ISO 8601 UTC, when the recorder received the inspection
    time_ns: int
    line: str
    cell: str
    part_id: int
    request_id: int
    verdict: str
    defect_class: str
    confidence: float
    reason: str
    model: str                  # what the cell asked for (name or id)
    model_id: str               # the executor's content id (sha256 of the ONNX file); '' without a result
    frame_sha256: str
    capture_ms: float
    preprocess_ms: float
    inference_ms: float
    latency_ms: float           # capture + preprocess + inference round trip
    gate_level: str = 'unknown'
    gate_reason: str = ''
    price_per_mwh: float = math.nan
    carbon_g_per_kwh: float = math.nan
    status: str = ''            # inference status ('' when no request was sent)
    status_reason: str = ''
    queue_ms: float = math.nan
    batch_wait_ms: float = math.nan
    compute_ms: float = math.nan
    batch_size: int = 0
    backend: str = ''
    energy_wh: float = 0.0
    energy_source: str = ''     # nvml | rapl (measured) | model (modelled) | '' (did not run)
    carbon_g: float = 0.0
    ground_truth: str = ''
    cell_id: str = ''           # as the message said
    model_loaded: dict = field(default_factory=dict)   # the registry change that loaded model_id
    reviews: list = field(default_factory=list)        # operator actions naming this part
    shadow: list = field(default_factory=list)         # shadow models' verdicts on this part (never served)

    @property
    def measured(self) -> bool:
        return self.energy_source in MEASURED

    def row(self) -> dict:
        """Flat fields for CSV (nested ones as text)."""
        d = asdict(self)
        d['model_loaded'] = (f"{d['model_loaded'].get('time', '')} {d['model_loaded'].get('cause', '')}"
                             .strip() if d['model_loaded'] else '')
        d['reviews'] = '; '.join(f"{r['time']} {r['action']} {r['operator_name'] or r['node']}: {r['reason']}"
                                 for r in self.reviews)
        d['shadow'] = '; '.join(f"{s['model_id'][:12]} {s['verdict']} {s['defect_class']} {s['confidence']:.2f}"
                                for s in self.shadow)
        return d


@dataclass
class Action:
    time: str
    time_ns: int
    node: str
    service: str
    action: str
    target: str
    reason: str
    request: str
    success: bool
    message: str
    operator_name: str
    part_id: int


@dataclass
class RegistryChange:
    time: str
    time_ns: int
    executor_id: str
    change: str
    model_id: str
    model_name: str
    path: str
    cause: str
    reason: str
    operator_name: str = ''     # rollout steps: who asked
    roles: str = ''             # rollout steps: the task's roles after the step


@dataclass
class Audit:
    decisions: list[Decision] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    registry: list[RegistryChange] = field(default_factory=list)
    files: list[FileReport] = field(default_factory=list)
    unmatched_results: int = 0   # results whose inspection is not in the recording (late results)


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec='milliseconds').replace(
        '+00:00', 'Z')


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def load(paths: Iterable[str | Path]) -> Audit:
    """Read the recordings and build the decisions, operator actions and registry changes."""
    audit = Audit()
    decode = Decoder()
    records = sorted(read_records(paths, TYPES, audit.files), key=lambda r: r.log_time)
    names: dict[str, dict] = {}

    def named(record, prefix: str, value: int) -> str:
        key = (record.type, prefix)
        if key not in names:
            names[key] = constants(record.schema.data.decode(), prefix) if record.schema is not None else {}
        return names[key].get(int(value), str(value))

    # a result and its inspection arrive microseconds apart on two topics, in either order: each
    # inspection takes its cell's result of the same request id nearest before it (or just after)
    results: dict[tuple, list] = defaultdict(list)
    shadows: dict[tuple, list] = defaultdict(list)
    for r in records:
        if type_short(r.type) == 'InferenceResult':
            where = split_cell_topic(r.topic)
            msg = decode(r)
            if msg.task.endswith(SHADOW_TASK_SUFFIX):   # answers a shadow request: its verdict is on vision/shadow
                continue
            results[(f'{where[0]}/{where[1]}' if where else '', int(msg.request_id))].append((r, msg))
    gates: dict[str, object] = {}
    feed = None
    # the load of each model id, in a pass of its own: the event is latched, and a recorder that
    # matched the registry late (a busy machine) records it after the first decisions it explains
    loaded: dict[str, list] = defaultdict(list)
    for r in records:
        if type_short(r.type) == 'ModelRegistryChange':
            msg = decode(r)
            ch = RegistryChange(iso(r.log_time), r.log_time, msg.executor_id, named(r, 'CHANGE_', msg.change).lower(),
                                msg.model.id, msg.model.name, msg.path, msg.cause, msg.reason,
                                getattr(msg, 'operator_name', ''), _roles(getattr(msg, 'alias', None)))
            audit.registry.append(ch)
            if ch.change == 'loaded':
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                loaded[ch.model_id].append((stamp or r.log_time, {
                    'time': iso(stamp or r.log_time), 'cause': ch.cause, 'executor': ch.executor_id,
                    'path': ch.path}))
    for r in records:
        kind = type_short(r.type)
        if kind in ('InferenceResult', 'ModelRegistryChange'):
            continue
        msg = decode(r)
        where = split_cell_topic(r.topic)
        cell_key = f'{where[0]}/{where[1]}' if where else ''
        if kind == 'GateState':
            gates[cell_key] = msg
        elif kind == 'EnergySignal':
            feed = msg
        elif kind == 'OperatorAction':
            audit.actions.append(Action(
                iso(r.log_time), r.log_time, msg.node, msg.service, msg.action, msg.target, msg.reason, msg.request,
                bool(msg.success), msg.message, getattr(msg, 'operator_name', ''), int(getattr(msg, 'part_id', 0))))
        elif kind == 'Inspection' and where and where[2] == 'vision/shadow':
            shadows[(cell_key, int(msg.part_id))].append({
                'time': iso(r.log_time), 'model_id': msg.model_id, 'verdict': named(r, 'VERDICT_', msg.verdict),
                'defect_class': msg.defect_class, 'confidence': round(float(msg.confidence), 6),
                'reason': msg.reason})
        elif kind == 'Inspection' and where:
            request_id = int(getattr(msg, 'request_id', 0))
            result = _take(results.get((cell_key, request_id)), r.log_time) if request_id else None
            audit.decisions.append(_decision(r, msg, where, named, result, gates.get(cell_key), feed, loaded))
    audit.unmatched_results = sum(len(v) for v in results.values())
    _attach_reviews(audit)
    for d in audit.decisions:
        d.shadow = shadows.get((f'{d.line}/{d.cell}', d.part_id), [])
    return audit


# a result taken after its inspection by the recorder: the same moment, callbacks in the other order
# (microseconds); a result much later came after its request was published as late: not its cause
AFTER_NS = 50_000_000


def _take(candidates: list | None, t_ns: int):
    if not candidates:
        return None
    before = [c for c in candidates if c[0].log_time <= t_ns + AFTER_NS]
    if not before:
        return None
    best = max(before, key=lambda c: c[0].log_time)
    candidates.remove(best)
    return best


def _decision(r, msg, where, named, result, gate, feed, loaded) -> Decision:
    d = Decision(
        time=iso(r.log_time), time_ns=r.log_time, line=where[0], cell=where[1], part_id=int(msg.part_id),
        request_id=int(getattr(msg, 'request_id', 0)), verdict=named(r, 'VERDICT_', msg.verdict),
        defect_class=msg.defect_class, confidence=round(float(msg.confidence), 6), reason=msg.reason,
        model=msg.model_id, model_id='', frame_sha256=getattr(msg, 'frame_sha256', ''),
        capture_ms=msg.capture_ms, preprocess_ms=msg.preprocess_ms, inference_ms=msg.inference_ms,
        latency_ms=msg.capture_ms + msg.preprocess_ms + msg.inference_ms,
        ground_truth=msg.ground_truth_class if msg.has_ground_truth else '', cell_id=msg.cell_id)
    if gate is not None:
        d.gate_level, d.gate_reason = gate_label(gate.level), gate.reason
        d.price_per_mwh, d.carbon_g_per_kwh = gate.price_per_mwh, gate.carbon_g_per_kwh
    if feed is not None:   # the site's own figure is the authority for carbon
        d.carbon_g_per_kwh = feed.carbon_g_per_kwh
        if gate is None:
            d.price_per_mwh = feed.price_per_mwh
    if result is not None:
        rr, res = result
        d.model_id = res.model_id
        d.status, d.status_reason = named(rr, 'STATUS_', res.status), res.reason
        d.queue_ms, d.batch_wait_ms, d.compute_ms = res.queue_ms, res.batch_wait_ms, res.compute_ms
        d.batch_size, d.backend = int(res.batch_size), res.backend
        d.energy_wh = float(getattr(res, 'energy_wh', 0.0))
        d.energy_source = getattr(res, 'energy_source', '')
        if d.energy_wh and math.isfinite(d.carbon_g_per_kwh):
            d.carbon_g = d.energy_wh / 1000.0 * d.carbon_g_per_kwh
        loads = sorted(loaded.get(d.model_id, []), key=lambda tl: tl[0])
        before = [info for t, info in loads if t <= r.log_time]
        d.model_loaded = dict(before[-1] if before else loads[0][1] if loads else {})
    return d


def _roles(alias) -> str:
    if alias is None or not alias.task:
        return ''
    text = f'{alias.task}: production {alias.production_name} {alias.production_id[:12]}'
    if alias.candidate_id:
        text += f', candidate {alias.candidate_name} {alias.candidate_id[:12]} (mode {alias.mode}'
        text += f' on {" ".join(alias.canary_cells)})' if alias.canary_cells else ')'
    return text


def _attach_reviews(audit: Audit) -> None:
    by_part = defaultdict(list)
    for a in audit.actions:
        if a.part_id:
            by_part[a.part_id].append(a)
    for d in audit.decisions:
        for a in by_part.get(d.part_id, []):
            if not a.target or a.target.rstrip('/').endswith(d.cell):
                d.reviews.append(asdict(a))


# -- queries --------------------------------------------------------------------------------
def by_part(audit: Audit, part_id: int, cell: str | None = None) -> list[Decision]:
    return [d for d in audit.decisions if d.part_id == part_id and (cell is None or d.cell == cell)]


def by_window(audit: Audit, cell: str | None, start_ns: int | None, end_ns: int | None) -> list[Decision]:
    return [d for d in audit.decisions if (cell is None or d.cell == cell)
            and (start_ns is None or d.time_ns >= start_ns) and (end_ns is None or d.time_ns < end_ns)]


def by_model(audit: Audit) -> list[dict]:
    """Per model content id (the name the cells asked for where no result names one): decisions
    and the share of each verdict.
    """
    groups: dict[str, list[Decision]] = defaultdict(list)
    for d in audit.decisions:
        groups[d.model_id or f'(no result) {d.model}'].append(d)
    out = []
    for model_id, ds in sorted(groups.items()):
        counts = defaultdict(int)
        for d in ds:
            counts[d.verdict] += 1
        out.append({'model_id': model_id, 'names': sorted({d.model for d in ds}), 'decisions': len(ds),
                    'verdicts': dict(sorted(counts.items())),
                    'shares': {v: round(n / len(ds), 4) for v, n in sorted(counts.items())},
                    'energy_wh': sum(d.energy_wh for d in ds), 'carbon_g': sum(d.carbon_g for d in ds)})
    return out


GROUPINGS = ('part', 'model', 'hour', 'cell')


def energy(audit: Audit, by: str) -> list[dict]:
    """Energy (Wh) and carbon (g) summed per part (line + part id, over the cells that inspected it),
    per model, per hour (UTC) or per cell; measured and modelled decisions counted apart.
    """
    if by not in GROUPINGS:
        raise ValueError(f"energy by '{by}': one of {', '.join(GROUPINGS)}")
    keys = {'part': lambda d: f'{d.line} part {d.part_id}', 'model': lambda d: d.model_id or d.model,
            'hour': lambda d: d.time[:13] + ':00Z', 'cell': lambda d: f'{d.line}/{d.cell}'}[by]
    groups: dict[str, dict] = {}
    for d in audit.decisions:
        g = groups.setdefault(keys(d), {by: keys(d), 'decisions': 0, 'energy_wh': 0.0, 'carbon_g': 0.0,
                                        'measured': 0, 'modelled': 0, 'not_run': 0})
        g['decisions'] += 1
        g['energy_wh'] += d.energy_wh
        g['carbon_g'] += d.carbon_g
        g['measured' if d.measured else 'modelled' if d.energy_source else 'not_run'] += 1
    return [groups[k] for k in sorted(groups, key=_natural)]


def _natural(key: str):
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', key)]


def parse_time(text: str, origin_ns: int) -> int:
    """'2024-05-01T12:00:00Z', epoch seconds, or '+12.5' (seconds after ``origin_ns``) -> ns."""
    t = text.strip()
    if t.startswith('+'):
        return origin_ns + int(float(t[1:]) * 1e9)
    try:
        return int(float(t) * 1e9)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t.replace('Z', '+00:00'))
    except ValueError:
        raise ValueError(f"time '{text}': ISO 8601, epoch seconds or +seconds from the start") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1e9)
