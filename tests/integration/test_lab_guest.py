"""Events a running Linux guest causes, from the lab's real libvirtd through a real virtmon.

Each test boots its own guest (tests/lab/guest.py: Debian's kernel, busybox, qemu-ga), under a
daemon following the stream filtered to that domain, makes the guest do one thing (through the
agent's ``guest-exec``, or a host-side call the guest answers), and checks the event end to end:
decoded in the ``/v1/events`` stream, stored in the journal under the same sequence number,
counted in ``virtmon_events_received_total`` (and in the per-domain counter where there is one),
and raising the default alert rule that matches it, if any.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import call, daemon_config, running_daemon
from tests.integration.test_lab_event_catalog import of, unique_domain
from tests.lab import guest
from tests.lab import lab as lab_module
from tests.streamclient import Event, StreamFollower, follow, get_json, lifecycle
from tests.waiting import exposition_until, wait_until
from virtmon.app import Daemon
from virtmon.virt.connection import State

pytestmark = pytest.mark.lab

# A guest boots in seconds, but under TCG on a loaded 2-core machine it may take many more.
BOOT_TIMEOUT = 120.0
EVENT_TIMEOUT = 60.0


@pytest.fixture
async def name(lab: str) -> AsyncIterator[str]:
    """A unique guest domain name for one test; the domain is always removed after."""
    async with unique_domain(lab, "t-guest") as domain:
        yield domain


@contextlib.asynccontextmanager
async def watching(short_tmp: Path, domain: str) -> AsyncIterator[tuple[Daemon, StreamFollower]]:
    """A daemon on the lab (default alert rules on) and its stream, filtered to one domain."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            follow(daemon.control_socket, f"domain={domain}") as stream:
        yield daemon, stream


async def booted(lab_conn: Any, stream: StreamFollower, domain: str, **options: Any) -> Any:
    """Define and start a guest; return it once its agent has connected (seen in the stream)."""
    dom = await call(lambda: guest.create(lab_conn, domain, mark=lab_module.LAB_MARK,
                                          **options))
    await stream.wait_for(of("agent_lifecycle", "connected"), BOOT_TIMEOUT)
    return dom


def sample(text: str, metric: str, **labels: str) -> float:
    """The value of one sample of an exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def assert_end_to_end(daemon: Daemon, event: Event, rule: str | None = None,
                            counter: tuple[str, dict[str, str]] | None = None) -> None:
    """A streamed event is in the journal and in /v1/events under its sequence number, counted
    by kind (and in ``counter``, a per-domain metric with its labels), and raised ``rule``."""
    seq = event["seq"]
    journaled = await call(daemon.journal.read_since, seq - 1, 1)
    assert journaled and journaled[0].to_dict() == event
    replay = await get_json(daemon.control_socket,
                            f"/v1/events?since={seq - 1}&domain={event['domain']}")
    assert replay[0] == event
    await exposition_until(daemon.scheduler, lambda text: sample(
        text, "virtmon_events_received_total", kind=event["kind"]) >= 1, EVENT_TIMEOUT)
    if counter is not None:
        metric, labels = counter
        await exposition_until(daemon.scheduler, lambda text: sample(
            text, metric, domain=event["domain"], **labels) >= 1, EVENT_TIMEOUT)
    if rule is not None:
        await wait_until(lambda: bool(daemon.alerts.store.alerts(
            rule=rule, domain=event["domain"])), EVENT_TIMEOUT, 0.2)


def flag(kind: str, name: str, detail: str) -> Callable[[Event], bool]:
    """A matcher on kind, name and detail."""
    return lambda e: (e["kind"], e["name"], e["detail"]) == (kind, name, detail)


async def test_the_guest_boots_with_its_modules_and_its_agent_connects(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """A guest boots from the lab's image: every wanted module is loaded and the agent's
    connection reaches the journal, the stream and the counters."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        connected = await stream.wait_for(of("agent_lifecycle", "connected"))
        assert connected["payload"]["state"] == "connected"
        code, modules = await call(guest.guest_exec, dom, "cut -d' ' -f1 /proc/modules")
        assert code == 0
        assert set(guest.MODULES) <= set(modules.split())
        await assert_end_to_end(daemon, connected)


