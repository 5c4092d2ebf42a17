"""Metrics from the lab's real KVM domains: values, units, format, vanished series, admin."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import libvirt
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as _parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import call, daemon_config, running_daemon
from tests.lab import lab as lab_module
from tests.waiting import exposition_until, fresh_cycle, next_cycle, wait_until

pytestmark = pytest.mark.lab


def parse_openmetrics(text: str) -> list[Metric]:
    """prometheus_client's strict OpenMetrics parser (untyped upstream)."""
    families: list[Metric] = list(_parse_openmetrics(text))  # type: ignore[no-untyped-call]
    return families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict[Any, float], name: str, **labels: str) -> float:
    """One sample's value (KeyError when absent)."""
    return parsed[(name, frozenset(labels.items()))]


async def scrape(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET /metrics with the given headers, without decompressing."""
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def exported_names(daemon: Any) -> set[str]:
    """The sample names of the daemon's current exposition."""
    return {name for name, _ in samples(daemon.scheduler.exposition.text.decode())}


def config(short_tmp: Path) -> Any:
    """A daemon on the lab with a one-second cycle."""
    return daemon_config(short_tmp, libvirt={"uri": lab_module.URI})


def meminfo_total_bytes() -> int:
    """The host's memory as the kernel states it (/proc/meminfo MemTotal is in KiB)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


async def test_node_memory_is_the_hosts_memory_in_bytes(lab: str, short_tmp: Path) -> None:
    """libvirt_node_memory_bytes is /proc/meminfo's MemTotal (libvirt rounds it down to whole
    MiB), not 1,024 times less."""
    async with running_daemon(config(short_tmp)) as daemon:
        text = await exposition_until(
            daemon.scheduler, lambda t: "\nlibvirt_node_memory_bytes " in t)
    exported = value(samples(text), "libvirt_node_memory_bytes")
    total = await asyncio.to_thread(meminfo_total_bytes)
    assert total - 1024 * 1024 < exported <= total, (exported, total)


async def test_a_shut_off_domain_exports_its_state_but_no_cpu_time(
    lab: str, lab_conn: Any, short_tmp: Path
) -> None:
    """libvirt 9.0 answers a shut-off domain's cpu_total with libvirtd's own CPU time; the
    exposition has the domain's state (shutoff, 5) and no CPU counter for it, while virDomainGetInfo
    says 0 ns."""
    name = f"t-off-{os.getpid()}"
    await call(lab_module.create_domain, lab_conn, name, False)
    try:
        dom = await call(lab_conn.lookupByName, name)
        assert (await call(dom.info))[4] == 0
        records = await call(lab_conn.getAllDomainStats, libvirt.VIR_DOMAIN_STATS_CPU_TOTAL, 0)
        # libvirt's quirk is there: a cpu.time for a domain that does not run.
        assert any(d.name() == name and "cpu.time" in s for d, s in records)
        async with running_daemon(config(short_tmp)) as daemon:
            text = await exposition_until(
                daemon.scheduler, lambda t: f'libvirt_domain_info_state{{domain="{name}"}}' in t)
        parsed = samples(text)
        assert value(parsed, "libvirt_domain_info_state", domain=name) == 5
        cpu = [key for key in parsed if key[0].startswith("libvirt_domain_cpu")
               or key[0] == "libvirt_domain_info_cpu_time_seconds_total"]
        assert [key for key in cpu if ("domain", name) in key[1]] == []
        assert any(("domain", "lab-0") in key[1] for key in cpu)  # a running one has them
    finally:
        await call(lab_module.remove_domain, lab_conn, name)


async def test_a_dirty_rate_calculation_starts_at_the_wall_clock_time_it_was_started(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """QEMU states a dirty-rate calculation's start on the host's monotonic clock; the exported
    start is the Unix time it was started (not seconds since boot), and a domain that never
    started one has no start series."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    status = f'libvirt_domain_dirtyrate_calc_status{{domain="{lab_domain}"}} '
    async with running_daemon(config(short_tmp)) as daemon:
        never = samples(await exposition_until(daemon.scheduler, lambda t: status + "0" in t))
        assert not any(name == "libvirt_domain_dirtyrate_calc_start_timestamp_seconds"
                       and ("domain", lab_domain) in labels for name, labels in never)
        before = time.time()
        await call(dom.startDirtyRateCalc, 1, 0)
        after = time.time()
        measured = samples(await exposition_until(daemon.scheduler, lambda t: status + "2" in t))
    start = value(measured, "libvirt_domain_dirtyrate_calc_start_timestamp_seconds",
                  domain=lab_domain)
    # QEMU keeps whole seconds: the start lies within a second of when it was asked for.
    assert before - 1.5 <= start <= after + 1.5, (before, start, after)


