"""Job fixtures: the small corpus written out (the jobs run on the tiny codec from tests/conftest.py)."""
from __future__ import annotations

import pytest

from tests.helpers import write_corpus


@pytest.fixture
def corpus(tmp_path):
    """CORPUS (tests/helpers.py) written under tmp_path/corpus."""
    return write_corpus(tmp_path / "corpus")
