"""PNG figures of a recording (matplotlib, Agg: no display needed): what an engineer looks at
after a run instead of reading logs.

  phase_error.png     phase error per cell over time
  flow.png            parts in / out of the line, and each cell's input buffer
  holds.png           when each cell was held, and why
  energy_gate.png     site price and carbon, and each cell's gate level
  compute_share.png   the executor's compute share per cell
  verdict_mix.png     verdicts per model (content id), with counts
  overview.png        the six on one page
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from cellos_audit.core.timelines import Timelines, hold_intervals  # noqa: E402
from cellos_common.core.gate_level import GateLevel  # noqa: E402

VERDICT_COLORS = {'PASS': '#2a9d4b', 'FAIL': '#d1495b', 'UNDECIDED': '#edae49'}
DPI = 100


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha='center', va='center', transform=ax.transAxes, color='grey')
    ax.set_xticks([])
    ax.set_yticks([])


def _per_cell(ax, title: str, series: dict, ylabel: str, missing: str) -> bool:
    """One line per cell; False (and a note) when there is nothing to draw."""
    ax.set_title(title)
    if not series:
        _empty(ax, missing)
        return False
    for cell in sorted(series):
        ax.plot(series[cell].t, series[cell].v, lw=1, label=cell)
    ax.set_xlabel('time [s]')
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    return True


def phase_error(ax, tl: Timelines) -> None:
    if _per_cell(ax, 'Phase error per cell', tl.phase_error_ms, 'phase error [ms]', 'no line state recorded'):
        ax.axhline(0, color='black', lw=0.5)


def flow(ax, tl: Timelines) -> None:
    ax.set_title('Parts flow and buffers')
    if not tl.parts_in.t:
        return _empty(ax, 'no line state recorded')
    ax.plot(tl.parts_in.t, tl.parts_in.v, color='black', lw=1.5, label='parts in')
    ax.plot(tl.parts_out.t, tl.parts_out.v, color='black', lw=1.5, ls='--', label='parts out')
    ax.set_xlabel('time [s]')
    ax.set_ylabel('parts (cumulative)')
    ax2 = ax.twinx()
    for cell in sorted(tl.buffer_level):
        s = tl.buffer_level[cell]
        ax2.step(s.t, s.v, where='post', lw=0.8, alpha=0.8, label=f'{cell} buffer')
    ax2.set_ylabel('buffer level [parts]')
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, ncol=2, loc='upper left')


def holds(ax, tl: Timelines) -> None:
    ax.set_title('Holds per cell (reason of each)')
    cells = sorted(tl.held)
    if not cells:
        return _empty(ax, 'no line state recorded')
    reasons = {}
    for i, cell in enumerate(cells):
        for start, length, kind in hold_intervals(tl.held[cell], tl.end_s):
            color = reasons.setdefault(kind, f'C{len(reasons)}')
            ax.broken_barh([(start, max(length, tl.end_s / 500))], (i - 0.4, 0.8), color=color)
    _mark_actions(ax, tl, ('hold', 'release', 'resync'))
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels(cells)
    ax.set_xlim(0, max(tl.end_s, 1e-3))
    ax.set_xlabel('time [s]')
    if reasons:
        from matplotlib.patches import Patch
        ax.legend([Patch(color=c) for c in reasons.values()], list(reasons), fontsize=7, loc='upper right')
    else:
        ax.text(0.5, 0.5, 'no cell was held', ha='center', va='center', transform=ax.transAxes, color='grey')


def _mark_actions(ax, tl: Timelines, actions) -> None:
    """Operator actions as dashed lines, labelled with what and on what."""
    for t, action, target, _reason in tl.actions:
        if action in actions:
            ax.axvline(t, color='black', ls='--', lw=0.8)
            ax.annotate(f'{action} {target}', (t, 1.0), xycoords=('data', 'axes fraction'), rotation=90,
                        va='top', ha='right', fontsize=6)


def energy_gate(axes, tl: Timelines) -> None:
    """Two axes sharing time: price and carbon above, each cell's gate level below."""
    ax, low = axes
    ax.set_title('Gate level against price and carbon')
    if not tl.price_per_mwh.t and not tl.gate_level:
        _empty(low, '')
        return _empty(ax, 'no energy feed or gate recorded')
    ax.step(tl.price_per_mwh.t, tl.price_per_mwh.v, where='post', color='tab:blue', label='price')
    ax.set_ylabel('price [USD/MWh]', color='tab:blue')
    ax2 = ax.twinx()
    ax2.step(tl.carbon_g_per_kwh.t, tl.carbon_g_per_kwh.v, where='post', color='tab:green', ls='--', label='carbon')
    ax2.set_ylabel('carbon [g/kWh]', color='tab:green')
    handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, ['price', 'carbon'], fontsize=7, loc='upper left')
    ax.tick_params(labelbottom=False)
    levels = list(GateLevel)
    for i, cell in enumerate(sorted(tl.gate_level)):
        s = tl.gate_level[cell]
        low.step(s.t, [v + 0.08 * i for v in s.v], where='post', lw=1.2, label=cell)
    low.set_yticks([lv.value for lv in levels])
    low.set_yticklabels([lv.label for lv in levels], fontsize=7)
    low.set_ylim(-0.5, len(levels) - 0.3)
    low.set_xlabel('time [s]')
    low.set_ylabel('gate')
    _mark_actions(ax, tl, ('energy_override', 'clear_energy_override'))
    if tl.gate_level:
        low.legend(fontsize=6, ncol=4, loc='upper left')


