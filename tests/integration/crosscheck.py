"""The metrics cross-check: for every family virtmon can export, where its truth comes from.

`CHECKS` maps each family's sample name to a `Check`: the type libvirt's documentation makes it
(cumulative values are counters), how exported and expected values must agree, and a function
of one `Truth` reading giving every series it expects, by labels. `crosscheck()` compares an
exposition with two readings, one taken before a collection cycle and one after: a counter lies
between them, a steady value equals both, a wandering gauge lies between them (widened by the
check's stated tolerance). An exported family without a check fails, so a new family needs one.

Unit conversions are written here from libvirt's API documentation (each names its source), on
purpose not imported from the collectors: a collector with a wrong unit disagrees with them.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import libvirt

from tests.integration.truth import DomainTruth, ProcessTruth, Truth
from tests.procfs import rss_approximation

# -- Units, from libvirt's API documentation ------------------------------------------------------
# virConnectGetAllDomainStats: cpu.*, vcpu times, block *.times, haltpoll and perf clocks in ns;
# virNodeGetCPUStats: cumulative CPU times in ns.
SECONDS_PER_NS = 1e-9
# virConnectGetAllDomainStats balloon.* and virDomainMemoryStats: KiB; virNodeGetMemoryStats:
# "(KB)", i.e. KiB as /proc/meminfo's "kB"; virNodeGetFreePages: page sizes in KiB.
BYTES_PER_KIB = 1024
# dirtyrate.megabytes_per_second: "in MiB/s"; libvirt-python's getInfo() memory: MiB (the
# binding shifts virNodeInfo's kilobytes right by 10).
BYTES_PER_MIB = 1024 * 1024
# virNodeInfo.mhz: "expected CPU frequency" in MHz.
HERTZ_PER_MHZ = 1_000_000
# VIR_NODE_MEMORY_SHARED_SLEEP_MILLISECS: milliseconds.
SECONDS_PER_MS = 1e-3

# virDomainState, in enum order (libvirt-domain.h).
DOMAIN_STATES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed",
                 "pmsuspended")
# virDomainEventType, in enum order; details are VIR_DOMAIN_EVENT_<TYPE>_<DETAIL>.
LIFECYCLE_EVENTS = ("defined", "undefined", "started", "suspended", "resumed", "stopped",
                    "shutdown", "pmsuspended", "crashed")
# virConnectCloseReason values as words: VIR_CONNECT_CLOSE_REASON_<WORD>.
CLOSE_REASONS = ("error", "eof", "keepalive", "client")
# virtmon's own event kinds besides libvirt's domain event ids (docs/metrics.md).
VIRTMON_KINDS = ("connection", "audit", "admin")

Labels = frozenset[tuple[str, str]]
Interval = tuple[float, float]
Expected = dict[Labels, float | Interval]
INF = math.inf


def labels(**pairs: object) -> Labels:
    """A series' labels."""
    return frozenset((name, str(value)) for name, value in pairs.items())


def enum_words(prefix: str) -> dict[int, str]:
    """libvirt's constants VIR_..._<WORD> as value -> lower-case word (the _LAST one left out)."""
    return {getattr(libvirt, name): name[len(prefix):].lower() for name in dir(libvirt)
            if name.startswith(prefix) and not name.endswith("_LAST")}


@dataclass(frozen=True)
class Check:
    """How one family is checked.

    ``compare``: "counter" (before <= exported <= after), "steady" (equal to both readings) or
    "wander" (a gauge that moves both ways: between the readings, widened by ``tolerance``).
    ``expect`` gives the series one reading implies; a value may be an interval (low, high)
    where the truth is a bound rather than a number.
    """

    type: str
    compare: str
    expect: Callable[[Truth], Expected]
    tolerance: float = 0.0


# -- Helpers to build expectations ----------------------------------------------------------------


def per_domain(value: Callable[[DomainTruth], float | Interval | None]) -> Callable[[Truth],
                                                                                     Expected]:
    """One series per checked domain, labelled `domain`, where ``value`` is not None."""
    def expect(truth: Truth) -> Expected:
        out: Expected = {}
        for dom in truth.domains.values():
            found = value(dom)
            if found is not None:
                out[labels(domain=dom.name)] = found
        return out
    return expect


def per_domain_item(items: Callable[[DomainTruth], Iterable[tuple[dict[str, str],
                                                                  float | Interval]]]
                    ) -> Callable[[Truth], Expected]:
    """Several series per domain: ``items`` yields (extra labels, value)."""
    def expect(truth: Truth) -> Expected:
        return {labels(domain=dom.name, **extra): found
                for dom in truth.domains.values() for extra, found in items(dom)}
    return expect


def running(fn: Callable[[DomainTruth], Any]) -> Callable[[DomainTruth], Any]:
    """``fn`` for a domain with a hypervisor process; None (no series) otherwise: an inactive
    domain's CPU and memory statistics are not its own (libvirt 9.0 gives a shut-off domain
    libvirtd's CPU time)."""
    return lambda dom: fn(dom) if dom.active else None


def bulk(key: str, scale: float = 1) -> Callable[[DomainTruth], float | None]:
    """A bulk-stats key of the domain's record, scaled; None where libvirt gives none."""
    def value(dom: DomainTruth) -> float | None:
        found = dom.bulk.get(key)
        return None if found is None else float(found) * scale
    return value


def memory_stat(key: str, scale: float = 1) -> Callable[[DomainTruth], float | None]:
    """A virDomainMemoryStats value of a running domain, scaled."""
    def value(dom: DomainTruth) -> float | None:
        if not dom.active or dom.memory is None or key not in dom.memory:
            return None
        return dom.memory[key] * scale
    return value


def single(value: Callable[[Truth], float | Interval | None]) -> Callable[[Truth], Expected]:
    """A family of one unlabelled series (none where ``value`` is None)."""
    def expect(truth: Truth) -> Expected:
        found = value(truth)
        return {} if found is None else {labels(): found}
    return expect


def nothing(_truth: Truth) -> Expected:
    """No series: a family the lab cannot have in this run (see its comment)."""
    return {}


# -- Domain families ------------------------------------------------------------------------------


def _version(text: str) -> str:
    """The dotted version at the end of a `virsh version` line ("libvirt 9.0.0" -> "9.0.0")."""
    return text.split()[-1]


def _info_labels(truth: Truth) -> Expected:
    versions = truth.versions
    return {labels(library_version=_version(versions["Using library"]),
                   daemon_version=_version(versions["Running against daemon"]),
                   hypervisor=versions["Using API"].split()[0],
                   hypervisor_version=_version(versions["Running hypervisor"]),
                   uri=truth.extra["uri"]): 1}


