"""Reading recordings back: one or more bag folders or .mcap files, in file order, including a
file whose recorder was killed (no summary, possibly a cut last chunk: every complete chunk is
read, the cut one is reported, not fatal). Messages are decoded with mcap_ros2 from the
schema text stored in the file, so no ROS install is needed to read an audit.

Every split starts with the last message of each latched topic of the previous split (a split
then answers on its own); reading several splits drops those repeats.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader
from mcap_ros2.decoder import DecoderFactory

from cellos_audit.core.audit_topics import REPEATED_TYPES
from cellos_audit.core.bag_metadata import read_metadata

_SPLIT_INDEX = re.compile(r'_(\d+)\.mcap$')
# what a file cut by SIGKILL raises at its end: a short read in the record framing or the chunk
CUT_ERRORS = (McapError, struct.error, EOFError, RuntimeError, ValueError)


class RecordingError(ValueError):
    """A path that is not a recording."""


@dataclass(frozen=True)
class Record:
    topic: str
    type: str                  # e.g. cellos_interfaces/msg/Inspection
    log_time: int              # ns, when the recorder received it
    publish_time: int          # ns, when it was published (DDS source timestamp)
    data: bytes                # CDR
    schema: object = field(repr=False, compare=False, default=None)


@dataclass
class FileReport:
    path: Path
    messages: int = 0
    complete: bool = True      # False: no summary / footer (recorder killed); read up to the cut
    problem: str = ''


def _split_key(p: Path):
    m = _SPLIT_INDEX.search(p.name)
    return (int(m.group(1)) if m else -1, p.name)


def recording_files(paths: Iterable[str | Path]) -> list[Path]:
    """The .mcap files of the given bag folders / files, each folder's in split order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(p.glob('*.mcap'), key=_split_key)
            meta = read_metadata(p)
            if meta:  # files the metadata lists first (its order), then any it does not know yet
                listed = [p / f for f in meta.get('relative_file_paths', []) if (p / f).is_file()]
                found = listed + [f for f in found if f not in listed]
            if not found:
                raise RecordingError(f'{p}: no .mcap file in this folder')
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise RecordingError(f'{p}: no such file or folder')
    seen, unique = set(), []
    for f in out:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def iter_file(path: Path, report: FileReport | None = None) -> Iterator[Record]:
    """Messages of one file in file order; a cut end ends the iteration and sets ``report``."""
    report = report if report is not None else FileReport(path)
    with open(path, 'rb') as f:
        reader = NonSeekingReader(f, validate_crcs=False)
        try:
            for schema, channel, message in reader.iter_messages(log_time_order=False):
                report.messages += 1
                yield Record(channel.topic, schema.name if schema else '', message.log_time,
                             message.publish_time, message.data, schema)
        except CUT_ERRORS as e:
            report.complete = False
            report.problem = (f'ends early after {report.messages} messages: the recorder stopped without '
                              f'closing the file ({type(e).__name__}{": " + str(e) if str(e) else ""})')
            return
        # a complete file ends with its summary and footer; a killed one just stops
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 8))
        if f.read(8) != b'\x89MCAP0\r\n':
            report.complete = False
            report.problem = 'no footer (recorder stopped without closing the file)'


class Decoder:
    """CDR -> message object (attribute access), one decoder per schema."""

    def __init__(self):
        self._factory = DecoderFactory()
        self._decoders: dict = {}

    def __call__(self, record: Record):
        key = (record.type, record.schema.data if record.schema is not None else b'')
        fn = self._decoders.get(key)
        if fn is None:
            fn = self._factory.decoder_for('cdr', record.schema)
            if fn is None:
                raise RecordingError(f'{record.topic}: cannot decode type {record.type!r}')
            self._decoders[key] = fn
        return fn(record.data)


def read_records(paths: Iterable[str | Path], types: set[str] | None = None,
                 reports: list[FileReport] | None = None) -> Iterator[Record]:
    """Records of every file of ``paths`` (types: only these, e.g. {'cellos_interfaces/msg/Inspection'}),
    with the latched repeats at the start of later splits dropped.
    """
    seen: set = set()   # only the types a split repeats: a few per second
    for path in recording_files(paths):
        report = FileReport(path)
        if reports is not None:
            reports.append(report)
        for r in iter_file(path, report):
            if types is not None and r.type not in types:
                continue
            if r.type in REPEATED_TYPES:
                key = (r.topic, r.log_time, r.publish_time, r.data)
                if key in seen:
                    continue
                seen.add(key)
            yield r


def type_short(type_name: str) -> str:
    """'cellos_interfaces/msg/Inspection' -> 'Inspection'."""
    return type_name.rsplit('/', 1)[-1]
