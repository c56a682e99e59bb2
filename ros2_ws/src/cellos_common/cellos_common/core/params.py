"""Parameter specifications: declared once per node, validated in one place.

A node lists its parameters as ``ParamSpec`` entries; the rclpy shell turns them into
declared parameters with descriptors and ranges, and every value (start-up YAML,
command-line override or a later ``ros2 param set``) goes through ``validate`` here.

A map (``keys`` set) is a nested parameter per entry of a string-array parameter, as
generate_parameter_library's ``__map_<keys>`` does: with ``cells: [cell_01, cell_02]``, the map
``cell_offsets_ms`` is the parameters ``cell_offsets_ms.cell_01`` and ``cell_offsets_ms.cell_02``
(in YAML: ``cell_offsets_ms: {cell_01: 5.0}``). A '/' in a key (a cell namespace
'line1/cell_01') is a '.' in the parameter name (``cell_weights.line1.cell_01``): '.' is what
nests parameter names (a nested YAML mapping flattens to it), '/' separates ROS namespaces.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

_KEY = re.compile(r'[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*')


class ParameterError(ValueError):
    """A parameter value that a node must refuse, with a message an operator can act on."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: Sequence[Any] | None = None
    read_only: bool = False
    unit: str = ''
    # exclusive bounds: a period must be > 0, not >= 0
    min_exclusive: bool = False
    # a list parameter: the type of its entries (needed where the default is empty)
    item: type | None = None
    # a map: one parameter '<name>.<key>' (of this spec's type and range) per entry of the
    # string-array parameter named here; that one is read-only (the entries are declared at start)
    keys: str | None = None
    # a map: the default of some entries, ((key, value), ...), where it differs from ``default``
    key_defaults: tuple = ()

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def item_type(self) -> type | None:
        if self.type is not list:
            return None
        return self.item or (type(self.default[0]) if self.default else None)

    def check(self, value: Any, name: str | None = None) -> Any:
        """Return the value coerced to the spec's type, or raise ParameterError naming ``name``
        (a map entry's full name), else the spec's.
        """
        name = name or self.name
        want = self.type
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is list and isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ParameterError(
                f"parameter '{name}': expected {want.__name__}, got {type(value).__name__} ({value!r})")
        if want is list:
            return self._check_items(value, name)
        if want is float and not math.isfinite(value):
            raise ParameterError(f"parameter '{name}': {value!r} is not a finite number")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(
                f"parameter '{name}': {value!r} is not one of {list(self.choices)}")
        if self.min is not None:
            if value < self.min or (self.min_exclusive and value == self.min):
                op = '>' if self.min_exclusive else '>='
                raise ParameterError(
                    f"parameter '{name}': {value!r}{self.unit} must be {op} {self.min}{self.unit}")
        if self.max is not None and value > self.max:
            raise ParameterError(
                f"parameter '{name}': {value!r}{self.unit} must be <= {self.max}{self.unit}")
        return value

    def default_for(self, key: str) -> Any:
        """A map entry's default."""
        return dict(self.key_defaults).get(key, self.default)

    def _check_items(self, value: list, name: str) -> list:
        item = self.item_type
        if item is None:
            return value
        out = []
        for v in value:
            if item is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, item) or (item is int and isinstance(v, bool)):
                raise ParameterError(f"parameter '{name}': expected a list of {item.__name__}, got {value!r}")
            if item is float and not math.isfinite(v):
                raise ParameterError(f"parameter '{name}': {v!r} is not a finite number")
            if self.choices is not None and v not in self.choices:
                raise ParameterError(f"parameter '{name}': {v!r} is not one of {list(self.choices)}")
            out.append(v)
        return out


def entry_name(map_name: str, key: str) -> str:
    """The parameter name of a map's entry: 'cell_weights' + 'line1/cell_01' -> 'cell_weights.line1.cell_01'."""
    return f"{map_name}.{key.replace('/', '.')}"


def check_keys(spec: ParamSpec, keys: list) -> list:
    """The entries of a map's key parameter (``spec``): names, each once; else ParameterError."""
    bad = [k for k in keys if not _KEY.fullmatch(k)]
    if bad:
        raise ParameterError(f"parameter '{spec.name}': {', '.join(repr(b) for b in bad)} is not a name "
                             "(a letter, then letters, digits, '_'; '/' between parts)")
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ParameterError(f"parameter '{spec.name}': {', '.join(twice)} listed twice")
    return keys


def check_specs(specs: Iterable[ParamSpec]) -> dict[str, ParamSpec]:
    """The specs by name; ValueError for a spec that cannot be declared (a programming error)."""
    by_name = {}
    for s in specs:
        if s.name in by_name:
            raise ValueError(f"parameter '{s.name}' specified twice")
        by_name[s.name] = s
    for s in by_name.values():
        if s.type is list and s.item_type is None:
            raise ValueError(f"list parameter '{s.name}' with an empty default needs item=")
        if s.keys is not None:
            k = by_name.get(s.keys)
            if k is None or k.item_type is not str or not k.read_only or k.keys is not None:
                raise ValueError(f"map '{s.name}': its keys '{s.keys}' must be a read-only string-array parameter")
            if s.type is list:
                raise ValueError(f"map '{s.name}': entries are scalars")
        for key, value in s.key_defaults:
            s.check(value, entry_name(s.name, key))
    return by_name


@dataclass
class ParamSet:
    """Validated values of one node's parameters, read as attributes."""

    specs: Mapping[str, ParamSpec]
    values: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__['values'][name.replace('__', '.')]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        return self.values[name]


def validate(specs: Iterable[ParamSpec], values: Mapping[str, Any]) -> ParamSet:
    """Check every given value against its spec; missing ones take the default. A map's value
    is a dict {key: value} over the entries of its key parameter; its entries are given by
    their full names (``entry_name``).

    Raises ParameterError naming every bad parameter at once.
    """
    by_name = check_specs(specs)
    out, errors, known = {}, [], set()
    for name, spec in by_name.items():
        if spec.keys is None:
            known.add(name)
            try:
                out[name] = spec.check(values[name]) if name in values else spec.default
            except ParameterError as e:
                errors.append(str(e))
    for name, spec in by_name.items():
        if spec.keys is None or spec.keys not in out:
            continue
        try:
            keys = check_keys(by_name[spec.keys], out[spec.keys])
        except ParameterError as e:
            errors.append(str(e))
            continue
        out[name] = {}
        for key in keys:
            full = entry_name(name, key)
            known.add(full)
            try:
                out[name][key] = spec.check(values[full], full) if full in values else spec.default_for(key)
            except ParameterError as e:
                errors.append(str(e))
    for full in sorted(set(values) - known):
        owner = next((s for s in by_name.values() if s.keys and full.startswith(s.name + '.')), None)
        errors.append(f"parameter '{full}': no entry of '{owner.keys}' is named so" if owner
                      else f"unknown parameter '{full}'")
    if errors:
        raise ParameterError('; '.join(errors))
    return ParamSet(by_name, out)
