"""ParamSpec and validate: plain values, string arrays and maps (one nested parameter per key)."""
import pytest

from cellos_common.core.params import ParameterError, ParamSpec, check_specs, entry_name, validate

SPECS = [
    ParamSpec('period_ms', 20.0, 'period', min=0.0, max=100.0, min_exclusive=True, unit='ms'),
    ParamSpec('cells', [], 'cells', read_only=True, item=str),
    ParamSpec('offsets_ms', 0.0, 'offset', keys='cells', min=-50.0, max=50.0, unit='ms'),
    ParamSpec('mode', 'normal', 'class', keys='cells', choices=('critical', 'normal'),
              key_defaults=(('cell_01', 'critical'),)),
]


def test_map_entries_are_named_per_key_and_take_their_defaults():
    p = validate(SPECS, {'cells': ['cell_01', 'cell_02'], 'offsets_ms.cell_02': 5})
    assert p.cells == ['cell_01', 'cell_02']
    assert p.offsets_ms == {'cell_01': 0.0, 'cell_02': 5.0}
    assert p.mode == {'cell_01': 'critical', 'cell_02': 'normal'}
    assert validate(SPECS, {}).offsets_ms == {}


def test_a_slash_in_a_key_is_a_dot_in_the_parameter_name():
    assert entry_name('cell_weights', 'line1/cell_01') == 'cell_weights.line1.cell_01'
    p = validate(SPECS, {'cells': ['line1/cell_01'], 'offsets_ms.line1.cell_01': -1.5})
    assert p.offsets_ms == {'line1/cell_01': -1.5}


@pytest.mark.parametrize('values, message', [
    ({'cells': ['cell_01'], 'offsets_ms.cell_01': 99.0}, "parameter 'offsets_ms.cell_01': 99.0ms must be <= 50.0ms"),
    ({'cells': ['cell_01'], 'mode.cell_01': 'fast'}, "parameter 'mode.cell_01': 'fast' is not one of"),
    ({'cells': ['cell_01'], 'offsets_ms.cell_09': 1.0}, "parameter 'offsets_ms.cell_09': no entry of 'cells'"),
    ({'cells': ['cell-1']}, "parameter 'cells': 'cell-1' is not a name"),
    ({'cells': ['a', 'a']}, "parameter 'cells': a listed twice"),
    ({'cells': ['a', 1]}, "parameter 'cells': expected a list of str"),
    ({'cells': 'cell_01,cell_02'}, "parameter 'cells': expected list, got str"),
    ({'speed': 1}, "unknown parameter 'speed'"),
])
def test_a_bad_value_is_refused_naming_the_full_parameter(values, message):
    with pytest.raises(ParameterError, match=message.replace('(', r'\(')):
        validate(SPECS, values)


def test_every_error_at_once():
    with pytest.raises(ParameterError) as e:
        validate(SPECS, {'period_ms': 0.0, 'cells': ['c'], 'offsets_ms.c': 60.0})
    assert "'period_ms'" in str(e.value) and "'offsets_ms.c'" in str(e.value)


@pytest.mark.parametrize('specs, message', [
    ([ParamSpec('xs', [], 'no item type')], 'needs item='),
    ([ParamSpec('cells', [], 'c', item=str), ParamSpec('m', 0.0, 'm', keys='cells')], 'read-only string-array'),
    ([ParamSpec('m', 0.0, 'm', keys='nothing')], 'read-only string-array'),
    ([ParamSpec('a', 1, 'a'), ParamSpec('a', 2, 'a')], 'specified twice'),
])
def test_specs_that_cannot_be_declared(specs, message):
    with pytest.raises(ValueError, match=message):
        check_specs(specs)


def test_nan_and_inf_are_refused_for_floats_and_map_entries():
    from cellos_common.core.params import ParameterError, ParamSpec, validate
    import pytest
    specs = [ParamSpec('period_ms', 20.0, 'p', min=0.1, max=60000.0),
             ParamSpec('cells', [], 'c', read_only=True, item=str),
             ParamSpec('cell_offsets_ms', 0.0, 'o', keys='cells', min=-60000.0, max=60000.0)]
    for bad in (float('nan'), float('inf')):
        with pytest.raises(ParameterError, match='finite'):
            validate(specs, {'period_ms': bad})
        with pytest.raises(ParameterError, match='finite'):
            validate(specs, {'cells': ['cell_01'], 'cell_offsets_ms.cell_01': bad})
