"""cellos_lineage: questions to one or more audit recordings (bag folders or .mcap files).

  cellos_lineage part 1234 [--cell cell_02] REC...     the chain of a part: frame digest -> model id
                                                       -> verdict -> gate, cost -> operator reviews
  cellos_lineage window --cell cell_02 --from +10 --to +20 REC...
                                                       decisions of a cell in a time window (ISO 8601,
                                                       epoch seconds, or +seconds from the start)
  cellos_lineage model REC...                          decisions and verdict shares per model id
  cellos_lineage energy --by part|model|hour|cell REC...   energy (Wh) and carbon (g), summed
  cellos_lineage actions REC...                        operator actions and model registry changes
  cellos_lineage export REC...                         every decision

--format text (default) | json | csv, -o FILE to write it to a file. No ROS install needed.
Exit status: 0, 1 when a part or window has no decision, 2 on a bad recording or argument.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from cellos_audit.core import lineage
from cellos_audit.core.recording_reader import RecordingError


def _num(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)) else '-'


def _energy_text(d) -> str:
    if not d.energy_source:
        return 'none (inference did not run)'
    how = 'measured, ' + d.energy_source if d.measured else 'modelled'
    carbon = f'{d.carbon_g * 1e3:.4f} mg CO2e' if d.carbon_g else 'carbon unknown (no feed recorded)'
    return f'{d.energy_wh * 1e3:.4f} mWh ({how}); {carbon}'


def chain_text(d) -> str:
    lines = [f'part {d.part_id} at {d.line}/{d.cell}, {d.time}',
             f'  frame    sha256 {d.frame_sha256 or "(no frame)"}',
             f'  model    {d.model} -> id {d.model_id or "(no result)"}'
             + (f', backend {d.backend}' if d.backend else '')]
    if d.model_loaded:
        m = d.model_loaded
        lines.append(f"           loaded {m.get('time', '?')} on executor {m.get('executor', '?')} "
                     f"({m.get('cause', '?')})"
                     + (f" from {m['path']}" if m.get('path') else ''))
    lines += [f'  verdict  {d.verdict} {d.defect_class or "-"} confidence {d.confidence:.3f}'
              + (f' ({d.reason})' if d.reason else '')
              + (f'; ground truth {d.ground_truth}' if d.ground_truth else ''),
              f'  timing   latency {d.latency_ms:.2f} ms (capture {d.capture_ms:.2f}, preprocess '
              f'{d.preprocess_ms:.2f}, inference round trip {d.inference_ms:.2f}; queue {_num(d.queue_ms, ".2f")}, '
              f'batch wait {_num(d.batch_wait_ms, ".2f")}, compute {_num(d.compute_ms, ".2f")} ms, '
              f'batch {d.batch_size}, status {d.status or "-"})',
              f'  gate     {d.gate_level}' + (f' ({d.gate_reason})' if d.gate_reason else '')
              + f'; price {_num(d.price_per_mwh, ".1f")} USD/MWh, carbon {_num(d.carbon_g_per_kwh, ".0f")} g/kWh',
              f'  cost     {_energy_text(d)}']
    if d.reviews:
        lines += [f"  review   {r['time']} {r['action']} by {r['operator_name'] or r['node']}: {r['reason']}"
                  for r in d.reviews]
    else:
        lines.append('  review   none')
    return '\n'.join(lines)


DECISION_COLUMNS = ('time', 'cell', 'part_id', 'verdict', 'confidence', 'model_id', 'gate_level', 'latency_ms',
                    'energy_wh', 'energy_source', 'carbon_g')


def table(rows: list[dict], columns) -> str:
    def cell(v):
        if isinstance(v, float):
            return _num(v, '.6g')
        if isinstance(v, dict):
            return ' '.join(f'{k}={_num(x, ".3g") if isinstance(x, float) else x}' for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return ','.join(map(str, v))
        return str(v)
    text = [[cell(r.get(c, '')) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in text]) for i, c in enumerate(columns)]
    out = ['  '.join(c.ljust(w) for c, w in zip(columns, widths))]
    out += ['  '.join(v.ljust(w) for v, w in zip(t, widths)) for t in text]
    return '\n'.join(out)


def render(rows: list[dict], columns, fmt: str) -> str:
    if fmt == 'json':
        return json.dumps(rows, indent=2, default=str)
    if fmt == 'csv':
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else list(columns), extrasaction='ignore')
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
        return buf.getvalue()
    return table(rows, columns)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog='cellos_lineage', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--format', choices=('text', 'json', 'csv'), default='text')
    ap.add_argument('-o', '--out', default=None, help='write to this file instead of standard output')
    sub = ap.add_subparsers(dest='query', required=True)
    p = sub.add_parser('part', help='the chain of one part')
    p.add_argument('part_id', type=int)
    p.add_argument('--cell', default=None, help="only this cell (e.g. 'cell_02')")
    w = sub.add_parser('window', help='decisions of a cell in a time window')
    w.add_argument('--cell', default=None)
    w.add_argument('--from', dest='start', default=None)
    w.add_argument('--to', dest='end', default=None)
    sub.add_parser('model', help='decisions and verdict shares per model')
    e = sub.add_parser('energy', help='energy and carbon summed')
    e.add_argument('--by', choices=lineage.GROUPINGS, default='part')
    sub.add_parser('actions', help='operator actions and model registry changes')
    sub.add_parser('export', help='every decision')
    for s in sub.choices.values():
        s.add_argument('recordings', nargs='+', help='bag folders or .mcap files')
    return ap.parse_args(argv)


def run(args) -> tuple[str, int]:
    audit = lineage.load(args.recordings)
    for f in audit.files:
        if not f.complete:
            print(f'note: {f.path}: {f.problem}', file=sys.stderr)
    fmt = args.format
    if args.query == 'part':
        found = lineage.by_part(audit, args.part_id, args.cell)
        if not found:
            return f'part {args.part_id}' + (f' at {args.cell}' if args.cell else '') + ' is not in the recording', 1
        if fmt == 'text':
            return '\n\n'.join(chain_text(d) for d in found), 0
        return render([asdict(d) if fmt == 'json' else d.row() for d in found], DECISION_COLUMNS, fmt), 0
    if args.query in ('window', 'export'):
        start = end = None
        origin = audit.decisions[0].time_ns if audit.decisions else 0
        if args.query == 'window':
            try:
                start = lineage.parse_time(args.start, origin) if args.start else None
                end = lineage.parse_time(args.end, origin) if args.end else None
            except ValueError as e:
                raise SystemExit(f'cellos_lineage: {e}') from None
        found = lineage.by_window(audit, getattr(args, 'cell', None), start, end)
        rows = [asdict(d) if fmt == 'json' else d.row() for d in found]
        return render(rows, DECISION_COLUMNS, fmt), 0 if found or args.query == 'export' else 1
    if args.query == 'model':
        return render(lineage.by_model(audit), ('model_id', 'names', 'decisions', 'verdicts', 'shares',
                                                'energy_wh', 'carbon_g'), fmt), 0
    if args.query == 'energy':
        return render(lineage.energy(audit, args.by), (args.by, 'decisions', 'energy_wh', 'carbon_g', 'measured',
                                                       'modelled', 'not_run'), fmt), 0
    rows = sorted([{'kind': 'operator action', **asdict(a)} for a in audit.actions]
                  + [{'kind': 'registry', **asdict(c)} for c in audit.registry], key=lambda r: r['time_ns'])
    return render(rows, ('time', 'kind', 'node', 'executor_id', 'action', 'change', 'target', 'model_id',
                         'reason', 'success', 'cause'), fmt), 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        text, code = run(args)
    except RecordingError as e:
        print(f'cellos_lineage: {e}', file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text if text.endswith('\n') else text + '\n')
    else:
        print(text)
    return code


if __name__ == '__main__':
    sys.exit(main())
