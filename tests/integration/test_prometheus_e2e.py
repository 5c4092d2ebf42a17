"""End to end with the real ecosystem: Debian's Prometheus scrapes virtmon on the lab with the
shipped rules; the domain metrics arrive, every dashboard query runs, and the crash rule fires
when a lab domain's QEMU is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.conftest import daemon_config, running_daemon
from tests.integration.test_lab_events import qemu_pid
from tests.lab import lab as lab_module
from tests.prometheus_process import running_prometheus, scraping
from tests.shipped.promql import (
    PROMETHEUS_NAMES,
    RULES,
    dashboard_expressions,
    metric_names,
    rule_expressions,
)

pytestmark = pytest.mark.lab

T = TypeVar("T")


async def until(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll every 0.5 s until ``probe`` returns something other than None; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        await asyncio.sleep(0.5)


async def api(url: str, path: str, **params: str) -> Any:
    """GET a Prometheus API endpoint; the ``data`` of a successful answer."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"{url}{path}", params=params) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return body["data"]


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced the way Grafana would for "All" over a 1 m interval."""
    return (expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
            .replace("$domain", ".*"))


async def test_prometheus_scrapes_the_lab_and_the_crash_rule_fires(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """Prometheus with the shipped rules: domain metrics queryable, every dashboard query valid,
    every rule/dashboard name known to Prometheus, LibvirtDomainCrashed firing after kill -9."""
    cfg = daemon_config(
        short_tmp, libvirt={"uri": lab_module.URI},
        # A receiver nobody listens on: its webhook families are exported (and fail, harmlessly).
        alerts={"receivers": [{"name": "nowhere", "kind": "json",
                               "urls": ["http://127.0.0.1:9/"]}]},
    )
    async with running_daemon(cfg) as daemon:
        target = daemon.metrics_address.split("://", 1)[1]
        async with running_prometheus(short_tmp, scraping([target], rules=RULES)) as url:
            started = time.monotonic()

            async def domain_cpu() -> list[Any] | None:
                data = await api(url, "/api/v1/query", query=(
                    f'libvirt_domain_info_cpu_time_seconds_total{{domain="{lab_domain}"}}'))
                return data["result"] or None

            series = await until(domain_cpu, 60, f"no CPU time of {lab_domain} in Prometheus")
            assert series[0]["metric"]["job"] == "virtmon"
            assert float(series[0]["value"][1]) > 0
            print(f"first domain sample queryable after {time.monotonic() - started:.1f} s")

            for expr in dashboard_expressions().values():
                await api(url, "/api/v1/query", query=grafana_to_promql(expr))  # parses, runs

            used = {name for expr in [*rule_expressions().values(),
                                      *dashboard_expressions().values()]
                    for name in metric_names(expr)}
            # The names Prometheus knows are those scraped so far: a cycle whose admin collector
            # overran its deadline (a loaded machine) lacks the libvirt_daemon_* names, which a
            # later one has. Poll, bounded, until every name used is known.
            deadline = time.monotonic() + 60
            while unknown := used - (set(await api(url, "/api/v1/label/__name__/values"))
                                     | PROMETHEUS_NAMES):
                assert time.monotonic() < deadline, f"never scraped: {sorted(unknown)}"
                await asyncio.sleep(0.5)

            rules = await api(url, "/api/v1/rules")
            assert {rule["name"] for group in rules["groups"] for rule in group["rules"]} \
                == set(rule_expressions())

            def crash_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [a for a in alerts if a["labels"]["alertname"] == "LibvirtDomainCrashed"
                        and a["labels"].get("domain") == lab_domain]

            assert crash_alerts((await api(url, "/api/v1/alerts"))["alerts"]) == []
            os.kill(qemu_pid(lab_domain), signal.SIGKILL)
            killed = time.monotonic()

            async def firing() -> dict[str, Any] | None:
                alerts = crash_alerts((await api(url, "/api/v1/alerts"))["alerts"])
                return next((a for a in alerts if a["state"] == "firing"), None)

            alert = await until(firing, 60, f"LibvirtDomainCrashed for {lab_domain} not firing")
            print(f"LibvirtDomainCrashed firing {time.monotonic() - killed:.1f} s after kill -9")
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["job"] == "virtmon"
            assert lab_domain in alert["annotations"]["summary"]
