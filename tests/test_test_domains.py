"""Parallel test sessions on one machine never share a ROS_DOMAIN_ID (conftest.claim_domain)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import claim_domain

HERE = Path(__file__).resolve().parent


def test_parallel_sessions_get_different_domains_and_a_full_range_says_what_to_do(tmp_path):
    # each child claims a domain, says which, and holds it until the test closes its stdin
    code = (f'import sys; sys.path.insert(0, {str(HERE)!r})\n'
            'from conftest import claim_domain\n'
            f'd, lock = claim_domain(range(60, 63), {str(tmp_path)!r})\n'
            'print(d, flush=True)\n'
            'sys.stdin.read()\n')
    children = [subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for _ in range(3)]
    try:
        got = sorted(int(c.stdout.readline()) for c in children)
        assert got == [60, 61, 62]
        with pytest.raises(RuntimeError, match='CELLOS_TEST_DOMAIN'):
            claim_domain(range(60, 63), str(tmp_path))
    finally:
        for c in children:
            c.stdin.close()
            c.wait(timeout=30)
    d, lock = claim_domain(range(60, 63), str(tmp_path))   # released with their sessions
    assert d in range(60, 63)
    lock.close()
