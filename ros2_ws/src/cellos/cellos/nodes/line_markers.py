"""RViz view of a line: one cube per cell (colour: state) with a text of its phase error."""
from __future__ import annotations

from cellos_interfaces.msg import CellPhase, LineState
from visualization_msgs.msg import Marker, MarkerArray

_COLOURS = {  # state -> RGBA
    'locked': (0.1, 0.8, 0.2, 0.9), 'locking': (1.0, 0.8, 0.0, 0.9), 'held': (0.2, 0.4, 1.0, 0.9),
    'free-running': (1.0, 0.5, 0.0, 0.9), 'lost': (0.9, 0.1, 0.1, 0.9), 'starting': (0.6, 0.6, 0.6, 0.9),
}


def cell_state_name(c: CellPhase) -> str:
    if c.state == CellPhase.STATE_LOST:
        return 'lost'
    if c.held:
        return 'held'
    if c.locked:
        return 'locked'
    return {0: 'starting', 3: 'free-running'}.get(c.state, 'locking')


def line_markers(state: LineState, frame_id: str, spacing_m: float = 1.5) -> MarkerArray:
    out = MarkerArray()
    clear = Marker(action=Marker.DELETEALL)
    clear.header.frame_id = frame_id
    out.markers.append(clear)
    for i, c in enumerate(state.cells):
        name = cell_state_name(c)
        cube = Marker(ns=f'{state.line_id}/cells', id=i, type=Marker.CUBE, action=Marker.ADD)
        cube.header.frame_id, cube.header.stamp = frame_id, state.header.stamp
        cube.pose.position.x = i * spacing_m
        cube.pose.position.z = 0.4
        cube.pose.orientation.w = 1.0
        cube.scale.x = cube.scale.y = 1.0
        cube.scale.z = 0.8
        cube.color.r, cube.color.g, cube.color.b, cube.color.a = _COLOURS[name]
        text = Marker(ns=f'{state.line_id}/labels', id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header = cube.header
        text.pose.position.x = i * spacing_m
        text.pose.position.z = 1.3
        text.pose.orientation.w = 1.0
        text.scale.z = 0.22
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        hold = f'\nhold: {c.hold_reason}' if c.held else ''
        text.text = f'{c.cell_id}\n{name}\nphase {c.phase_error_ms:+.2f} ms{hold}'
        out.markers += [cube, text]
    return out
