"""A real Prometheus for the rule tests: the shipped rules with short ``for:``, alert state, and
the lab conditions the rules watch for (a stuck QEMU, libvirtd settings changed and restored).

Only ``for:`` durations are shortened in the copy the tests load: every expression is the
shipped one, compared when the copy is made. A rule whose expression looks back over a window
(``increase(...[10m])``) fires at once but stays firing until the window has passed;
:func:`Prometheus.forget` deletes the samples older than now from Prometheus's storage (its
admin API), which is what Prometheus sees once the window has slid past a condition that ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import libvirt
import pytest
import yaml

from tests.integration.test_lab_events import qemu_pid
from tests.lab.lab import URI
from tests.prometheus_process import running_prometheus, scraping
from tests.shipped.promql import RULES, rule_expressions

# What every ``for:`` becomes in the tests' copy: one evaluation at 1 s is enough to be sure
# the condition held (pending), the next fires it.
SHORT_FOR = "1s"


def fast_rules(directory: Path) -> Path:
    """A copy of the shipped rules file with every ``for:`` set to :data:`SHORT_FOR`."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    copy = directory / "virtmon-rules.fast.yml"
    copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    loaded = yaml.safe_load(copy.read_text(encoding="utf-8"))
    exprs = {r["alert"]: r["expr"] for g in loaded["groups"] for r in g["rules"]}
    assert exprs == rule_expressions(), "the fast copy changed an expression"
    return copy


@dataclass
class Prometheus:
    """A running Prometheus: its URL and the query helpers the tests need."""

    url: str

    async def api(self, path: str, method: str = "GET", **params: str) -> Any:
        """The ``data`` of a successful API answer."""
        async with aiohttp.ClientSession() as session, \
                session.request(method, f"{self.url}{path}", params=params) as response:
            if response.status == 204:
                return None
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        return list((await self.api("/api/v1/query", query=expr))["result"])

    async def alerts(self, name: str, **labels: str) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts of one rule whose labels include ``labels``."""
        found = (await self.api("/api/v1/alerts"))["alerts"]
        return [a for a in found if a["labels"]["alertname"] == name
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    async def state(self, name: str, **labels: str) -> str:
        """``firing``, ``pending`` or ``inactive`` for one rule (and labels)."""
        states = {a["state"] for a in await self.alerts(name, **labels)}
        return "firing" if "firing" in states else "pending" if states else "inactive"

    async def wait_state(self, name: str, state: str, timeout: float = 60.0,
                         **labels: str) -> None:
        """Poll until the rule is in ``state``; fail saying what it was."""
        deadline = time.monotonic() + timeout
        while (now := await self.state(name, **labels)) != state:
            assert time.monotonic() < deadline, \
                f"{name} {labels} is {now}, not {state}, after {timeout} s"
            await asyncio.sleep(0.25)

    async def wait_value(self, expr: str, timeout: float = 60.0) -> float:
        """Poll until ``expr`` returns a sample; its first value."""
        deadline = time.monotonic() + timeout
        while not (result := await self.query(expr)):
            assert time.monotonic() < deadline, f"no result for {expr} after {timeout} s"
            await asyncio.sleep(0.25)
        return float(result[0]["value"][1])

    async def evaluations(self, count: int = 3) -> None:
        """Return after the rule group has been evaluated ``count`` more times (every second):
        a condition that would fire has had its chance."""
        async def last() -> float:
            groups = (await self.api("/api/v1/rules"))["groups"]
            return max(time_of(g["lastEvaluation"]) for g in groups)

        seen = await last()
        for _ in range(count):
            deadline = time.monotonic() + 30
            while (now := await last()) <= seen:
                assert time.monotonic() < deadline, "the rules are not evaluated"
                await asyncio.sleep(0.2)
            seen = now

    async def forget(self, selector: str) -> None:
        """Delete every stored sample of ``selector`` up to now: the rule's look-back window
        then holds only what comes after, as once the window has slid past."""
        await self.api("/api/v1/admin/tsdb/delete_series", method="POST",
                       **{"match[]": selector, "end": f"{time.time():.3f}"})


def time_of(rfc3339: str) -> float:
    """Seconds since the epoch of Prometheus's RFC 3339 time (nanoseconds cut to micro)."""
    text = re.sub(r"(\.\d{6})\d*", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


@contextlib.asynccontextmanager
async def prometheus(directory: Path, targets: list[str],
                     rules: Path | None = None) -> AsyncIterator[Prometheus]:
    """Debian's prometheus on loopback: job ``virtmon`` scraping ``targets`` every second, rules
    evaluated every second (the fast copy unless ``rules`` is given), its admin API on; stopped
    by its pid after."""
    config = scraping(targets, rules=rules or fast_rules(directory), scrape_timeout="900ms")
    async with running_prometheus(directory, config, admin_api=True) as url:
        yield Prometheus(url)


@contextlib.contextmanager
def stuck_domain(name: str, holders: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A domain stuck in a job: its QEMU SIGSTOPped and ``holders`` monitor commands waiting
    on it (the first holds the domain's job, the others wait for the job), each in a libvirtd
    worker thread; all ended after the body."""
    pid = qemu_pid(name)
    os.kill(pid, signal.SIGSTOP)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(holders):
            procs.append(subprocess.Popen(
                ["virsh", "-q", "-c", URI, "qemu-monitor-command", name,
                 '{"execute":"query-status"}'],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield procs
    finally:
        os.kill(pid, signal.SIGCONT)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def virt_admin(*args: str) -> str:
    """Run virt-admin against the lab's libvirtd; its output (fails the test on an error)."""
    result = subprocess.run(["virt-admin", "-q", *args], capture_output=True, text=True,
                            timeout=30, check=False)
    if result.returncode != 0:
        pytest.fail(f"virt-admin {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def admin_values(*args: str) -> dict[str, int]:
    """A virt-admin ``*-info`` listing as name -> value."""
    values = {}
    for line in virt_admin(*args).splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            values[key.strip()] = int(value)
    return values


@contextlib.asynccontextmanager
async def read_only_connections(count: int) -> AsyncIterator[list[Any]]:
    """``count`` extra read-only clients of the lab's libvirtd for the body (opened and closed
    in threads: the loop serves the daemon meanwhile)."""
    conns: list[Any] = []
    try:
        for _ in range(count):
            conns.append(await asyncio.to_thread(libvirt.openReadOnly, URI))
        yield conns
    finally:
        for conn in conns:
            with contextlib.suppress(libvirt.libvirtError):
                await asyncio.to_thread(conn.close)


@contextlib.contextmanager
def one_worker_pool(server: str = "libvirtd") -> Iterator[None]:
    """The server's thread pool cut to one worker for the body, then set back as it was."""
    before = admin_values("srv-threadpool-info", server)
    virt_admin("srv-threadpool-set", server, "--min-workers", "1", "--max-workers", "1")
    try:
        yield
    finally:
        virt_admin("srv-threadpool-set", server, "--max-workers", str(before["maxWorkers"]),
                   "--min-workers", str(before["minWorkers"]))


@contextlib.contextmanager
def near_max_clients(server: str = "libvirtd", spare: int = 2) -> Iterator[int]:
    """The server's max_clients set to the clients connected now plus ``spare`` for the body,
    then set back; the limit set."""
    before = admin_values("srv-clients-info", server)
    limit = before["nclients"] + spare
    virt_admin("srv-clients-set", server, "--max-clients", str(limit))
    try:
        yield limit
    finally:
        virt_admin("srv-clients-set", server, "--max-clients", str(before["nclients_max"]))
