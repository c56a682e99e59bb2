"""Full text of a ROS 2 message definition, as rosbag2 stores it in an MCAP Schema record
(schema encoding ``ros2msg``): the type's .msg text, then each dependency once, after a line of
80 '=' and ``MSG: <package>/<Type>``.

Mirrors rosbag2_cpp's LocalMessageDefinitionSource (same field-type pattern, same dependency
order: sorted, depth first), so a file of ours and one of ``ros2 bag record`` carry the same
schema text; mcap_ros2 and Foxglove decode with it.
"""
from __future__ import annotations

import re
from typing import Callable

DELIMITER = '=' * 80 + '\n'
# a field's type at the start of a line ("foo_msgs/Bar" in "foo_msgs/Bar[] bar"), rosbag2's pattern
_FIELD_TYPE = re.compile(r'(?:^|\n)\s*([a-zA-Z0-9_/]+)(?:\[[^\]]*\])?\s+')
_TYPE_NAME = re.compile(r'^([a-zA-Z0-9_]+)/(?:msg/)?([a-zA-Z0-9_]+)$')
PRIMITIVES = {'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16',
              'int32', 'uint32', 'int64', 'uint64', 'string'}
MAX_DEPTH = 50


class DefinitionError(ValueError):
    """A type whose definition cannot be found or understood."""


def split_type(type_name: str) -> tuple[str, str]:
    """'pkg/msg/Type' or 'pkg/Type' -> ('pkg', 'Type')."""
    m = _TYPE_NAME.match(type_name)
    if not m:
        raise DefinitionError(f"message type '{type_name}' is not 'package/msg/Type'")
    return m.group(1), m.group(2)


def dependencies(text: str, package: str) -> set[str]:
    out = set()
    for m in _FIELD_TYPE.finditer(text):
        t = m.group(1)
        if t in PRIMITIVES:
            continue
        out.add(t if '/' in t else f'{package}/{t}')
    return out


def full_text(type_name: str, load: Callable[[str, str], str]) -> str:
    """The schema text of ``type_name``; ``load(package, Type)`` returns a .msg file's text."""
    seen: set[str] = set()
    texts: dict[tuple[str, str], str] = {}

    def text_of(name: str) -> tuple[str, str]:
        key = split_type(name)
        if key not in texts:
            try:
                texts[key] = load(*key)
            except (OSError, LookupError) as e:
                raise DefinitionError(f'no .msg definition for {name}: {e}') from None
        return key[0], texts[key]

    def append(name: str, depth: int) -> str:
        if depth <= 0:
            raise DefinitionError(f'definition of {type_name} nests deeper than {MAX_DEPTH}')
        package, text = text_of(name)
        out = text
        for dep in sorted(dependencies(text, package)):
            if dep not in seen:
                seen.add(dep)
                out += '\n' + DELIMITER + f'MSG: {dep}\n' + append(dep, depth - 1)
        return out

    return append(type_name, MAX_DEPTH)


_CONSTANT = re.compile(r'^\s*[a-z0-9_]+\s+([A-Z][A-Z0-9_]*)\s*=\s*(-?\d+)\s*(?:#.*)?$')


def constants(definition: str, prefix: str) -> dict[int, str]:
    """Integer constants ``<prefix>NAME=value`` of the root type of a schema text: {value: 'NAME'}.
    Lets a reader name a status or verdict from the recording itself, as it was when recorded.
    """
    root = definition.split(DELIMITER, 1)[0]
    out = {}
    for line in root.splitlines():
        m = _CONSTANT.match(line)
        if m and m.group(1).startswith(prefix):
            out.setdefault(int(m.group(2)), m.group(1)[len(prefix):])
    return out