async def test_cpu_time_matches_a_direct_bulk_call_within_one_cycle(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """Exported CPU time (seconds) lies between two direct cpu.time readings around a cycle."""
    async with running_daemon(config(short_tmp)) as daemon:
        dom = await call(lab_conn.lookupByName, lab_domain)

        async def direct() -> float:
            records = await call(lab_conn.domainListGetStats, [dom],
                                 libvirt.VIR_DOMAIN_STATS_CPU_TOTAL, 0)
            return float(records[0][1]["cpu.time"]) / 1e9

        before = await direct()
        await fresh_cycle(daemon.scheduler)
        exported = samples(daemon.scheduler.exposition.text.decode())
        after = await direct()
        cpu = value(exported, "libvirt_domain_info_cpu_time_seconds_total", domain=lab_domain)
        assert before <= cpu <= after
        memory = value(exported, "libvirt_domain_info_maximum_memory_bytes", domain=lab_domain)
        assert memory == 64 * 1024 * 1024
        assert value(exported, "libvirt_up") == 1
        assert value(exported, "libvirt_domain_info_state", domain=lab_domain) == 1


async def test_exposition_passes_promtool_and_negotiates_format_and_gzip(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """promtool accepts the lab's exposition, the daemon's and the admin helper's process_*
    series included; OpenMetrics (which prometheus_client's strict parser accepts) and gzip are
    chosen by the headers."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is part of the lab"
    async with running_daemon(config(short_tmp)) as daemon:
        await wait_until(lambda: daemon.admin_helper is not None
                         and daemon.admin_helper.pid is not None, 30, 0.1)
        await fresh_cycle(daemon.scheduler)
        url = f"{daemon.metrics_address.replace('0.0.0.0', '127.0.0.1')}/metrics"
        status, headers, body = await scrape(url, **{"Accept-Encoding": "identity"})
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        check = await asyncio.to_thread(
            subprocess.run, [promtool, "check", "metrics"], input=body, capture_output=True
        )
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
        for process in ("", '{process="admin_helper"}'):
            for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                         "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                         "process_start_time_seconds"):
                assert f"\n{name}{process} ".encode() in body, name + process
        status, headers, body = await scrape(
            url, Accept="application/openmetrics-text; version=1.0.0", **{"Accept-Encoding": "gzip"}
        )
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        openmetrics = gzip.decompress(body).decode()
        assert openmetrics.endswith("# EOF\n")
        names = [family.name for family in parse_openmetrics(openmetrics)]
        assert "process_cpu_seconds" in names and len(names) == len(set(names))


async def test_a_removed_domain_is_gone_from_the_next_exposition(
    lab: str, lab_conn: Any, short_tmp: Path
) -> None:
    """A domain that is destroyed and undefined has no series after the next cycle that reads
    libvirt."""
    name = "t-vanish"
    await call(lab_module.create_domain, lab_conn, name)
    try:
        async with running_daemon(config(short_tmp)) as daemon:
            await exposition_until(daemon.scheduler, lambda text: f'domain="{name}"' in text)
            await call(lab_module.remove_domain, lab_conn, name)
            await fresh_cycle(daemon.scheduler)
            assert f'domain="{name}"'.encode() not in daemon.scheduler.exposition.text
    finally:
        await call(lab_module.remove_domain, lab_conn, name)


async def test_admin_thread_pool_change_shows_in_the_next_scrape(
    lab: str, short_tmp: Path
) -> None:
    """virt-admin srv-threadpool-set --max-workers is seen in the next cycles' metrics."""
    def threadpool_max() -> int:
        out = subprocess.run(["virt-admin", "srv-threadpool-info", "libvirtd"],
                             capture_output=True, text=True, check=True).stdout
        return int(next(line.split(":")[1] for line in out.splitlines() if "maxWorkers" in line))

    original = await asyncio.to_thread(threadpool_max)
    # The admin series read in every one-second cycle, not every collect.admin_interval.
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI}, collect={"admin_interval": 1.0})
    async with running_daemon(cfg) as daemon:
        try:
            await asyncio.to_thread(subprocess.run, ["virt-admin", "srv-threadpool-set",
                                    "libvirtd", "--max-workers", str(original + 7)], check=True)

            def shows_the_change(text: str) -> bool:
                exported = samples(text)
                return (exported.get(("libvirt_daemon_threadpool_max_workers",
                                      frozenset({("server", "libvirtd")}))) == original + 7
                        and value(exported, "virtmon_collector_success", collector="admin") == 1)

            # Polled: a cycle whose admin call overran on a loaded machine shows older values.
            await exposition_until(daemon.scheduler, shows_the_change)
        finally:
            await asyncio.to_thread(subprocess.run, ["virt-admin", "srv-threadpool-set",
                                    "libvirtd", "--max-workers", str(original)], check=True)


