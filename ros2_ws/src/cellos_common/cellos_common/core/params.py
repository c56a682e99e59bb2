"""Parameter specifications: declared once per node, validated in one place.

A node lists its parameters as ``ParamSpec`` entries; the rclpy shell turns them into
declared parameters with descriptors and ranges, and every value (start-up YAML,
command-line override or a later ``ros2 param set``) goes through ``validate`` here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence


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

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: Any) -> Any:
        """Return the value coerced to the spec's type, or raise ParameterError."""
        want = self.type
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is list and isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ParameterError(
                f"parameter '{self.name}': expected {want.__name__}, got {type(value).__name__} ({value!r})")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(
                f"parameter '{self.name}': {value!r} is not one of {list(self.choices)}")
        if self.min is not None:
            if value < self.min or (self.min_exclusive and value == self.min):
                op = '>' if self.min_exclusive else '>='
                raise ParameterError(
                    f"parameter '{self.name}': {value!r}{self.unit} must be {op} {self.min}{self.unit}")
        if self.max is not None and value > self.max:
            raise ParameterError(
                f"parameter '{self.name}': {value!r}{self.unit} must be <= {self.max}{self.unit}")
        return value


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
    """Check every given value against its spec; missing ones take the default.

    Raises ParameterError naming every bad parameter at once.
    """
    by_name = {s.name: s for s in specs}
    out, errors = {}, []
    for name, spec in by_name.items():
        try:
            out[name] = spec.check(values[name]) if name in values else spec.default
        except ParameterError as e:
            errors.append(str(e))
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        errors.append(f"unknown parameter(s): {', '.join(unknown)}")
    if errors:
        raise ParameterError('; '.join(errors))
    return ParamSet(by_name, out)
