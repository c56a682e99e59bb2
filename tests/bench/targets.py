"""The benchmarks' targets, in one place, and the table `make bench` ends with.

Every benchmark prints one line ``BENCH <name> key=value ...``. A target is a row of TARGETS:
(benchmark, figure, comparison, target, what it means). ``benchmark`` is a BENCH name, or a name
with key=value fields that pick one of several lines of that name (``phase_scale cells=32``).
``target`` is a number, or an expression over the same line's figures
(``'attainment_without - 0.005'``). Adding a benchmark with a target = adding its rows here.

    python tests/bench/targets.py log/bench.log    # the table for a `make bench` log
"""
from __future__ import annotations

import ast
import operator
import sys

TARGETS = [
    ('phase', 'ratio', '<=', 1.5, 'inter-cell phase error p99 / the cells\' own timer jitter p99'),
    ('phase', 'relock_cycles', '<=', 10, 'cycles a cell needs to lock again after a disturbance'),
    ('phase', 'phase_p99_ms', '<=', 1.0, 'inter-cell phase error p99, 8 cells at 50 Hz, both cores loaded'),
    ('phase', 'false_lost', '==', 0, 'cells called lost that never failed'),
    ('phase_scale cells=32', 'locked', '==', 32, 'cells locked at the end, 32 cells at 50 Hz'),
    ('phase_scale cells=32', 'false_lost', '==', 0, 'cells called lost that never failed (all locked; a loss '
     'that the ticks its own cycle thread skipped explain is not false)'),
    ('phase_scale cells=32', 'phase_p99_ms', '<=', 2.0, 'inter-cell phase error p99 (staggered offsets removed)'),
    ('phase_scale cells=32', 'per_cell_growth', '<=', 1.5,
     "the coordinator's CPU per cell and second at 32 cells / at 8 (must not grow with N)"),
    ('stall', 'burst_cycles', '==', 0, 'catch-up cycles after a 2 s stall (ticks are skipped, never doubled)'),
    ('stall', 'relock_cycles', '<=', 10, 'cycles to lock again after a 2 s stall'),
    ('stall', 'false_lost', '==', 0, 'cells called lost that were not frozen'),
    ('stall', 'detect_p99_ms', '<=', 60, 'a frozen cell reported lost within 3 periods at 50 Hz (p99)'),
    ('hosts', 'detect_ms', '<=', 60, 'a cut link reported lost within 3 periods at 50 Hz (worst cut)'),
    ('hosts', 'relock_cycles', '<=', 10, 'cycles to lock again after the link came back (worst cut)'),
    ('hosts', 'false_lost', '==', 0, 'lost events no cut explains'),
    ('hosts', 'offset_err_ms', '<=', 1.0, "the coordinator's clock offset estimate against the host's fake clock"),
    ('executor_overhead transport=shm', 'ratio', '>=', 0.95,
     'inferences/s through the executor (shared memory, same host) / ONNX Runtime in-process'),
    ('executor_overload', 'critical_attainment_min', '>=', 0.999,
     'critical requests in time at 2x overload, worst of 5 runs (in-process and over DDS)'),
    ('executor_overload', 'unanswered', '==', 0, 'requests without an answer'),
    ('executor_flood', 'attainment_with_min', '>=', 'attainment_without_min - 0.005',
     "the other cells' attainment with a cell flooding 10x its share, worst of 5 runs"),
    ('line_flow', 'overflows', '==', 0, 'parts that reached a full buffer (coordinated line)'),
    ('line_flow', 'dropped', '==', 0, 'parts lost (coordinated line)'),
    ('energy', 'critical_misses', '==', 0, 'critical work gated or late'),
    ('energy', 'deferrable_misses', '==', 0, 'deferrable jobs past their deadline'),
    ('audit', 'missing', '==', 0, 'inspections the line published that are not in the recording'),
    ('audit', 'kill_loss_s', '<=', 1.0, 'seconds of messages a SIGKILL of the recorder loses'),
    ('rollout', 'verdicts_changed', '==', 0, 'verdicts not production\'s while a bad candidate runs in shadow'),
    ('rollout', 'not_production', '==', 0, 'verdicts served by the shadow candidate'),
    ('rollout', 'rollback_cycles', '<=', 1.0, 'canary cycles from the figures crossing a threshold to the rollback'),
    ('fuzz', 'crashes', '==', 0, 'processes the fuzz killed'),
    ('fuzz', 'line_locked_after', '==', 1, 'the line locked again, parts conserved, after every family'),
]

