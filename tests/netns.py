"""Several "hosts" on one machine for the multi-host test and benchmark: a network namespace
per host with its own address, joined by a Linux bridge in a switch namespace of its own, and
per host a clock of its own through libfaketime.

Every process runs inside one of these namespaces, so no DDS traffic (multicast discovery
included) reaches the machine's real interfaces; DDS runs over UDPv4 only (shared memory
would bypass the bridge, namespaces share /dev/shm and the host name): the timing and
coordinator nodes choose UDPv4 with non-blocking sends themselves
(cellos_common.core.realtime.prefer_nonblocking_sends), every other process gets it here.
``cut(host)`` takes the host's switch port down (a pulled cable), ``restore(host)`` brings it
back. Teardown kills the processes and deletes the namespaces, which removes their veths and the
bridge, also when the test failed; namespaces left by a test process that was killed outright
are deleted by the next set (their names carry the process id).

Clocks: CLOCK_REALTIME is shared by all namespaces (time namespaces shift only the monotonic
clocks), so each host's processes run under libfaketime (Debian package ``faketime``, 0.9.10)
with FAKETIME="+<offset> x<rate>" and FAKETIME_DONT_FAKE_MONOTONIC=1: the realtime clock (what
the cells stamp with, DDS's reception stamps included) is offset and drifts at <rate>, the
monotonic clock (timeouts, DDS timers) stays true. With that setting 0.9.10 breaks Python's
time.sleep (EINVAL: it mis-converts the absolute CLOCK_MONOTONIC sleep); the timing and
coordinator nodes never call it (their waits are Event and condition waits), so this is no
constraint on them. A faked process's realtime clock reads
    fake(t) = t + offset + (t - t_start) * (rate - 1)
from its start t_start, which is what ``HostClock`` inverts to measure against the truth.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cellos_common.core.realtime import NONBLOCKING_TRANSPORTS

FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1'


def unavailable() -> str:
    """Why hosts cannot be made here ('' when they can): the exact reason for a skip."""
    if os.geteuid() != 0:
        return 'network namespaces need root (ip netns add): not root'
    if shutil.which('ip') is None:
        return "the 'ip' command (iproute2) is not installed"
    if not Path(FAKETIME_LIB).exists():
        return f'libfaketime is not installed ({FAKETIME_LIB} missing: apt-get install faketime)'
    name = f'cellos-probe-{os.getpid()}'
    res = subprocess.run(['ip', 'netns', 'add', name], capture_output=True, text=True)
    if res.returncode != 0:
        return f'ip netns add is not permitted here: {res.stderr.strip()}'
    subprocess.run(['ip', 'netns', 'del', name], capture_output=True)
    return ''


def remove_stale() -> list[str]:
    """Delete the namespaces of earlier sets whose test process is gone (it was killed before its
    teardown could run); deleting a namespace removes its veths and bridge.
    """
    out = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout
    stale = []
    for name in (line.split()[0] for line in out.splitlines() if line.strip()):
        m = re.match(r'^c9(\d+)-', name)
        if m and not Path(f'/proc/{m.group(1)}').exists():
            subprocess.run(['ip', 'netns', 'del', name], capture_output=True)
            stale.append(name)
    return stale


@dataclass(frozen=True)
class HostClock:
    offset_s: float = 0.0
    skew_ppm: float = 0.0

    @property
    def faked(self) -> bool:
        return bool(self.offset_s or self.skew_ppm)

    def faketime(self) -> str:
        return f'{self.offset_s:+.6f} x{1.0 + self.skew_ppm * 1e-6:.9f}'

    def offset_ns(self, true_ns: int, start_ns: int) -> float:
        """This host's clock minus the true clock at true time ``true_ns``."""
        return self.offset_s * 1e9 + (true_ns - start_ns) * self.skew_ppm * 1e-6

    def to_true(self, host_ns: int, start_ns: int) -> int:
        rate = 1.0 + self.skew_ppm * 1e-6
        return int(start_ns + (host_ns - self.offset_s * 1e9 - start_ns) / rate)


