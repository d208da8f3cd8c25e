"""Fixtures: the algorithm registry of tests/splitter/specs.py and default limits."""

from __future__ import annotations

import pytest

from services.splitter.core.validation import FlowLimits
from shared.algorithms import AlgorithmRegistry
from tests.splitter.specs import BUILTIN_SPECS


@pytest.fixture
def registry() -> AlgorithmRegistry:
    return AlgorithmRegistry(BUILTIN_SPECS)


@pytest.fixture
def limits() -> FlowLimits:
    return FlowLimits()
