"""Golden-file switch: `pytest tests/collectors --update-golden` or VIRTMON_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register --update-golden (active when tests/collectors is on the command line)."""
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/collectors/golden/*.prom from the current output",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """Whether golden files are to be rewritten instead of compared."""
    option = bool(request.config.getoption("--update-golden", default=False))
    return option or os.environ.get("VIRTMON_UPDATE_GOLDEN") == "1"
