"""Connection, inventory and per-domain info metrics.

`libvirt_up` and `libvirt_info` come from the connection, `libvirt_domains{state}` counts the
snapshot's domains, `libvirt_domain_info` and `libvirt_domain_metadata_info` carry what the
cached XML says (uuid, OS type, persistence, autostart, configured metadata labels) to be joined
in PromQL, and `libvirt_domain_stats_incomplete` flags a domain whose record lacks a group that
was asked for (typically NOWAIT skipping a domain held in a job).

Sample::

    # TYPE libvirt_up gauge
    libvirt_up 1
    # TYPE libvirt_info gauge
    libvirt_info{library_version="9.0.0",daemon_version="9.0.0",hypervisor="QEMU",...} 1
    # TYPE libvirt_domains gauge
    libvirt_domains{state="running"} 2
    # TYPE libvirt_domain_info gauge
    libvirt_domain_info{domain="web",uuid="…",os_type="hvm",persistent="true",autostart="false"} 1
    # TYPE libvirt_domain_metadata_info gauge
    libvirt_domain_metadata_info{domain="web-01",project="shop"} 1
    # TYPE libvirt_domain_stats_incomplete gauge
    libvirt_domain_stats_incomplete{domain="web-01"} 0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import DomainInfo, StatsSnapshot
from virtmon.collectors.state import is_inactive
from virtmon.exposition.family import FamilySpec, LabelValues, MetricFamily, Sample, by_name
from virtmon.virt.states import STATE_NAMES

_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def missing_groups(stats: Mapping[str, Any], requested: frozenset[str]) -> list[str]:
    """Requested groups an active domain's record lacks (empty for inactive domains).

    Only groups a running QEMU domain always fills are checked: `state`, `cpu_total`,
    `balloon` (`balloon.rss` needs the monitor), `vcpu`, `interface`, and `block`, where every
    disk's frontend entry must have `rd.reqs` (NOWAIT without the job lists disks but no I/O
    counters).
    Groups that may legitimately be empty (perf, iothread, memory, dirtyrate, vm) are not.
    """
    if "state.state" not in stats:
        return ["state"] if "state" in requested else []
    if is_inactive(stats):
        return []
    missing = []
    if "cpu_total" in requested and "cpu.time" not in stats:
        missing.append("cpu_total")
    if "balloon" in requested and "balloon.rss" not in stats:
        missing.append("balloon")
    if "vcpu" in requested and "vcpu.current" not in stats:
        missing.append("vcpu")
    if "interface" in requested and "net.count" not in stats:
        missing.append("interface")
    if "block" in requested and not _block_complete(stats):
        missing.append("block")
    return missing


def groups_to_check(snapshot: StatsSnapshot) -> frozenset[str]:
    """The requested groups whose absence means a domain was skipped, for this hypervisor.

    Which groups a running domain always fills is known for QEMU; another driver may never fill
    some (libvirt's test driver fills `state` alone), which says nothing about a skipped domain,
    so there only a missing `state` counts.
    """
    hypervisor = snapshot.libvirt.hypervisor if snapshot.libvirt is not None else None
    if hypervisor is None or hypervisor == "QEMU":
        return snapshot.requested_groups
    return snapshot.requested_groups & {"state"}


def _block_complete(stats: Mapping[str, Any]) -> bool:
    """Every disk's frontend entry (the first one of each name) has its I/O counters.

    Backing-chain layers (listed after the active layer under the same name) never have them.
    """
    count = stats.get("block.count")
    if count is None:
        return False
    seen: set[object] = set()
    for index in range(count):
        name = stats.get(f"block.{index}.name")
        if name in seen:
            continue
        seen.add(name)
        if f"block.{index}.rd.reqs" not in stats:
            return False
    return True


def format_version(version: int | str | None) -> str:
    """libvirt's major*1,000,000 + minor*1,000 + micro as "major.minor.micro"."""
    if version is None:
        return ""
    if isinstance(version, int):
        return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"
    return str(version)


def metadata_label_name(key: str) -> str:
    """A valid Prometheus label name for a configured metadata key, never `domain`."""
    name = _INVALID_LABEL.sub("_", key)
    if not name or name[0].isdigit():
        name = "_" + name
    if name.startswith("__"):
        name = "meta" + name
    if name == "domain":
        name = "metadata_domain"
    return name


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_up", "gauge",
        help_text("1 if the libvirt connection is up, else 0", "connection close callback"),
        labels=(), unit="1 or 0",
        source="the connection (close callback)"),
    FamilySpec(
        "libvirt_info", "info",
        help_text("libvirt and hypervisor versions and the connection URI",
                  "virGetVersion, virConnectGetLibVersion, virConnectGetType, "
                  "virConnectGetVersion, virConnectGetURI"),
        labels=("library_version", "daemon_version", "hypervisor", "hypervisor_version", "uri"),
        unit="info",
        source="virGetVersion, virConnectGetLibVersion, virConnectGetType, virConnectGetVersion"),
    FamilySpec(
        "libvirt_domains", "gauge",
        help_text("Number of domains in each state", "state.state"),
        labels=("state",), unit="domains",
        source="`state.state` of every domain, all eight states listed"),
    FamilySpec(
        "libvirt_domain_info", "info",
        help_text("Domain identity and configuration, to join on `domain`",
                  "domain XML: uuid, os/type; virDomainIsPersistent, virDomainGetAutostart"),
        labels=("domain", "uuid", "os_type", "persistent", "autostart"), unit="info",
        source="domain XML, virDomainIsPersistent, virDomainGetAutostart"),
    FamilySpec(
        "libvirt_domain_metadata_info", "info",
        help_text("Configured labels taken from the domain metadata", "domain XML <metadata>"),
        labels=("domain",), labels_note="one per `collect.metadata_labels` key", unit="info",
        source="domain XML `<metadata>`"),
    FamilySpec(
        "libvirt_domain_stats_incomplete", "gauge",
        help_text("1 if the domain's record lacks statistics groups that were requested (e.g. "
                  "NOWAIT skipped a domain held in a job), else 0",
                  "virConnectGetAllDomainStats record"),
        labels=("domain",), unit="1 or 0",
        source="a record lacking a requested group (NOWAIT skipped a domain held in a job); "
               "on drivers other than QEMU only a missing `state` counts"),
)
_FAMILY = by_name(FAMILIES)