def _domain_info(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    yield ({"uuid": dom.uuid, "os_type": dom.os_type,
            "persistent": str(dom.persistent).lower(),
            "autostart": str(dom.autostart).lower()}, 1)


def _state_onehot(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    for code, name in enumerate(DOMAIN_STATES):
        yield {"state": name}, 1 if code == dom.state else 0


def _domain_counts(truth: Truth) -> Expected:
    return {labels(state=name): truth.states.get(code, 0)
            for code, name in enumerate(DOMAIN_STATES)}


def _cpu_stat(key: str) -> Callable[[DomainTruth], float | None]:
    """virDomainGetCPUStats' total (cpu_time, user_time, system_time: ns) in seconds."""
    return running(lambda dom: dom.cpu[key] * SECONDS_PER_NS)


def _cache_monitors(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    """cpu.cache.monitor.<num>.bank.<index>.bytes (bytes already), for running domains."""
    if not dom.active:
        return
    for num in range(int(dom.bulk.get("cpu.cache.monitor.count", 0))):
        prefix = f"cpu.cache.monitor.{num}."
        for index in range(int(dom.bulk.get(prefix + "bank.count", 0))):
            yield ({"monitor": str(dom.bulk.get(prefix + "name", num)),
                    "bank": str(dom.bulk.get(f"{prefix}bank.{index}.id", index))},
                   float(dom.bulk[f"{prefix}bank.{index}.bytes"]))


def _balloon_current(dom: DomainTruth) -> float:
    """The balloon: virDomainMemoryStats 'actual' (KiB) while running, else the configured
    current memory of virDomainGetInfo (KiB)."""
    if dom.active and dom.memory is not None and "actual" in dom.memory:
        return dom.memory["actual"] * BYTES_PER_KIB
    return dom.info[2] * BYTES_PER_KIB


def _last_update(dom: DomainTruth) -> float | None:
    """virDomainMemoryStats 'last_update' (Unix seconds); 0 means the guest never reported,
    which is no time at all."""
    found = memory_stat("last_update")(dom)
    return found or None


def _vcpus(dom: DomainTruth) -> list[tuple[int, int, int, int]]:
    return (dom.vcpus or []) if dom.active else []


def _vcpu_state(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    for number, state, _, _ in _vcpus(dom):
        yield {"vcpu": str(number)}, state


def _vcpu_time(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    for number, _, cpu_time, _ in _vcpus(dom):
        yield {"vcpu": str(number)}, cpu_time * SECONDS_PER_NS


def _vcpu_bulk(field: str, scale: float) -> Callable[[DomainTruth], Iterable[
        tuple[dict[str, str], float]]]:
    def items(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
        for number, *_ in _vcpus(dom):
            found = dom.bulk.get(f"vcpu.{number}.{field}")
            if found is not None:
                yield {"vcpu": str(number)}, float(found) * scale
    return items


# virDomainInterfaceStats' tuple: rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, ...
NIC_FIELDS = ("receive_bytes", "receive_packets", "receive_errors", "receive_drops",
              "transmit_bytes", "transmit_packets", "transmit_errors", "transmit_drops")


def _nic(position: int) -> Callable[[DomainTruth], Iterable[tuple[dict[str, str], float]]]:
    def items(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
        for device, stats in dom.nics.items():
            yield {"target_device": device}, stats[position]
    return items


def _disk_stat(key: str, scale: float = 1) -> Callable[[DomainTruth], Iterable[
        tuple[dict[str, str], float]]]:
    """A virDomainBlockStatsFlags field (requests, bytes; *_total_times in ns) per disk."""
    def items(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
        for disk in dom.disks:
            if disk.stats is not None and key in disk.stats:
                yield {"target_device": disk.target}, disk.stats[key] * scale
    return items


def _disk_errors(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    """virDomainBlockStats' errs; -1 says the hypervisor has no such count (QEMU)."""
    for disk in dom.disks:
        if disk.errs is not None and disk.errs >= 0:
            yield {"target_device": disk.target}, disk.errs


def _disk_capacity(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    """virDomainGetBlockInfo's capacity: the logical size in bytes."""
    for disk in dom.disks:
        yield {"target_device": disk.target}, disk.info[0]


def _disk_bulk(field: str) -> Callable[[DomainTruth], Iterable[tuple[dict[str, str], float]]]:
    """block.<n>.<field> of the record, bytes, for the entry named like each disk. Used for
    allocation (the highest written offset, which virDomainGetBlockInfo does not give for a
    running domain), physical (for a running qcow2 QEMU reports the bytes allocated on the
    host, not virDomainGetBlockInfo's "last offset") and threshold."""
    def items(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
        for disk in dom.disks:
            for index in range(int(dom.bulk.get("block.count", 0))):
                if (dom.bulk.get(f"block.{index}.name") == disk.target
                        and f"block.{index}.{field}" in dom.bulk):
                    yield {"target_device": disk.target}, float(dom.bulk[f"block.{index}.{field}"])
                    break
    return items


def _disk_info(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    for disk in dom.disks:
        yield {"target_device": disk.target, "path": disk.path,
               "backing_index": disk.backing_index}, 1


# perf events: counts; the two clocks are in ns; cmt bytes and mbmt/mbml bytes/s (documented).
PERF_COUNTS = ("cache_misses", "cache_references", "instructions", "cpu_cycles",
               "branch_instructions", "branch_misses", "bus_cycles", "stalled_cycles_frontend",
               "stalled_cycles_backend", "ref_cpu_cycles", "page_faults", "context_switches",
               "cpu_migrations", "page_faults_min", "page_faults_maj", "alignment_faults",
               "emulation_faults")


def _perf_checks() -> dict[str, Check]:
    checks = {f"libvirt_domain_perf_{event}_total": Check(
        "counter", "counter", per_domain(running(bulk(f"perf.{event}")))) for event in PERF_COUNTS}
    for event in ("cpu_clock", "task_clock"):
        checks[f"libvirt_domain_perf_{event}_seconds_total"] = Check(
            "counter", "counter", per_domain(running(bulk(f"perf.{event}", SECONDS_PER_NS))))
    checks["libvirt_domain_perf_cmt_bytes"] = Check(
        "gauge", "wander", per_domain(running(bulk("perf.cmt"))))
    for event in ("mbmt", "mbml"):
        checks[f"libvirt_domain_perf_{event}_bytes_per_second"] = Check(
            "gauge", "wander", per_domain(running(bulk(f"perf.{event}"))))
    return checks


def _iothreads(field: str, scale: float = 1) -> Callable[[DomainTruth], Iterable[
        tuple[dict[str, str], float]]]:
    """iothread.<id>.<field> per IOThread id (poll-max-ns in ns, grow/shrink plain numbers)."""
    def items(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
        for key, found in dom.bulk.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "iothread" and parts[2] == field:
                yield {"iothread": parts[1]}, float(found) * scale
    return items


def _bandwidth(field: str | None) -> Callable[[DomainTruth], Iterable[
        tuple[dict[str, str], float]]]:
    """memory.bandwidth.monitor.<num>.node.<index>.bytes.<field> (bytes); None: the info."""
    def items(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
        prefix = "memory.bandwidth.monitor."
        for num in range(int(dom.bulk.get(prefix + "count", 0))):
            monitor = str(dom.bulk.get(f"{prefix}{num}.name") or f"monitor{num}")
            if field is None:
                vcpus = str(dom.bulk.get(f"{prefix}{num}.vcpus", ""))
                yield {"monitor": monitor, "vcpus": vcpus}, 1
                continue
            for index in range(int(dom.bulk.get(f"{prefix}{num}.node.count", 0))):
                node = f"{prefix}{num}.node.{index}."
                if node + "bytes." + field in dom.bulk:
                    yield ({"monitor": monitor, "node": str(dom.bulk.get(node + "id", index))},
                           float(dom.bulk[node + "bytes." + field]))
    return items


def _dirtyrate_start(truth: Truth) -> Expected:
    """When each calculation started, widened by a second each way (QEMU keeps whole seconds):
    by the test's own clock around its call where the test started it, else QEMU's start on
    the host's monotonic clock moved to Unix time. None before any calculation (start 0)."""
    started = truth.extra.get("dirtyrate_started", {})
    offset = time.time() - time.monotonic()
    out: Expected = {}
    for dom in truth.domains.values():
        low, high = started.get(dom.name, (None, None))
        if low is None:
            monotonic = dom.bulk.get("dirtyrate.calc_start_time")
            if not monotonic:
                continue
            low = high = offset + monotonic
        out[labels(domain=dom.name)] = (low - 1.0, high + 1.0)
    return out


def _dirtyrate_vcpus(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    for key, found in dom.bulk.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[:2] == ["dirtyrate", "vcpu"]:
            yield {"vcpu": parts[2]}, float(found) * BYTES_PER_MIB


def _dirtyrate_mode(dom: DomainTruth) -> Iterable[tuple[dict[str, str], float]]:
    mode = dom.bulk.get("dirtyrate.calc_mode")
    if mode is not None:
        yield {"calc_mode": str(mode)}, 1


# -- Hypervisor statistics (vm collector): named from libvirt's keys ------------------------------


def hypervisor_family(key: str) -> tuple[str, str, str, float] | None:
    """For a `vm.<name>.<type>` or `vcpu.<n>.<name>.<type>` key: family name, type, comparison
    and scale, by the documented meaning of <type> ('sum' aggregate, 'cur' current value, 'max'
    peak); a <name> ending in `_ns` is nanoseconds. None for other keys."""
    parts = key.split(".")
    if parts[0] == "vm" and len(parts) == 3:
        scope, stat, kind = "", parts[1], parts[2]
    elif parts[0] == "vcpu" and len(parts) == 4:
        scope, stat, kind = "vcpu_", parts[2], parts[3]
    else:
        return None
    if kind not in ("sum", "cur", "max"):
        return None
    stat = re.sub(r"[^a-zA-Z0-9_]", "_", stat)
    scale = 1.0
    if stat.endswith("_ns"):
        stat, scale = stat[:-3] + "_seconds", SECONDS_PER_NS
    name = f"libvirt_domain_hypervisor_{scope}{stat}"
    if kind == "sum":
        return name + "_total", "counter", "counter", scale
    return (name + "_max" if kind == "max" else name), "gauge", "wander", scale


def hypervisor_checks(*readings: Truth) -> dict[str, Check]:
    """A check for every hypervisor statistic libvirt gives any checked domain."""
    names: dict[str, tuple[str, str]] = {}
    for truth in readings:
        for dom in truth.domains.values():
            for key in dom.bulk:
                family = hypervisor_family(key)
                if family is not None:
                    names[family[0]] = family[1], family[2]

    def expect_for(name: str) -> Callable[[Truth], Expected]:
        def expect(truth: Truth) -> Expected:
            out: Expected = {}
            for dom in truth.domains.values():
                for key, found in dom.bulk.items():
                    family = hypervisor_family(key)
                    if family is None or family[0] != name:
                        continue
                    extra = {"vcpu": key.split(".")[1]} if key.startswith("vcpu.") else {}
                    out[labels(domain=dom.name, **extra)] = float(found) * family[3]
            return out
        return expect

    return {name: Check(mtype, compare, expect_for(name))
            for name, (mtype, compare) in names.items()}


# -- Node families --------------------------------------------------------------------------------


def _ticks_to_seconds(truth: Truth, ticks: int) -> float:
    """/proc/stat counts in USER_HZ ticks."""
    return ticks / truth.clock_ticks


def cpu_modes(truth: Truth, line: str) -> dict[str, float]:
    """libvirt's four CPU modes from one /proc/stat line (columns: user nice system idle iowait
    irq softirq steal guest guest_nice): libvirt's "user" is user+nice and its "kernel" is
    system+irq+softirq (steal and guest time are in neither)."""
    user, nice, system, idle, iowait, irq, softirq = truth.cpu_ticks[line][:7]
    return {"user": _ticks_to_seconds(truth, user + nice),
            "kernel": _ticks_to_seconds(truth, system + irq + softirq),
            "idle": _ticks_to_seconds(truth, idle),
            "iowait": _ticks_to_seconds(truth, iowait)}


def _node_cpu(truth: Truth) -> Expected:
    return {labels(cpu=cpu, mode=mode): seconds for cpu in sorted(truth.online)
            for mode, seconds in cpu_modes(truth, f"cpu{cpu}").items()}


def _node_cpu_all(truth: Truth) -> Expected:
    return {labels(mode=mode): seconds for mode, seconds in cpu_modes(truth, "cpu").items()}


def _node_info(truth: Truth) -> Expected:
    """The model is the machine architecture (uname -m); NUMA nodes as /sys counts them;
    sockets, cores and threads as virNodeGetInfo computes them."""
    _, _, _, _, _, sockets, cores, threads = truth.node_info[:8]
    return {labels(model=os.uname().machine, numa_nodes=len(truth.node_meminfo),
                   sockets=sockets, cores=cores, threads=threads): 1}


def _cell_memory(field: str) -> Callable[[Truth], Expected]:
    """/sys/devices/system/node/node<N>/meminfo's Mem<field> (kB) per NUMA node."""
    return lambda truth: {labels(numa_node=node): table[field] * BYTES_PER_KIB
                          for node, table in truth.node_meminfo.items()}


def _free_pages(truth: Truth) -> Expected:
    """Free pages per node and size: the base pages are the node's MemFree in pages of the
    host's page size; huge pages as /sys counts them (sizes in KiB there)."""
    page = os.sysconf("SC_PAGE_SIZE")
    out: Expected = {}
    for node, table in truth.node_meminfo.items():
        out[labels(numa_node=node, page_size_bytes=page)] = (
            table["MemFree"] * BYTES_PER_KIB // page)
        for size, free in truth.hugepages.get(node, {}).items():
            out[labels(numa_node=node, page_size_bytes=size * BYTES_PER_KIB)] = free
    return out


def _ksm(name: str, scale: float = 1) -> Callable[[Truth], Expected]:
    """/sys/kernel/mm/ksm/<name>, which virNodeGetMemoryParameters' shm_<name> reports."""
    return single(lambda truth: truth.ksm[name] * scale if name in truth.ksm else None)


# -- Host interfaces and admin --------------------------------------------------------------------


def _interface_info(truth: Truth) -> Expected:
    """The interfaces virsh lists, each with the MAC address the kernel states in /sys."""
    return {labels(interface=name, mac=truth.macs.get(name, f"(not in /sys: {mac})")): 1
            for name, _, mac in truth.interfaces}


def _interface_active(truth: Truth) -> Expected:
    return {labels(interface=name): 1 if state == "active" else 0
            for name, state, _ in truth.interfaces}


def _threadpool(key: str) -> Callable[[Truth], Expected]:
    return lambda truth: {labels(server=server): values[key]
                          for server, values in truth.admin.threadpool.items()}


def _free_workers(truth: Truth) -> Expected:
    """virt-admin's freeWorkers, or one fewer: virtmon reads the pools while its own cycle's
    calls keep one of the `libvirtd` server's workers busy (virt-admin's own call is served
    by an `admin` worker in both readings)."""
    return {labels(server=server): (values["freeWorkers"] - (server != "admin"),
                                    values["freeWorkers"])
            for server, values in truth.admin.threadpool.items()}


def _own_admin_client(server: str) -> int:
    """virt-admin is itself a client of the `admin` server while it reads the counts."""
    return 1 if server == "admin" else 0


def _client_limit(key: str, counts_itself: bool = False) -> Callable[[Truth], Expected]:
    return lambda truth: {
        labels(server=server): values[key] - (_own_admin_client(server) if counts_itself else 0)
        for server, values in truth.admin.limits.items()}


def _by_transport(truth: Truth) -> Expected:
    out: Expected = {}
    for server, counts in truth.admin.transports.items():
        counts = Counter(counts)
        counts["unix"] -= _own_admin_client(server)
        # virClientTransport: unix, tcp, tls are always present.
        for transport in sorted(set(counts) | {"unix", "tcp", "tls"}):
            out[labels(server=server, transport=transport)] = counts.get(transport, 0)
    return out


def _by_access(truth: Truth) -> Expected:
    return {labels(server=server, access=access): counts.get(access, 0)
            for server, counts in truth.admin.access.items()
            for access in ("readonly", "readwrite")}


# -- Events: what the test's own callbacks saw on the checked domains -----------------------------


def _events(truth: Truth) -> list[tuple[str, int, tuple[Any, ...], float]]:
    """(domain, event id, callback arguments, wall time) the test's own callbacks received."""
    return [event for event in truth.extra.get("events", ()) if event[0] in truth.domains]


def _event_counts(key: Callable[[int, tuple[Any, ...]], tuple[str, ...] | None]
                  ) -> Callable[[Truth], Expected]:
    def expect(truth: Truth) -> Expected:
        counts: Counter[tuple[str, ...]] = Counter()
        for domain, event_id, args, _ in _events(truth):
            found = key(event_id, args)
            if found is not None:
                counts[(domain, *found)] += 1
        names = EVENT_LABELS[key]
        return {labels(domain=k[0], **dict(zip(names, k[1:], strict=True))): n
                for k, n in counts.items()}
    return expect


def _lifecycle(event_id: int, args: tuple[Any, ...]) -> tuple[str, ...] | None:
    if event_id != libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE:
        return None
    event = LIFECYCLE_EVENTS[args[0]]
    detail = enum_words(f"VIR_DOMAIN_EVENT_{event.upper()}_").get(args[1], str(args[1]))
    return event, detail


def _reboot(event_id: int, _args: tuple[Any, ...]) -> tuple[str, ...] | None:
    return () if event_id == libvirt.VIR_DOMAIN_EVENT_ID_REBOOT else None


def _io_error(event_id: int, args: tuple[Any, ...]) -> tuple[str, ...] | None:
    if event_id != libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR:
        return None
    src_path, dev_alias, action = args[:3]
    return str(dev_alias or src_path), enum_words("VIR_DOMAIN_EVENT_IO_ERROR_")[action]


def _watchdog(event_id: int, args: tuple[Any, ...]) -> tuple[str, ...] | None:
    if event_id != libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG:
        return None
    return (enum_words("VIR_DOMAIN_EVENT_WATCHDOG_")[args[0]],)


def _threshold(event_id: int, args: tuple[Any, ...]) -> tuple[str, ...] | None:
    return (str(args[0]),) if event_id == libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD else None


def _job(event_id: int, args: tuple[Any, ...]) -> tuple[str, ...] | None:
    if event_id != libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED:
        return None
    operation = args[0].get("operation")
    return (enum_words("VIR_DOMAIN_JOB_OPERATION_").get(operation, "unknown"),)


EVENT_LABELS: dict[Callable[..., Any], tuple[str, ...]] = {
    _lifecycle: ("event", "detail"), _reboot: (), _io_error: ("device", "action"),
    _watchdog: ("action",), _threshold: ("target_device",), _job: ("operation",),
}


def _last_event(truth: Truth) -> Expected:
    """For each domain with events, between the floor the test set from its own reception of
    the last one and the end of the reading."""
    return {labels(domain=domain): (truth.extra["last_event_floor"][domain], truth.ended)
            for domain in {event[0] for event in _events(truth)}}


def event_kinds() -> list[str]:
    """Every domain event id libvirt defines as its lower-case name, and virtmon's own kinds."""
    return sorted(set(enum_words("VIR_DOMAIN_EVENT_ID_").values()) | set(VIRTMON_KINDS))


def _events_received(truth: Truth) -> Expected:
    """At least the events of each kind the test caused on its domains (other domains add)."""
    caused: Counter[str] = Counter()
    ids = enum_words("VIR_DOMAIN_EVENT_ID_")
    for _, event_id, _, _ in _events(truth):
        caused[ids[event_id]] += 1
    return {labels(kind=kind): (caused.get(kind, 0), INF) for kind in event_kinds()}


# -- virtmon's own families -----------------------------------------------------------------------


def _collectors(value: Callable[[Truth], float | Interval]) -> Callable[[Truth], Expected]:
    return lambda truth: {labels(collector=name): value(truth)
                          for name in truth.extra["collectors"]}


def _window(truth: Truth) -> Interval:
    """A duration no longer than the time between the two readings, when the cycle ran."""
    began, ended = truth.extra["cycle"]
    return 0.0, ended - began


def _one_hot(name: str, values: Iterable[str], current: str) -> Expected:
    return {labels(**{name: value}): 1 if value == current else 0 for value in values}


ANY_COUNT: Interval = (0, INF)


def _any(*label_sets: dict[str, str]) -> Callable[[Truth], Expected]:
    """Internal counts without an outside truth: their label sets, any value >= 0 (counters
    are also checked never to decrease)."""
    return lambda _truth: {labels(**extra): ANY_COUNT for extra in label_sets}


# -- virtmon's processes: what the kernel and ps say of them (truth.py's ProcessTruth) -------------

# The labels of each process's series: the daemon's have none.
PROCESS_LABELS = {"daemon": {}, "admin_helper": {"process": "admin_helper"}}


def _processes(value: Callable[[ProcessTruth], float | Interval]) -> Callable[[Truth], Expected]:
    """One series per virtmon process the reading found."""
    def expect(truth: Truth) -> Expected:
        return {labels(**PROCESS_LABELS[name]): value(process)
                for name, process in truth.processes.items()}
    return expect


def _started(process: ProcessTruth) -> Interval:
    # ps states whole seconds of age; the kernel's boot time, which the start time is counted
    # from, is whole seconds too.
    start = process.read_at - process.elapsed
    return (start - 2.0, start + 2.0)


ALERT_STATES = ("pending", "firing")
ALERT_SEVERITIES = ("critical", "warning", "info")


# -- The table ------------------------------------------------------------------------------------

CHECKS: dict[str, Check] = {
    # domain_info: connection, versions (virsh version --daemon), counts, per-domain info.
    "libvirt_up": Check("gauge", "steady", single(lambda _t: 1)),
    "libvirt_info": Check("gauge", "steady", _info_labels),
    "libvirt_domains": Check("gauge", "wander", _domain_counts),
    "libvirt_domain_info": Check("gauge", "steady", per_domain_item(_domain_info)),
    "libvirt_domain_metadata_info": Check("gauge", "steady", per_domain_item(
        lambda dom: [(dom.metadata, 1)] if dom.metadata else [])),
    # A record lacks no group the daemon asked for: nothing held the checked domains in a job.
    "libvirt_domain_stats_incomplete": Check("gauge", "steady", per_domain(lambda _d: 0)),
    # state: virDomainGetState.
    "libvirt_domain_info_state": Check("gauge", "steady", per_domain(lambda d: d.state)),
    "libvirt_domain_state": Check("gauge", "steady", per_domain_item(_state_onehot)),
    "libvirt_domain_state_reason": Check("gauge", "steady", per_domain(lambda d: d.reason)),
    # cpu: virDomainGetCPUStats (ns); haltpoll and cache monitors only in the bulk record.
    "libvirt_domain_info_cpu_time_seconds_total": Check(
        "counter", "counter", per_domain(_cpu_stat("cpu_time"))),
    "libvirt_domain_cpu_user_seconds_total": Check(
        "counter", "counter", per_domain(_cpu_stat("user_time"))),
    "libvirt_domain_cpu_system_seconds_total": Check(
        "counter", "counter", per_domain(_cpu_stat("system_time"))),
    "libvirt_domain_cpu_haltpoll_success_seconds_total": Check(
        "counter", "counter", per_domain(running(bulk("cpu.haltpoll.success.time",
                                                      SECONDS_PER_NS)))),
    "libvirt_domain_cpu_haltpoll_fail_seconds_total": Check(
        "counter", "counter", per_domain(running(bulk("cpu.haltpoll.fail.time",
                                                      SECONDS_PER_NS)))),
    "libvirt_domain_cpu_cache_monitor_bytes": Check(
        "gauge", "wander", per_domain_item(_cache_monitors)),
    # balloon: virDomainMemoryStats and virDomainGetInfo (KiB).
    "libvirt_domain_info_memory_usage_bytes": Check("gauge", "steady",
                                                    per_domain(_balloon_current)),
    "libvirt_domain_memory_stats_current_balloon_bytes": Check("gauge", "steady",
                                                               per_domain(_balloon_current)),
    "libvirt_domain_info_maximum_memory_bytes": Check(
        "gauge", "steady", per_domain(lambda d: d.info[1] * BYTES_PER_KIB)),
    "libvirt_domain_memory_stats_maximum_bytes": Check(
        "gauge", "steady", per_domain(lambda d: d.info[1] * BYTES_PER_KIB)),
    **{f"libvirt_domain_memory_stats_{key}_bytes": Check(
        "gauge", "wander", per_domain(memory_stat(key, BYTES_PER_KIB)))
       for key in ("unused", "available", "usable", "disk_caches")},
    # QEMU's resident set may move by a few pages between readings; 256 KiB stays well under
    # the 2.3 % a kB-for-KiB slip would make of even a 16 MiB QEMU.
    "libvirt_domain_memory_stats_rss_bytes": Check(
        "gauge", "wander", per_domain(memory_stat("rss", BYTES_PER_KIB)),
        tolerance=256 * BYTES_PER_KIB),
    "libvirt_domain_memory_stats_swap_in_bytes_total": Check(
        "counter", "counter", per_domain(memory_stat("swap_in", BYTES_PER_KIB))),
    "libvirt_domain_memory_stats_swap_out_bytes_total": Check(
        "counter", "counter", per_domain(memory_stat("swap_out", BYTES_PER_KIB))),
    **{f"libvirt_domain_memory_stats_{key}_total": Check(
        "counter", "counter", per_domain(memory_stat(key)))
       for key in ("major_fault", "minor_fault", "hugetlb_pgalloc", "hugetlb_pgfail")},
    "libvirt_domain_memory_stats_last_update_timestamp_seconds": Check(
        "gauge", "steady", per_domain(_last_update)),
    # vcpu: virDomainGetVcpusFlags, virDomainGetVcpus (ns); wait, delay, halted only in bulk.
    "libvirt_domain_info_virtual_cpus": Check("gauge", "steady",
                                              per_domain(lambda d: d.vcpu_current)),
    "libvirt_domain_vcpu_current": Check("gauge", "steady", per_domain(lambda d: d.vcpu_current)),
    "libvirt_domain_vcpu_maximum": Check("gauge", "steady", per_domain(lambda d: d.vcpu_maximum)),
    "libvirt_domain_vcpu_state": Check("gauge", "steady", per_domain_item(_vcpu_state)),
    "libvirt_domain_vcpu_time_seconds_total": Check("counter", "counter",
                                                    per_domain_item(_vcpu_time)),
    "libvirt_domain_vcpu_wait_seconds_total": Check(
        "counter", "counter", per_domain_item(_vcpu_bulk("wait", SECONDS_PER_NS))),
    "libvirt_domain_vcpu_delay_seconds_total": Check(
        "counter", "counter", per_domain_item(_vcpu_bulk("delay", SECONDS_PER_NS))),
    "libvirt_domain_vcpu_halted": Check("gauge", "wander",
                                        per_domain_item(_vcpu_bulk("halted", 1))),
    # interface: virDomainInterfaceStats.
    **{f"libvirt_domain_interface_stats_{field}_total": Check(
        "counter", "counter", per_domain_item(_nic(position)))
       for position, field in enumerate(NIC_FIELDS)},
    # block: virDomainBlockStatsFlags (times in ns), virDomainGetBlockInfo, the live XML.
    "libvirt_domain_block_stats_read_requests_total": Check(
        "counter", "counter", per_domain_item(_disk_stat("rd_operations"))),
    "libvirt_domain_block_stats_read_bytes_total": Check(
        "counter", "counter", per_domain_item(_disk_stat("rd_bytes"))),
    "libvirt_domain_block_stats_read_time_seconds_total": Check(
        "counter", "counter", per_domain_item(_disk_stat("rd_total_times", SECONDS_PER_NS))),
    "libvirt_domain_block_stats_write_requests_total": Check(
        "counter", "counter", per_domain_item(_disk_stat("wr_operations"))),
    "libvirt_domain_block_stats_write_bytes_total": Check(
        "counter", "counter", per_domain_item(_disk_stat("wr_bytes"))),
    "libvirt_domain_block_stats_write_time_seconds_total": Check(
        "counter", "counter", per_domain_item(_disk_stat("wr_total_times", SECONDS_PER_NS))),
    "libvirt_domain_block_stats_flush_requests_total": Check(
        "counter", "counter", per_domain_item(_disk_stat("flush_operations"))),
    "libvirt_domain_block_stats_flush_time_seconds_total": Check(
        "counter", "counter", per_domain_item(_disk_stat("flush_total_times", SECONDS_PER_NS))),
    "libvirt_domain_block_stats_errors_total": Check("counter", "counter",
                                                     per_domain_item(_disk_errors)),
    "libvirt_domain_block_stats_capacity_bytes": Check("gauge", "steady",
                                                       per_domain_item(_disk_capacity)),
    "libvirt_domain_block_stats_allocation_bytes": Check(
        "gauge", "steady", per_domain_item(_disk_bulk("allocation"))),
    "libvirt_domain_block_stats_physical_bytes": Check(
        "gauge", "steady", per_domain_item(_disk_bulk("physical"))),
    "libvirt_domain_block_stats_threshold_bytes": Check(
        "gauge", "steady", per_domain_item(_disk_bulk("threshold"))),
    "libvirt_domain_block_stats_info": Check("gauge", "steady", per_domain_item(_disk_info)),
    # perf: the bulk record's perf.<event> (only events enabled on the domain exist).
    **_perf_checks(),
    # iothread: iothread.count and iothread.<id>.poll-* (poll-max-ns in ns).
    "libvirt_domain_iothreads": Check("gauge", "steady", per_domain(bulk("iothread.count"))),
    "libvirt_domain_iothread_poll_max_seconds": Check(
        "gauge", "steady", per_domain_item(_iothreads("poll-max-ns", SECONDS_PER_NS))),
    "libvirt_domain_iothread_poll_grow": Check("gauge", "steady",
                                               per_domain_item(_iothreads("poll-grow"))),
    "libvirt_domain_iothread_poll_shrink": Check("gauge", "steady",
                                                 per_domain_item(_iothreads("poll-shrink"))),
    # memory bandwidth (resctrl MBM; a host without it has no memory.bandwidth.* keys).
    "libvirt_domain_memory_bandwidth_local_bytes_total": Check(
        "counter", "counter", per_domain_item(_bandwidth("local"))),
    "libvirt_domain_memory_bandwidth_total_bytes_total": Check(
        "counter", "counter", per_domain_item(_bandwidth("total"))),
    "libvirt_domain_memory_bandwidth_monitor_info": Check(
        "gauge", "steady", per_domain_item(_bandwidth(None))),
    # dirtyrate: status and period (seconds, virDomainStartDirtyRateCalc's unit), rate in MiB/s.
    "libvirt_domain_dirtyrate_calc_status": Check(
        "gauge", "steady", per_domain(bulk("dirtyrate.calc_status"))),
    "libvirt_domain_dirtyrate_calc_start_timestamp_seconds": Check("gauge", "steady",
                                                                   _dirtyrate_start),
    "libvirt_domain_dirtyrate_calc_period_seconds": Check(
        "gauge", "steady", per_domain(bulk("dirtyrate.calc_period"))),
    "libvirt_domain_dirtyrate_bytes_per_second": Check(
        "gauge", "steady", per_domain(bulk("dirtyrate.megabytes_per_second", BYTES_PER_MIB))),
    "libvirt_domain_dirtyrate_vcpu_bytes_per_second": Check(
        "gauge", "steady", per_domain_item(_dirtyrate_vcpus)),
    "libvirt_domain_dirtyrate_info": Check("gauge", "steady", per_domain_item(_dirtyrate_mode)),
    # node: /proc and /sys, virNodeGetInfo where only libvirt computes it.
    "libvirt_node_info": Check("gauge", "steady", _node_info),
    "libvirt_node_cpus": Check("gauge", "steady", single(lambda t: len(t.online))),
    # MemTotal in whole MiB: libvirt-python's getInfo() rounds it down.
    "libvirt_node_memory_bytes": Check("gauge", "steady", single(
        lambda t: t.meminfo["MemTotal"] // 1024 * BYTES_PER_MIB)),
    "libvirt_node_cpu_frequency_hertz": Check("gauge", "steady",
                                              single(lambda t: t.node_info[3] * HERTZ_PER_MHZ)),
    "libvirt_node_cpu_seconds_total": Check("counter", "counter", _node_cpu),
    "libvirt_node_cpu_all_seconds_total": Check("counter", "counter", _node_cpu_all),
    "libvirt_node_cpu_online": Check("gauge", "steady", lambda t: {
        labels(cpu=cpu): 1 if cpu in t.online else 0 for cpu in t.present}),
    "libvirt_node_memory_total_bytes": Check("gauge", "steady", _cell_memory("MemTotal")),
    # Free memory moves both ways by many pages between readings on a busy host (up to 155 MiB
    # in half a second measured on the shared lab); buffers and cache much less.
    "libvirt_node_memory_free_bytes": Check("gauge", "wander", _cell_memory("MemFree"),
                                            tolerance=256 * BYTES_PER_MIB),
    # libvirt gives buffers and cached only for all cells (VIR_NODE_MEMORY_STATS_BUFFERS).
    "libvirt_node_memory_buffers_bytes": Check("gauge", "steady", nothing),
    "libvirt_node_memory_cached_bytes": Check("gauge", "steady", nothing),
    "libvirt_node_memory_all_total_bytes": Check(
        "gauge", "steady", single(lambda t: t.meminfo["MemTotal"] * BYTES_PER_KIB)),
    # "free" is MemFree: libvirt 9.0 does not add buffers and cache as its documentation says.
    "libvirt_node_memory_all_free_bytes": Check(
        "gauge", "wander", single(lambda t: t.meminfo["MemFree"] * BYTES_PER_KIB),
        tolerance=256 * BYTES_PER_MIB),
    "libvirt_node_memory_all_buffers_bytes": Check(
        "gauge", "wander", single(lambda t: t.meminfo["Buffers"] * BYTES_PER_KIB),
        tolerance=8 * BYTES_PER_MIB),
    "libvirt_node_memory_all_cached_bytes": Check(
        "gauge", "wander", single(lambda t: t.meminfo["Cached"] * BYTES_PER_KIB),
        tolerance=32 * BYTES_PER_MIB),
    # 65,536 pages of 4 KiB: the free-memory tolerance above.
    "libvirt_node_free_pages": Check("gauge", "wander", _free_pages, tolerance=65536),
    "libvirt_node_memory_shared_pages_to_scan": Check("gauge", "steady", _ksm("pages_to_scan")),
    "libvirt_node_memory_shared_sleep_seconds": Check(
        "gauge", "steady", _ksm("sleep_millisecs", SECONDS_PER_MS)),
    "libvirt_node_memory_shared_pages_shared": Check("gauge", "wander", _ksm("pages_shared")),
    "libvirt_node_memory_shared_pages_sharing": Check("gauge", "wander", _ksm("pages_sharing")),
    "libvirt_node_memory_shared_pages_unshared": Check("gauge", "wander",
                                                       _ksm("pages_unshared")),
    "libvirt_node_memory_shared_pages_volatile": Check("gauge", "wander",
                                                       _ksm("pages_volatile")),
    "libvirt_node_memory_shared_full_scans_total": Check("counter", "counter",
                                                         _ksm("full_scans")),
    "libvirt_node_memory_shared_merge_across_nodes": Check("gauge", "steady",
                                                           _ksm("merge_across_nodes")),
    # host interfaces: virsh iface-list --all.
    "libvirt_host_interface_info": Check("gauge", "steady", _interface_info),
    "libvirt_host_interface_active": Check("gauge", "steady", _interface_active),
    # admin: virt-admin. Workers, queue and clients move with the daemon's other users.
    "libvirt_daemon_threadpool_min_workers": Check("gauge", "steady", _threadpool("minWorkers")),
    "libvirt_daemon_threadpool_max_workers": Check("gauge", "steady", _threadpool("maxWorkers")),
    "libvirt_daemon_threadpool_priority_workers": Check("gauge", "steady",
                                                        _threadpool("prioWorkers")),
    "libvirt_daemon_threadpool_free_workers": Check("gauge", "wander", _free_workers),
    "libvirt_daemon_threadpool_workers": Check("gauge", "wander", _threadpool("nWorkers")),
    "libvirt_daemon_threadpool_job_queue_depth": Check("gauge", "wander",
                                                       _threadpool("jobQueueDepth")),
    "libvirt_daemon_clients": Check("gauge", "wander", _client_limit("nclients", True)),
    "libvirt_daemon_clients_max": Check("gauge", "steady", _client_limit("nclients_max")),
    "libvirt_daemon_clients_unauthenticated": Check("gauge", "wander",
                                                    _client_limit("nclients_unauth")),
    "libvirt_daemon_clients_unauthenticated_max": Check("gauge", "steady",
                                                        _client_limit("nclients_unauth_max")),
    "libvirt_daemon_clients_by_transport": Check("gauge", "wander", _by_transport),
    "libvirt_daemon_clients_by_access": Check("gauge", "wander", _by_access),
    # The cross-check's daemon asks the helper every cycle (admin_interval = interval).
    "virtmon_admin_last_read_timestamp_seconds": Check("gauge", "steady",
                                                       single(lambda t: t.extra["cycle"])),
    # events: the test's own callbacks on the same libvirtd.
    "libvirt_domain_events_total": Check("counter", "counter", _event_counts(_lifecycle)),
    "libvirt_domain_reboots_total": Check("counter", "counter", _event_counts(_reboot)),
    "libvirt_domain_io_errors_total": Check("counter", "counter", _event_counts(_io_error)),
    "libvirt_domain_watchdog_events_total": Check("counter", "counter",
                                                  _event_counts(_watchdog)),
    "libvirt_domain_block_threshold_events_total": Check("counter", "counter",
                                                         _event_counts(_threshold)),
    "libvirt_domain_jobs_completed_total": Check("counter", "counter", _event_counts(_job)),
    "libvirt_domain_last_event_timestamp_seconds": Check("gauge", "wander", _last_event),
    # virtmon's own.
    "virtmon_build_info": Check("gauge", "steady", lambda _t: {
        labels(version=importlib.metadata.version("virtmon")): 1}),
    "virtmon_collector_success": Check("gauge", "steady", _collectors(lambda _t: 1)),
    "virtmon_collector_duration_seconds": Check("gauge", "wander", _collectors(_window)),
    "virtmon_libvirt_connection_state": Check("gauge", "steady", lambda t: _one_hot(
        "state", t.extra["connection_states"], "connected")),
    "virtmon_libvirt_event_ids_registered": Check(
        "gauge", "steady", single(lambda t: t.extra["event_ids_accepted"])),
    "virtmon_collection_duration_seconds": Check("gauge", "wander", single(_window)),
    "virtmon_collection_last_success_timestamp_seconds": Check(
        "gauge", "steady", single(lambda t: t.extra["cycle"])),
    "virtmon_collection_failures_total": Check("counter", "counter", _any({})),
    "virtmon_libvirt_calls_abandoned_total": Check("counter", "counter", _any({})),
    "virtmon_libvirt_calls_abandoned_outstanding": Check("gauge", "wander", _any({})),
    "virtmon_events_last_sequence": Check("gauge", "wander",
                                          single(lambda t: float(t.journal_seq))),
    # libvirtd kept running (the lab watch fails the test otherwise): no reconnect of any kind.
    "virtmon_libvirt_reconnects_total": Check("counter", "steady", lambda _t: {
        labels(reason=reason): 0 for reason in CLOSE_REASONS}),
    "virtmon_events_received_total": Check("counter", "counter", _events_received),
    "virtmon_events_dropped_total": Check("counter", "counter", _any({"sink": "journal"})),
    "virtmon_alerts_active": Check("gauge", "wander", _any(
        *({"state": s, "severity": v} for s in ALERT_STATES for v in ALERT_SEVERITIES))),
    "virtmon_alerts_notifications_total": Check("counter", "counter", _any(
        {"status": "firing"}, {"status": "resolved"})),
    "virtmon_alerts_cycles_dropped_total": Check("counter", "counter", _any({})),
    "virtmon_control_requests_total": Check("counter", "steady", lambda t: {
        labels(operation=op, code=code): n for (op, code), n in t.extra["control"].items()}),
    # The cross-check opens no console; nothing may have been abandoned.
    "virtmon_console_streams_open": Check("gauge", "steady", single(lambda _t: 0)),
    "virtmon_console_calls_abandoned_total": Check("counter", "steady", single(lambda _t: 0)),
    "virtmon_console_calls_abandoned_outstanding": Check("gauge", "steady",
                                                         single(lambda _t: 0)),
    # The daemon's and the admin helper's processes.
    "process_cpu_seconds_total": Check("counter", "counter",
                                       _processes(lambda p: p.cpu_seconds)),
    # Between the two readings a process serves requests (the helper one each cycle), freeing
    # and taking back memory: its RSS dips and returns (seen: 312 KiB under load). 2 MiB more
    # than the kernel's counting slack still tells a unit off by 1,024 on ~30 MiB.
    "process_resident_memory_bytes": Check("gauge", "wander",
                                           _processes(lambda p: p.rss_kib * BYTES_PER_KIB),
                                           tolerance=rss_approximation() + 2 * BYTES_PER_MIB),
    # A worker thread started meanwhile reserves a stack and a malloc arena (8 + 64 MiB).
    "process_virtual_memory_bytes": Check("gauge", "wander",
                                          _processes(lambda p: p.vsize_kib * BYTES_PER_KIB),
                                          tolerance=128 * BYTES_PER_MIB),
    "process_open_fds": Check("gauge", "wander", _processes(lambda p: p.open_fds), tolerance=8),
    "process_max_fds": Check("gauge", "steady", _processes(lambda p: p.max_fds)),
    "process_start_time_seconds": Check("gauge", "steady", _processes(_started)),
    # The cross-check's daemon has no webhook receiver: none of these may exist.
    "virtmon_webhook_deliveries_total": Check("counter", "steady", nothing),
    "virtmon_webhook_attempts_total": Check("counter", "steady", nothing),
    "virtmon_webhook_queue_depth": Check("gauge", "steady", nothing),
    "virtmon_webhook_oldest_pending_age_seconds": Check("gauge", "steady", nothing),
    # The cross-check's daemon leaves the guest-agent poller off (it is opt-in; its own lab
    # test is tests/integration/test_lab_guest_agent.py): none of these may exist.
    "libvirt_domain_guest_agent_up": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_agent_last_success_timestamp_seconds": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_filesystem_size_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_filesystem_used_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_os_info": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_timezone_offset_seconds": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_users": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_load_average": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_interface_address_info": Check("gauge", "steady", nothing),
    "libvirt_domain_guest_clock_offset_seconds": Check("gauge", "steady", nothing),
    "virtmon_guest_agent_probes_total": Check("counter", "steady", nothing),
    "virtmon_guest_agent_calls_abandoned_total": Check("counter", "steady", nothing),
    "virtmon_guest_agent_calls_abandoned_outstanding": Check("gauge", "steady", nothing),
    "virtmon_guest_agent_poll_duration_seconds": Check("gauge", "steady", nothing),
    # No domain of the cross-check runs a job (tests/host2/test_migration.py watches one):
    # no job series, and the watcher's set stays empty.
    "libvirt_domain_job_info": Check("gauge", "steady", nothing),
    "libvirt_domain_job_elapsed_seconds": Check("gauge", "steady", nothing),
    "libvirt_domain_job_remaining_seconds": Check("gauge", "steady", nothing),
    "libvirt_domain_job_expected_downtime_seconds": Check("gauge", "steady", nothing),
    "libvirt_domain_job_data_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_data_processed_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_data_remaining_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_memory_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_memory_processed_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_memory_remaining_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_memory_transfer_bytes_per_second": Check("gauge", "steady", nothing),
    "libvirt_domain_job_memory_iteration": Check("gauge", "steady", nothing),
    "libvirt_domain_job_memory_postcopy_requests": Check("gauge", "steady", nothing),
    "libvirt_domain_job_disk_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_disk_processed_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_disk_remaining_bytes": Check("gauge", "steady", nothing),
    "libvirt_domain_job_disk_transfer_bytes_per_second": Check("gauge", "steady", nothing),
    "libvirt_domain_job_auto_converge_throttle_ratio": Check("gauge", "steady", nothing),
    "libvirt_domain_job_memory_dirty_rate_bytes_per_second": Check("gauge", "steady", nothing),
    "virtmon_domain_jobs_watched": Check("gauge", "steady", single(lambda _t: 0.0)),
    "virtmon_domain_jobs_unwatched_total": Check("counter", "steady", single(lambda _t: 0.0)),
}

# Family names made from libvirt's hypervisor statistic names (see hypervisor_checks).
HYPERVISOR_PREFIX = "libvirt_domain_hypervisor_"


# -- The comparison -------------------------------------------------------------------------------

Exported = dict[str, tuple[str, dict[Labels, float]]]  # sample name -> (type, series)


def _interval(value: float | Interval) -> Interval:
    return value if isinstance(value, tuple) else (float(value), float(value))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def agrees(check: Check, exported: float, before: float | Interval,
           after: float | Interval) -> bool:
    """Whether an exported value agrees with the two readings under the check's comparison."""
    (b_low, b_high), (a_low, a_high) = _interval(before), _interval(after)
    if check.compare == "counter":
        low, high = b_low, a_high
    elif check.compare == "steady":
        low, high = max(b_low, a_low), min(b_high, a_high)
    else:
        low = min(b_low, a_low) - check.tolerance
        high = max(b_high, a_high) + check.tolerance
    return (low <= exported <= high or _close(exported, low) or _close(exported, high))


def checks_for(before: Truth, after: Truth) -> dict[str, Check]:
    """The static table and the hypervisor statistics the two readings name."""
    return {**CHECKS, **hypervisor_checks(before, after)}


def crosscheck(exported: Exported, before: Truth, after: Truth, domains: Iterable[str],
               table: Mapping[str, Check] | None = None) -> list[str]:
    """Every disagreement between an exposition and the readings around its cycle.

    Series of domains other than ``domains`` (others' domains, which come and go) are left
    out; every other exported series must be expected by its family's check, and every series
    both readings expect must be exported. ``table`` replaces `checks_for`'s (for testing the
    comparison itself).
    """
    checked = set(domains)
    checks = dict(table) if table is not None else checks_for(before, after)
    problems = []

    def kept(series: Labels) -> bool:
        names = [value for name, value in series if name == "domain"]
        return not names or names[0] in checked

    for name, (mtype, _) in sorted(exported.items()):
        if name not in checks:
            problems.append(f"{name}: exported, but the cross-check has no check for it")
        elif mtype != checks[name].type:
            problems.append(f"{name}: exported as {mtype}, libvirt's meaning is a "
                            f"{checks[name].type}")
    for name, check in sorted(checks.items()):
        want_before, want_after = check.expect(before), check.expect(after)
        got = {series: value for series, value in exported.get(name, ("", {}))[1].items()
               if kept(series)}
        for series, value in sorted(got.items(), key=str):
            shown = f"{name}{dict(sorted(series))}"
            if series not in want_before and series not in want_after:
                problems.append(f"{shown} = {value}: exported, libvirt has no such series")
            elif series in want_before and series in want_after and not agrees(
                    check, value, want_before[series], want_after[series]):
                problems.append(f"{shown} = {value}: {check.compare} check failed, libvirt "
                                f"read {want_before[series]} before, {want_after[series]} after")
        for series in sorted(want_before.keys() & want_after.keys() - got.keys(), key=str):
            if kept(series):
                problems.append(f"{name}{dict(sorted(series))}: libvirt has it, not exported "
                                f"(expected {want_before[series]})")
    return problems


def parse(text: str) -> Exported:
    """An exposition's samples by sample name, with their family's type."""
    from prometheus_client.parser import text_string_to_metric_families
    out: Exported = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, (family.type, {}))[1][
                frozenset(sample.labels.items())] = sample.value
    return out


def documented_families(reference: str) -> set[str]:
    """The family names docs/metrics.md lists: the first cell of each table row in backticks."""
    return set(re.findall(r"^\| `([a-z_*]+)`", reference, re.MULTILINE))


def counters_decreased(first: Exported, second: Exported, keep: Callable[[Labels], bool]
                       ) -> list[str]:
    """Counter series of ``first`` that are lower in ``second``."""
    out = []
    for name, (mtype, series) in first.items():
        if mtype != "counter":
            continue
        later = second.get(name, ("", {}))[1]
        for key, value in series.items():
            if keep(key) and key in later and later[key] < value:
                out.append(f"{name}{dict(sorted(key))}: {value} then {later[key]}")
    return out

