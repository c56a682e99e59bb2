"""RViz view of a line: one cube per cell (colour: state) with a text of its phase error and
hold reason, and in front of each cell its input buffer: a bar filled to level/capacity
(green to red) with 'level/capacity'; a line text with the part counts.
"""
from __future__ import annotations

from cellos_interfaces.msg import CellPhase, LineState
from visualization_msgs.msg import Marker, MarkerArray

from cellos_common.core import gate_level

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
        gate = f'\nenergy: {gate_level.label(c.gate_level)}' if c.gate_level != gate_level.UNKNOWN else ''
        text.text = f'{c.cell_id}\n{name}\nphase {c.phase_error_ms:+.2f} ms{hold}{gate}'
        out.markers += [cube, text]
        if c.buffer_capacity > 0:
            out.markers += _buffer(state.line_id, i, c, cube.header, (i - 0.5) * spacing_m)
    counts = Marker(ns=f'{state.line_id}/flow', id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
    counts.header.frame_id, counts.header.stamp = frame_id, state.header.stamp
    counts.pose.position.x = -spacing_m
    counts.pose.position.z = 0.4
    counts.pose.orientation.w = 1.0
    counts.scale.z = 0.2
    counts.color.r = counts.color.g = counts.color.b = counts.color.a = 1.0
    counts.text = (f'in {state.parts_in}  out {state.parts_out}\nbuffers {state.parts_in_buffers}  '
                   f'cells {state.parts_in_cells}\ndropped {state.parts_dropped}  overflows {state.overflows}\n'
                   f'holds {state.holds_applied}/{state.holds_released} released')
    out.markers.append(counts)
    return out


def _buffer(line_id: str, i: int, c: CellPhase, header, x: float) -> list[Marker]:
    fill = min(1.0, c.buffer_level / c.buffer_capacity)
    bar = Marker(ns=f'{line_id}/buffers', id=i, type=Marker.CUBE, action=Marker.ADD)
    bar.header = header
    bar.pose.position.x = x
    bar.pose.position.z = 0.05 + 0.4 * fill
    bar.pose.orientation.w = 1.0
    bar.scale.x = bar.scale.y = 0.3
    bar.scale.z = max(0.02, 0.8 * fill)
    bar.color.r, bar.color.g, bar.color.b, bar.color.a = fill, 1.0 - fill, 0.1, 0.9
    label = Marker(ns=f'{line_id}/buffer_labels', id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
    label.header = header
    label.pose.position.x = x
    label.pose.position.z = 1.0
    label.pose.orientation.w = 1.0
    label.scale.z = 0.18
    label.color.r = label.color.g = label.color.b = label.color.a = 1.0
    label.text = f'{c.buffer_level}/{c.buffer_capacity}'
    return [bar, label]
