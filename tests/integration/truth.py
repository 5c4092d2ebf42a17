"""What the host and libvirt say, read by a test itself: the truth the metrics cross-check
compares virtmon's exposition with.

Everything here is read without virtmon: libvirt-python on the test's own read-only
connection (mostly the per-domain calls, not the bulk call virtmon makes), `virsh` and
`virt-admin` output, `/proc` and `/sys`. Values stay in the units their source states; the
cross-check converts them. All functions block: call them in a worker thread.
"""

from __future__ import annotations

import os
import re
import resource
import sqlite3
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

SYS_CPU = Path("/sys/devices/system/cpu")
SYS_NODE = Path("/sys/devices/system/node")
KSM = Path("/sys/kernel/mm/ksm")


@dataclass
class DiskTruth:
    """One disk of a domain: its XML facts and libvirt's per-disk calls."""

    target: str
    path: str
    backing_index: str  # <source index='N'> of the live XML, "" when there is none
    info: tuple[int, int, int]  # virDomainGetBlockInfo: capacity, allocation, physical (bytes)
    stats: Mapping[str, int] | None  # virDomainBlockStatsFlags (running domains)
    errs: int | None  # virDomainBlockStats' errs (-1: the hypervisor has none)


@dataclass
class DomainTruth:
    """One domain as libvirt's per-domain calls describe it."""

    name: str
    uuid: str
    state: int
    reason: int
    os_type: str
    persistent: bool
    autostart: bool
    info: list[int]  # virDomainGetInfo: state, maxMem KiB, memory KiB, vCPUs, cpuTime ns
    vcpu_current: int
    vcpu_maximum: int
    metadata: dict[str, str]  # configured metadata label -> value, as the test reads it
    active: bool
    cpu: Mapping[str, int] | None = None  # virDomainGetCPUStats total: ns
    memory: Mapping[str, int] | None = None  # virDomainMemoryStats: KiB, counts, seconds
    vcpus: list[tuple[int, int, int, int]] | None = None  # virDomainGetVcpus
    disks: list[DiskTruth] = field(default_factory=list)
    nics: dict[str, tuple[int, ...]] = field(default_factory=dict)  # virDomainInterfaceStats
    # The domain's bulk record (virConnectGetAllDomainStats, every group) for the statistics
    # libvirt offers nowhere else: haltpoll, vCPU wait/delay/halted, block allocation/physical/
    # threshold, perf, IOThreads, memory bandwidth, dirty rate, hypervisor statistics.
    bulk: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ProcessTruth:
    """One process of virtmon as the kernel and `ps` describe it (not its process collector's
    /proc/PID/stat fields)."""

    # CPU seconds, user and system, as bounds: /proc/PID/stat states each in clock ticks,
    # truncated, so the exported sum may be up to two ticks less than getrusage's (the daemon);
    # `ps -o cputimes` (the helper) truncates to whole seconds.
    cpu_seconds: tuple[float, float]
    rss_kib: int  # /proc/PID/status VmRSS
    vsize_kib: int  # /proc/PID/status VmSize
    open_fds: int  # entries of /proc/PID/fd
    max_fds: int  # prlimit(RLIMIT_NOFILE), soft limit
    elapsed: int  # `ps -o etimes`: whole seconds since it started
    read_at: float  # time.time() when elapsed was read


@dataclass
class AdminTruth:
    """virt-admin's view of each daemon server (it counts itself as a client of `admin`)."""

    threadpool: dict[str, dict[str, int]]
    limits: dict[str, dict[str, int]]
    transports: dict[str, Counter[str]]
    access: dict[str, Counter[str]]


@dataclass
class Truth:
    """One reading of everything, with the wall times it began and ended."""

    started: float
    ended: float
    domains: dict[str, DomainTruth]  # the checked domains (stable ones, see the cross-check)
    states: Counter[int]  # every domain's state code
    versions: dict[str, str]
    node_info: list[Any]
    cpu_ticks: dict[str, list[int]]  # /proc/stat: "cpu" and "cpuN" -> ticks by column
    clock_ticks: int
    online: set[int]
    present: list[int]
    meminfo: dict[str, int]  # /proc/meminfo, kB
    node_meminfo: dict[int, dict[str, int]]  # /sys/.../nodeN/meminfo, kB
    hugepages: dict[int, dict[int, int]]  # node -> page size KiB -> free huge pages
    ksm: dict[str, int]
    interfaces: list[tuple[str, str, str]]  # virsh iface-list --all: name, state, MAC
    macs: dict[str, str]  # /sys/class/net/<name>/address
    admin: AdminTruth
    journal_seq: int
    # "daemon" (the test process itself: the cross-check's daemon runs in it) and
    # "admin_helper" (its child running the helper module), while it runs.
    processes: dict[str, ProcessTruth]
    extra: dict[str, Any] = field(default_factory=dict)  # what the test itself did


