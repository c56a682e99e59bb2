"""rosbag2's bag metadata (``metadata.yaml``, version 9) and the MCAP channel metadata
rosbag2_storage_mcap reads (``offered_qos_profiles``, ``topic_type_hash``).

``ros2 bag info/play DIR`` read the folder's metadata.yaml for the list of files and topics;
``ros2 bag info FILE.mcap`` asks the storage plugin, which reads the file's own summary (or scans
a file without one). Field names and value spellings follow rosbag2_storage/yaml.hpp and qos.cpp.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

VERSION = 9
STORAGE_ID = 'mcap'
SERIALIZATION_FORMAT = 'cdr'
PROFILE = 'ros2'                 # MCAP header profile of ROS 2 files
SCHEMA_ENCODING = 'ros2msg'
MESSAGE_ENCODING = 'cdr'
METADATA_FILE = 'metadata.yaml'
# rmw's "infinite" duration as graph queries report it
INFINITE = {'sec': 9223372036, 'nsec': 854775807}

try:  # libyaml where present: metadata.yaml is rewritten at every flush
    _Dumper = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Dumper = yaml.SafeDumper


def qos_profile(*, reliable: bool, transient_local: bool, depth: int, deadline_ns: int | None = None,
                lifespan_ns: int | None = None, lease_ns: int | None = None) -> dict:
    """One offered QoS profile as rosbag2 (version >= 9) writes it."""
    return {'history': 'keep_last', 'depth': int(depth),
            'reliability': 'reliable' if reliable else 'best_effort',
            'durability': 'transient_local' if transient_local else 'volatile',
            'deadline': _time(deadline_ns), 'lifespan': _time(lifespan_ns),
            'liveliness': 'automatic', 'liveliness_lease_duration': _time(lease_ns),
            'avoid_ros_namespace_conventions': False}


def _time(ns: int | None) -> dict:
    if ns is None or ns <= 0 or ns >= INFINITE['sec'] * 10**9:
        return dict(INFINITE)
    return {'sec': int(ns // 10**9), 'nsec': int(ns % 10**9)}


def channel_metadata(offered_qos: list[dict], type_hash: str = '') -> dict[str, str]:
    """MCAP Channel metadata of one topic, as rosbag2_storage_mcap writes it."""
    return {'offered_qos_profiles': yaml.dump(offered_qos, Dumper=_Dumper, sort_keys=False) if offered_qos else '',
            'topic_type_hash': type_hash}


@dataclass
class TopicStats:
    name: str
    type: str
    offered_qos: list = field(default_factory=list)
    type_hash: str = ''
    count: int = 0


@dataclass
class FileStats:
    """One split file: what rosbag2's ``files`` entry says of it."""

    path: str                     # relative to the bag folder
    start_ns: int = 0
    end_ns: int = 0
    count: int = 0
    topics: dict = field(default_factory=dict)   # topic -> message count

    def add(self, topic: str, log_time_ns: int, n: int = 1) -> None:
        if self.count == 0 or log_time_ns < self.start_ns:
            self.start_ns = log_time_ns
        self.end_ns = max(self.end_ns, log_time_ns)
        self.count += n
        self.topics[topic] = self.topics.get(topic, 0) + n


def bag_metadata(files: list[FileStats], topics: dict[str, TopicStats], ros_distro: str = '',
                 custom: dict | None = None) -> dict:
    """The ``rosbag2_bagfile_information`` mapping of a bag made of ``files``."""
    used = [f for f in files if f.count]
    start = min((f.start_ns for f in used), default=0)
    end = max((f.end_ns for f in used), default=0)
    counts: dict[str, int] = {}
    for f in files:
        for t, n in f.topics.items():
            counts[t] = counts.get(t, 0) + n
    return {'rosbag2_bagfile_information': {
        'version': VERSION,
        'storage_identifier': STORAGE_ID,
        'duration': {'nanoseconds': max(0, end - start)},
        'starting_time': {'nanoseconds_since_epoch': start},
        'message_count': sum(f.count for f in files),
        'topics_with_message_count': [
            {'topic_metadata': {'name': t.name, 'type': t.type, 'serialization_format': SERIALIZATION_FORMAT,
                                'offered_qos_profiles': t.offered_qos, 'type_description_hash': t.type_hash},
             'message_count': counts.get(t.name, 0)}
            for t in topics.values()],
        'compression_format': '',
        'compression_mode': '',
        'relative_file_paths': [f.path for f in files],
        'files': [{'path': f.path, 'starting_time': {'nanoseconds_since_epoch': f.start_ns},
                   'duration': {'nanoseconds': max(0, f.end_ns - f.start_ns)}, 'message_count': f.count}
                  for f in files],
        'custom_data': {k: str(v) for k, v in (custom or {}).items()},
        'ros_distro': ros_distro,
    }}


def write_metadata(folder: Path, metadata: dict) -> None:
    """Replace ``folder/metadata.yaml`` atomically (a reader never sees half a file)."""
    tmp = folder / (METADATA_FILE + '.tmp')
    tmp.write_text(yaml.dump(metadata, Dumper=_Dumper, sort_keys=False))
    os.replace(tmp, folder / METADATA_FILE)


def read_metadata(folder: Path) -> dict | None:
    path = folder / METADATA_FILE
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    return data.get('rosbag2_bagfile_information')
