"""libvirt daemon health from the admin API: thread pools, client limits and clients per server.

The scheduler asks the admin helper for its ``snapshot`` op once per cycle, turns the reply into
an `AdminStats` (virtmon.admin.stats) and stores it on the snapshot's ``admin`` field:
None when admin collection is off (no data), an exception when the helper could not answer
(a failure of this collector). Sample::

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
"""

from __future__ import annotations

from virtmon.admin.protocol import TRANSPORTS
from virtmon.admin.stats import AdminStats
from virtmon.collectors.base import MetricFamily, NoData, help_text
from virtmon.collectors.snapshot import StatsSnapshot

__all__ = ["AdminCollectionFailed", "AdminCollector"]

# (metric name, what it is, typed parameter name)
_THREADPOOL = (
    ("libvirt_daemon_threadpool_min_workers", "Lower limit of worker threads", "minWorkers"),
    ("libvirt_daemon_threadpool_max_workers", "Upper limit of worker threads", "maxWorkers"),
    ("libvirt_daemon_threadpool_priority_workers", "Priority worker threads", "prioWorkers"),
    ("libvirt_daemon_threadpool_free_workers", "Worker threads free for a job", "freeWorkers"),
    ("libvirt_daemon_threadpool_workers", "Current ordinary worker threads", "nWorkers"),
    ("libvirt_daemon_threadpool_job_queue_depth", "Jobs waiting for a worker", "jobQueueDepth"),
)
_CLIENT_LIMITS = (
    ("libvirt_daemon_clients", "Connected clients", "nclients"),
    ("libvirt_daemon_clients_max", "Upper limit of connected clients", "nclients_max"),
    ("libvirt_daemon_clients_unauthenticated", "Connected clients not yet authenticated",
     "nclients_unauth"),
    ("libvirt_daemon_clients_unauthenticated_max",
     "Upper limit of clients waiting for authentication", "nclients_unauth_max"),
)


class AdminCollectionFailed(Exception):
    """The admin helper could not answer this cycle (a failure, not an absence)."""


class AdminCollector:
    """Thread pool, client limit and client metrics per daemon server, from `snapshot.admin`."""

    name = "admin"

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families built from `snapshot.admin`; `NoData` when admin stats were not collected."""
        admin = getattr(snapshot, "admin", None)
        if admin is None:
            raise NoData("admin statistics were not collected")
        if isinstance(admin, BaseException):
            raise AdminCollectionFailed(str(admin)) from admin
        if not isinstance(admin, AdminStats):
            raise TypeError(f"snapshot.admin is {type(admin).__name__}, not AdminStats")
        families = []
        for specs, attr, call in (
            (_THREADPOOL, "threadpool", "virAdmServerGetThreadPoolParameters"),
            (_CLIENT_LIMITS, "client_limits", "virAdmServerGetClientLimits"),
        ):
            for metric, what, key in specs:
                family = MetricFamily(
                    metric, "gauge", help_text(what, f"{call} {key}"), ("server",)
                )
                for server in admin.servers:
                    value = getattr(server, attr).get(key)
                    if value is not None:
                        family.add((server.name,), value)
                families.append(family)
        by_transport = MetricFamily(
            "libvirt_daemon_clients_by_transport",
            "gauge",
            help_text("Connected clients by transport", "virAdmClientGetTransport"),
            ("server", "transport"),
        )
        by_access = MetricFamily(
            "libvirt_daemon_clients_by_access",
            "gauge",
            help_text(
                "Connected clients by access, readonly or readwrite (TCP/TLS clients count as "
                "readwrite)", "virAdmClientGetInfo readonly"),
            ("server", "access"),
        )
        for server in admin.servers:
            counts = server.clients_by_transport
            # Each transport is exported for every server, 0 when no client uses it.
            for transport in (*TRANSPORTS, *sorted(set(counts) - set(TRANSPORTS))):
                by_transport.add((server.name, transport), counts.get(transport, 0))
            by_access.add((server.name, "readonly"), server.readonly_clients)
            by_access.add((server.name, "readwrite"), server.readwrite_clients)
        families += [by_transport, by_access]
        return families
