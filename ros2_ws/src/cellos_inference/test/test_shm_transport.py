"""Shared-memory regions between two real processes: a cell's sealed memfd mapped by the executor
through /proc/<pid>/fd, ownership per cell, bounds, seals, and the owner's death noticed.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from cellos_inference.core.shm_transport import (HEADER_BYTES, ClientRegion, RegionError, RegionTable, TensorRef,
                                                 boot_id, decode, supported)

pytestmark = pytest.mark.skipif(not supported()[0], reason=f'no shared-memory regions here: {supported()[1]}')


OWNER = """
import os, sys, numpy as np
from cellos_inference.core.shm_transport import ClientRegion
r = ClientRegion('line1/cell_01', 4, 4096)
refs, out_off, out_size = r.write_inputs(0, {'x': np.arange(12, dtype=np.float32).reshape(1, 12)})
print(os.getpid(), r.fd, r.size, r.nonce.hex(), refs[0].offset, refs[0].size, out_off, out_size, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def owner():
    """Another process that owns a region (as an arbiter does) until its stdin closes."""
    proc = subprocess.Popen([sys.executable, '-c', OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid, fd, size, nonce, off, nbytes, out_off, out_size = proc.stdout.readline().split()
    refs = [TensorRef('x', 'float32', (1, 12), int(off), int(nbytes))]
    yield proc, (int(pid), int(fd), int(size), bytes.fromhex(nonce)), (refs, int(out_off), int(out_size))
    proc.kill()
    proc.wait(5)


def test_executor_maps_another_process_region_and_reads_and_writes_in_place(owner):
    proc, (pid, fd, size, nonce), (refs, out_off, out_size) = owner
    table = RegionTable()
    region, replaced = table.register('line1/cell_01', pid, fd, size, nonce, boot_id())
    assert replaced == [] and region.owner_alive()
    got = table.get(region.handle, 'line1/cell_01')
    x = decode(got.view(refs[0].offset, refs[0].size), TensorRef(refs[0].name, 'float32', (1, 12), 0, refs[0].size))
    np.testing.assert_array_equal(x, np.arange(12, dtype=np.float32).reshape(1, 12))
    out = region.write(out_off, out_size, [('y', np.full((1, 3), 7.0, np.float32))])
    assert out and out[0].offset == out_off
    table.put(got)
    with pytest.raises(RegionError, match='another cell'):
        table.get(region.handle, 'line1/cell_02')          # a region serves only its own cell
    with pytest.raises(RegionError, match='outside the region'):
        region.view(size - 8, 64)
    with pytest.raises(RegionError, match='outside the region'):
        region.view(0, 16)                                  # the header is not a tensor
    assert region.write(size - 16, 64, [('y', np.zeros(64, np.float32))]) is None   # does not fit: inline
    proc.kill()                                             # SIGKILL: the owner dies mid-request
    proc.wait(5)
    end = time.monotonic() + 5
    dead = []
    while not dead and time.monotonic() < end:
        dead = table.reap()
        time.sleep(0.05)
    assert [r.handle for r in dead] == [region.handle]
    with pytest.raises(RegionError, match='unknown shared-memory region'):
        table.get(region.handle, 'line1/cell_01')


def test_registration_refuses_wrong_nonce_size_host_and_unsealed_files(owner, tmp_path):
    _, (pid, fd, size, nonce), _ = owner
    table = RegionTable(max_bytes=1 << 20)
    with pytest.raises(RegionError, match='nonce'):
        table.register('line1/cell_01', pid, fd, size, bytes(16), boot_id())
    with pytest.raises(RegionError, match='the cell said'):
        table.register('line1/cell_01', pid, fd, size + 4096, nonce, boot_id())
    with pytest.raises(RegionError, match='another host'):
        table.register('line1/cell_01', pid, fd, size, nonce, 'other-boot-id')
    with pytest.raises(RegionError, match='at most'):
        RegionTable(max_bytes=1024).register('line1/cell_01', pid, fd, size, nonce, boot_id())
    # a plain file (as a named /dev/shm segment would be) can be truncated under the executor: refused
    f = tmp_path / 'plain'
    f.write_bytes(bytes(size))
    plain = os.open(f, os.O_RDWR)
    try:
        with pytest.raises(RegionError, match='seal'):
            table.register('line1/cell_01', os.getpid(), plain, size, nonce, boot_id())
    finally:
        os.close(plain)
    with pytest.raises(RegionError, match='cannot open'):
        table.register('line1/cell_01', pid, 999, size, nonce, boot_id())
    assert table.regions() == []


def test_region_is_sealed_and_slots_are_bounded():
    r = ClientRegion('line1/cell_01', 2, 256)
    try:
        with pytest.raises(OSError):
            os.ftruncate(r.fd, 64)                           # sealed: nobody can shrink it
        a, b = r.acquire(), r.acquire()
        assert {a, b} == {0, 1} and r.acquire() is None      # bounded pool
        r.quarantine(a)
        r.release(b)
        assert r.free_slots() == 1 and r.quarantined == {a}
        assert r.write_inputs(b, {'x': np.zeros(1000, np.float32)}) is None   # does not fit the slot
        refs, off, size = r.write_inputs(b, {'x': np.ones(8, np.float32)})
        assert off % 64 == 0 and size > 0 and refs[0].offset >= HEADER_BYTES + b * 256
        r.release_all()
        assert r.free_slots() == 2 and not r.quarantined
    finally:
        r.close()


def test_per_cell_cap_replaces_the_oldest_region():
    regions = [ClientRegion('line1/cell_01', 1, 64) for _ in range(3)]
    table = RegionTable(max_per_cell=2)
    try:
        got = [table.register('line1/cell_01', os.getpid(), r.fd, r.size, r.nonce, boot_id()) for r in regions]
        assert got[0][1] == [] and got[1][1] == []
        assert got[2][1] and got[2][1][0].handle in {got[0][0].handle, got[1][0].handle}
        assert len(table.regions()) == 2
    finally:
        table.close()
        for r in regions:
            r.close()
