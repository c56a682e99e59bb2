from cellos_common.core.cell_names import cell_ns, split_cell_ns


def test_a_cell_namespace_is_its_line_and_cell_id():
    assert split_cell_ns('/line1/cell_01') == ('line1', 'cell_01') == split_cell_ns('line1/cell_01')
    assert split_cell_ns('/site/line1/cell_01') == ('site/line1', 'cell_01')
    assert split_cell_ns('cell_01') == ('', 'cell_01')
    for ns in ('line1/cell_01', 'site/line1/cell_01', 'cell_01'):
        assert cell_ns(*split_cell_ns(ns)) == ns
