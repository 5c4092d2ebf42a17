"""libvirt daemon health from the admin API: thread pools, client limits and clients per server.

The scheduler asks the admin helper for its ``snapshot`` op every ``collect.admin_interval``
seconds (each cycle in between reuses the last answer), turns the reply into an `AdminStats`
(virtmon.admin.stats) and stores it on the snapshot's ``admin`` field: None when admin
collection is off (no data), an exception when the helper could not answer (a failure of this
collector, asked again the next cycle). Sample::

    # HELP libvirt_daemon_threadpool_max_workers Upper limit of worker threads ...
    # TYPE libvirt_daemon_threadpool_max_workers gauge
    libvirt_daemon_threadpool_max_workers{server="libvirtd"} 20
    libvirt_daemon_threadpool_max_workers{server="admin"} 5
    # TYPE libvirt_daemon_clients gauge
    libvirt_daemon_clients{server="libvirtd"} 3
    # TYPE libvirt_daemon_clients_by_transport gauge
    libvirt_daemon_clients_by_transport{server="libvirtd",transport="unix"} 3
    libvirt_daemon_clients_by_transport{server="libvirtd",transport="tcp"} 0
    libvirt_daemon_clients_by_transport{server="libvirtd",transport="tls"} 0
    # TYPE libvirt_daemon_clients_by_access gauge
    libvirt_daemon_clients_by_access{server="libvirtd",access="readonly"} 2
    libvirt_daemon_clients_by_access{server="libvirtd",access="readwrite"} 1
    # TYPE virtmon_admin_last_read_timestamp_seconds gauge
    virtmon_admin_last_read_timestamp_seconds 1.7651e+09
"""

from __future__ import annotations

from typing import ClassVar

from virtmon.admin.protocol import TRANSPORTS
from virtmon.collectors.base import NoData, help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

__all__ = ["AdminCollectionFailed", "AdminCollector"]

# (metric name, typed parameter name); HELP, unit and source are in FAMILIES
_THREADPOOL = (
    ("libvirt_daemon_threadpool_min_workers", "minWorkers"),
    ("libvirt_daemon_threadpool_max_workers", "maxWorkers"),
    ("libvirt_daemon_threadpool_priority_workers", "prioWorkers"),
    ("libvirt_daemon_threadpool_free_workers", "freeWorkers"),
    ("libvirt_daemon_threadpool_workers", "nWorkers"),
    ("libvirt_daemon_threadpool_job_queue_depth", "jobQueueDepth"),
)
_CLIENT_LIMITS = (
    ("libvirt_daemon_clients", "nclients"),
    ("libvirt_daemon_clients_max", "nclients_max"),
    ("libvirt_daemon_clients_unauthenticated", "nclients_unauth"),
    ("libvirt_daemon_clients_unauthenticated_max", "nclients_unauth_max"),
)


def _help(what: str, source: str) -> str:
    """HELP text of an admin family: read on a schedule of its own, not every cycle."""
    return help_text(what, source, age="read every collect.admin_interval seconds")


