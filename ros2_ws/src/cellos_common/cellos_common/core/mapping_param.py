"""'key=value, key=value' strings: how a ROS parameter (which cannot be a dict) carries a
mapping such as per-cell weights or per-task priorities.
"""
from __future__ import annotations

from typing import Callable

from cellos_common.core.params import ParameterError


def parse_mapping(text: str, convert: Callable[[str], object], what: str) -> dict:
    out = {}
    for part in (p.strip() for p in text.split(',')):
        if not part:
            continue
        key, sep, value = part.partition('=')
        if not sep or not key.strip():
            raise ParameterError(f"{what}: {part!r} is not 'key=value'")
        try:
            out[key.strip()] = convert(value.strip())
        except (ValueError, KeyError) as e:
            raise ParameterError(f'{what}: bad value in {part!r}: {e}') from None
    return out


def parse_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(',') if p.strip()]
