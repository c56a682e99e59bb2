"""Docstrings against PEP 257 through ament_pep257 (as ros2/demos does).

The project's docstrings start their summary on the first line and may wrap it (D205, D213,
D400, D415 off), describe rather than command (D401 off) and may start with an identifier
(D403 off); everything else of ament's convention applies.
"""
from pathlib import Path

from ament_pep257.main import main
import pytest

PKG = Path(__file__).resolve().parents[1]
REPO = PKG.parents[2]
STYLE = ['--add-ignore', 'D205', 'D213', 'D400', 'D401', 'D403', 'D415']


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257():
    assert main(argv=[*STYLE, '--', str(PKG)]) == 0, 'docstring style errors (see above)'
