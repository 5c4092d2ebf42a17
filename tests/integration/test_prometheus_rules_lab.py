"""Each shipped Prometheus rule, provoked on the lab: it fires in a real Prometheus scraping a
real virtmon, and resolves when the condition ends.

The rules are loaded with every ``for:`` shortened to 1 s (tests/integration/prometheus_lab.py
checks the expressions stay the shipped ones). A rule that looks back over a window (dropped
events, webhook failures, restarts) is resolved by deleting the samples older than now from
Prometheus's storage once the condition has ended: what the window holds after it has slid past.
``VirtmonCollectionStale`` needs data over 120 s old (in its expression): a virtmon process whose
cycles overrun their deadline from the module's start on ages while the other tests run.

Not provoked here: ``LibvirtUnauthenticatedClientsNearLimit``. Every socket of the lab's libvirtd
authenticates with ``none``, so a client is authenticated when it connects and
``nclients_unauth`` stays 0 whatever ``max_anonymous_clients`` is (tried: set to 1 with
``virt-admin srv-clients-set --max-unauth-clients``, three raw connections to the socket that
never speak and three libvirt connections; still 0). A SASL or TCP listener would need another
libvirtd.conf and a restart of the lab's libvirtd, which other tests share. promtool's unit tests
(config/prometheus/virtmon-rules.test.yml) cover its expression.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml

from tests.alerts.receiver import Recorder, serving
from tests.conftest import call, daemon_config, running_daemon
from tests.daemon import free_port
from tests.integration.prometheus_lab import (
    Prometheus,
    near_max_clients,
    one_worker_pool,
    prometheus,
    read_only_connections,
    stuck_domain,
)
from tests.integration.test_lab_events import qemu_pid
from tests.lab import lab as lab_module
from tests.shipped.promql import ROOT, rule_expressions
from tests.waiting import wait_until
from virtmon.app import Daemon
from virtmon.ctl.client import ControlClient

pytestmark = pytest.mark.lab


@dataclass
class BackgroundVirtmon:
    """A virtmon process of its own (``virtmon run``), configured by a file it reloads."""

    home: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Its metrics address as a scrape target."""
        return f"127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        """Its configuration file."""
        return self.home / "virtmon.toml"

    def write_config(self, deadline_ratio: float) -> None:
        """The lab, a 1 s cycle with this deadline ratio, everything else in ``home``."""
        self.config.write_text(
            f'[libvirt]\nuri = "{lab_module.URI}"\n'
            f"[collect]\ninterval = 1.0\ndeadline_ratio = {deadline_ratio}\n"
            f'[metrics]\nlisten = "{self.address}"\n'
            f'[control]\nsocket = "{self.home / "control.sock"}"\nsocket_group = ""\n'
            f'[state]\ndir = "{self.home / "state"}"\n[log]\nformat = "json"\n',
            encoding="utf-8")

    def start(self) -> None:
        """``virtmon run`` on the file, its output in ``home``."""
        self.write_config(0.8)
        with (self.home / "virtmon.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "virtmon"), "run", "--config",
                 str(self.config)], stdout=log, stderr=subprocess.STDOUT)

    def reload(self, deadline_ratio: float) -> None:
        """Edit the file and SIGHUP, as an operator would."""
        assert self.proc is not None
        self.write_config(deadline_ratio)
        os.kill(self.proc.pid, signal.SIGHUP)

    def metrics(self) -> str:
        """Its exposition now ("" while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it does not end."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module", autouse=True)
