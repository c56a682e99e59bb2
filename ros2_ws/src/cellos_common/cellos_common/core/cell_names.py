"""A cell's names. ``cell_id`` is the cell's id within its line ('cell_01'), ``line_id`` its line's
('line1'); together they are the cell's namespace ``cell_ns`` ('line1/cell_01'), under which its
nodes run (/line1/cell_01/timing) and by which the shared executor tells its clients apart.
"""
from __future__ import annotations


def cell_ns(line_id: str, cell_id: str) -> str:
    return f'{line_id}/{cell_id}' if line_id else cell_id


def split_cell_ns(ns: str) -> tuple[str, str]:
    """'line1/cell_01' (or a node namespace '/line1/cell_01') -> ('line1', 'cell_01'); the cell
    is the last part, the line everything before it ('' when there is nothing before it).
    """
    line_id, _, cell_id = ns.strip('/').rpartition('/')
    return line_id, cell_id
