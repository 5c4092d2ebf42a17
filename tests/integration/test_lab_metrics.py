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
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import call, daemon_config, running_daemon
from tests.lab import lab as lab_module

pytestmark = pytest.mark.lab


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
        await daemon.scheduler.wait_cycle()
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
    """promtool accepts the lab's exposition; OpenMetrics and gzip are chosen by the headers."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is part of the lab"
    async with running_daemon(config(short_tmp)) as daemon:
        url = f"{daemon.metrics_address.replace('0.0.0.0', '127.0.0.1')}/metrics"
        status, headers, body = await scrape(url, **{"Accept-Encoding": "identity"})
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        check = await asyncio.to_thread(
            subprocess.run, [promtool, "check", "metrics"], input=body, capture_output=True
        )
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
        status, headers, body = await scrape(
            url, Accept="application/openmetrics-text; version=1.0.0", **{"Accept-Encoding": "gzip"}
        )
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert gzip.decompress(body).endswith(b"# EOF\n")


async def test_a_removed_domain_is_gone_from_the_next_exposition(
    lab: str, lab_conn: Any, short_tmp: Path
) -> None:
    """A domain that is destroyed and undefined has no series after the next cycle."""
    name = "t-vanish"
    await call(lab_module.create_domain, lab_conn, name)
    try:
        async with running_daemon(config(short_tmp)) as daemon:
            assert f'domain="{name}"'.encode() in daemon.scheduler.exposition.text
            await call(lab_module.remove_domain, lab_conn, name)
            await daemon.scheduler.wait_cycle()
            await daemon.scheduler.wait_cycle()
            assert f'domain="{name}"'.encode() not in daemon.scheduler.exposition.text
    finally:
        await call(lab_module.remove_domain, lab_conn, name)


async def test_admin_thread_pool_change_shows_in_the_next_scrape(
    lab: str, short_tmp: Path
) -> None:
    """virt-admin srv-threadpool-set --max-workers is seen in the next cycle's metrics."""
    def threadpool_max() -> int:
        out = subprocess.run(["virt-admin", "srv-threadpool-info", "libvirtd"],
                             capture_output=True, text=True, check=True).stdout
        return int(next(line.split(":")[1] for line in out.splitlines() if "maxWorkers" in line))

    original = await asyncio.to_thread(threadpool_max)
    async with running_daemon(config(short_tmp)) as daemon:
        try:
            await asyncio.to_thread(subprocess.run, ["virt-admin", "srv-threadpool-set",
                                    "libvirtd", "--max-workers", str(original + 7)], check=True)
            await daemon.scheduler.wait_cycle()
            await daemon.scheduler.wait_cycle()
            exported = samples(daemon.scheduler.exposition.text.decode())
            assert value(exported, "libvirt_daemon_threadpool_max_workers",
                         server="libvirtd") == original + 7
            assert value(exported, "virtmon_collector_success", collector="admin") == 1
        finally:
            await asyncio.to_thread(subprocess.run, ["virt-admin", "srv-threadpool-set",
                                    "libvirtd", "--max-workers", str(original)], check=True)


