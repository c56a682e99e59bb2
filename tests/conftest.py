"""Shared fixtures of the system tests: real processes over real DDS.

Every test session gets its own ROS_DOMAIN_ID, discovery stays on localhost, and every
process a test starts is killed at teardown. The domain is CELLOS_TEST_DOMAIN when set, else
an id of TEST_DOMAINS that no other session on this machine holds (one lock file per id in the
temp folder, held for the session): parallel sessions never share a domain.
ROS log files go under log/ros of the checkout (ROS_LOG_DIR, unless set), and the Fast DDS
shared-memory files the session's processes leave behind in /dev/shm are removed at its end.
"""
from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
# test models (small ONNX graphs) shared with the inference package's unit tests
sys.path.insert(0, str(REPO / 'ros2_ws' / 'src' / 'cellos_inference' / 'test'))
# the loopback OpenADR VTN and its certificates, shared with the energy package's tests
sys.path.insert(0, str(REPO / 'ros2_ws' / 'src' / 'cellos_energy' / 'test'))

# ROS 2 recommends domain ids 0-101 on Linux (higher ones reach the ephemeral port range);
# 0 is every tool's default and `make run` uses 42, so the tests keep to 60-101
TEST_DOMAINS = range(60, 102)
_domain_lock = None   # the open, locked file of this session's domain: released when the session ends


def claim_domain(domains=TEST_DOMAINS, lock_dir: str | None = None) -> tuple[int, object]:
    """The first domain id no other session holds, and its locked file (keep it open)."""
    lock_dir = lock_dir or tempfile.gettempdir()
    ids = list(domains)
    start = random.Random(os.getpid()).randrange(len(ids))   # parallel sessions rarely try the same id first
    for d in ids[start:] + ids[:start]:
        f = open(os.path.join(lock_dir, f'cellos-test-domain-{d}.lock'), 'w')
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return d, f
    raise RuntimeError(f'every test domain {ids[0]}-{ids[-1]} is held by another session: '
                       'set CELLOS_TEST_DOMAIN to a free id')


if 'CELLOS_TEST_DOMAIN' not in os.environ:
    _domain, _domain_lock = claim_domain()
    os.environ['CELLOS_TEST_DOMAIN'] = str(_domain)
os.environ['ROS_DOMAIN_ID'] = os.environ['CELLOS_TEST_DOMAIN']
os.environ.setdefault('ROS_LOG_DIR', str(REPO / 'log' / 'ros'))
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
        # the process's output is its log here: no second copy in ROS_LOG_DIR
        cmd = [executable(exe), *extra_args, '--ros-args', '--disable-external-lib-logs']
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


# -- Fast DDS shared memory -------------------------------------------------------------------
SHM_DIR = Path('/dev/shm')
# a Fast DDS segment or port ('fastdds_<16 hex>', 'fastdds_port<n>'), its lock files ('_el', '_sl':
# locked while the owner lives) and, for a port, its semaphore 'sem.<name>_mutex'
_SHM_FILE = re.compile(r'^(?:sem\.)?(fastdds_(?:port\d{1,5}|[0-9a-z]{16}))(?:_el|_sl|_mutex)?$')


def _shm_names() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except OSError:
        return set()


def _locked(path: Path) -> bool:
    try:
        with open(path, 'rb') as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _mapped() -> set[str]:
    """Names of the /dev/shm files some live process has mapped."""
    out = set()
    for maps in Path('/proc').glob('[0-9]*/maps'):
        try:
            text = maps.read_text()
        except OSError:
            continue
        out.update(m.group(1) for m in re.finditer(r'/dev/shm/(\S+)', text))
    return out


def remove_dead_shm(created: set[str]) -> list[str]:
    """Remove the Fast DDS files among ``created`` whose owner is gone (no lock held, no
    process maps the segment), as `fastdds shm clean` does; a live process's files and those
    this session did not create are left alone.
    """
    groups: dict[str, set[str]] = {}
    for name in created:
        m = _SHM_FILE.match(name)
        if m:
            groups.setdefault(m.group(1), set()).add(name)
    mapped = _mapped()
    removed = []
    for base, names in sorted(groups.items()):
        if base in mapped or any(_locked(SHM_DIR / n) for n in names if n.endswith(('_el', '_sl'))):
            continue
        for name in sorted(names):
            try:
                (SHM_DIR / name).unlink()
                removed.append(name)
            except OSError:
                pass
    return removed


_shm_before: set[str] = set()


def pytest_sessionstart(session):
    _shm_before.update(_shm_names())


def pytest_sessionfinish(session, exitstatus):
    remove_dead_shm(_shm_names() - _shm_before)
