"""The bag writer and reader: splits by size and age, latched state at the head of each split,
rosbag2 metadata, a cut file read up to its last flush, a restarted recorder continuing its folder,
and the disk budget.
"""
import os
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from mcap.reader import make_reader
import pytest
from rclpy.serialization import serialize_message
import yaml

from cellos_audit.core.bag_metadata import METADATA_FILE, read_metadata
from cellos_audit.core.bag_writer import BagWriter
from cellos_audit.core.message_definitions import full_text
from cellos_audit.core.recording_reader import (Decoder, FileReport, RecordingError, iter_file, read_records,
                                                recording_files)
from cellos_audit.core.retention import enforce_budget, recordings_size
from cellos_interfaces.msg import GateState, Inspection

INSPECTION = 'cellos_interfaces/msg/Inspection'
GATE = 'cellos_interfaces/msg/GateState'
T0 = 1_700_000_000_000_000_000


def installed(package, name):
    return (Path(get_package_share_directory(package)) / 'msg' / f'{name}.msg').read_text()


class Clock:
    def __init__(self):
        self.ns = T0

    def __call__(self):
        return self.ns


def make_writer(folder, clock, **kw):
    args = dict(split_max_bytes=10**9, split_max_s=3600.0, clock=clock, fsync=False)
    args.update(kw)
    w = BagWriter(folder, folder.name, **args)
    w.add_topic('/l/c/vision/inspection', INSPECTION, full_text(INSPECTION, installed),
                [{'history': 'keep_last', 'depth': 5}])
    w.add_topic('/l/c/energy/gate', GATE, full_text(GATE, installed), latched=True)
    return w


def inspection(part: int) -> bytes:
    return serialize_message(Inspection(cell_id='l/c', part_id=part, frame_sha256=f'{part:064x}'))


def parts(paths) -> list[int]:
    decode = Decoder()
    return [decode(r).part_id for r in read_records(paths, {INSPECTION})]


def test_write_read_back_and_metadata(tmp_path):
    clock = Clock()
    w = make_writer(tmp_path / 'line1_a', clock)
    w.write('/l/c/energy/gate', serialize_message(GateState(level=1)), clock.ns)
    for i in range(1, 101):
        clock.ns += 10**7
        w.write('/l/c/vision/inspection', inspection(i), clock.ns, clock.ns - 1000)
    w.close()
    assert parts([tmp_path / 'line1_a']) == list(range(1, 101))
    meta = read_metadata(tmp_path / 'line1_a')
    assert meta['version'] == 9 and meta['storage_identifier'] == 'mcap' and meta['message_count'] == 101
    assert meta['relative_file_paths'] == ['line1_a_0.mcap']
    topics = {t['topic_metadata']['name']: t for t in meta['topics_with_message_count']}
    assert topics['/l/c/vision/inspection']['message_count'] == 100
    assert topics['/l/c/vision/inspection']['topic_metadata']['serialization_format'] == 'cdr'
    assert meta['duration']['nanoseconds'] == 100 * 10**7
    with open(tmp_path / 'line1_a' / 'line1_a_0.mcap', 'rb') as f:   # a complete file: summary, ros2 profile
        reader = make_reader(f)
        assert reader.get_header().profile == 'ros2'
        summary = reader.get_summary()
        assert summary.statistics.message_count == 101
        assert {s.encoding for s in summary.schemas.values()} == {'ros2msg'}
        assert {c.message_encoding for c in summary.channels.values()} == {'cdr'}
        qos = yaml.safe_load(next(c for c in summary.channels.values()
                                  if c.topic.endswith('inspection')).metadata['offered_qos_profiles'])
        assert qos == [{'history': 'keep_last', 'depth': 5}]


