"""The examples in the streaming modules' docstrings run, so they can't drift from the code."""

import doctest
import importlib

import pytest

MODULES = ["streams.app", "streams.batch", "streams.decide", "streams.decode", "streams.demo", "streams.emit", "streams.metrics"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
