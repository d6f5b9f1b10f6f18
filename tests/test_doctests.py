"""Run the ``>>>`` examples in public docstrings, so documentation cannot rot."""

import doctest
import importlib

import pytest

MODULES = ["equitensor", "equitensor.irreps"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples to run"
    assert result.failed == 0
