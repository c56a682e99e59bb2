"""cellos_audit_report: PNG figures of one or more audit recordings.

  cellos_audit_report log/audit/line1_20250101-120000 [-o DIR]

writes phase_error, flow, holds, energy_gate, compute_share, verdict_mix and overview .png into
DIR (default: <first recording>/report). No ROS install needed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellos_audit.core import lineage, timelines
from cellos_audit.core.recording_reader import RecordingError


def draw_report(recordings: list, out_dir: Path, dpi: int | None = None) -> list[Path]:
    from cellos_audit.core.report_figures import DPI, draw   # matplotlib only when drawing
    audit = lineage.load(recordings)
    tl = timelines.load(recordings)
    names = ', '.join(Path(r).name for r in recordings)
    return draw(tl, audit.decisions, Path(out_dir), title=f'cellos audit: {names}', dpi=dpi or DPI)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='cellos_audit_report', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('recordings', nargs='+', help='bag folders or .mcap files')
    ap.add_argument('-o', '--out', default=None, help='output folder (default: <first recording>/report)')
    ap.add_argument('--dpi', type=int, default=None, help='pixels per inch (default 100; overview is 14 x 12 in)')
    args = ap.parse_args(argv)
    first = Path(args.recordings[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / 'report'
    try:
        paths = draw_report(args.recordings, out, args.dpi)
    except RecordingError as e:
        print(f'cellos_audit_report: {e}', file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == '__main__':
    sys.exit(main())