def test_splits_by_age_and_size_each_starting_with_the_state_in_force(tmp_path):
    clock = Clock()
    w = make_writer(tmp_path / 'b', clock, split_max_s=1.0)
    w.write('/l/c/energy/gate', serialize_message(GateState(level=2, reason='price')), clock.ns)
    for i in range(1, 31):
        clock.ns += 10**8        # 0.1 s
        w.write('/l/c/vision/inspection', inspection(i), clock.ns)
        if i % 5 == 0:
            w.flush()
    w.close()
    files = recording_files([tmp_path / 'b'])
    assert len(files) >= 3 and [f.name for f in files] == [f'b_{i}.mcap' for i in range(len(files))]
    for f in files:   # each split opens with the gate state, read alone
        first = next(iter_file(f))
        assert first.topic == '/l/c/energy/gate'
    assert parts([tmp_path / 'b']) == list(range(1, 31))              # no loss, no repeat
    gates = list(read_records([tmp_path / 'b'], {GATE}))
    assert len(gates) == 1, 'the repeated state is read once'

    clock2 = Clock()
    w = make_writer(tmp_path / 'c', clock2, split_max_bytes=2000)
    for i in range(1, 201):
        w.write('/l/c/vision/inspection', inspection(i), clock2.ns + i)
        if i % 10 == 0:
            w.flush()
    w.close()
    assert len(recording_files([tmp_path / 'c'])) > 3
    assert parts([tmp_path / 'c']) == list(range(1, 201))


def test_a_killed_file_reads_up_to_its_last_flush_at_any_cut(tmp_path):
    clock = Clock()
    w = make_writer(tmp_path / 'k', clock)
    for i in range(1, 61):
        clock.ns += 10**7
        w.write('/l/c/vision/inspection', inspection(i), clock.ns)
        if i % 20 == 0:
            w.flush()
    # no close: what a SIGKILL leaves (the last 0 messages after the third flush, nothing else)
    path = w.current
    data = path.read_bytes()
    assert parts([path]) == list(range(1, 61))
    reports = []
    list(read_records([path], reports=reports))
    assert not reports[0].complete and 'ends early after 60 messages' in reports[0].problem
    for cut in range(len(data) - 1, 40, -97):   # cut anywhere, e.g. in the middle of a chunk
        (tmp_path / 'cut.mcap').write_bytes(data[:cut])
        report = FileReport(tmp_path / 'cut.mcap')
        got = [Decoder()(r).part_id for r in iter_file(tmp_path / 'cut.mcap', report) if r.type == INSPECTION]
        assert got == list(range(1, len(got) + 1)), 'a prefix, in order'
        assert len(got) in (0, 20, 40, 60), 'whole flushes only'
        assert not report.complete


def test_a_restarted_recorder_continues_the_folder(tmp_path):
    clock = Clock()
    w = make_writer(tmp_path / 'r', clock)
    for i in range(1, 11):
        w.write('/l/c/vision/inspection', inspection(i), clock.ns + i)
    w.flush()     # then killed
    w2 = make_writer(tmp_path / 'r', clock)
    assert [r.messages for r in w2.reindexed] == [10]
    for i in range(11, 21):
        w2.write('/l/c/vision/inspection', inspection(i), clock.ns + i)
    w2.close()
    meta = read_metadata(tmp_path / 'r')
    assert meta['relative_file_paths'] == ['r_0.mcap', 'r_1.mcap'] and meta['message_count'] == 20
    assert parts([tmp_path / 'r']) == list(range(1, 21))


def test_disk_budget_deletes_the_oldest_splits_never_the_current(tmp_path):
    old = tmp_path / 'line1_old'
    old.mkdir()
    for i in range(3):
        (old / f'line1_old_{i}.mcap').write_bytes(b'x' * 1000)
        os.utime(old / f'line1_old_{i}.mcap', ns=(T0 + i, T0 + i))
    (tmp_path / 'line2_other').mkdir()
    (tmp_path / 'line2_other' / 'line2_other_0.mcap').write_bytes(b'y' * 5000)   # another line: not ours
    current = tmp_path / 'line1_new' / 'line1_new_0.mcap'
    current.parent.mkdir()
    current.write_bytes(b'z' * 1500)
    assert recordings_size(tmp_path, 'line1_') == 4500
    deleted = enforce_budget(tmp_path, 'line1_', 2600, current)
    assert [p.name for p in deleted] == ['line1_old_0.mcap', 'line1_old_1.mcap']
    assert current.exists() and (tmp_path / 'line2_other' / 'line2_other_0.mcap').exists()
    deleted = enforce_budget(tmp_path, 'line1_', 100, current)
    assert [p.name for p in deleted] == ['line1_old_2.mcap'] and not old.exists(), 'an emptied bag goes'
    assert current.exists()


def test_not_a_recording(tmp_path):
    with pytest.raises(RecordingError, match='no such file'):
        recording_files([tmp_path / 'nothing'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(RecordingError, match='no .mcap file'):
        recording_files([tmp_path / 'empty'])
    assert not (tmp_path / 'empty' / METADATA_FILE).exists()
