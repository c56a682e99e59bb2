"""flake8 through ament_flake8 (as ros2/demos does), with the rules in this package's setup.cfg."""
from pathlib import Path

from ament_flake8.main import main_with_errors
import pytest

PKG = Path(__file__).resolve().parents[1]
REPO = PKG.parents[2]


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    rc, errors = main_with_errors(argv=['--config', str(PKG / 'setup.cfg'), str(PKG)])
    assert rc == 0, f'{len(errors)} code style error(s):\n' + '\n'.join(errors)