async def test_agent_stopped_and_started_in_the_guest(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """qemu-ga stopped in the guest: agent_lifecycle disconnected/channel, GuestAgentDisconnected
    pending; started again: connected/channel, and the alert resolves."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        await call(guest.guest_exec, dom, "agent-ctl restart 5")
        gone = await stream.wait_for(flag("agent_lifecycle", "disconnected", "channel"),
                                     EVENT_TIMEOUT)
        await assert_end_to_end(daemon, gone, rule="GuestAgentDisconnected")
        assert [a.state for a in daemon.alerts.store.alerts(
            rule="GuestAgentDisconnected", domain=name)] == ["pending"]
        back = await stream.wait_for(
            lambda e: flag("agent_lifecycle", "connected", "channel")(e)
            and e["seq"] > gone["seq"], EVENT_TIMEOUT)
        await assert_end_to_end(daemon, back)
        await wait_until(lambda: [a.state for a in daemon.alerts.store.alerts(
            rule="GuestAgentDisconnected", domain=name)] == ["resolved"], EVENT_TIMEOUT, 0.2)


@pytest.mark.parametrize("how", ["acpi_power_button", "poweroff_in_the_guest"])
async def test_the_guest_powers_itself_off(
    lab_conn: Any, name: str, short_tmp: Path, how: str
) -> None:
    """The ACPI power button (shutdown with its flag; acpid in the guest) or poweroff run in
    the guest: shutdown/guest (libvirt's "finished after guest request"), then
    stopped/shutdown, and no crash alert."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        if how == "acpi_power_button":
            await call(dom.shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        else:
            await call(guest.spawn, dom, "poweroff")
        finished = await stream.wait_for(lifecycle(name, "shutdown", "guest"), EVENT_TIMEOUT)
        stopped = await stream.wait_for(lifecycle(name, "stopped", "shutdown"), EVENT_TIMEOUT)
        assert finished["seq"] < stopped["seq"]
        await assert_end_to_end(daemon, finished, counter=(
            "libvirt_domain_events_total", {"event": "shutdown", "detail": "guest"}))
        await assert_end_to_end(daemon, stopped, counter=(
            "libvirt_domain_events_total", {"event": "stopped", "detail": "shutdown"}))
        assert not daemon.alerts.store.alerts(rule="DomainCrashed", domain=name)


async def test_reboot_inside_the_guest(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """reboot run in the guest: a reboot event, counted per domain; the guest comes back."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        await call(guest.spawn, dom, "reboot")
        reboot = await stream.wait_for(of("reboot"), EVENT_TIMEOUT)
        await assert_end_to_end(daemon, reboot, counter=("libvirt_domain_reboots_total", {}))
        await stream.wait_for(lambda e: of("agent_lifecycle", "connected")(e)
                              and e["seq"] > reboot["seq"], BOOT_TIMEOUT)


@pytest.mark.parametrize(("action", "state"), [("pause", libvirt.VIR_DOMAIN_PAUSED),
                                               ("none", libvirt.VIR_DOMAIN_RUNNING)])
async def test_a_starved_watchdog_fires(
    lab_conn: Any, name: str, short_tmp: Path, action: str, state: int
) -> None:
    """The i6300esb armed in the guest, then starved: a watchdog event with the domain's
    action, counted, DomainWatchdogFired raised; the domain is left as the action says."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name, watchdog_action=action)
        code, output = await call(guest.guest_exec, dom,
                                  "watchdog-ctl start 2 && sleep 1 && watchdog-ctl starve")
        assert code == 0, output
        fired = await stream.wait_for(of("watchdog", action), EVENT_TIMEOUT)
        assert fired["payload"]["action"] == action
        await assert_end_to_end(daemon, fired, rule="DomainWatchdogFired", counter=(
            "libvirt_domain_watchdog_events_total", {"action": action}))
        assert (await call(dom.state))[0] == state


async def test_a_kernel_panic_is_reported_by_pvpanic(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """echo c > /proc/sysrq-trigger: pvpanic makes it crashed/panicked, DomainCrashed fires,
    and the domain stays (on_crash preserve) for inspection."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        await call(guest.spawn, dom, "echo c > /proc/sysrq-trigger")
        panicked = await stream.wait_for(lifecycle(name, "crashed", "panicked"), EVENT_TIMEOUT)
        await assert_end_to_end(daemon, panicked, rule="DomainCrashed", counter=(
            "libvirt_domain_events_total", {"event": "crashed", "detail": "panicked"}))
        assert await call(dom.state) == [libvirt.VIR_DOMAIN_CRASHED,
                                         libvirt.VIR_DOMAIN_CRASHED_PANICKED]


async def test_the_balloon_driver_follows_a_memory_change(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """setMemory on a running guest: the balloon driver gives the memory back and
    balloon_change reports the new size in KiB."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name, memory_mib=192)
        await call(dom.setMemoryFlags, 150 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        changed = await stream.wait_for(of("balloon_change", actual_kib=150 * 1024),
                                        EVENT_TIMEOUT)
        await assert_end_to_end(daemon, changed)


async def test_the_guest_setting_its_hardware_clock(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """hwclock -w an hour ahead: rtc_change with the guest clock's offset from the host."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        code, output = await call(guest.guest_exec, dom,
                                  "date -s @$(( $(date +%s) + 3600 )) >/dev/null && hwclock -w")
        assert code == 0, output
        changed = await stream.wait_for(of("rtc_change"), EVENT_TIMEOUT)
        assert 3590 <= changed["payload"]["utc_offset"] <= 3610
        await assert_end_to_end(daemon, changed)


async def test_suspend_to_ram_and_wakeup(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """guest-suspend-ram through the agent: pmsuspend and pmsuspended/memory;
    virDomainPMWakeup: pmwakeup and started/wakeup."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        # The agent suspends the guest before it answers: the call ends with the channel.
        with contextlib.suppress(libvirt.libvirtError):
            await call(guest.agent_command, dom, "guest-suspend-ram")
        suspended = await stream.wait_for(of("pmsuspend"), EVENT_TIMEOUT)
        await stream.wait_for(lifecycle(name, "pmsuspended", "memory"), EVENT_TIMEOUT)
        await assert_end_to_end(daemon, suspended)
        assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_PMSUSPENDED
        await call(dom.pMWakeup, 0)
        woken = await stream.wait_for(of("pmwakeup"), EVENT_TIMEOUT)
        await stream.wait_for(lifecycle(name, "started", "wakeup"), EVENT_TIMEOUT)
        await assert_end_to_end(daemon, woken)


def present(*paths: str, gone: bool = False) -> str:
    """A guest command waiting (bounded, 30 s) until every path exists (or, ``gone``, none);
    it fails, listing the disks and NICs, when they do not."""
    test = " && ".join(f"{'! ' if gone else ''}[ -e {path} ]" for path in paths)
    return (f"(for i in $(seq 300); do if {test}; then exit 0; fi; sleep 0.1; done; "
            f"ls /sys/block /sys/class/net; exit 1)")


async def test_a_disk_and_a_nic_the_guest_releases(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """A disk and a NIC hot-plugged (device_added), seen by the guest, then detached: the
    guest's ACPI hot-plug driver releases them and device_removed names each."""
    disk_path = lab_module.IMAGE_DIR / f"{name}.vdb.qcow2"
    await call(subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2", str(disk_path), "16M"])
    disk = f"""<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk_path}'/><target dev='vdb' bus='virtio'/><alias name='ua-vdb'/></disk>"""
    nic = f"""<interface type='ethernet'><target dev='vg{uuid.uuid4().hex[:10]}' managed='yes'/>
      <model type='virtio'/><alias name='ua-nic1'/></interface>"""
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        for xml, alias in ((disk, "ua-vdb"), (nic, "ua-nic1")):
            await call(dom.attachDeviceFlags, xml, live)
            added = await stream.wait_for(of("device_added", dev_alias=alias), EVENT_TIMEOUT)
            await assert_end_to_end(daemon, added)
        code, seen = await call(guest.guest_exec, dom, present("/sys/block/vdb",
                                                             "/sys/class/net/eth1"))
        assert code == 0, seen
        for xml, alias in ((disk, "ua-vdb"), (nic, "ua-nic1")):
            await call(dom.detachDeviceFlags, xml, live)
            removed = await stream.wait_for(of("device_removed", dev_alias=alias),
                                            EVENT_TIMEOUT)
            await assert_end_to_end(daemon, removed)
        code, seen = await call(guest.guest_exec, dom, present("/sys/block/vdb",
                                                             "/sys/class/net/eth1", gone=True))
        assert code == 0, seen


async def test_a_dimm_the_guest_cannot_offline(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """A DIMM hot-plugged and onlined, kernel objects allocated in it (the only ZONE_NORMAL
    memory, so the kernel's first choice), then unplugged: the guest cannot offline it and
    rejects the unplug; device_removal_failed names it."""
    dimm = """<memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target>
      <alias name='ua-dimm0'/></memory>"""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name, virtio_mem_mib=128)
        await call(dom.attachDeviceFlags, dimm, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        await stream.wait_for(of("device_added"), EVENT_TIMEOUT)
        code, output = await call(guest.guest_exec, dom,
                                  "mkdir /tmp/pin && cd /tmp/pin && seq 3000 | xargs mkdir")
        assert code == 0, output
        with pytest.raises(libvirt.libvirtError, match="rejected by the guest"):
            await call(dom.detachDeviceFlags, dimm, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        failed = await stream.wait_for(of("device_removal_failed", dev_alias="ua-dimm0"),
                                       EVENT_TIMEOUT)
        await assert_end_to_end(daemon, failed)


async def test_a_virtio_mem_device_resized(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """virtio-mem asked for 128 MiB: the guest plugs it, memory_device_size_change reports the
    new size, and the guest's MemTotal grew by it."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name, virtio_mem_mib=256)
        before = await call(guest.guest_exec, dom, "grep MemTotal /proc/meminfo")
        await call(guest.resize_virtio_mem, dom, 128)
        changed = await stream.wait_for(of("memory_device_size_change",
                                           alias=guest.VIRTIO_MEM_ALIAS, size_kib=128 * 1024),
                                        EVENT_TIMEOUT)
        await assert_end_to_end(daemon, changed)
        after = await call(guest.guest_exec, dom, "grep MemTotal /proc/meminfo")
        grown_kib = int(after[1].split()[1]) - int(before[1].split()[1])
        assert grown_kib == 128 * 1024


async def test_suspend_to_disk(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """guest-suspend-disk with a swap disk hot-plugged: the guest hibernates into ACPI S4,
    pmsuspend_disk and pmsuspended/disk, then it stops (shutdown)."""
    swap_path = lab_module.IMAGE_DIR / f"{name}.swap.qcow2"
    await call(subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2", str(swap_path),
                                "256M"])
    swap = f"""<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{swap_path}'/><target dev='vdb' bus='virtio'/></disk>"""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        await call(dom.attachDeviceFlags, swap, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        code, output = await call(guest.guest_exec, dom, present("/dev/vdb")
                                  + " && mkswap /dev/vdb && swapon /dev/vdb")
        assert code == 0, output
        # The agent hibernates the guest before it answers: the call ends with the channel.
        with contextlib.suppress(libvirt.libvirtError):
            await call(guest.agent_command, dom, "guest-suspend-disk")
        suspended = await stream.wait_for(of("pmsuspend_disk"), EVENT_TIMEOUT)
        await stream.wait_for(lifecycle(name, "pmsuspended", "disk"), EVENT_TIMEOUT)
        await stream.wait_for(lifecycle(name, "stopped", "shutdown"), EVENT_TIMEOUT)
        await assert_end_to_end(daemon, suspended)


# libvirt_domain_memory_stats_* series from the guest's balloon driver, and what the guest's
# own files say for each (meminfo in KiB, vmstat in pages or counts): name, source, key(s), scale
# to bytes.
GUEST_MEMORY: tuple[tuple[str, str, tuple[str, ...], int], ...] = (
    ("available_bytes", "meminfo", ("MemTotal",), 1024),
    ("unused_bytes", "meminfo", ("MemFree",), 1024),
    ("usable_bytes", "meminfo", ("MemAvailable",), 1024),
    # The driver's page-cache figure: every file page (meminfo splits them).
    ("disk_caches_bytes", "meminfo", ("Cached", "Buffers", "SwapCached"), 1024),
    ("swap_in_bytes_total", "vmstat", ("pswpin",), 4096),
    ("swap_out_bytes_total", "vmstat", ("pswpout",), 4096),
    ("major_fault_total", "vmstat", ("pgmajfault",), 1),
    ("minor_fault_total", "vmstat", ("pgfault",), 1),
)
# How far a gauge may move between the driver's sample and the guest's reads (the guest idles);
# MemTotal moves only when memory is plugged or ballooned, so it must match to the byte.
GAUGE_SLACK = 8 * 2**20
EXACT = {"available_bytes"}


async def guest_memory(dom: Any) -> dict[str, float]:
    """The guest's own figures for :data:`GUEST_MEMORY`, in bytes or counts."""
    code, text = await call(guest.guest_exec, dom, "cat /proc/meminfo; echo; cat /proc/vmstat")
    assert code == 0, text
    meminfo_text, _, vmstat_text = text.partition("\n\n")
    files = {
        "meminfo": {k: int(v.split()[0]) for k, _, v in
                    (line.partition(":") for line in meminfo_text.splitlines())},
        "vmstat": {k: int(v) for k, v in (line.split() for line in vmstat_text.splitlines())},
    }
    return {metric: sum(files[source][key] for key in keys) * scale
            for metric, source, keys, scale in GUEST_MEMORY}


async def test_balloon_memory_statistics_match_the_guest(
    lab_conn: Any, lab_domain: str, name: str, short_tmp: Path
) -> None:
    """The exported libvirt_domain_memory_stats_* of a guest lie between two readings of its
    own /proc/meminfo and /proc/vmstat (counters) or near them (gauges), in bytes; a domain
    whose balloon has no guest driver exports none of the guest's series, not zeros."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        before = await guest_memory(dom)
        read_at = time.time()

        def fresh(text: str) -> bool:
            """The exposition carries a driver sample taken after the first reading."""
            return sample(text, "libvirt_domain_memory_stats_last_update_timestamp_seconds",
                          domain=name) > read_at

        text = await exposition_until(daemon.scheduler, fresh, EVENT_TIMEOUT)
        after = await guest_memory(dom)
        for metric, _source, _keys, _scale in GUEST_MEMORY:
            series = f"libvirt_domain_memory_stats_{metric}"
            assert f"{series}{{domain=\"{name}\"}}" in text, f"{series} missing"
            exported = sample(text, series, domain=name)
            low, high = sorted((before[metric], after[metric]))
            slack = 0 if metric.endswith("_total") or metric in EXACT else GAUGE_SLACK
            assert low - slack <= exported <= high + slack, (
                metric, before[metric], exported, after[metric])
        assert abs(sample(text, "libvirt_domain_memory_stats_last_update_timestamp_seconds",
                          domain=name) - time.time()) < EVENT_TIMEOUT
        # The no-OS domain has the same balloon and statistics period but no driver.
        for metric, _source, _keys, _scale in GUEST_MEMORY:
            assert f"libvirt_domain_memory_stats_{metric}{{domain=\"{lab_domain}\"}}" not in text


def slow_reconnect(backoff_initial: float) -> Callable[[Daemon], None]:
    """A daemon's preparation: its first reconnect waits between half of and the whole
    ``backoff_initial``, so that something can happen while it is away."""
    def prepare(daemon: Daemon) -> None:
        daemon.supervisor.settings = dataclasses.replace(
            daemon.supervisor.settings, backoff_initial=backoff_initial)
    return prepare


async def test_reconnect_with_a_live_guest(
    lab_conn: Any, lab_domain: str, name: str, short_tmp: Path
) -> None:
    """virtmon's connections cut (virt-admin client-disconnect) and virtmon backing off while
    another client undefines a lab domain: after the reconnect the journal holds the synthetic
    events that reconcile it, every event id is registered again, and a balloon change the
    guest makes afterwards arrives."""
    from tests.integration.test_lab_events import my_readonly_client_ids

    # A first backoff of 5-10 s: the undefine happens while virtmon is away.
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg, prepare=slow_reconnect(10.0)) as daemon, \
            follow(daemon.control_socket) as stream:
        dom = await booted(lab_conn, stream, name)
        registered = set(daemon.supervisor.event_ids)
        assert len(registered) >= 27
        clients = await call(my_readonly_client_ids)
        assert clients, "virtmon's connections are not among libvirtd's clients"
        for client in clients:
            await call(subprocess.run, ["virt-admin", "client-disconnect", "libvirtd", client])
        lost = await stream.wait_for(lambda e: (e["kind"], e["name"]) == ("connection", "lost"))
        await call(lab_module.remove_domain, lab_conn, lab_domain)
        assert daemon.supervisor.state is not State.CONNECTED  # still backing off
        restored = await stream.wait_for(
            lambda e: (e["kind"], e["name"]) == ("connection", "restored"), EVENT_TIMEOUT)
        reconciled = await stream.wait_for(
            lambda e: e["domain"] == lab_domain and e["synthetic"], EVENT_TIMEOUT)
        assert lost["seq"] < reconciled["seq"]
        journaled = await call(daemon.journal.read_since, restored["seq"] - 1, 1000)
        assert reconciled in [event.to_dict() for event in journaled]
        assert set(daemon.supervisor.event_ids) == registered
        await call(dom.setMemoryFlags, 160 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        changed = await stream.wait_for(
            lambda e: of("balloon_change", actual_kib=160 * 1024)(e) and e["domain"] == name,
            EVENT_TIMEOUT)
        assert changed["seq"] > restored["seq"]


def powered_down(name: str) -> bool:
    """Whether the guest's kernel said it powers down, on its serial console (virtlogd writes
    the log: it runs on while libvirtd is stopped)."""
    log = Path(f"/var/log/libvirt/qemu/{name}-serial.log")
    return log.exists() and "reboot: Power down" in log.read_text(errors="replace")


@pytest.mark.kills_libvirtd
async def test_the_guest_powers_off_while_libvirtd_is_stopped(
    lab: str, lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """libvirtd stopped (SIGTERM) while the guest powers itself off, started again before
    virtmon is back: the reconnect journals a synthetic stopped event for the guest, registers
    every event id again, and the guest started again gives a real started event."""

    # A first backoff of 15-30 s: libvirtd settles the guest before virtmon is back.
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg, prepare=slow_reconnect(30.0)) as daemon, \
            follow(daemon.control_socket) as stream:
        dom = await booted(lab_conn, stream, name)
        registered = set(daemon.supervisor.event_ids)
        await call(guest.spawn, dom, "poweroff")
        try:
            lab_module.stop_libvirtd(signal.SIGTERM)
            lost = await stream.wait_for(
                lambda e: (e["kind"], e["name"]) == ("connection", "lost"), EVENT_TIMEOUT)
            await wait_until(lambda: powered_down(name), timeout=EVENT_TIMEOUT, poll=0.5)
        finally:
            await call(lab_module.start_libvirtd)
        # libvirtd, started again, finds the guest's QEMU told of the power-off and ends it.
        conn = await call(libvirt.open, lab)  # the test's own died with libvirtd
        try:
            again = await call(conn.lookupByName, name)
            await wait_until(lambda: again.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF,
                             timeout=EVENT_TIMEOUT)
            assert daemon.supervisor.state is not State.CONNECTED  # still backing off
            restored = await stream.wait_for(
                lambda e: (e["kind"], e["name"]) == ("connection", "restored"),
                2 * EVENT_TIMEOUT)
            stopped = await stream.wait_for(lifecycle(name, "stopped"), EVENT_TIMEOUT)
            assert stopped["synthetic"] is True
            assert lost["seq"] < restored["seq"] < stopped["seq"]
            assert daemon.inventory.find(name).state_name == "shutoff"
            assert set(daemon.supervisor.event_ids) == registered
            # The events connection works again: a real event of the guest arrives.
            await call(again.create)
            started = await stream.wait_for(lifecycle(name, "started"), EVENT_TIMEOUT)
            assert started["synthetic"] is False
        finally:
            await call(conn.close)