def overrunning_virtmon() -> Iterator[BackgroundVirtmon]:
    """From the module's start, a virtmon on the lab whose cycles all overrun their deadline
    after a first good one (reloaded with a tiny ``deadline_ratio``): by the stale-collection
    test its data is old without that test waiting 120 s itself."""
    virtmon = BackgroundVirtmon(Path(tempfile.mkdtemp(prefix="vm-", dir="/tmp")), free_port())
    try:
        virtmon.start()
        assert virtmon.proc is not None
        deadline = time.monotonic() + 60
        while not re.search(r"^virtmon_collection_last_success_timestamp_seconds [1-9]",
                            virtmon.metrics(), flags=re.M):
            assert virtmon.proc.poll() is None, (virtmon.home / "virtmon.log").read_text()
            assert time.monotonic() < deadline, "no good cycle in 60 s"
            time.sleep(0.2)
        virtmon.reload(deadline_ratio=0.0001)
        yield virtmon
    finally:
        virtmon.stop()
        shutil.rmtree(virtmon.home, ignore_errors=True)


def target(daemon: Daemon) -> str:
    """The daemon's metrics address as a scrape target (host:port)."""
    return daemon.metrics_address.split("://", 1)[1]


async def first_scrape(prom: Prometheus, selector: str = "libvirt_up") -> None:
    """Wait until Prometheus has scraped virtmon once with libvirt connected."""
    await prom.wait_value(f"{selector} == 1")