COMPARE = {'<=': operator.le, '<': operator.lt, '>=': operator.ge, '>': operator.gt, '==': operator.eq}


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def parse(lines) -> list[tuple[str, dict]]:
    """(name, {key: value}) of every BENCH line (pytest's progress dots may precede it); words
    other than name=value, and all in parentheses, are comments.
    """
    out = []
    for line in lines:
        words = line[line.find('BENCH '):].split() if 'BENCH ' in line else []
        if len(words) < 2:
            continue
        figures, depth = {}, 0
        for w in words[2:]:
            depth += w.startswith('(')
            if not depth:
                k, eq, v = w.partition('=')
                if eq and v and k.isidentifier():
                    figures[k] = _number(v)
            depth -= w.endswith(')') and depth > 0
        out.append((words[1], figures))
    return out


def _value(expr, figures: dict):
    """A number, or an arithmetic expression over the line's figures."""
    if isinstance(expr, (int, float)):
        return expr
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            return figures[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(f'target {expr!r}: only numbers, figures and + - * /')
    return ev(ast.parse(expr, mode='eval').body)


def _matches(spec: str, name: str, figures: dict) -> bool:
    want, *fields = spec.split()
    return want == name and all(str(figures.get(k)) == v for k, _, v in (f.partition('=') for f in fields))


def check(benches: list[tuple[str, dict]], targets=TARGETS) -> list[tuple]:
    """One row per target and matching BENCH line: (benchmark, figure, value, target text, met)."""
    rows = []
    for spec, key, op, target, _why in targets:
        lines = [(name, f) for name, f in benches if _matches(spec, name, f)]
        if not lines:
            rows.append((spec, key, None, f'{op} {target}', None))
        for name, figures in lines:
            label = spec if ' ' in spec else name
            if key not in figures:
                rows.append((label, key, None, f'{op} {target}', None))
                continue
            try:
                goal = _value(target, figures)
            except KeyError as e:
                rows.append((label, key, figures[key], f'{op} {target} ({e.args[0]} not reported)', None))
                continue
            text = f'{op} {target}' if isinstance(target, (int, float)) else f'{op} {target} = {goal:.4g}'
            rows.append((label, key, figures[key], text, bool(COMPARE[op](figures[key], goal))))
    untargeted = sorted({name for name, _ in benches} - {s.split()[0] for s, *_ in targets})
    rows += [(name, '-', None, 'no target', None) for name in untargeted]
    return rows


def table(rows) -> str:
    head = ('benchmark', 'figure', 'value', 'target', 'met')
    cells = [head] + [(b, k, '-' if v is None else f'{v:g}' if isinstance(v, (int, float)) else str(v), t,
                       'yes' if m else 'NO' if m is False else ('no figure' if t != 'no target' else '-'))
                      for b, k, v, t, m in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    judged = [m for *_, m in rows if m is not None]
    missing = sum(1 for *_, t, m in rows if m is None and t != 'no target')
    lines.append(f'targets met: {sum(judged)} of {len(judged)}'
                 + (f'; {missing} without a figure (benchmark failed, skipped or not run)' if missing else ''))
    return '\n'.join(lines)


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else 'log/bench.log'
    with open(path, errors='replace') as f:
        benches = parse(f)
    print(f'\n=== make bench: each figure against its target (tests/bench/targets.py; log: {path}) ===')
    print(table(check(benches)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
