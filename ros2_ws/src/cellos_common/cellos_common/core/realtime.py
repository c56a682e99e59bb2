"""Real-time settings of one thread, as ros2_control's controller_manager applies them to its
update loop: SCHED_FIFO priority, CPU affinity, locked memory. Where the OS refuses one, the
thread keeps running at normal settings and the refusal is returned, once, in words a site
can act on (rtprio limit, CAP_SYS_NICE, ``docker run --cap-add SYS_NICE --ulimit rtprio=99``).

Linux applies ``sched_setscheduler(0, ...)`` and ``sched_setaffinity(0, ...)`` to the calling
thread only: call ``apply`` from the thread that must run real-time.
"""
from __future__ import annotations

import ctypes
import errno
import os
import resource
from dataclasses import dataclass, field
from typing import Callable, Sequence

from cellos_common.core.params import ParamSpec

# ParamSpecs of a node that runs a real-time thread (each node lists them in its PARAMS)
PRIORITY = ParamSpec('thread_priority', 0, 'SCHED_FIFO priority (1-99) of the real-time thread; 0: normal '
                     'priority. Refused by the OS (no CAP_SYS_NICE, rtprio limit): runs at normal priority '
                     'and says so', min=0, max=99)
AFFINITY = ParamSpec('cpu_affinity', [-1], 'CPUs the real-time thread may run on; [-1]: any')
LOCK_MEMORY = ParamSpec('lock_memory', False, 'mlockall the process (no page faults in the cycle; needs '
                        'CAP_IPC_LOCK or a memlock limit)')
PARAMS = [PRIORITY, AFFINITY, LOCK_MEMORY]

_MCL_CURRENT, _MCL_FUTURE = 1, 2


@dataclass(frozen=True)
class Request:
    priority: int = 0
    cpus: tuple = ()          # empty: any CPU
    lock_memory: bool = False

    @classmethod
    def from_params(cls, p) -> 'Request':
        cpus = tuple(int(c) for c in p.cpu_affinity if int(c) >= 0)
        return cls(int(p.thread_priority), cpus, bool(p.lock_memory))

    @property
    def wanted(self) -> bool:
        return bool(self.priority or self.cpus or self.lock_memory)


@dataclass
class Result:
    priority: int = 0                 # SCHED_FIFO priority in force; 0: normal
    cpus: tuple = ()
    memory_locked: bool = False
    refused: list = field(default_factory=list)   # one sentence per refused setting
    dds_threads: int = 0      # middleware threads set to the same priority (apply_to_threads)

    @property
    def text(self) -> str:
        got = f'SCHED_FIFO {self.priority}' if self.priority else 'normal priority'
        if self.cpus:
            got += f", CPUs {','.join(map(str, self.cpus))}"
        if self.memory_locked:
            got += ', memory locked'
        if self.dds_threads:
            got += f', with {self.dds_threads} DDS threads'
        return got + (' (' + '; '.join(self.refused) + ')' if self.refused else '')


def check_cpus(cpus: Sequence[int]) -> None:
    """Raise ValueError for CPUs this machine does not have (the parameter check)."""
    have = os.cpu_count() or 1
    bad = [c for c in cpus if c >= have]
    if bad:
        raise ValueError(f'cpu_affinity: CPU(s) {bad} do not exist (this machine has 0-{have - 1})')


def _why(err: OSError, what: str, limit_hint: str) -> str:
    if err.errno == errno.EPERM:
        return f'{what} refused (EPERM): needs CAP_SYS_NICE or {limit_hint}'
    return f'{what} refused ({errno.errorcode.get(err.errno, err.errno)}: {err.strerror})'


def apply(req: Request) -> Result:
    """Apply ``req`` to the calling thread (memory: the whole process). Never raises."""
    res = Result()
    if req.priority:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(req.priority))
            res.priority = req.priority
        except OSError as e:
            soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
            res.refused.append(_why(e, f'SCHED_FIFO priority {req.priority}',
                                    f'an rtprio limit >= {req.priority} (now {soft})'))
    if req.cpus:
        try:
            os.sched_setaffinity(0, req.cpus)
            res.cpus = tuple(sorted(os.sched_getaffinity(0)))
        except OSError as e:
            res.refused.append(_why(e, f'CPU affinity {list(req.cpus)}', 'a cpuset that allows them'))
    if req.lock_memory:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) == 0:
            res.memory_locked = True
        else:
            e = OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            res.refused.append(_why(e, 'mlockall', 'CAP_IPC_LOCK or a memlock limit above the process size')
                               .replace('CAP_SYS_NICE or ', ''))
    return res


DDS_THREADS = 'dds.'   # Fast DDS names its threads dds.udp.<port>, dds.ev.<n>, dds.shm.<port> ...


def apply_to_threads(req: Request, prefix: str = DDS_THREADS) -> tuple[int, list]:
    """SCHED_FIFO ``req.priority`` (and affinity) for every thread of this process whose name
    starts with ``prefix``: the middleware's receive and event threads, which stamp and hand on
    what the real-time path waits for. Returns (threads set, refusals).
    """
    done, refused = 0, []
    for tid in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                if not f.read().startswith(prefix):
                    continue
            if req.priority:
                os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(req.priority))
            if req.cpus:
                os.sched_setaffinity(int(tid), req.cpus)
            done += 1
        except FileNotFoundError:
            continue   # the thread ended meanwhile
        except OSError as e:
            refused.append(_why(e, f'SCHED_FIFO priority {req.priority} for thread {tid}', 'an rtprio limit'))
            break
    return done, refused


def apply_in_executor(node, req: Request, done: Callable[[Result], None]):
    """Apply ``req`` to the thread that runs ``node``'s callbacks (its executor's spin thread),
    from a one-shot timer of the node; ``done(result)`` is called there. Returns the timer
    (destroy it with the node's other timers).
    """
    applied = []

    def run():
        timer.cancel()
        if not applied:   # a timer event may be queued before the cancel took effect
            applied.append(True)
            done(apply(req))
    timer = node.create_timer(0.0, run)
    return timer


NONBLOCKING_TRANSPORTS = 'UDPv4?non_blocking=true'


def prefer_nonblocking_sends() -> None:
    """Fast DDS over UDP with non-blocking sends, unless the site configured its transports.

    With a blocking socket, a send to a host whose link is down can wait for the address
    resolution to fail (seen: 1.6 s); rclpy holds the interpreter lock through a publish, so
    every thread of the process waits with it, the real-time cycle included. Non-blocking, such
    a datagram is dropped. Call before rclpy.init. (rmw_fastrtps applies its own transports
    under ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, where no datagram leaves the host.)
    """
    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', NONBLOCKING_TRANSPORTS)


def normal() -> None:
    """Back to SCHED_OTHER for the calling thread (a thread that stops being real-time)."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass
