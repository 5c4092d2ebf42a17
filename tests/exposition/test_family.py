"""The metric family's home: naming it costs no collector import."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["virtmon.alerts.engine", "virtmon.alerts.service",
                                    "virtmon.control.executor", "virtmon.exposition.cache"])
def test_metric_family_users_import_no_collector(module: str) -> None:
    """alerts, control and the exposition cache import no module of virtmon.collectors."""
    probe = (f"import sys, {module}; "
             "print(','.join(m for m in sys.modules if m.startswith('virtmon.collectors')))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert found == ""