async def test_healthz_and_readyz(lab: str, short_tmp: Path) -> None:
    """/healthz answers while the loop runs; /readyz is 200 once connected with fresh data."""
    async with running_daemon(config(short_tmp)) as daemon:
        base = daemon.metrics_address.replace("0.0.0.0", "127.0.0.1")
        status, _, _ = await scrape(f"{base}/healthz")
        assert status == 200
        readiness: list[tuple[int, bytes]] = []

        async def ready() -> bool:
            status, _, body = await scrape(f"{base}/readyz")
            readiness.append((status, body))
            return status == 200

        # Ready means data younger than two cycles: an overrun cycle on a loaded machine may
        # briefly age it, so ask again until it is fresh.
        for _ in range(60):
            if await ready():
                break
            await next_cycle(daemon.scheduler)
        assert readiness[-1][0] == 200, readiness


async def test_domain_info_and_metadata_labels_follow_events(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """Info metrics carry cached XML facts; a metadata change event refreshes the label."""
    namespace = "http://example.org/virtmon-test/1"
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI}, collect={
        "interval": 1.0,
        "metadata_labels": {"team": "metadata/t:owner/@team"},
        "metadata_namespaces": {"t": namespace},
    })
    async with running_daemon(cfg) as daemon:

        def info_labels(text: str) -> list[frozenset[tuple[str, str]]]:
            return [labels for (name, labels) in samples(text)
                    if name == "libvirt_domain_info" and ("domain", lab_domain) in labels]

        # The first resync of the XML facts runs beside the first cycles.
        text = await exposition_until(daemon.scheduler, lambda text: any(
            ("os_type", "hvm") in labels for labels in info_labels(text)))
        assert ("persistent", "true") in info_labels(text)[0]
        dom = await call(lab_conn.lookupByName, lab_domain)
        await call(dom.setMetadata, libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                   "<owner team='storage'/>", "t", namespace, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        key = ("libvirt_domain_metadata_info",
               frozenset({("domain", lab_domain), ("team", "storage")}))
        text = await exposition_until(daemon.scheduler, lambda text: key in samples(text))
        assert samples(text)[key] == 1


async def test_a_hung_hypervisor_neither_stops_the_cycles_nor_hides_other_domains(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """SIGSTOP of one domain's QEMU: cycles go on, others stay exported, it is marked incomplete."""
    pidfile = Path(f"/run/libvirt/qemu/{lab_domain}.pid")
    qemu = int((await asyncio.to_thread(pidfile.read_text)).strip())
    async with running_daemon(config(short_tmp)) as daemon:
        await exposition_until(daemon.scheduler, lambda text: 'domain="lab-0"' in text)
        os.kill(qemu, signal.SIGSTOP)
        try:
            started = time.monotonic()
            cycles = daemon.scheduler.stats.cycles
            incomplete_seen = False
            for _ in range(8):
                await next_cycle(daemon.scheduler)
                exported = samples(daemon.scheduler.exposition.text.decode())
                assert value(exported, "libvirt_domain_info_state", domain="lab-0") == 1
                incomplete_seen |= value(
                    exported, "libvirt_domain_stats_incomplete", domain=lab_domain) == 1
            # Eight cycles of one second each, not stalled behind the hung domain (whose
            # stalled call alone would hold a cycle for as long as QEMU stays stopped).
            assert daemon.scheduler.stats.cycles - cycles >= 8
            assert time.monotonic() - started < 60
            assert incomplete_seen
            # The call stuck on the hung monitor was abandoned, counted and exported.
            assert daemon.caller.abandoned_total >= 1
            assert "virtmon_libvirt_calls_abandoned_total" in exported_names(daemon)
        finally:
            os.kill(qemu, signal.SIGCONT)
        await exposition_until(daemon.scheduler, lambda text: value(
            samples(text), "libvirt_domain_stats_incomplete", domain=lab_domain) == 0)


async def test_a_domain_whose_job_another_client_holds_is_skipped_without_waiting(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """Another client's suspend hangs on a stopped QEMU holding the domain's job: NOWAIT skips
    that domain's queries, so no cycle waits or is abandoned and the others stay fresh."""
    pidfile = Path(f"/run/libvirt/qemu/{lab_domain}.pid")
    qemu = int((await asyncio.to_thread(pidfile.read_text)).strip())
    holder = await asyncio.to_thread(libvirt.open, lab)
    dom = await call(holder.lookupByName, lab_domain)
    os.kill(qemu, signal.SIGSTOP)
    held = asyncio.ensure_future(asyncio.to_thread(dom.suspend))  # takes the job, then hangs
    watched = await call(lab_conn.lookupByName, lab_domain)
    try:
        # controlInfo needs no job: it says when the suspend, holding the job, waits on the
        # stopped QEMU's monitor.
        deadline = time.monotonic() + 30
        while (await call(watched.controlInfo))[0] == libvirt.VIR_DOMAIN_CONTROL_OK:
            assert not held.done() and time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # Cycles of 3 s with a 2.7 s deadline: a loaded machine does not make a cycle overrun
        # (which would count as an abandoned call) for reasons other than the held job.
        cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                            collect={"interval": 3.0, "deadline_ratio": 0.9})
        async with running_daemon(cfg) as daemon:
            cycles = daemon.scheduler.stats.cycles
            for _ in range(3):
                await next_cycle(daemon.scheduler)
                exported = samples(daemon.scheduler.exposition.text.decode())
                assert value(exported, "libvirt_domain_info_state", domain="lab-0") == 1
                assert value(exported, "libvirt_domain_stats_incomplete", domain=lab_domain) == 1
            assert daemon.scheduler.stats.cycles - cycles >= 3
            # Nothing of virtmon's waited on the job: a call that had would have been abandoned.
            assert daemon.caller.abandoned_total == 0
    finally:
        os.kill(qemu, signal.SIGCONT)
        with contextlib.suppress(libvirt.libvirtError):
            await held
        await call(holder.close)


async def test_the_backing_chain_option_exports_every_layer_of_a_disk(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """Over an external snapshot, collect.block_backing_chain adds vda[1] (the base image)."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    base = lab_module.IMAGE_DIR / f"{lab_domain}.qcow2"
    overlay = lab_module.IMAGE_DIR / f"{lab_domain}.overlay"  # removed with the domain
    await call(dom.snapshotCreateXML,
               f"<domainsnapshot><disks><disk name='vda' snapshot='external'><source file="
               f"'{overlay}'/></disk></disks></domainsnapshot>",
               libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
               | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
    chain = daemon_config(short_tmp, libvirt={"uri": lab}, collect={"block_backing_chain": True})

    def has_block_info(text: str) -> bool:
        return any(name == "libvirt_domain_block_stats_info" and ("domain", lab_domain) in labels
                   for name, labels in samples(text))

    async with running_daemon(chain) as daemon:
        exported = samples(await exposition_until(daemon.scheduler, has_block_info))
    info = {dict(labels)["target_device"]: dict(labels)["path"]
            for (name, labels), _ in exported.items()
            if name == "libvirt_domain_block_stats_info" and dict(labels)["domain"] == lab_domain}
    assert info == {"vda": str(overlay), "vda[1]": str(base)}
    assert value(exported, "libvirt_domain_block_stats_capacity_bytes", domain=lab_domain,
                 target_device="vda[1]") == 64 * 1024 * 1024
    async with running_daemon(config(short_tmp / "plain")) as daemon:
        plain = samples(await exposition_until(daemon.scheduler, has_block_info))
    devices = {dict(labels)["target_device"] for (name, labels), _ in plain.items()
               if name == "libvirt_domain_block_stats_info"
               and dict(labels)["domain"] == lab_domain}
    assert devices == {"vda"}