def ranges(text: str) -> set[int]:
    """A kernel CPU list ("0-3,6") as a set."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            out.update(range(int(low), int(high or low) + 1))
    return out


def kb_table(path: Path, prefix: str = "") -> dict[str, int]:
    """A meminfo-style file (`Name: value kB`) as name -> value."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.removeprefix(prefix)
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[name.strip()] = int(fields[0])
    return out


def proc_stat() -> dict[str, list[int]]:
    """/proc/stat's cpu lines: user nice system idle iowait irq softirq steal ... in ticks."""
    return {line.split()[0]: [int(v) for v in line.split()[1:]]
            for line in Path("/proc/stat").read_text().splitlines() if line.startswith("cpu")}


def numa_nodes() -> list[int]:
    """The host's NUMA node numbers from /sys."""
    return sorted(int(p.name[4:]) for p in SYS_NODE.glob("node[0-9]*"))


def hugepages() -> dict[int, dict[int, int]]:
    """Free huge pages per node and size (KiB) from /sys."""
    out: dict[int, dict[int, int]] = {}
    for node in numa_nodes():
        for pool in (SYS_NODE / f"node{node}" / "hugepages").glob("hugepages-*kB"):
            size = int(pool.name.removeprefix("hugepages-").removesuffix("kB"))
            out.setdefault(node, {})[size] = int((pool / "free_hugepages").read_text())
    return out


def run(*argv: str) -> str:
    """A command's standard output (it must succeed)."""
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def virsh_versions(uri: str) -> dict[str, str]:
    """`virsh version --daemon`'s lines, e.g. "Using library" -> "libvirt 9.0.0"."""
    out = run("virsh", "-r", "-c", uri, "version", "--daemon")
    return {name.strip(): value.strip() for name, _, value in
            (line.partition(":") for line in out.splitlines()) if value}


def virsh_interfaces(uri: str) -> list[tuple[str, str, str]]:
    """`virsh iface-list --all`: name, state, MAC of each host interface libvirt lists."""
    out = run("virsh", "-r", "-c", uri, "iface-list", "--all")
    return [tuple(line.split()) for line in out.splitlines()[2:]  # type: ignore[misc]
            if len(line.split()) == 3]


def _colon_blocks(text: str) -> list[dict[str, str]]:
    """virt-admin's `name : value` blocks, separated by blank lines."""
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
        elif sep and not name.startswith(" "):
            blocks[-1][name.strip()] = value.strip()
    return [b for b in blocks if b]


def _ps(pid: int, column: str) -> int:
    return int(run("ps", "-o", f"{column}=", "-p", str(pid)).strip())


def process_truth(pid: int) -> ProcessTruth:
    """One process: CPU time, memory, descriptors and age."""
    ticks = 2 / os.sysconf("SC_CLK_TCK")
    if pid == os.getpid():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        cpu_seconds = (cpu - ticks, cpu)
    else:
        whole = _ps(pid, "cputimes")
        cpu_seconds = (whole - ticks, whole + 1.0)
    status = kb_table(Path(f"/proc/{pid}/status"))
    return ProcessTruth(
        cpu_seconds=cpu_seconds, rss_kib=status["VmRSS"],
        vsize_kib=status["VmSize"], open_fds=len(os.listdir(f"/proc/{pid}/fd")),
        max_fds=resource.prlimit(pid, resource.RLIMIT_NOFILE)[0],
        elapsed=_ps(pid, "etimes"), read_at=time.time())


def admin_helper_pid() -> int | None:
    """The pid of this process's child running virtmon's admin helper module, if any."""
    for line in run("ps", "-o", "pid=,args=", "--ppid", str(os.getpid())).splitlines():
        pid, _, args = line.strip().partition(" ")
        if "virtmon.admin" in args:
            return int(pid)
    return None


def process_truths() -> dict[str, ProcessTruth]:
    """The daemon's process (this one) and the admin helper's."""
    out = {"daemon": process_truth(os.getpid())}
    helper = admin_helper_pid()
    if helper is not None:
        out["admin_helper"] = process_truth(helper)
    return out


def admin_truth() -> AdminTruth:
    """Thread pools, client limits and clients of each server, as virt-admin reports them.

    Two invocations: the first reads the pools, limits and client lists (its own connection is
    one of the `admin` server's clients), the second asks each listed client's info (clients
    gone meanwhile are simply not found).
    """
    servers = [line.split()[1] for line in run("virt-admin", "srv-list").splitlines()[2:]
               if len(line.split()) == 2]
    threadpool, limits, transports, access = {}, {}, {}, {}
    ids: dict[str, list[str]] = {}
    for server in servers:
        out = run("virt-admin", f"srv-threadpool-info {server}; srv-clients-info {server}; "
                  f"srv-clients-list {server}")
        first, second = _colon_blocks(out)[:2]
        threadpool[server] = {k: int(v) for k, v in first.items()}
        limits[server] = {k: int(v) for k, v in second.items()}
        rows = [line.split() for line in out.splitlines()
                if re.match(r"\s*\d+\s+\w+\s+\d{4}-", line)]
        transports[server] = Counter(row[1] for row in rows)
        ids[server] = [row[0] for row in rows]
    for server in servers:
        access[server] = Counter()
        if ids[server]:
            out = subprocess.run(
                ["virt-admin", "; ".join(f"client-info {server} {i}" for i in ids[server])],
                capture_output=True, text=True).stdout
            for block in _colon_blocks(out):
                access[server]["readonly" if block.get("readonly") == "yes"
                               else "readwrite"] += 1
    return AdminTruth(threadpool, limits, transports, access)


