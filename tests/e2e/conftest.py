"""The browser tests' fixtures: one Chromium per module (`browser_support`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import browser


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    with browser() as launched:
        yield launched