async def test_healthz_and_readyz(lab: str, short_tmp: Path) -> None:
    """/healthz answers while the loop runs; /readyz is 200 once connected with fresh data."""
    async with running_daemon(config(short_tmp)) as daemon:
        base = daemon.metrics_address.replace("0.0.0.0", "127.0.0.1")
        status, _, _ = await scrape(f"{base}/healthz")
        assert status == 200
        status, _, body = await scrape(f"{base}/readyz")
        assert status == 200, body


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
        for _ in range(20):  # the first resync runs beside the first cycles
            await daemon.scheduler.wait_cycle()
            exported = samples(daemon.scheduler.exposition.text.decode())
            info = [labels for (name, labels) in exported
                    if name == "libvirt_domain_info" and ("domain", lab_domain) in labels]
            if info and ("os_type", "hvm") in info[0]:
                break
        assert ("persistent", "true") in info[0] and ("os_type", "hvm") in info[0]
        dom = await call(lab_conn.lookupByName, lab_domain)
        await call(dom.setMetadata, libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                   "<owner team='storage'/>", "t", namespace, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        for _ in range(10):
            await daemon.scheduler.wait_cycle()
            exported = samples(daemon.scheduler.exposition.text.decode())
            key = ("libvirt_domain_metadata_info",
                   frozenset({("domain", lab_domain), ("team", "storage")}))
            if key in exported:
                break
        assert exported[key] == 1


async def test_a_hung_hypervisor_neither_stops_the_cycles_nor_hides_other_domains(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """SIGSTOP of one domain's QEMU: cycles go on, others stay exported, it is marked incomplete."""
    pidfile = Path(f"/run/libvirt/qemu/{lab_domain}.pid")
    qemu = int((await asyncio.to_thread(pidfile.read_text)).strip())
    async with running_daemon(config(short_tmp)) as daemon:
        await daemon.scheduler.wait_cycle()
        os.kill(qemu, signal.SIGSTOP)
        try:
            started = time.monotonic()
            cycles = daemon.scheduler.stats.cycles
            incomplete_seen = False
            for _ in range(8):
                await daemon.scheduler.wait_cycle()
                exported = samples(daemon.scheduler.exposition.text.decode())
                assert value(exported, "libvirt_domain_info_state", domain="lab-0") == 1
                incomplete_seen |= value(
                    exported, "libvirt_domain_stats_incomplete", domain=lab_domain) == 1
            # Eight cycles of one second each, not stalled behind the hung domain.
            assert daemon.scheduler.stats.cycles - cycles >= 8
            assert time.monotonic() - started < 30
            assert incomplete_seen
            # The call stuck on the hung monitor was abandoned, counted and exported.
            assert daemon.caller.abandoned_total >= 1
            assert "virtmon_libvirt_calls_abandoned_total" in exported_names(daemon)
        finally:
            os.kill(qemu, signal.SIGCONT)
        for _ in range(20):
            await daemon.scheduler.wait_cycle()
            exported = samples(daemon.scheduler.exposition.text.decode())
            if value(exported, "libvirt_domain_stats_incomplete", domain=lab_domain) == 0:
                break
        assert value(exported, "libvirt_domain_stats_incomplete", domain=lab_domain) == 0


async def test_a_domain_whose_job_another_client_holds_is_skipped_without_waiting(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """Another client's suspend hangs on a stopped QEMU holding the domain's job: NOWAIT skips
    that domain's queries, so no cycle waits or is abandoned and the others stay fresh."""
    pidfile = Path(f"/run/libvirt/qemu/{lab_domain}.pid")
    qemu = int((await asyncio.to_thread(pidfile.read_text)).strip())
    holder = await asyncio.to_thread(libvirt.open, lab)
    dom = await call(holder.lookupByName, lab_domain)
    os.kill(qemu, signal.SIGSTOP)
    held = asyncio.ensure_future(asyncio.to_thread(dom.suspend))  # takes the job, then hangs
    try:
        await asyncio.sleep(1.0)
        assert not held.done()
        async with running_daemon(config(short_tmp)) as daemon:
            cycles, started = daemon.scheduler.stats.cycles, time.monotonic()
            for _ in range(5):
                await daemon.scheduler.wait_cycle()
                exported = samples(daemon.scheduler.exposition.text.decode())
                assert value(exported, "libvirt_domain_info_state", domain="lab-0") == 1
                assert value(exported, "libvirt_domain_stats_incomplete", domain=lab_domain) == 1
            assert daemon.scheduler.stats.cycles - cycles >= 5
            assert time.monotonic() - started < 15
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
    async with running_daemon(chain) as daemon:
        await daemon.scheduler.wait_cycle()
        exported = samples(daemon.scheduler.exposition.text.decode())
    info = {dict(labels)["target_device"]: dict(labels)["path"]
            for (name, labels), _ in exported.items()
            if name == "libvirt_domain_block_stats_info" and dict(labels)["domain"] == lab_domain}
    assert info == {"vda": str(overlay), "vda[1]": str(base)}
    assert value(exported, "libvirt_domain_block_stats_capacity_bytes", domain=lab_domain,
                 target_device="vda[1]") == 64 * 1024 * 1024
    async with running_daemon(config(short_tmp / "plain")) as daemon:
        await daemon.scheduler.wait_cycle()
        plain = samples(daemon.scheduler.exposition.text.decode())
    devices = {dict(labels)["target_device"] for (name, labels), _ in plain.items()
               if name == "libvirt_domain_block_stats_info"
               and dict(labels)["domain"] == lab_domain}
    assert devices == {"vda"}