async def test_crash_fires_at_the_kill_and_restarted_at_the_start_not_the_stop(
    lab: str, lab_domain: str, lab_conn: libvirt.virConnect, short_tmp: Path
) -> None:
    """kill -9 of QEMU fires LibvirtDomainCrashed (not Restarted); starting the domain resolves
    it and fires LibvirtDomainRestarted, which resolves once its window is past."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            prometheus(short_tmp, [target(daemon)]) as prom:
        cpu = f'libvirt_domain_info_cpu_time_seconds_total{{domain="{lab_domain}"}}'
        await prom.wait_value(cpu)
        await prom.evaluations()
        assert await prom.state("LibvirtDomainCrashed", domain=lab_domain) == "inactive"

        crash(lab_domain)
        await prom.wait_state("LibvirtDomainCrashed", "firing", domain=lab_domain)
        # The stop is not a restart (the shut-off domain's CPU time is not exported at all).
        await prom.evaluations()
        assert await prom.state("LibvirtDomainRestarted", domain=lab_domain) == "inactive"

        dom = await call(lab_conn.lookupByName, lab_domain)
        await call(dom.create)
        await prom.wait_state("LibvirtDomainCrashed", "inactive", domain=lab_domain)
        await prom.wait_state("LibvirtDomainRestarted", "firing", domain=lab_domain)

        await prom.forget(cpu)
        await prom.wait_state("LibvirtDomainRestarted", "inactive", domain=lab_domain)


def receiver(name: str, kind: str, url: str) -> dict[str, Any]:
    """A receiver that retries and re-sends every second (the tests wait for both)."""
    return {"name": name, "kind": kind, "urls": [url], "batch_size": 1, "resend_interval": 1.0,
            "backoff_initial": 0.2, "backoff_max": 0.5}


async def queue_test_alert(daemon: Daemon, receiver_name: str) -> None:
    """One VirtmonTest alert for the receiver, through the control API (alerts.test); it is
    delivered like any alert but not re-sent."""
    client = ControlClient(str(daemon.control_socket))
    await asyncio.to_thread(client.call, "alerts.test", receiver=receiver_name)


def crash(domain: str) -> None:
    """kill -9 of the domain's QEMU: virtmon's DomainCrashed alert fires (and is re-sent)."""
    os.kill(qemu_pid(domain), signal.SIGKILL)


def outcome(receiver_name: str, name: str) -> str:
    """The deliveries counter of one receiver and outcome."""
    return (f'virtmon_webhook_deliveries_total{{receiver="{receiver_name}",'
            f'outcome="{name}"}}')


async def test_a_refusal_fires_only_alerts_lost_and_a_5xx_only_webhook_failing(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """An Alertmanager answering 422: its dead letter and refused re-sends fire only
    VirtmonWebhookAlertsLost, not VirtmonWebhookFailing; answering 503, the re-sends fire
    VirtmonWebhookFailing; both resolve once it accepts again."""
    answer = 422
    recorder = Recorder(respond=lambda _r: (answer, {}, 0.0))
    async with serving(recorder) as rec:
        cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                            control={"allow_write": True},
                            alerts={"receivers": [receiver("am", "alertmanager", rec.url)]})
        async with running_daemon(cfg) as daemon, \
                prometheus(short_tmp, [target(daemon)]) as prom:
            await first_scrape(prom)
            crash(lab_domain)
            await prom.wait_state("VirtmonWebhookAlertsLost", "firing", receiver="am")
            # The alert's delivery and two re-sends of it, refused, as Prometheus scraped them.
            await prom.wait_value('virtmon_webhook_attempts_total{receiver="am"} >= 3')
            await prom.evaluations()
            assert await prom.state("VirtmonWebhookFailing", receiver="am") == "inactive"
            assert await prom.query(f'{outcome("am", "dead")} >= 1')
            assert await prom.query(f'{outcome("am", "resend_rejected")} >= 2')

            answer = 503  # a passing failure: the re-sends are tried again next round
            await prom.wait_state("VirtmonWebhookFailing", "firing", receiver="am")
            assert await prom.query(f'{outcome("am", "resend_failed")} > 0')

            answer = 200  # Alertmanager accepts the re-sends again
            resent = await prom.wait_value(outcome("am", "resent"))
            await prom.wait_value(f'{outcome("am", "resent")} > {resent}')
            await prom.forget('virtmon_webhook_deliveries_total{receiver="am"}')
            await prom.wait_state("VirtmonWebhookAlertsLost", "inactive", receiver="am")
            await prom.wait_state("VirtmonWebhookFailing", "inactive", receiver="am")


def age_outbox(state_dir: Path, seconds: float) -> int:
    """Make every pending outbox row ``seconds`` older (as if virtmon had been down that long
    with them undelivered); how many rows."""
    with contextlib.closing(sqlite3.connect(state_dir / "virtmon.db")) as db, db:
        return db.execute("UPDATE outbox SET created_at = created_at - ? WHERE state = 'pending'",
                          (seconds,)).rowcount


async def test_an_unreachable_receiver_and_a_stopped_virtmon(lab: str, short_tmp: Path) -> None:
    """A receiver nobody listens on fires VirtmonWebhookFailing; virtmon stopped fires
    VirtmonDown; started again with an 11-minute-old undelivered alert, VirtmonWebhookBacklog;
    all three resolve once virtmon runs and the receiver takes the alert."""
    port = free_port()
    hook = receiver("hook", "json", f"http://127.0.0.1:{port}/hook")
    # No rules: the outbox holds the test alert alone (a default rule firing on the lab's own
    # state, such as a briefly saturated libvirtd pool, would queue a second row).
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                        control={"allow_write": True},
                        alerts={"receivers": [hook], "default_rules": False})
    address = str(cfg.metrics.listen)
    async with prometheus(short_tmp, [address]) as prom:
        async with running_daemon(cfg) as daemon:
            await first_scrape(prom)
            await queue_test_alert(daemon, "hook")
            await prom.wait_state("VirtmonWebhookFailing", "firing", receiver="hook")
            assert await prom.state("VirtmonWebhookBacklog", receiver="hook") == "inactive"
        await prom.wait_state("VirtmonDown", "firing", instance=address)

        assert age_outbox(short_tmp / "state", 11 * 60) == 1
        async with running_daemon(cfg):
            await prom.wait_state("VirtmonDown", "inactive", instance=address)
            await prom.wait_state("VirtmonWebhookBacklog", "firing", receiver="hook")

            async with serving(Recorder(), port=port) as rec:
                await rec.wait_for(lambda: bool(rec.requests))
                await prom.wait_value(f'{outcome("hook", "delivered")} == 1')
                await prom.wait_state("VirtmonWebhookBacklog", "inactive", receiver="hook")
                await prom.forget('virtmon_webhook_deliveries_total{receiver="hook"}')
                await prom.wait_state("VirtmonWebhookFailing", "inactive", receiver="hook")


def event_burst(conn: libvirt.virConnect, name: str, rounds: int) -> None:
    """Suspend and resume a domain ``rounds`` times as fast as libvirt answers (blocking)."""
    dom = conn.lookupByName(name)
    for _ in range(rounds):
        dom.suspend()
        dom.resume()


async def test_dropped_events_fire_and_resolve(
    lab: str, lab_domain: str, lab_conn: libvirt.virConnect, short_tmp: Path
) -> None:
    """A burst of lifecycle events into a one-event journal queue: VirtmonEventsDropped fires
    for the journal sink, and resolves once no drop is in its window."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI}, events={"queue_size": 1})
    async with running_daemon(cfg) as daemon, \
            prometheus(short_tmp, [target(daemon)]) as prom:
        await first_scrape(prom)
        await prom.evaluations()
        assert await prom.state("VirtmonEventsDropped") == "inactive"
        # The journal's database held by another writer (a slow disk would do the same): the
        # bus waits on its write while events arrive; the queue holds one, the rest are dropped.
        with contextlib.closing(sqlite3.connect(short_tmp / "state" / "virtmon.db",
                                                timeout=10, isolation_level=None)) as db:
            db.execute("BEGIN EXCLUSIVE")
            await call(event_burst, lab_conn, lab_domain, 3)
            await wait_until(lambda: daemon.bus.dropped["journal"] > 0, 30)
            db.execute("ROLLBACK")
        await prom.wait_state("VirtmonEventsDropped", "firing", sink="journal")

        await prom.forget("virtmon_events_dropped_total")
        await prom.wait_state("VirtmonEventsDropped", "inactive", sink="journal")


