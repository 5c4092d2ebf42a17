"""Domain block device statistics from the `block` group (`block.<n>.*`).

`target_device` is `block.<n>.name` (vda, sda, ...). Every disk is exported, CD-ROMs and
floppies included (a drive with no medium simply has no `path`). With `collect.block_backing_chain`
(`VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING`) libvirt lists each layer under the same name; the
first (active) layer keeps the plain name and the backing layers get libvirt's own notation
`vda[<backingIndex>]`, so series stay unique (do not sum across them). Times are converted from
nanoseconds to seconds.

Sample::

    # TYPE libvirt_domain_block_stats_read_bytes_total counter
    libvirt_domain_block_stats_read_bytes_total{domain="web-01",target_device="vda"} 1537007104
    # TYPE libvirt_domain_block_stats_read_time_seconds_total counter
    libvirt_domain_block_stats_read_time_seconds_total{domain="web-01",target_device="vda"} 65.9
    # TYPE libvirt_domain_block_stats_capacity_bytes gauge
    libvirt_domain_block_stats_capacity_bytes{domain="web-01",target_device="vda"} 21474836480
    # TYPE libvirt_domain_block_stats_info gauge
    libvirt_domain_block_stats_info{domain="web-01",target_device="vda",path="/i/w.qcow2",\
backing_index="2"} 1
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, ClassVar

from virtmon.collectors.base import claim_unique, help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

# (key suffix, metric, divisor); HELP, unit and source are in FAMILIES
_SPECS: tuple[tuple[str, str, float], ...] = (
    ("rd.reqs", "libvirt_domain_block_stats_read_requests_total", 1),
    ("rd.bytes", "libvirt_domain_block_stats_read_bytes_total", 1),
    ("rd.times", "libvirt_domain_block_stats_read_time_seconds_total", 1e9),
    ("wr.reqs", "libvirt_domain_block_stats_write_requests_total", 1),
    ("wr.bytes", "libvirt_domain_block_stats_write_bytes_total", 1),
    ("wr.times", "libvirt_domain_block_stats_write_time_seconds_total", 1e9),
    ("fl.reqs", "libvirt_domain_block_stats_flush_requests_total", 1),
    ("fl.times", "libvirt_domain_block_stats_flush_time_seconds_total", 1e9),
    ("errors", "libvirt_domain_block_stats_errors_total", 1),
    ("capacity", "libvirt_domain_block_stats_capacity_bytes", 1),
    ("allocation", "libvirt_domain_block_stats_allocation_bytes", 1),
    ("physical", "libvirt_domain_block_stats_physical_bytes", 1),
    ("threshold", "libvirt_domain_block_stats_threshold_bytes", 1),
)


@cache
def _keys(index: int) -> tuple[str, str, str, tuple[str, ...]]:
    """Name, path and backingIndex keys and the value keys of one index."""
    prefix = f"block.{index}."
    return (
        prefix + "name",
        prefix + "path",
        prefix + "backingIndex",
        tuple(prefix + suffix for suffix, *_ in _SPECS),
    )


def block_devices(stats: Mapping[str, Any], count: int) -> list[str]:
    """The `target_device` of each of `count` entries: unique, never empty, stable."""
    names: list[str] = []
    used: set[str] = set()
    for index in range(count):
        k_name, _, k_backing, _ = _keys(index)
        name = stats.get(k_name) or f"block{index}"
        if name in used:  # a backing-chain layer: libvirt's own vda[1] notation
            backing = stats.get(k_backing)
            name = f"{name}[{backing if backing is not None else index}]"
        names.append(claim_unique(used, name))
    return names


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_block_stats_read_requests_total", "counter",
        help_text("Read requests", "block.<n>.rd.reqs"),
        labels=("domain", "target_device"), unit="requests",
        source="`block.<n>.rd.reqs`"),
    FamilySpec(
        "libvirt_domain_block_stats_read_bytes_total", "counter",
        help_text("Bytes read", "block.<n>.rd.bytes"),
        labels=("domain", "target_device"), unit="bytes",
        source="`block.<n>.rd.bytes`"),
    FamilySpec(
        "libvirt_domain_block_stats_read_time_seconds_total", "counter",
        help_text("Time spent on reads, in seconds", "block.<n>.rd.times"),
        labels=("domain", "target_device"), unit="seconds",
        source="`block.<n>.rd.times` (ns)"),
    FamilySpec(
        "libvirt_domain_block_stats_write_requests_total", "counter",
        help_text("Write requests", "block.<n>.wr.reqs"),
        labels=("domain", "target_device"), unit="requests",
        source="`block.<n>.wr.reqs`"),
    FamilySpec(
        "libvirt_domain_block_stats_write_bytes_total", "counter",
        help_text("Bytes written", "block.<n>.wr.bytes"),
        labels=("domain", "target_device"), unit="bytes",
        source="`block.<n>.wr.bytes`"),
    FamilySpec(
        "libvirt_domain_block_stats_write_time_seconds_total", "counter",
        help_text("Time spent on writes, in seconds", "block.<n>.wr.times"),
        labels=("domain", "target_device"), unit="seconds",
        source="`block.<n>.wr.times` (ns)"),
    FamilySpec(
        "libvirt_domain_block_stats_flush_requests_total", "counter",
        help_text("Flush requests", "block.<n>.fl.reqs"),
        labels=("domain", "target_device"), unit="requests",
        source="`block.<n>.fl.reqs`"),
    FamilySpec(
        "libvirt_domain_block_stats_flush_time_seconds_total", "counter",
        help_text("Time spent on cache flushes, in seconds", "block.<n>.fl.times"),
        labels=("domain", "target_device"), unit="seconds",
        source="`block.<n>.fl.times` (ns)"),
    FamilySpec(
        "libvirt_domain_block_stats_errors_total", "counter",
        help_text("Errors (Xen oo_req)", "block.<n>.errors"),
        labels=("domain", "target_device"), unit="errors",
        source="`block.<n>.errors` (Xen only)"),
    FamilySpec(
        "libvirt_domain_block_stats_capacity_bytes", "gauge",
        help_text("Logical size of the image, in bytes", "block.<n>.capacity"),
        labels=("domain", "target_device"), unit="bytes",
        source="`block.<n>.capacity`: the size the guest sees"),
    FamilySpec(
        "libvirt_domain_block_stats_allocation_bytes", "gauge",
        help_text("Offset of the highest written sector, in bytes", "block.<n>.allocation"),
        labels=("domain", "target_device"), unit="bytes",
        source="`block.<n>.allocation`: for a running domain the highest written offset"),
    FamilySpec(
        "libvirt_domain_block_stats_physical_bytes", "gauge",
        help_text("Physical size of the image's container, in bytes", "block.<n>.physical"),
        labels=("domain", "target_device"), unit="bytes",
        source="`block.<n>.physical`: for a running qcow2 disk QEMU's bytes allocated on the "
               "host (like `du`), not virDomainGetBlockInfo's last offset (like `ls`)"),
    FamilySpec(
        "libvirt_domain_block_stats_threshold_bytes", "gauge",
        help_text("Write threshold for the block-threshold event, in bytes", "block.<n>.threshold"),
        labels=("domain", "target_device"), unit="bytes",
        source="`block.<n>.threshold` (virDomainSetBlockThreshold)"),
    FamilySpec(
        "libvirt_domain_block_stats_info", "info",
        help_text("Block device source path and backing-chain index",
                  "block.<n>.path, block.<n>.backingIndex"),
        labels=("domain", "target_device", "path", "backing_index"), unit="info",
        source="`block.<n>.path`, `block.<n>.backingIndex`"),
)
_FAMILY = by_name(FAMILIES)


class BlockCollector:
    """Per-disk I/O counters, sizes in bytes and an info metric with path and backing index."""

    name = "block"
    stats_groups: ClassVar[tuple[str, ...]] = ("block",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Thirteen value families and `libvirt_domain_block_stats_info`."""
        specs = [(scale, _FAMILY[metric].new()) for _suffix, metric, scale in _SPECS]
        info = _FAMILY["libvirt_domain_block_stats_info"].new()
        for record in snapshot.domains:
            stats = record.stats
            count = stats.get("block.count")
            if not count:
                continue
            domain = record.name
            for index, device in enumerate(block_devices(stats, count)):
                _, k_path, k_backing, value_keys = _keys(index)
                labels = (domain, device)
                for key, (scale, family) in zip(value_keys, specs, strict=True):
                    value = stats.get(key)
                    if value is not None:
                        family.add(labels, value if scale == 1 else value / scale)
                backing = stats.get(k_backing)
                info.add(
                    (
                        domain,
                        device,
                        stats.get(k_path) or "",
                        "" if backing is None else str(backing),
                    ),
                    1,
                )
        return [family for _, family in specs] + [info]