class Hosts:
    def __init__(self, names, clocks: dict | None = None, env: dict | None = None, log_dir: Path = Path('.')):
        self.tag = f'c9{os.getpid()}'
        self.names = list(names)
        self.clocks = {h: (clocks or {}).get(h, HostClock()) for h in self.names}
        self.env = env or {}
        self.log_dir = log_dir
        self.procs: dict[str, tuple[str, subprocess.Popen, int]] = {}   # key -> (host, proc, start ns)
        self.ns = {h: f'{self.tag}-{h}' for h in self.names}
        self.switch = f'{self.tag}-sw'
        self.port = {h: f'{self.tag}p{i}' for i, h in enumerate(self.names)}

    def _ip(self, *args) -> None:
        subprocess.run(['ip', *args], check=True, capture_output=True, text=True)

    def __enter__(self) -> 'Hosts':
        remove_stale()
        try:
            self._ip('netns', 'add', self.switch)
            self._ip('-n', self.switch, 'link', 'add', 'br0', 'type', 'bridge')
            self._ip('-n', self.switch, 'link', 'set', 'br0', 'up')
            for i, h in enumerate(self.names):
                ns = self.ns[h]
                self._ip('netns', 'add', ns)
                self._ip('link', 'add', 'eth0', 'netns', ns, 'type', 'veth',
                         'peer', 'name', self.port[h], 'netns', self.switch)
                self._ip('-n', ns, 'addr', 'add', f'10.209.0.{i + 10}/24', 'dev', 'eth0')
                self._ip('-n', ns, 'link', 'set', 'lo', 'up')
                self._ip('-n', ns, 'link', 'set', 'eth0', 'up')
                self._ip('-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0')   # DDS discovery
                self._ip('-n', self.switch, 'link', 'set', self.port[h], 'master', 'br0')
                self._ip('-n', self.switch, 'link', 'set', self.port[h], 'up')
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def address(self, host: str) -> str:
        return f'10.209.0.{self.names.index(host) + 10}'

    def start(self, key: str, host: str, cmd: list[str], node: bool = False) -> subprocess.Popen:
        """``node``: a cellos node, which chooses its transports itself."""
        env = dict(os.environ, **self.env)
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'SUBNET'
        env.pop('FASTDDS_BUILTIN_TRANSPORTS', None)
        if not node:
            env['FASTDDS_BUILTIN_TRANSPORTS'] = NONBLOCKING_TRANSPORTS
        clock = self.clocks[host]
        if clock.faked:
            env.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME=clock.faketime(), FAKETIME_DONT_FAKE_MONOTONIC='1')
        log = open(self.log_dir / f'{key}.log', 'ab')
        start = time.time_ns()
        proc = subprocess.Popen(['ip', 'netns', 'exec', self.ns[host], *cmd], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[key] = (host, proc, start)
        return proc

    def start_ns(self, key: str) -> int:
        """When the process was started (true clock): libfaketime's rate runs from there."""
        return self.procs[key][2]

    def log(self, key: str) -> str:
        return (self.log_dir / f'{key}.log').read_text(errors='replace')

    def stop(self, key: str, timeout: float = 20.0) -> None:
        _, proc, _ = self.procs.pop(key)
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def cut(self, host: str) -> None:
        self._ip('-n', self.switch, 'link', 'set', self.port[host], 'down')

    def restore(self, host: str) -> None:
        self._ip('-n', self.switch, 'link', 'set', self.port[host], 'up')

    def close(self) -> None:
        for key in list(self.procs):
            _, proc, _ = self.procs.pop(key)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for ns in [*self.ns.values(), self.switch]:
            subprocess.run(['ip', 'netns', 'del', ns], capture_output=True)

    def leftovers(self) -> list[str]:
        """Namespaces of this set still present (teardown check)."""
        out = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(self.tag + '-')]
