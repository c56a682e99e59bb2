"""Which cells an executor serves: the listed ones, those matching an allowlist pattern when they
appear, and any cell at all only when discovery is chosen explicitly.

A cell is known by its namespace ``cell_ns`` ('line1/cell_01'). Three sets:
  served    listed cells (``cells``: always, never pruned), and cells that appeared in the graph
            and match ``patterns`` (fnmatch: 'line1/cell_*') or any name when ``discover``
  refused   cells that appeared but may not be served: their requests are answered REJECTED
            with the reason (so a misconfigured cell learns why), at most ``max_refused`` of
            them at once; beyond that their requests are not even received (the graph is not
            ours to bound)
A cell that appeared (served or refused, never a listed one) and then has had no publisher on
its request topic for ``prune_s`` is forgotten: subscription, queue state, statistics.
Served cells are capped at ``max_cells``; the cap counts listed cells too.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

MAX_CELL_NS = 128
_NS = re.compile(r'[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*')

SERVE, REFUSE, IGNORE = 'serve', 'refuse', 'ignore'


def valid_cell_ns(cell_ns: str) -> bool:
    return 0 < len(cell_ns) <= MAX_CELL_NS and bool(_NS.fullmatch(cell_ns))


@dataclass
class CellAccess:
    listed: tuple = ()
    patterns: tuple = ()
    discover: bool = False
    max_cells: int = 64
    max_refused: int = 16
    prune_s: float = 60.0
    served: set = field(default_factory=set)
    refused: set = field(default_factory=set)
    _last_seen: dict = field(default_factory=dict)     # appeared cells: last time they had a publisher

    def __post_init__(self):
        self.served = set(self.listed)

    def allowed(self, cell_ns: str) -> bool:
        return (cell_ns in self.listed or self.discover
                or any(fnmatch.fnmatchcase(cell_ns, p) for p in self.patterns))

    def why_refused(self, cell_ns: str) -> str:
        allow = ', '.join([*self.listed, *self.patterns]) or 'none'
        return (f'cell {cell_ns!r} is not served by this executor: not in its cells or allowed_cells '
                f'({allow}), and discover_cells is off')

    def appeared(self, cell_ns: str, now: float) -> str:
        """A request topic of ``cell_ns`` is in the graph: SERVE (start serving it), REFUSE (answer
        its requests REJECTED), or IGNORE (already handled, an invalid name, or over a cap).
        """
        if cell_ns in self.served or cell_ns in self.refused:
            if cell_ns in self._last_seen:
                self._last_seen[cell_ns] = now
            return IGNORE
        if not valid_cell_ns(cell_ns):
            return IGNORE
        if self.allowed(cell_ns) and len(self.served) < self.max_cells:
            self.served.add(cell_ns)
            self._last_seen[cell_ns] = now
            return SERVE
        if len(self.refused) < self.max_refused:
            self.refused.add(cell_ns)
            self._last_seen[cell_ns] = now
            return REFUSE
        return IGNORE

    def still_there(self, cell_ns: str, now: float) -> None:
        if cell_ns in self._last_seen:
            self._last_seen[cell_ns] = now

    def to_prune(self, now: float) -> list[str]:
        """Appeared cells silent for ``prune_s``: removed here, returned for the caller to tear down."""
        gone = [c for c, t in self._last_seen.items() if now - t >= self.prune_s]
        for c in gone:
            del self._last_seen[c]
            self.served.discard(c)
            self.refused.discard(c)
        return gone

    def tracked(self) -> list[str]:
        """Cells that appeared (the ones whose publishers the caller watches)."""
        return list(self._last_seen)
