"""ParamSpec -> declared ROS parameters: the one place a cellos node (lifecycle or not) declares
and reads its parameters. Values are judged by cellos_common.core.params.validate.
"""
from __future__ import annotations

from typing import Iterable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter

from cellos_common.core.params import ParameterError, ParamSpec, check_keys, check_specs, entry_name

_ARRAY = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY,
          int: Parameter.Type.INTEGER_ARRAY, bool: Parameter.Type.BOOL_ARRAY}


def descriptor(spec: ParamSpec, key: str | None = None) -> ParameterDescriptor:
    text = spec.description + (f' [{spec.unit}]' if spec.unit else '')
    if key is not None:
        text += f" (entry '{key}' of {spec.keys})"
    d = ParameterDescriptor(description=text, read_only=spec.read_only)
    if spec.choices is not None:
        d.additional_constraints = f'one of {list(spec.choices)}'
    if spec.min is not None and spec.max is not None and spec.type in (int, float):
        if spec.type is int:
            d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(
                from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    return d


def _declare(node, name: str, spec: ParamSpec, desc: ParameterDescriptor, default) -> None:
    if spec.type is list and not default:
        # an empty list carries no type (rclpy would make it a byte array): declared by its type, it
        # stays unset where nothing (or an empty YAML list, which arrives unset) is given, and
        # read_values reads that as the empty default
        node.declare_parameter(name, _ARRAY[spec.item_type], desc)
    else:
        node.declare_parameter(name, default, desc)


def declare_params(node, specs: Iterable[ParamSpec]) -> dict:
    """Declare every spec on ``node``, a map's entries for the keys it is started with, and
    return {declared name: default}. A start-up value for a map entry whose key is not listed
    is refused (ParameterError), not silently ignored.
    """
    by_name = check_specs(specs)
    names = {}
    for spec in by_name.values():
        if spec.keys is None:
            _declare(node, spec.name, spec, descriptor(spec), spec.default)
            names[spec.name] = spec.default
    for spec in by_name.values():
        if spec.keys is None:
            continue
        key_spec = by_name[spec.keys]
        keys = check_keys(key_spec, key_spec.check(read_values(node, {spec.keys: key_spec.default})[spec.keys]))
        entries = [entry_name(spec.name, k) for k in keys]
        for key, full in zip(keys, entries):
            _declare(node, full, spec, descriptor(spec, key), spec.default_for(key))
            names[full] = spec.default_for(key)
        # rclpy keeps the start-up values (--params-file, -p) of parameters not declared yet here
        stray = sorted(n for n in getattr(node, '_parameter_overrides', {})
                       if n.startswith(spec.name + '.') and n not in entries)
        if stray:
            raise ParameterError(f"parameter(s) {', '.join(stray)}: the entries of '{spec.name}' are those of "
                                 f"'{spec.keys}' ({', '.join(keys) or 'none'})")
    return names


def read_values(node, declared: dict) -> dict:
    """{name: value} of the declared parameters ({name: default}); an unset one reads as its default."""
    out = {}
    for name, default in declared.items():
        try:
            out[name] = node.get_parameter(name).value
        except ParameterUninitializedException:
            out[name] = default
    return out