class AdminCollectionFailed(Exception):
    """The admin helper could not answer this cycle (a failure, not an absence)."""


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_daemon_threadpool_min_workers", "gauge",
        _help("Lower limit of worker threads",
                  "virAdmServerGetThreadPoolParameters minWorkers"),
        labels=("server",), unit="threads",
        source="virAdmServerGetThreadPoolParameters minWorkers"),
    FamilySpec(
        "libvirt_daemon_threadpool_max_workers", "gauge",
        _help("Upper limit of worker threads",
                  "virAdmServerGetThreadPoolParameters maxWorkers"),
        labels=("server",), unit="threads",
        source="virAdmServerGetThreadPoolParameters maxWorkers"),
    FamilySpec(
        "libvirt_daemon_threadpool_priority_workers", "gauge",
        _help("Priority worker threads", "virAdmServerGetThreadPoolParameters prioWorkers"),
        labels=("server",), unit="threads",
        source="virAdmServerGetThreadPoolParameters prioWorkers"),
    FamilySpec(
        "libvirt_daemon_threadpool_free_workers", "gauge",
        _help("Worker threads free for a job",
                  "virAdmServerGetThreadPoolParameters freeWorkers"),
        labels=("server",), unit="threads",
        source="virAdmServerGetThreadPoolParameters freeWorkers"),
    FamilySpec(
        "libvirt_daemon_threadpool_workers", "gauge",
        _help("Current ordinary worker threads",
                  "virAdmServerGetThreadPoolParameters nWorkers"),
        labels=("server",), unit="threads",
        source="virAdmServerGetThreadPoolParameters nWorkers"),
    FamilySpec(
        "libvirt_daemon_threadpool_job_queue_depth", "gauge",
        _help("Jobs waiting for a worker", "virAdmServerGetThreadPoolParameters jobQueueDepth"),
        labels=("server",), unit="jobs",
        source="virAdmServerGetThreadPoolParameters jobQueueDepth"),
    FamilySpec(
        "libvirt_daemon_clients", "gauge",
        _help("Connected clients", "virAdmServerGetClientLimits nclients"),
        labels=("server",), unit="clients",
        source="virAdmServerGetClientLimits nclients"),
    FamilySpec(
        "libvirt_daemon_clients_max", "gauge",
        _help("Upper limit of connected clients", "virAdmServerGetClientLimits nclients_max"),
        labels=("server",), unit="clients",
        source="virAdmServerGetClientLimits nclients_max"),
    FamilySpec(
        "libvirt_daemon_clients_unauthenticated", "gauge",
        _help("Connected clients not yet authenticated",
                  "virAdmServerGetClientLimits nclients_unauth"),
        labels=("server",), unit="clients",
        source="virAdmServerGetClientLimits nclients_unauth"),
    FamilySpec(
        "libvirt_daemon_clients_unauthenticated_max", "gauge",
        _help("Upper limit of clients waiting for authentication",
                  "virAdmServerGetClientLimits nclients_unauth_max"),
        labels=("server",), unit="clients",
        source="virAdmServerGetClientLimits nclients_unauth_max"),
    FamilySpec(
        "libvirt_daemon_clients_by_transport", "gauge",
        _help("Connected clients by transport", "virAdmClientGetTransport"),
        labels=("server", "transport"), unit="clients",
        source="virAdmClientGetTransport (unix, tcp, tls always listed)"),
    FamilySpec(
        "libvirt_daemon_clients_by_access", "gauge",
        _help("Connected clients by access, readonly or readwrite (TCP/TLS clients count as "
                  "readwrite)", "virAdmClientGetInfo readonly"),
        labels=("server", "access"), unit="clients",
        source="virAdmClientGetInfo readonly (readonly, readwrite)"),
    FamilySpec(
        "virtmon_admin_last_read_timestamp_seconds", "gauge",
        "When virtmon last read the admin series from its helper, as a Unix time; they are "
        "read every collect.admin_interval seconds and carried between",
        labels=(), unit="seconds",
        source="the admin helper's answer (virtmon)"),
)
_FAMILY = by_name(FAMILIES)


class AdminCollector:
    """Thread pool, client limit and client metrics per daemon server, from `snapshot.admin`."""

    name = "admin"
    stats_groups: ClassVar[tuple[str, ...]] = ()
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families built from `snapshot.admin`; `NoData` when admin stats were not collected."""
        admin = snapshot.admin
        if admin is None:
            raise NoData("admin statistics were not collected")
        if isinstance(admin, Exception):
            raise AdminCollectionFailed(str(admin)) from admin
        families = []
        for specs, attr in ((_THREADPOOL, "threadpool"), (_CLIENT_LIMITS, "client_limits")):
            for metric, key in specs:
                family = _FAMILY[metric].new()
                for server in admin.servers:
                    value = getattr(server, attr).get(key)
                    if value is not None:
                        family.add((server.name,), value)
                families.append(family)
        by_transport = _FAMILY["libvirt_daemon_clients_by_transport"].new()
        by_access = _FAMILY["libvirt_daemon_clients_by_access"].new()
        for server in admin.servers:
            counts = server.clients_by_transport
            # Each transport is exported for every server, 0 when no client uses it.
            for transport in (*TRANSPORTS, *sorted(set(counts) - set(TRANSPORTS))):
                by_transport.add((server.name, transport), counts.get(transport, 0))
            by_access.add((server.name, "readonly"), server.readonly_clients)
            by_access.add((server.name, "readwrite"), server.readwrite_clients)
        read_at = _FAMILY["virtmon_admin_last_read_timestamp_seconds"].new()
        read_at.add((), admin.read_at)
        families += [by_transport, by_access, read_at]
        for family in families:  # one reading, carried over the cycles until the next
            family.read_at = admin.read_at
        return families
