"""A rosbag2-compatible MCAP bag written from serialized (CDR) messages: a folder with
``metadata.yaml`` and split files ``<name>_<i>.mcap``, rotated by size and age, within a disk
budget shared by the recordings of the same prefix.

Crash safety: ``flush()`` (the recorder calls it every flush period) closes the chunk in
progress, hands it to the operating system and rewrites metadata.yaml, so a SIGKILL loses at
most what arrived since the last flush. A killed split has no summary and may end in a cut
chunk; rosbag2 (readSummary with fallback scan) and recording_reader read every complete chunk
of it. Opening a folder that already holds splits (a restarted recorder) continues after them.

Each split starts with the last message of every latched topic (line, gate, feed state), so
any split answers "what was in force" on its own; readers drop those repeats.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mcap.writer import CompressionType, Writer

from cellos_audit.core.bag_metadata import (MESSAGE_ENCODING, PROFILE, SCHEMA_ENCODING, FileStats,
                                            TopicStats, bag_metadata, channel_metadata, read_metadata,
                                            write_metadata)
from cellos_audit.core.recording_reader import FileReport, iter_file

LIBRARY = 'cellos_audit (mcap-python)'
_SPLIT = re.compile(r'_(\d+)\.mcap$')
COMPRESSION = {'none': CompressionType.NONE, 'lz4': CompressionType.LZ4, 'zstd': CompressionType.ZSTD}


@dataclass
class _Topic:
    stats: TopicStats
    definition: str
    latched: bool
    last: tuple | None = None     # (data, log_time, publish_time) of a latched topic


class BagWriter:
    def __init__(self, folder: Path, name: str, *, split_max_bytes: int, split_max_s: float,
                 compression: str = 'lz4', chunk_bytes: int = 4 << 20, ros_distro: str = '',
                 custom: dict | None = None, file_metadata: dict | None = None, fsync: bool = True,
                 clock=time.time_ns):
        self.folder = Path(folder)
        self.name = name
        self.split_max_bytes = int(split_max_bytes)
        self.split_max_ns = int(split_max_s * 1e9)
        self.compression = COMPRESSION[compression]
        self.chunk_bytes = chunk_bytes
        self.ros_distro = ros_distro
        self.custom = dict(custom or {})
        self.file_metadata = {k: str(v) for k, v in (file_metadata or {}).items()}
        self.fsync = fsync
        self.clock = clock
        self.topics: dict[str, _Topic] = {}
        self.files: list[FileStats] = []
        self.reindexed: list[FileReport] = []
        self.messages = 0
        self.splits = 0
        self._writer: Writer | None = None
        self._stream = None
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._seq: dict[int, int] = {}
        self._opened_ns = 0
        self._meta_written = -1
        self.folder.mkdir(parents=True, exist_ok=True)
        self._reindex()
        self._open()

    # -- files ----------------------------------------------------------------------------
    @property
    def current(self) -> Path:
        return self.folder / self.files[-1].path

    def _reindex(self) -> None:
        """Splits already in the folder (a restarted recorder): counted from their content."""
        known = {}
        meta = read_metadata(self.folder)
        for t in (meta or {}).get('topics_with_message_count', []):
            m = t.get('topic_metadata', {})
            known[m.get('name')] = m
        existing = sorted((p for p in self.folder.glob('*.mcap') if _SPLIT.search(p.name)),
                          key=lambda p: int(_SPLIT.search(p.name).group(1)))
        for path in existing:
            stats = FileStats(path.name)
            report = FileReport(path)
            for r in iter_file(path, report):
                stats.add(r.topic, r.log_time)
                if r.topic not in self.topics:
                    m = known.get(r.topic, {})
                    self.topics[r.topic] = _Topic(
                        TopicStats(r.topic, r.type, m.get('offered_qos_profiles') or [],
                                   m.get('type_description_hash', '')),
                        r.schema.data.decode() if r.schema is not None else '', latched=False)
            self.reindexed.append(report)
            self.files.append(stats)

    def _next_index(self) -> int:
        used = [int(m.group(1)) for f in self.files if (m := _SPLIT.search(f.path))]
        return max(used) + 1 if used else 0

    def _open(self) -> None:
        stats = FileStats(f'{self.name}_{self._next_index()}.mcap')
        self.files.append(stats)
        self._stream = open(self.folder / stats.path, 'wb')
        self._writer = Writer(self._stream, chunk_size=self.chunk_bytes, compression=self.compression)
        self._writer.start(profile=PROFILE, library=LIBRARY)
        self._writer.add_metadata('cellos_audit', {**self.file_metadata, 'split': stats.path,
                                                   'opened_ns': str(self.clock())})
        self._schemas, self._channels, self._seq = {}, {}, {}
        self._opened_ns = self.clock()
        self.splits += 1
        for topic, t in self.topics.items():   # state in force, so the split stands on its own
            if t.latched and t.last is not None:
                self._write(topic, *t.last)
        self._writer.flush()
        self._write_metadata()

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.finish()
        self._stream.flush()
        if self.fsync:
            os.fsync(self._stream.fileno())
        self._stream.close()
        self._writer = self._stream = None

    def _write_metadata(self) -> None:
        self._meta_written = self.messages
        write_metadata(self.folder, bag_metadata(self.files, {k: t.stats for k, t in self.topics.items()},
                                                 self.ros_distro, self.custom))

    # -- topics and messages ----------------------------------------------------------------
    def add_topic(self, topic: str, type_name: str, definition: str, offered_qos: list | None = None,
                  type_hash: str = '', latched: bool = False) -> None:
        t = self.topics.get(topic)
        if t is None:
            self.topics[topic] = _Topic(TopicStats(topic, type_name, list(offered_qos or []), type_hash),
                                        definition, latched)
        else:   # known from a previous recorder run: now with this run's QoS
            t.latched = latched
            t.definition = t.definition or definition
            if offered_qos:
                t.stats.offered_qos = list(offered_qos)
            t.stats.type_hash = t.stats.type_hash or type_hash

    def has_topic(self, topic: str) -> bool:
        t = self.topics.get(topic)
        return t is not None and bool(t.definition)

    def _channel(self, topic: str) -> int:
        cid = self._channels.get(topic)
        if cid is None:
            t = self.topics[topic]
            sid = self._schemas.get(t.stats.type)
            if sid is None:
                sid = self._writer.register_schema(t.stats.type, SCHEMA_ENCODING, t.definition.encode())
                self._schemas[t.stats.type] = sid
            cid = self._writer.register_channel(topic, MESSAGE_ENCODING, sid,
                                                channel_metadata(t.stats.offered_qos, t.stats.type_hash))
            self._channels[topic] = cid
        return cid

    def _write(self, topic: str, data: bytes, log_time: int, publish_time: int) -> None:
        cid = self._channel(topic)
        seq = self._seq.get(cid, 0) + 1
        self._seq[cid] = seq
        self._writer.add_message(cid, log_time, data, publish_time, sequence=seq & 0xFFFFFFFF)
        self.files[-1].add(topic, log_time)
        t = self.topics[topic]
        t.stats.count += 1

    def write(self, topic: str, data: bytes, log_time: int, publish_time: int | None = None) -> None:
        """One serialized message (add_topic first)."""
        publish_time = log_time if publish_time is None else publish_time
        self._write(topic, data, log_time, publish_time)
        t = self.topics[topic]
        if t.latched:
            t.last = (data, log_time, publish_time)
        self.messages += 1

    # -- flushing, rotation -----------------------------------------------------------------
    def size_bytes(self) -> int:
        return self._stream.tell() if self._stream is not None else 0

    def due_for_split(self, now_ns: int | None = None) -> str:
        now_ns = self.clock() if now_ns is None else now_ns
        if self.size_bytes() >= self.split_max_bytes:
            return f'size {self.size_bytes() / 1e6:.1f} MB'
        if now_ns - self._opened_ns >= self.split_max_ns:
            return f'age {(now_ns - self._opened_ns) / 1e9:.0f} s'
        return ''

    def flush(self) -> str:
        """Write out what arrived since the last flush; start a new split when one is due.
        Returns why a new split was started, or ''.
        """
        self._writer.flush()
        why = self.due_for_split()
        if why:
            self._close_file()
            self._open()
        elif self._meta_written != self.messages:
            self._write_metadata()
        return why

    def close(self) -> None:
        self._close_file()
        self._write_metadata()

    def note(self, name: str, data: dict) -> None:
        """An MCAP metadata record in the current split (e.g. what the disk budget deleted)."""
        self._writer.add_metadata(name, {k: str(v) for k, v in data.items()})

    def forget(self, names: set[str]) -> None:
        """Splits of this folder deleted by the disk budget: out of metadata.yaml."""
        self.files = [f for f in self.files if f.path not in names or f is self.files[-1]]
        self._write_metadata()
