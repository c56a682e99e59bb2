import pytest

from cellos_common.core.mapping_param import parse_list, parse_mapping
from cellos_common.core.params import ParameterError


def test_parse_mapping_and_list():
    assert parse_mapping(' a/b=2, c=0.5 ,', float, 'w') == {'a/b': 2.0, 'c': 0.5}
    assert parse_list('x, ,y') == ['x', 'y']


@pytest.mark.parametrize('text', ['a', '=2', 'a=x'])
def test_bad_mapping_names_the_part(text):
    with pytest.raises(ParameterError, match='w:'):
        parse_mapping(text, float, 'w')
