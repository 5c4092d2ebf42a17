"""The shipped Grafana dashboard against a real Prometheus scraping virtmon on the lab: every
panel has data, a count with nothing to count shows 0, and a refused cycle shows."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.receiver import Recorder, serving
from tests.conftest import daemon_config, running_daemon
from tests.integration.prometheus_lab import Prometheus, prometheus
from tests.lab import lab as lab_module
from tests.shipped.promql import DASHBOARD, RULES
from virtmon import configfile
from virtmon.app import Daemon
from virtmon.config import Config
from virtmon.reload import reload_daemon

pytestmark = pytest.mark.lab


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced as Grafana would for "All" and a 1 s scrape interval
    ($__rate_interval is at least four scrape intervals)."""
    return (expr.replace("$__rate_interval", "5s").replace("$instance", ".*")
            .replace("$domain", ".*"))


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels that query (rows left out)."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [p for p in board["panels"] if p["type"] != "row"]


async def panel_results(prom: Prometheus, panel: dict[str, Any]) -> list[dict[str, Any]]:
    """Every series the panel's targets return now."""
    found = []
    for target in panel["targets"]:
        found += await prom.query(grafana_to_promql(target["expr"]))
    return found


async def test_every_panel_has_data_on_the_lab(lab: str, short_tmp: Path) -> None:
    """With virtmon on the lab scraped for a few seconds, each panel's queries return at least
    one series, and every stat panel a number (a count of nothing is 0, not "No data")."""
    async with serving(Recorder()) as rec:
        cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                            alerts={"receivers": [{"name": "hook", "kind": "json",
                                                   "urls": [rec.url]}]})
        async with running_daemon(cfg) as daemon, \
                prometheus(short_tmp, [daemon.metrics_address.split("://", 1)[1]],
                           rules=RULES) as prom:
            # Rates need two samples within their interval, the admin collector its first cycle.
            await prom.wait_value("count_over_time(libvirt_up[10s]) > 4")
            await prom.wait_value("libvirt_daemon_threadpool_workers")
            empty = {}
            for panel in panels():
                found = await panel_results(prom, panel)
                values = [float(series["value"][1]) for series in found]
                if not found or (panel["type"] == "stat"
                                 and any(math.isnan(v) for v in values)):
                    empty[panel["title"]] = values
            assert empty == {}


def panel(title: str) -> dict[str, Any]:
    """The panel with this title."""
    return next(p for p in panels() if p["title"] == title)


async def overrun_every_cycle(daemon: Daemon, cfg: Config, ratio: float) -> None:
    """Reload the daemon with ``collect.deadline_ratio = ratio`` (as an operator would)."""
    new = configfile.build(cfg.document(), {"collect.deadline_ratio": ratio})
    assert await reload_daemon(daemon, lambda: new) is not None


async def test_the_collection_cycle_panel_shows_failed_cycles(lab: str, short_tmp: Path) -> None:
    """Cycles whose libvirt calls overrun their deadline are quick, so the duration looks
    healthy: the "Collection cycle" panel shows them as failed cycles, and 0 once they pass."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            prometheus(short_tmp, [daemon.metrics_address.split("://", 1)[1]],
                       rules=RULES) as prom:
        await prom.wait_value("count_over_time(libvirt_up[10s]) > 4")
        failed = grafana_to_promql(panel("Collection cycle")["targets"][1]["expr"])
        assert await prom.wait_value(failed) == 0
        await overrun_every_cycle(daemon, cfg, 0.0001)
        await prom.wait_value(f"{failed} > 2")
        assert await prom.wait_value("time() - virtmon_collection_last_success_timestamp_seconds"
                                     " > 3")
        await overrun_every_cycle(daemon, cfg, 0.8)
        await prom.wait_value(f"{failed} == 0", timeout=30)