def compute_share(ax, tl: Timelines) -> None:
    if _per_cell(ax, 'Executor compute share per cell', tl.compute_share, 'share of compute time',
                 'no executor status recorded'):
        ax.set_ylim(0, 1)


def verdict_mix(ax, decisions) -> None:
    ax.set_title('Verdict mix per model')
    if not decisions:
        return _empty(ax, 'no inspection recorded')
    by_model: dict[str, Counter] = {}
    names: dict[str, set] = {}
    for d in decisions:
        key = d.model_id or d.model
        by_model.setdefault(key, Counter())[d.verdict] += 1
        names.setdefault(key, set()).add(d.model)
    models = sorted(by_model)
    bottom = [0.0] * len(models)
    for verdict, color in VERDICT_COLORS.items():
        shares = [by_model[m][verdict] / sum(by_model[m].values()) for m in models]
        ax.bar(range(len(models)), shares, bottom=bottom, color=color, label=verdict)
        bottom = [b + s for b, s in zip(bottom, shares)]
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([f"{'/'.join(sorted(names[m]))}" + (f'\n{m[:12]}' if m not in names[m] else '')
                        + f'\nn={sum(by_model[m].values())}' for m in models], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel('share of decisions')
    ax.legend(fontsize=7)


FIGURES = {'phase_error': phase_error, 'flow': flow, 'holds': holds, 'energy_gate': energy_gate,
           'compute_share': compute_share, 'verdict_mix': None}


def _panel(fig, spec, name, fn, tl, decisions) -> None:
    if name == 'energy_gate':
        sub = spec.subgridspec(2, 1, height_ratios=[2, 1], hspace=0.0)
        top = fig.add_subplot(sub[0])
        fn((top, fig.add_subplot(sub[1], sharex=top)), tl)
    elif fn is None:
        verdict_mix(fig.add_subplot(spec), decisions)
    else:
        fn(fig.add_subplot(spec), tl)


def draw(tl: Timelines, decisions, out_dir: Path, title: str = '', dpi: int = DPI) -> list[Path]:
    """Every figure as its own PNG, plus overview.png; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in FIGURES.items():
        fig = plt.figure(figsize=(9, 4.5), dpi=dpi, layout='constrained')
        _panel(fig, fig.add_gridspec(1, 1)[0], name, fn, tl, decisions)
        if title:
            fig.suptitle(title, fontsize=9)
        path = out_dir / f'{name}.png'
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    fig = plt.figure(figsize=(14, 12), dpi=dpi, layout='constrained')
    grid = fig.add_gridspec(3, 2)
    for spec, (name, fn) in zip(grid, FIGURES.items()):
        _panel(fig, spec, name, fn, tl, decisions)
    if title:
        fig.suptitle(title)
    path = out_dir / 'overview.png'
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written
