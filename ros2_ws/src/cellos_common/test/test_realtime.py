"""Real-time settings of a thread: applied where the OS allows, refused in words where not."""
import os
import subprocess
import sys
import threading

import pytest

from cellos_common.core import realtime


def in_thread(req):
    out = {}
    t = threading.Thread(target=lambda: out.update(res=realtime.apply(req), pol=os.sched_getscheduler(0)))
    t.start()
    t.join()
    return out['res'], out['pol']


def test_nothing_asked_nothing_changed():
    res, policy = in_thread(realtime.Request())
    assert res.priority == 0 and not res.refused and policy == os.SCHED_OTHER
    assert res.text == 'normal priority'


def test_a_priority_out_of_range_is_refused_and_the_thread_keeps_running():
    res, policy = in_thread(realtime.Request(priority=100))
    assert res.priority == 0 and policy == os.SCHED_OTHER
    assert 'SCHED_FIFO priority 100 refused' in res.refused[0]


def test_a_cpu_that_does_not_exist_is_refused_by_the_check():
    with pytest.raises(ValueError, match='do not exist'):
        realtime.check_cpus([(os.cpu_count() or 1) + 3])


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root (CAP_SYS_NICE) to be granted SCHED_FIFO')
def test_sched_fifo_applies_to_the_calling_thread_only():
    res, policy = in_thread(realtime.Request(priority=10, cpus=(0,)))
    assert res.priority == 10 and policy == os.SCHED_FIFO and res.cpus == (0,)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER   # this thread untouched


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists('/usr/bin/setpriv'),
                    reason='needs root and setpriv (util-linux) to drop CAP_SYS_NICE for a child')
def test_without_cap_sys_nice_the_refusal_names_what_a_site_sets():
    code = ('from cellos_common.core import realtime; '
            'r = realtime.apply(realtime.Request(priority=80)); print(r.priority, "|", r.text)')
    out = subprocess.run(['setpriv', '--bounding-set', '-sys_nice', sys.executable, '-c', code],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('0 |')
    assert 'EPERM' in out.stdout and 'CAP_SYS_NICE' in out.stdout and 'rtprio' in out.stdout
