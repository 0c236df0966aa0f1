"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from tests.support.engines import SGLANG_DIR
from toolkit.preflight.flags import EngineOptions, extract_sglang_options


@pytest.fixture(scope="module")
def sglang_options() -> EngineOptions:
    """The installed sglang's options, parsed from source; the tests pin 0.5.23."""
    if SGLANG_DIR is None:
        pytest.skip("sglang is not installed")
    options = extract_sglang_options(SGLANG_DIR)
    if options.version != "0.5.23":
        pytest.skip(f"pinned to sglang 0.5.23, found {options.version}")
    return options
