"""Hypothesis strategies for any ROS message or service request, built from its field types
(``get_fields_and_field_types``): integers at and around their type's limits (unknown enum
values included: every value of a uint8 is drawn, not only the constants), floats NaN, +-inf,
huge, tiny and negative, strings empty, huge, with NULs and odd unicode, arrays empty, huge or
random, nested messages recursively. ``examples(cls, n)`` draws n of them.
"""
from __future__ import annotations

import copy
import importlib
import math
import re

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

INT_RANGES = {'int8': (-2**7, 2**7 - 1), 'uint8': (0, 2**8 - 1), 'int16': (-2**15, 2**15 - 1),
              'uint16': (0, 2**16 - 1), 'int32': (-2**31, 2**31 - 1), 'uint32': (0, 2**32 - 1),
              'int64': (-2**63, 2**63 - 1), 'uint64': (0, 2**64 - 1), 'byte': (0, 255), 'octet': (0, 255),
              'char': (0, 255)}
FLOAT32_MAX = 3.4028234663852886e38
HUGE_STRING = 100_000          # characters
HUGE_ARRAY = 50_000            # elements of a number array (1 MB of bytes for a byte array)
REPEATED = 2_000               # copies of a small nested message in a huge array
# a message stays within a few MB: a huge array of nested messages repeats a small one
_SEQ = re.compile(r'sequence<([^,>]+)(?:, *(\d+))?>')
_ARR = re.compile(r'(.+)\[(\d+)\]')


def integers(kind: str):
    lo, hi = INT_RANGES[kind]
    # the type's limits, and the values just past every enum of the interfaces (GateState level 4,
    # InferenceResult status 14, CellCycle state 5)
    edges = sorted({x for x in (lo, lo + 1, -1, 0, 1, 2, 3, 4, 5, 13, 14, 255, 256, 2**31 - 1, 2**32 - 1, hi - 1, hi)
                    if lo <= x <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def floats(kind: str):
    big = FLOAT32_MAX if kind == 'float' else 1.7976931348623157e308
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0, big, -big, 1e-45 if kind == 'float' else 5e-324,
                -1.0, 1e9, -1e9, 1e15]
    return st.one_of(st.sampled_from(specials),
                     st.floats(width=32 if kind == 'float' else 64, allow_nan=True, allow_infinity=True))


def strings(small: bool = False):
    if small:
        return st.one_of(st.sampled_from(['', '\x00', 'line1', 'cell_01', 'nan']), st.text(max_size=8))
    return st.one_of(st.sampled_from(['', 'x' * HUGE_STRING, '\x00', 'a\x00b', '../../../etc/passwd', '~nouser/m.onnx',
                                      'line1', 'cell_01', '/line1/cell_01', 'inspection', 'ok', '\u202e\u0000\ufffd',
                                      'ü' * 1000, ' ', 'nan', '-1']),
                     st.text(max_size=40))


def _element(kind: str, depth: int, small: bool = False):
    if kind in INT_RANGES:
        return integers(kind)
    if kind in ('float', 'double', 'long double'):
        return floats(kind)
    if kind == 'boolean':
        return st.booleans()
    if kind in ('string', 'wstring') or kind.startswith('string<'):
        return strings(small)
    return message(msg_class(kind), depth + 1, small)


def _sequence(kind: str, depth: int, size: int | None, small: bool = False):
    if size is not None:
        return st.lists(_element(kind, depth, small), min_size=size, max_size=size)
    if small:
        return st.lists(_element(kind, depth, small), max_size=4)
    if kind in ('uint8', 'byte', 'octet', 'char'):
        return st.one_of(st.sampled_from([b'', bytes(HUGE_ARRAY * 20)]), st.binary(max_size=64))
    if kind in INT_RANGES or kind in ('float', 'double', 'boolean'):
        huge = st.just([_huge_value(kind)] * HUGE_ARRAY)
        return st.one_of(st.just([]), huge, st.lists(_element(kind, depth), max_size=12))
    if depth > 1:
        return st.just([])
    return st.one_of(st.just([]), st.lists(_element(kind, depth, small=True), max_size=3),
                     _element(kind, depth, small=True).map(lambda m: [m] * REPEATED))


def _huge_value(kind: str):
    if kind == 'boolean':
        return True
    if kind in ('float', 'double'):
        return math.nan
    return INT_RANGES[kind][1]


def field_strategy(kind: str, depth: int, small: bool = False):
    m = _SEQ.fullmatch(kind)
    if m:
        return _sequence(m.group(1), depth, None, small)
    m = _ARR.fullmatch(kind)
    if m:
        return _sequence(m.group(1), depth, int(m.group(2)), small)
    return _element(kind, depth, small)


def msg_class(kind: str):
    pkg, _, name = kind.partition('/')
    return getattr(importlib.import_module(f'{pkg}.msg'), name)


def message(cls, depth: int = 0, small: bool = False):
    """A strategy for instances of ``cls`` (a message or a service request class); ``small``: short
    strings and arrays only (an element of a huge array).
    """
    fields = cls.get_fields_and_field_types()
    return st.fixed_dictionaries({name: field_strategy(kind, depth, small) for name, kind in fields.items()}).map(
        lambda values: _build(cls, values))


def _build(cls, values):
    msg = cls()
    for name, value in values.items():
        if isinstance(value, (list, tuple)) and value and isinstance(getattr(msg, name), bytes):
            value = bytes(value)
        setattr(msg, name, value)
    return msg


def examples(cls, n: int, seed: int = 0) -> list:
    """n instances of ``cls`` drawn by hypothesis (generation only, no shrinking, no database)."""
    out = []

    @settings(max_examples=n, phases=[Phase.generate], deadline=None, database=None,
              suppress_health_check=list(HealthCheck), derandomize=True)
    @given(message(cls))
    def draw(m):
        out.append(m)
    draw._hypothesis_internal_use_seed = seed
    draw()
    return out[:n]


def mutant(template):
    """A strategy for copies of the message ``template`` with some of its fields replaced by
    extreme values: deep enough to pass the first checks (the right cell, a pending request id)
    and hit the ones behind them.
    """
    cls = type(template)
    fields = cls.get_fields_and_field_types()
    names = sorted(fields)

    def apply(changes):
        msg = copy.deepcopy(template)
        for name, value in changes.items():
            if isinstance(value, (list, tuple)) and value and isinstance(getattr(msg, name), bytes):
                value = bytes(value)
            setattr(msg, name, value)
        return msg
    return st.sets(st.sampled_from(names), min_size=1, max_size=min(3, len(names))).flatmap(
        lambda chosen: st.fixed_dictionaries({n: field_strategy(fields[n], 0) for n in chosen})).map(apply)


def mutants(template, n: int, seed: int = 0) -> list:
    out = []

    @settings(max_examples=n, phases=[Phase.generate], deadline=None, database=None,
              suppress_health_check=list(HealthCheck), derandomize=True)
    @given(mutant(template))
    def draw(m):
        out.append(m)
    draw._hypothesis_internal_use_seed = seed
    draw()
    return out[:n]