async def test_a_domain_stuck_in_a_job_has_incomplete_stats(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """A domain whose job is held by a monitor command its stopped QEMU never answers fires
    LibvirtDomainStatsIncomplete (virtmon's NOWAIT stats skip it); it resolves once QEMU runs."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            prometheus(short_tmp, [target(daemon)]) as prom:
        await prom.wait_value(f'libvirt_domain_stats_incomplete{{domain="{lab_domain}"}} == 0')
        with stuck_domain(lab_domain):
            await prom.wait_state("LibvirtDomainStatsIncomplete", "firing", domain=lab_domain)
        await prom.wait_state("LibvirtDomainStatsIncomplete", "inactive", domain=lab_domain)


async def test_a_saturated_thread_pool_fires_and_resolves(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """libvirtd's pool cut to one worker, held by a call into a stopped QEMU, with calls
    queued behind it: LibvirtThreadPoolSaturated fires; the pool restored, it resolves."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            prometheus(short_tmp, [target(daemon)]) as prom:
        await prom.wait_value('libvirt_daemon_threadpool_free_workers{server="libvirtd"}')
        with one_worker_pool(), stuck_domain(lab_domain, holders=3):
            # Every other caller of libvirtd waits for those seconds (the admin server, which
            # virtmon reads the pool from, has its own workers).
            await prom.wait_state("LibvirtThreadPoolSaturated", "firing", server="libvirtd")
        await prom.wait_state("LibvirtThreadPoolSaturated", "inactive", server="libvirtd")


async def test_clients_near_max_clients_fire_and_resolve(lab: str, short_tmp: Path) -> None:
    """max_clients lowered to just above the clients connected (30 of them this test's own):
    LibvirtClientsNearLimit fires; max_clients restored, it resolves."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            prometheus(short_tmp, [target(daemon)]) as prom:
        await prom.wait_value('libvirt_daemon_clients_max{server="libvirtd"}')
        async with read_only_connections(30):
            with near_max_clients():
                await prom.wait_state("LibvirtClientsNearLimit", "firing", server="libvirtd")
            await prom.wait_state("LibvirtClientsNearLimit", "inactive", server="libvirtd")


def documented_inhibition() -> tuple[str, str]:
    """The source and target alertname patterns of the inhibit rule in docs/fleet.md."""
    text = (ROOT / "docs" / "fleet.md").read_text(encoding="utf-8")
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and "inhibit_rules" in document:
            rule = document["inhibit_rules"][0]
            pattern = r'alertname\s*=~\s*"([^"]+)"'
            source = re.fullmatch(pattern, rule["source_matchers"][0])
            target = re.fullmatch(pattern, rule["target_matchers"][0])
            assert source and target, rule
            return source.group(1), target.group(1)
    raise AssertionError("docs/fleet.md has no inhibit rule")


@pytest.mark.kills_libvirtd
async def test_libvirt_down_fires_and_the_documented_inhibition_covers_the_rest(
    lab: str, short_tmp: Path
) -> None:
    """libvirtd stopped: LibvirtDown fires, and every other alert the outage sets off (the
    failing collectors) is one docs/fleet.md's inhibit rule silences; libvirtd back, all
    resolve."""
    source, inhibited = documented_inhibition()
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            prometheus(short_tmp, [target(daemon)]) as prom:
        await prom.wait_value('virtmon_collector_success{collector="admin"} == 1')
        await prom.evaluations()
        try:
            await call(lab_module.stop_libvirtd)
            await prom.wait_state("LibvirtDown", "firing")
            await prom.wait_state("VirtmonCollectorFailing", "firing", collector="admin")
            await prom.evaluations()
            active = {a["labels"]["alertname"]
                      for a in (await prom.api("/api/v1/alerts"))["alerts"]}
            assert {name for name in active if not re.fullmatch(source, name)
                    and not re.fullmatch(inhibited, name)} == set()
        finally:
            await call(lab_module.up)
        await prom.wait_state("LibvirtDown", "inactive")
        await prom.wait_state("VirtmonCollectorFailing", "inactive")


@pytest.mark.stalls_libvirtd
async def test_calls_stuck_in_a_hung_libvirtd_fire_and_resolve(
    lab: str, short_tmp: Path
) -> None:
    """libvirtd SIGSTOPped: the cycle's calls are abandoned and stay blocked, firing
    VirtmonLibvirtCallsStuck; continued, the calls return and it resolves."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            prometheus(short_tmp, [target(daemon)]) as prom:
        await first_scrape(prom)
        await prom.evaluations()
        assert await prom.state("VirtmonLibvirtCallsStuck") == "inactive"
        with lab_module.paused_libvirtd():
            await prom.wait_state("VirtmonLibvirtCallsStuck", "firing", timeout=30)
        await prom.wait_state("VirtmonLibvirtCallsStuck", "inactive")


async def test_collection_stale_while_connected_fires_and_resolves(
    lab: str, short_tmp: Path, overrunning_virtmon: BackgroundVirtmon
) -> None:
    """A virtmon whose every cycle overruns its deadline while libvirt stays connected: once
    its data is over the expression's 120 s old, VirtmonCollectionStale fires and LibvirtDown
    does not; its deadline set back, it resolves."""
    async with prometheus(short_tmp, [overrunning_virtmon.address]) as prom:
        await first_scrape(prom)
        await prom.wait_state("VirtmonCollectionStale", "firing", timeout=180)
        assert await prom.state("LibvirtDown") == "inactive"
        overrunning_virtmon.reload(deadline_ratio=0.8)
        await prom.wait_state("VirtmonCollectionStale", "inactive")


def test_every_shipped_rule_is_provoked_here_or_said_why_not() -> None:
    """Each rule of the shipped file is waited for as firing by a test of this module, but the
    one this module's docstring explains."""
    source = Path(__file__).read_text(encoding="utf-8")
    provoked = set(re.findall(r'wait_state\(\s*"(\w+)",\s*"firing"', source))
    missing = set(rule_expressions()) - provoked
    assert missing == {"LibvirtUnauthenticatedClientsNearLimit"}
    assert all(f"``{name}``" in (__doc__ or "") for name in missing)
