"""Shared fixtures of the system tests: real processes over real DDS.

Every test session gets its own ROS_DOMAIN_ID (unless one is set), discovery stays on
localhost, and every process a test starts is killed at teardown.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
# test models (small ONNX graphs) shared with the inference package's unit tests
sys.path.insert(0, str(REPO / 'ros2_ws' / 'src' / 'cellos_inference' / 'test'))

if 'CELLOS_TEST_DOMAIN' not in os.environ:
    os.environ['CELLOS_TEST_DOMAIN'] = str(random.Random(os.getpid()).randint(110, 199))
os.environ['ROS_DOMAIN_ID'] = os.environ['CELLOS_TEST_DOMAIN']
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
# UDP on loopback only: the tests SIGKILL processes, and a killed process leaves its Fast DDS
# shared-memory ports behind, which stalled peers and lost a restarted node's first service replies
os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'UDPv4')
os.environ.setdefault('PYTHONUNBUFFERED', '1')


def executable(name: str) -> str:
    """Path of an installed cellos entry point (what `ros2 run <package> <name>` would start)."""
    found = shutil.which(name) or next(iter(sorted(REPO.glob(f'install/cellos_*/lib/cellos_*/{name}'))), None)
    if found is None:
        pytest.fail(f'{name} is not installed: run `make build` first')
    return str(found)


class Processes:
    """Starts node processes, keeps their logs, kills what is left at teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, key: str, exe: str, *ros_args: str, params: dict | None = None,
              namespace: str | None = None, extra_args=(), env: dict | None = None) -> subprocess.Popen:
        """``env``: variables added to this process's environment for the node (e.g. libfaketime)."""
        cmd = [executable(exe), *extra_args, '--ros-args']
        if namespace:
            cmd += ['-r', f'__ns:={namespace}']
        for k, v in (params or {}).items():
            cmd += ['-p', f'{k}:={_ros_value(v)}']
        cmd += list(ros_args)
        log = open(self.log_dir / f'{key.replace("/", "_")}.log', 'ab')
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env} if env else None)
        self.procs[key] = proc
        return proc

    def kill(self, key: str, sig=signal.SIGKILL) -> None:
        proc = self.procs.pop(key)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def stop(self, key: str, timeout: float = 10.0) -> int:
        """SIGINT (Ctrl-C) and wait: returns the exit code."""
        proc = self.procs.pop(key)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise

    def log(self, key: str) -> str:
        return (self.log_dir / f'{key.replace("/", "_")}.log').read_text(errors='replace')

    def close(self) -> None:
        for key in list(self.procs):
            self.kill(key)


def _ros_value(v) -> str:
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, (list, tuple)):
        return '[' + ','.join(_ros_value(x) if not isinstance(x, str) else f'"{x}"' for x in v) + ']'
    return str(v)


@pytest.fixture
def processes(tmp_path):
    group = Processes(tmp_path)
    yield group
    group.close()


@pytest.fixture
def ros_probe():
    """An rclpy node in the test process, spun in a background thread."""
    from probe import Probe
    probe = Probe()
    yield probe
    probe.close()


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = 'condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f'timed out after {timeout:.1f} s waiting for {what}')
