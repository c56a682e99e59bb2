"""A cell's energy gate level: the one definition every package uses.

The values are cellos_interfaces/GateState LEVEL_* (a test checks they agree).
"""
from __future__ import annotations

from enum import IntEnum


class GateLevel(IntEnum):
    FULL = 0
    ECO = 1
    CRITICAL_ONLY = 2
    HALT = 3         # halts all but safety-critical inspection

    @property
    def label(self) -> str:
        """How logs, markers and the run summary write it: 'full', 'eco', 'critical-only', 'halt'."""
        return self.name.lower().replace('_', '-')


UNKNOWN = 255   # LineState/CellPhase.gate_level when no GateState was received


def label(level: int) -> str:
    """The label of a level as carried in a message; 'unknown' for UNKNOWN, the number otherwise."""
    if level == UNKNOWN:
        return 'unknown'
    try:
        return GateLevel(level).label
    except ValueError:
        return str(level)
