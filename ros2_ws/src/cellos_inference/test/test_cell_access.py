"""Which cells the executor serves: listed, allowed by pattern, discovery as an explicit choice;
refused cells bounded; appeared cells pruned after they go.
"""
from cellos_inference.core.cell_access import IGNORE, REFUSE, SERVE, CellAccess, valid_cell_ns


def test_listed_and_patterns_served_others_refused_with_the_reason():
    a = CellAccess(listed=('line1/cell_01',), patterns=('line2/cell_*',))
    assert 'line1/cell_01' in a.served
    assert a.appeared('line1/cell_01', 0.0) == IGNORE            # listed: already served
    assert a.appeared('line2/cell_07', 0.0) == SERVE
    assert a.appeared('line1/cell_99', 0.0) == REFUSE
    assert a.appeared('line1/cell_99', 1.0) == IGNORE            # once
    why = a.why_refused('line1/cell_99')
    assert 'line1/cell_99' in why and 'line2/cell_*' in why and 'discover_cells is off' in why


def test_discovery_is_an_explicit_choice():
    assert CellAccess().appeared('line1/cell_99', 0.0) == REFUSE
    assert CellAccess(discover=True).appeared('line1/cell_99', 0.0) == SERVE


def test_caps_and_invalid_names():
    a = CellAccess(listed=('a/c1',), discover=True, max_cells=2, max_refused=1)
    assert a.appeared('a/c2', 0.0) == SERVE
    assert a.appeared('a/c3', 0.0) == REFUSE                     # over max_cells: refused
    assert a.appeared('a/c4', 0.0) == IGNORE                     # over max_refused: not even received
    assert a.appeared('a/bad-name', 0.0) == IGNORE and not valid_cell_ns('x' * 200)
    assert not valid_cell_ns('') and not valid_cell_ns('/a/b') and valid_cell_ns('line1/cell_01')


def test_appeared_cells_are_pruned_after_they_go_listed_never():
    a = CellAccess(listed=('l/c1',), discover=True, prune_s=10.0)
    a.appeared('l/c2', 0.0)
    a.still_there('l/c2', 5.0)
    assert a.to_prune(14.0) == []
    assert a.to_prune(15.0) == ['l/c2'] and 'l/c2' not in a.served and 'l/c1' in a.served
    assert a.appeared('l/c2', 20.0) == SERVE                     # it may come back
    assert a.tracked() == ['l/c2']