class _DomainSamples(NamedTuple):
    """A domain's samples of `libvirt_domain_info` and `libvirt_domain_stats_incomplete`, for
    one name and one set of cached facts."""

    name: str
    known: DomainInfo | None
    info: Sample
    complete: Sample
    incomplete: Sample

    @classmethod
    def of(cls, name: str, uuid: str, known: DomainInfo | None) -> _DomainSamples:
        """The samples of the domain ``name`` with ``uuid`` and the facts ``known`` of it."""
        if known is None:
            labels: LabelValues = (name, uuid, "", "", "")
        else:
            labels = (name, uuid, known.os_type, "true" if known.persistent else "false",
                      "true" if known.autostart else "false")
        domain = (name,)
        return cls(name, known, (labels, 1), (domain, 0), (domain, 1))


class DomainInfoCollector:
    """Connection status, versions, domain counts by state and per-domain info metrics.

    A domain whose name and cached facts are the last cycle's gives that cycle's samples again
    (a cycle at a thousand domains made 3,000 tuples for series that rarely change). What it
    carries are the samples of the domains of the last cycle alone, so the families are the
    same as a fresh collector's.
    """

    name = "domain_info"
    stats_groups: ClassVar[tuple[str, ...]] = ("state",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def __init__(self) -> None:
        # domain UUID -> its samples, for the domains of the last cycle.
        self._samples: dict[str, _DomainSamples] = {}

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families from the connection info, the XML cache and the records themselves."""
        families: list[MetricFamily] = []
        conn = snapshot.libvirt
        if conn is not None:
            up = _FAMILY["libvirt_up"].new()
            up.add((), 1 if conn.connected else 0)
            versions = _FAMILY["libvirt_info"].new()
            versions.add(
                (
                    format_version(conn.library_version),
                    format_version(conn.daemon_version),
                    conn.hypervisor or "",
                    format_version(conn.hypervisor_version),
                    conn.uri or "",
                ),
                1,
            )
            families += [up, versions]

        counts = dict.fromkeys(STATE_NAMES, 0)
        for record in snapshot.domains:
            code = record.stats.get("state.state")
            if code is not None:
                state = STATE_NAMES[code] if 0 <= code < len(STATE_NAMES) else "unknown"
                counts[state] = counts.get(state, 0) + 1
        by_state = _FAMILY["libvirt_domains"].new()
        for state, count in counts.items():
            by_state.add((state,), count)
        families.append(by_state)

        families += self._domain_families(snapshot)
        return families

    def _domain_families(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        info = _FAMILY["libvirt_domain_info"].new()
        incomplete = _FAMILY["libvirt_domain_stats_incomplete"].new()
        infos, incompletes = info.samples, incomplete.samples
        requested = groups_to_check(snapshot)
        cached = snapshot.domain_info
        with_metadata: list[tuple[str, DomainInfo]] = []
        last = self._samples.get
        samples_now: dict[str, _DomainSamples] = {}
        for record in snapshot.domains:
            domain, uuid = record.name, record.uuid
            known = cached.get(uuid)
            samples = last(uuid)
            if samples is None or samples.name != domain or samples.known is not known:
                samples = _DomainSamples.of(domain, uuid, known)
            samples_now[uuid] = samples
            infos.append(samples.info)
            incompletes.append(samples.incomplete if missing_groups(record.stats, requested)
                               else samples.complete)
            if known is not None and known.metadata_labels:
                with_metadata.append((domain, known))
        self._samples = samples_now
        families = [info]
        if with_metadata:
            families.append(_metadata_family(with_metadata))
        families.append(incomplete)
        return families


def _metadata_family(domains: list[tuple[str, DomainInfo]]) -> MetricFamily:
    """`libvirt_domain_metadata_info` with the union of all configured metadata labels."""
    keys: dict[str, str] = {}  # label name -> metadata key (first key wins a sanitised clash)
    for key in sorted({key for _, known in domains for key in known.metadata_labels}):
        keys.setdefault(metadata_label_name(key), key)
    names = tuple(keys)
    family = _FAMILY["libvirt_domain_metadata_info"].new(*names)
    for domain, known in domains:
        labels = known.metadata_labels
        family.add((domain, *(str(labels.get(keys[name], "")) for name in names)), 1)
    return family
