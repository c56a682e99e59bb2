"""The runner's supervision of its node processes: a process that exits while the line runs is
started again after a backoff (1 s, doubling per recent crash, at most 30 s), and counted; one
that crashes more than ``max_restarts`` times within ``window_s`` is given up and the run ends
with an error. Plain Python: the process start and the lifecycle bring-up are passed in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class _Crash:
    code: int
    at: float


@dataclass
class ProcessSupervisor:
    spawn: Callable[[str], object]              # name -> a started process (poll(), returncode)
    bring_up: Callable[[str], list]             # name -> the nodes of it that failed to come up
    log: Callable[[str], None] = print
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: tuple = (1.0, 30.0)
    clock: Callable[[], float] = time.monotonic
    procs: dict = field(default_factory=dict)
    restarts: dict = field(default_factory=dict)          # name -> times restarted
    _crashes: dict = field(default_factory=dict)          # name -> recent crashes
    _due: dict = field(default_factory=dict)              # name -> when to start it again

    def start(self, name: str) -> None:
        self.procs[name] = self.spawn(name)

    def check(self) -> str | None:
        """Restart what died (when its backoff has passed); the reason to end the run, or None."""
        now = self.clock()
        for name, p in self.procs.items():
            if name in self._due or p.poll() is None:
                continue
            recent = [c for c in self._crashes.get(name, []) if now - c.at <= self.window_s]
            recent.append(_Crash(p.returncode, now))
            self._crashes[name] = recent
            if len(recent) > self.max_restarts:
                return (f'{name} exited with code {p.returncode}, its {len(recent)}th crash within '
                        f'{self.window_s:.0f} s: given up')
            delay = min(self.backoff_s[1], self.backoff_s[0] * 2 ** (len(recent) - 1))
            self._due[name] = now + delay
            self.log(f'{name} exited with code {p.returncode}; starting it again in {delay:.0f} s')
        for name, at in list(self._due.items()):
            if now < at:
                continue
            del self._due[name]
            self.start(name)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            failed = self.bring_up(name)
            if failed:   # stopped: it counts as a crash, and is started again within the budget
                self.log(f'{name} restarted, but {", ".join(failed)} did not come up: stopping it')
                self.procs[name].terminate()
            else:
                self.log(f'{name} restarted and its nodes are active again '
                         f'({self.restarts[name]} restart(s))')
        return None

    @property
    def total_restarts(self) -> int:
        return sum(self.restarts.values())
