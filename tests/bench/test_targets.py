"""The table `make bench` ends with: BENCH lines parsed, each figure judged against its target."""
from __future__ import annotations

import targets

LOG = """\
...
BENCH phase cells=8 hz=50 ratio=0.87 relock_cycles=12 (free-run window 10 s; targets ratio<=1.5 relock_cycles=10)
BENCH executor_flood attainment_with=0.9900 attainment_without=1.0000
BENCH phase_scale cells=8 locked=8
BENCH phase_scale cells=32 locked=31
.BENCH newcomer x=1 (after a progress dot) y=2
1 passed
"""

ROWS = [
    ('phase', 'ratio', '<=', 1.5, ''),
    ('phase', 'relock_cycles', '<=', 10, ''),
    ('executor_flood', 'attainment_with', '>=', 'attainment_without - 0.005', ''),
    ('phase_scale cells=32', 'locked', '==', 32, ''),
    ('energy', 'critical_misses', '==', 0, ''),
]


def test_every_target_is_judged_or_reported_missing():
    benches = targets.parse(LOG.splitlines())
    assert [name for name, _ in benches] == ['phase', 'executor_flood', 'phase_scale', 'phase_scale', 'newcomer']
    assert benches[0][1] == {'cells': 8, 'hz': 50, 'ratio': 0.87, 'relock_cycles': 12}   # not the comment's
    assert benches[-1][1] == {'x': 1, 'y': 2}
    rows = {(b, k): (v, met) for b, k, v, _, met in targets.check(benches, ROWS)}
    assert rows[('phase', 'ratio')] == (0.87, True)
    assert rows[('phase', 'relock_cycles')] == (12, False)
    assert rows[('executor_flood', 'attainment_with')] == (0.99, False)   # 0.99 < 1.0 - 0.005
    assert rows[('phase_scale cells=32', 'locked')] == (31, False)        # the cells=8 line is not judged
    assert rows[('energy', 'critical_misses')] == (None, None)            # no BENCH line: no figure
    assert rows[('newcomer', '-')] == (None, None)                        # a BENCH line without a target
    text = targets.table(targets.check(benches, ROWS))
    assert 'targets met: 1 of 4; 1 without a figure' in text
    assert 'no target' in text


def test_the_targets_are_well_formed():
    for bench, key, op, target, why in targets.TARGETS:
        assert op in targets.COMPARE and why, (bench, key)
        if isinstance(target, str):   # an expression over the line's figures: it must evaluate
            names = {n for n in target.replace('-', ' ').replace('+', ' ').split() if n.isidentifier()}
            assert targets._value(target, dict.fromkeys(names, 1.0)) is not None