def journal_seq(state_dir: Path) -> int:
    """The newest sequence number in virtmon's event journal, read with sqlite itself."""
    with sqlite3.connect(f"file:{state_dir / 'virtmon.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def _disks_and_nics(xml: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    root = ElementTree.fromstring(xml)
    disks = []
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        assert target is not None
        disks.append((target.get("dev", ""),
                      "" if source is None else source.get("file", ""),
                      "" if source is None else source.get("index", "")))
    nics = [t.get("dev", "") for t in root.findall("./devices/interface/target")]
    return disks, nics


def metadata_values(dom: Any, namespace: str | None, attribute: str) -> dict[str, str]:
    """The test's metadata element's attribute (e.g. ``team``), when the domain has one."""
    if namespace is None:
        return {}
    try:
        element = ElementTree.fromstring(
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace, 0))
    except libvirt.libvirtError:
        return {}
    value = element.get(attribute)
    return {} if value is None else {attribute: value}


def domain_truth(conn: Any, name: str, namespace: str | None = None) -> DomainTruth:
    """Everything libvirt says about one domain (raises libvirtError if it vanished)."""
    dom = conn.lookupByName(name)
    state, reason = dom.state()
    active = bool(dom.isActive())
    live = libvirt.VIR_DOMAIN_VCPU_LIVE if active else libvirt.VIR_DOMAIN_VCPU_CONFIG
    truth = DomainTruth(
        name=name, uuid=dom.UUIDString(), state=state, reason=reason, os_type=dom.OSType(),
        persistent=bool(dom.isPersistent()), autostart=bool(dom.autostart()), info=dom.info(),
        vcpu_current=dom.vcpusFlags(live),
        vcpu_maximum=dom.vcpusFlags(live | libvirt.VIR_DOMAIN_VCPU_MAXIMUM),
        metadata=metadata_values(dom, namespace, "team"), active=active,
    )
    disks, nics = _disks_and_nics(dom.XMLDesc(0))
    if active:
        truth.cpu = dom.getCPUStats(True)[0]
        truth.memory = dom.memoryStats()
        truth.vcpus = dom.vcpus()[0]
        truth.nics = {dev: tuple(dom.interfaceStats(dev)) for dev in nics}
    for target, path, index in disks:
        truth.disks.append(DiskTruth(
            target, path, index, tuple(dom.blockInfo(target)),  # type: ignore[arg-type]
            dom.blockStatsFlags(target) if active else None,
            dom.blockStats(target)[4] if active else None))
    truth.bulk = conn.domainListGetStats([dom], 0, 0)[0][1]
    return truth


def read_truth(conn: Any, uri: str, names: Iterable[str], state_dir: Path,
               namespace: str | None = None) -> Truth:
    """One full reading; a domain of ``names`` that has vanished is left out."""
    started = time.time()
    domains = {}
    for name in names:
        try:
            domains[name] = domain_truth(conn, name, namespace)
        except libvirt.libvirtError:
            continue
    states: Counter[int] = Counter()
    for dom in conn.listAllDomains(0):
        try:
            states[dom.state()[0]] += 1
        except libvirt.libvirtError:  # another engineer's domain, gone meanwhile
            continue
    nodes = numa_nodes()
    return Truth(
        started=started,
        domains=domains,
        states=states,
        versions=virsh_versions(uri),
        node_info=conn.getInfo(),
        cpu_ticks=proc_stat(),
        clock_ticks=os.sysconf("SC_CLK_TCK"),
        online=ranges((SYS_CPU / "online").read_text()),
        present=sorted(ranges((SYS_CPU / "present").read_text())),
        meminfo=kb_table(Path("/proc/meminfo")),
        node_meminfo={n: kb_table(SYS_NODE / f"node{n}" / "meminfo", f"Node {n} ")
                      for n in nodes},
        hugepages=hugepages(),
        ksm={p.name: int(p.read_text()) for p in KSM.iterdir()
             if p.read_text().strip().lstrip("-").isdigit()},
        interfaces=virsh_interfaces(uri),
        macs={p.name: (p / "address").read_text().strip()
              for p in Path("/sys/class/net").iterdir() if (p / "address").exists()},
        admin=admin_truth(),
        journal_seq=journal_seq(state_dir),
        processes=process_truths(),
        ended=time.time(),
    )

