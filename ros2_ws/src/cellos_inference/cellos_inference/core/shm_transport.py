"""Zero-copy requests between a cell and the executor on one host, as Triton's system
shared-memory protocol: the client owns a region, registers it with the server, and a
request carries only the region's handle, offsets and tensor metadata; the server reads the
inputs and writes the outputs in place.

The region is a sealed memfd, not a named file in /dev/shm:
  - a named file can be truncated by anyone who opens it, and the executor touching a page
    past the new end dies of SIGBUS: a hostile cell could kill the executor. A memfd sealed
    against shrinking and growing (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) cannot change
    size, and the executor refuses a region without these seals;
  - a memfd disappears with its last user: a SIGKILLed cell or executor leaves nothing behind
    in /dev/shm.
The executor opens the cell's region through ``/proc/<pid>/fd/<fd>`` (same host, same user
or CAP_SYS_PTRACE), checks its size, seals and the nonce the cell wrote at its start (the
right region, not whatever that pid/fd is in another pid namespace), maps it, and watches the
owner through a pidfd: the owner's death releases the region. Its memfd name carries the cell
('cellos:line1/cell_01', visible in /proc/<pid>/fd).

Ownership: a region belongs to the one cell that registered it; the executor only reads a
request's inputs from, and writes its outputs to, the region registered for the cell the
request came from. Across processes of one user the OS does not stop a process from opening
another's /proc/<pid>/fd: a site that must isolate cells from each other on one host runs
each cell under its own user (the executor then needs CAP_SYS_PTRACE to open their regions).

Client side (``ClientRegion``, the arbiter): fixed-size slots, one per request in flight,
bounded; a slot is released when its result arrives, or when the executor is lost or the
region is re-registered. A request that timed out at the arbiter keeps its slot
(quarantined) until the executor's late answer comes: the executor may still be writing.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import secrets
import select
import struct
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

MAGIC = b'CELLOSM1'
HEADER_BYTES = 64               # magic (8), nonce (16), slots (4), pad, slot_bytes (8)
ALIGN = 64
_HEADER = struct.Struct('<8s16sI4xQ')
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW if hasattr(fcntl, 'F_SEAL_SHRINK') else 0


class RegionError(ValueError):
    """A region that cannot be used, or a reference outside it, with the reason."""


def boot_id() -> str:
    try:
        with open('/proc/sys/kernel/random/boot_id') as f:
            return f.read().strip()
    except OSError:
        return ''


def supported() -> tuple[bool, str]:
    """(usable here, why not): memfd, seals and pidfd are Linux features."""
    if not hasattr(os, 'memfd_create') or not SEALS:
        return False, 'no memfd_create / file seals on this platform'
    if not hasattr(os, 'pidfd_open'):
        return False, 'no pidfd_open on this platform'
    return True, ''


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _pack(mm, pos: int, end: int, items) -> tuple[list[TensorRef], int] | None:
    """Copy (name, array) items little-endian into ``mm`` from ``pos``, each aligned: (refs, the
    position after them), or None when they do not fit before ``end``.
    """
    refs = []
    for name, a in items:
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == '>':
            a = a.astype(a.dtype.newbyteorder('<'))
        if pos + a.nbytes > end:
            return None
        np.frombuffer(mm, np.uint8, a.nbytes, pos)[:] = a.reshape(-1).view(np.uint8)
        refs.append(TensorRef(name, a.dtype.name, tuple(a.shape), pos, a.nbytes))
        pos = _align(pos + a.nbytes)
    return refs, pos


@dataclass(frozen=True)
class TensorRef:
    name: str
    dtype: str
    shape: tuple
    offset: int
    size: int


# -- client side (the cell's arbiter) ----------------------------------------------------------
class ClientRegion:
    """A sealed memfd of ``slots`` x ``slot_bytes`` owned by this process, and its slots."""

    def __init__(self, cell_ns: str, slots: int, slot_bytes: int):
        ok, why = supported()
        if not ok:
            raise RegionError(why)
        if slots < 1 or slot_bytes < ALIGN:
            raise RegionError(f'a region needs >= 1 slot of >= {ALIGN} bytes')
        self.cell_ns, self.slots, self.slot_bytes = cell_ns, slots, _align(slot_bytes)
        self.size = HEADER_BYTES + self.slots * self.slot_bytes
        self.nonce = secrets.token_bytes(16)
        self.fd = os.memfd_create(f'cellos:{cell_ns}', os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, self.size)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, SEALS | fcntl.F_SEAL_SEAL)
            self.mm = mmap.mmap(self.fd, self.size)
        except OSError:
            os.close(self.fd)
            raise
        _HEADER.pack_into(self.mm, 0, MAGIC, self.nonce, self.slots, self.slot_bytes)
        self.pid = os.getpid()
        self.handle = 0                      # the executor's handle once registered
        self._free = deque(range(self.slots))
        self.quarantined: set[int] = set()

    @property
    def path(self) -> str:
        return f'/proc/{self.pid}/fd/{self.fd}'

    def free_slots(self) -> int:
        return len(self._free)

    def acquire(self) -> int | None:
        return self._free.popleft() if self._free else None

    def release(self, slot: int) -> None:
        self.quarantined.discard(slot)
        if 0 <= slot < self.slots and slot not in self._free:
            self._free.append(slot)

    def quarantine(self, slot: int) -> None:
        """Held until the executor's late answer (or the executor's loss) releases it."""
        self.quarantined.add(slot)

    def release_all(self) -> None:
        """The executor is gone or the region was registered anew: nothing of ours is in use there."""
        self.quarantined.clear()
        self._free = deque(range(self.slots))

    def slot_range(self, slot: int) -> tuple[int, int]:
        start = HEADER_BYTES + slot * self.slot_bytes
        return start, start + self.slot_bytes

    def write_inputs(self, slot: int, arrays: dict) -> tuple[list[TensorRef], int, int] | None:
        """Copy ``arrays`` (name -> ndarray) into the slot: (refs, output offset, output size), or
        None when they do not fit (the request then travels inline).
        """
        pos, end = self.slot_range(slot)
        packed = _pack(self.mm, pos, end, arrays.items())
        if packed is None:
            return None
        refs, pos = packed
        return refs, pos, max(0, end - pos)

    def read(self, ref: TensorRef) -> np.ndarray:
        """A copy of a tensor the executor wrote (the slot is reused after)."""
        start, end = HEADER_BYTES, self.size
        if not start <= ref.offset <= ref.offset + ref.size <= end:
            raise RegionError(f'output {ref.name!r} at {ref.offset}+{ref.size} is outside the region')
        return decode(self.mm, ref).copy()

    def close(self) -> None:
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass   # a view still exists: the mapping goes with it
        try:
            os.close(self.fd)
        except OSError:
            pass


def decode(buffer, ref: TensorRef) -> np.ndarray:
    """A read-only-in-intent view of ``ref`` in ``buffer`` (RegionError for an unknown dtype or a
    size that does not match the shape).
    """
    try:
        dtype = np.dtype(ref.dtype).newbyteorder('<')
    except TypeError:
        raise RegionError(f'tensor {ref.name!r}: unknown dtype {ref.dtype!r}') from None
    count = 1
    for d in ref.shape:
        count *= int(d)
    if count * dtype.itemsize != ref.size:
        raise RegionError(f'tensor {ref.name!r}: {ref.size} bytes, shape {list(ref.shape)} x {ref.dtype} '
                          f'needs {count * dtype.itemsize}')
    return np.frombuffer(buffer, dtype, count, ref.offset).reshape(ref.shape)


# -- executor side -------------------------------------------------------------------------------
@dataclass
class ServerRegion:
    handle: int
    cell_ns: str
    owner_pid: int
    size: int
    mm: mmap.mmap = field(repr=False)
    pidfd: int = field(repr=False, default=-1)
    refs: int = 0
    closing: bool = False

    def view(self, offset: int, size: int) -> memoryview:
        if not (HEADER_BYTES <= offset and size >= 0 and offset + size <= self.size):
            raise RegionError(f'bytes {offset}..{offset + size} are outside the region '
                              f'({HEADER_BYTES}..{self.size})')
        return memoryview(self.mm)[offset:offset + size]

    def write(self, offset: int, capacity: int, outputs) -> list[TensorRef] | None:
        """Write ``outputs`` [(name, ndarray)] one after the other from ``offset``; None when they
        do not fit in ``capacity`` (the result then travels inline) or the region is closing.
        """
        if self.closing or capacity <= 0:
            return None
        end = offset + capacity
        if not (HEADER_BYTES <= offset and end <= self.size):
            return None
        packed = _pack(self.mm, offset, end, outputs)
        return None if packed is None else packed[0]

    def owner_alive(self) -> bool:
        if self.pidfd < 0:
            return True
        r, _, _ = select.select([self.pidfd], [], [], 0)
        return not r


class RegionTable:
    """The regions an executor has mapped, by handle; each belongs to one cell.

    Bounded: ``max_per_cell`` regions per cell (registering another releases the cell's oldest),
    ``max_bytes`` per region, ``max_cells`` cells.
    """

    def __init__(self, max_bytes: int = 256 << 20, max_per_cell: int = 2, max_cells: int = 256):
        self.max_bytes, self.max_per_cell, self.max_cells = max_bytes, max_per_cell, max_cells
        self._lock = threading.Lock()
        self._by_handle: dict[int, ServerRegion] = {}
        self._boot_id = boot_id()

    def register(self, cell_ns: str, pid: int, fd: int, size: int, nonce: bytes, host_boot_id: str
                 ) -> tuple[ServerRegion, list[ServerRegion]]:
        """Map a cell's region: (region, regions of that cell it replaced). RegionError says why not."""
        ok, why = supported()
        if not ok:
            raise RegionError(why)
        if host_boot_id != self._boot_id:
            raise RegionError('the cell runs on another host (boot id differs): use the inline path')
        if not 0 < size <= self.max_bytes:
            raise RegionError(f'region of {size} bytes: the executor maps at most {self.max_bytes}')
        if len(nonce) != 16:
            raise RegionError('a region nonce is 16 bytes')
        with self._lock:
            cells = {r.cell_ns for r in self._by_handle.values()}
        if cell_ns not in cells and len(cells) >= self.max_cells:
            raise RegionError(f'{len(cells)} cells have regions already (max {self.max_cells})')
        try:
            pidfd = os.pidfd_open(pid)
        except (OSError, ValueError, OverflowError) as e:
            raise RegionError(f'owner pid {pid}: {e}') from None
        try:
            fdn = os.open(f'/proc/{int(pid)}/fd/{int(fd)}', os.O_RDWR | os.O_CLOEXEC)
        except (OSError, ValueError, OverflowError) as e:
            os.close(pidfd)
            raise RegionError(f'cannot open the region of pid {pid} fd {fd}: {e}') from None
        try:
            st = os.fstat(fdn)
            if st.st_size != size:
                raise RegionError(f'the region has {st.st_size} bytes, the cell said {size}')
            try:
                seals = fcntl.fcntl(fdn, fcntl.F_GET_SEALS)
            except OSError:
                raise RegionError('not a sealable memfd (a region must be a sealed memfd)') from None
            if seals & SEALS != SEALS:
                raise RegionError('the region is not sealed against shrinking and growing')
            mm = mmap.mmap(fdn, size)
        except OSError as e:
            os.close(pidfd)
            raise RegionError(f'cannot map the region: {e}') from None
        except RegionError:
            os.close(pidfd)
            raise
        finally:
            os.close(fdn)
        magic, got_nonce, _, _ = _HEADER.unpack_from(mm, 0)
        if magic != MAGIC or got_nonce != nonce:
            mm.close()
            os.close(pidfd)
            raise RegionError('the region at that pid/fd is not the one offered (magic or nonce differs)')
        region = ServerRegion(secrets.randbits(63) or 1, cell_ns, pid, size, mm, pidfd)
        with self._lock:
            own = sorted((r for r in self._by_handle.values() if r.cell_ns == cell_ns), key=lambda r: r.handle)
            replaced = own[:max(0, len(own) - self.max_per_cell + 1)]
            for r in replaced:
                self._retire_locked(r)
            self._by_handle[region.handle] = region
        return region, replaced

    def get(self, handle: int, cell_ns: str) -> ServerRegion:
        with self._lock:
            r = self._by_handle.get(handle)
            if r is None or r.closing:
                raise RegionError(f'unknown shared-memory region {handle:#x} (register again)')
            if r.cell_ns != cell_ns:
                raise RegionError(f'region {handle:#x} belongs to another cell')
            r.refs += 1
            return r

    def put(self, region: ServerRegion) -> None:
        """A job that held the region is answered."""
        with self._lock:
            region.refs -= 1
            if region.closing and region.refs <= 0:
                self._unmap(region)

    def release(self, handle: int, cell_ns: str) -> ServerRegion:
        with self._lock:
            r = self._by_handle.get(handle)
            if r is None or r.cell_ns != cell_ns:
                raise RegionError(f'cell {cell_ns} has no region {handle:#x}')
            self._retire_locked(r)
            return r

    def reap(self) -> list[ServerRegion]:
        """Regions whose owner process died: retired (their jobs are to be drained)."""
        with self._lock:
            dead = [r for r in self._by_handle.values() if not r.owner_alive()]
            for r in dead:
                self._retire_locked(r)
        return dead

    def regions(self) -> list[ServerRegion]:
        with self._lock:
            return list(self._by_handle.values())

    def close(self) -> None:
        with self._lock:
            for r in list(self._by_handle.values()):
                self._retire_locked(r)

    def _retire_locked(self, r: ServerRegion) -> None:
        self._by_handle.pop(r.handle, None)
        r.closing = True
        if r.pidfd >= 0:
            os.close(r.pidfd)
            r.pidfd = -1
        if r.refs <= 0:
            self._unmap(r)

    @staticmethod
    def _unmap(r: ServerRegion) -> None:
        try:
            r.mm.close()
        except (BufferError, ValueError):
            pass   # an array still views it: the mapping goes with the last view
