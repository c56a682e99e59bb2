import hashlib

import cv2
import numpy as np
import pytest

from cellos_vision.core.synthetic_camera import SyntheticCamera
from cellos_vision.core.vision_pipeline import Capture, InFlight, SyntheticSource, VideoSource, frame_sha256


def test_in_flight_every_request_ends_once():
    f = InFlight(max_in_flight=2)
    cap = Capture(np.zeros((2, 2), np.uint8), 1)
    a = f.add(cap, 1.0, 'm', 0.8, now=10.0, timeout_s=0.2)
    b = f.add(cap, 1.0, 'm', 0.8, now=10.1, timeout_s=0.2)
    assert a.request_id != b.request_id and f.full() and len(f) == 2
    with pytest.raises(RuntimeError):
        f.add(cap, 1.0, 'm', 0.8, now=10.1, timeout_s=0.2)
    assert f.expire(10.19) == []
    assert f.expire(10.2) == [a]
    assert f.resolve(a.request_id) is None and f.late_results == 1   # its result came too late
    assert f.resolve(b.request_id) is b
    assert f.resolve(b.request_id) is None and len(f) == 0
    c = f.add(cap, 1.0, 'm', 0.8, now=11.0, timeout_s=1.0)
    assert f.drain() == [c] and len(f) == 0


def test_synthetic_source_carries_ground_truth_and_drift():
    s = SyntheticSource(4, 160, 120, 0.5, 0.0)
    c = s.capture()
    assert c.ok and c.image.shape == (120, 160, 3) and c.part_id == 1 and c.ground_truth
    assert s.capture().part_id == 2
    s.set_drift(0.8)
    assert s.camera.drift == 0.8


def test_video_source_reads_a_file_and_loops(tmp_path):
    path = str(tmp_path / 'clip.avi')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    if not writer.isOpened():
        pytest.skip('this OpenCV build cannot write MJPG/AVI, so no test clip can be made')
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    src = VideoSource(path, loop=True)
    assert src.is_open
    frames = [src.capture() for _ in range(5)]
    assert all(f.ok and f.image.shape == (48, 64, 3) for f in frames)
    assert abs(int(frames[3].image.mean()) - int(frames[0].image.mean())) <= 3   # looped
    src.close()
    once = VideoSource(path, loop=False)
    got = [once.capture() for _ in range(4)]
    assert [g.ok for g in got] == [True, True, True, False]
    assert 'no frame' in got[3].error


def test_video_source_that_cannot_open_gives_errors_not_exceptions(tmp_path):
    src = VideoSource(str(tmp_path / 'missing.mp4'), reopen_s=0.0)
    assert not src.is_open
    c = src.capture()
    assert not c.ok and 'not open' in c.error and c.image is None


def test_frame_digest_is_the_sha256_of_the_pixels_and_reproducible_from_the_camera():
    source = SyntheticSource(seed=3, width=160, height=120, defect_rate=0.5, drift=0.0)
    captures = [source.capture() for _ in range(3)]
    for c in captures:
        assert c.sha256 == hashlib.sha256(c.image.tobytes()).hexdigest()
        # the audit's claim: whoever has the camera's seed and the part id regenerates the frame
        camera = SyntheticCamera(3, width=160, height=120, defect_rate=0.5)
        again = camera.frame(c.part_id - camera.first_part_id)
        assert frame_sha256(again.image) == c.sha256
    assert len({c.sha256 for c in captures}) == 3
    assert frame_sha256(np.ascontiguousarray(captures[0].image[:, ::-1])) != captures[0].sha256
    assert Capture(None, 1, error='no frame').sha256 == ''
