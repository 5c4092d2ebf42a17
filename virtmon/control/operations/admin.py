"""Daemon administration (libvirt-admin), through the admin helper child process.

These bodies only shape the helper's request: the helper (virtmon.admin.helper) makes the calls,
since libvirt-admin cannot share this process with libvirt-python. Reading what the metrics
show anyway needs ``read``; another client's identity (uid, pid, SELinux label, x509 name)
needs ``write``; changing the daemon needs ``admin``.
"""

from __future__ import annotations

from typing import Any

from virtmon.control.operations.model import Operation, WriteWhen, arg, need, op

A = "admin"
SERVER = arg("server", "string", "libvirtd", "libvirtd or admin (virtqemud... on modular hosts)")
CLIENT = need("id", "unsigned", "the client's id (admin.clients)")


def same(_helper: Any, a: dict[str, Any]) -> dict[str, Any]:
    """The validated arguments are the helper's."""
    return a


def admin(name: str, role: str, summary: str, functions: str, helper_op: str,
          *params: Any, write_when: WriteWhen | None = None) -> Operation:
    """A row whose body is a helper request."""
    return op(name, A, role, summary, functions, same, *params, helper_op=helper_op,
              write_when=write_when)


OPERATIONS: list[Operation] = [
    admin("admin.version", "read", "The admin library's version", "virAdmGetVersion",
          "get_version"),
    admin("admin.lib_version", "read", "The daemon's libvirt version",
          "virAdmConnectGetLibVersion", "connect_get_lib_version"),
    admin("admin.uri", "read", "The admin connection's URI", "virAdmConnectGetURI",
          "connect_get_uri"),
    admin("admin.is_alive", "read", "Whether the admin connection is alive",
          "virAdmConnectIsAlive", "connect_is_alive"),
    admin("admin.servers", "read", "The daemon's servers", "virAdmConnectListServers",
          "server_list"),
    admin("admin.server", "read", "Look up one server", "virAdmConnectLookupServer "
          "virAdmServerGetName", "server_lookup", SERVER),
    admin("admin.threadpool_get", "read", "A server's worker pool",
          "virAdmServerGetThreadPoolParameters", "threadpool_get", SERVER),
    admin("admin.threadpool_set", "admin", "Resize a server's worker pool",
          "virAdmServerSetThreadPoolParameters", "threadpool_set", SERVER,
          need("params", "typed", "minWorkers, maxWorkers, prioWorkers")),
    admin("admin.limits_get", "read", "A server's client limits",
          "virAdmServerGetClientLimits", "client_limits_get", SERVER),
    admin("admin.limits_set", "admin", "Change a server's client limits",
          "virAdmServerSetClientLimits", "client_limits_set", SERVER,
          need("params", "typed", "nclients_max, nclients_unauth_max")),
    admin("admin.clients", "read", "A server's clients: id, connect time, transport",
          "virAdmServerListClients virAdmClientGetID virAdmClientGetTimestamp "
          "virAdmClientGetTransport", "client_list", SERVER,
          arg("info", "boolean", False, "add each client's identity (one call per client)"),
          write_when=WriteWhen("info")),
    admin("admin.client", "read", "One client: id, connect time, transport",
          "virAdmServerLookupClient", "client_lookup", SERVER, CLIENT),
    admin("admin.client_info", "write", "One client's identity (uid, pid, SELinux, x509...)",
          "virAdmClientGetInfo", "client_info", SERVER, CLIENT),
    admin("admin.client_disconnect", "admin", "Disconnect one client", "virAdmClientClose",
          "client_close", SERVER, CLIENT),
    admin("admin.logging_filters_get", "read", "The daemon's log filters",
          "virAdmConnectGetLoggingFilters", "logging_filters_get"),
    admin("admin.logging_filters_set", "admin", "Replace the daemon's log filters",
          "virAdmConnectSetLoggingFilters", "logging_filters_set",
          need("filters", "string", 'e.g. "3:remote 4:event"; "" resets')),
    admin("admin.logging_outputs_get", "read", "The daemon's log outputs",
          "virAdmConnectGetLoggingOutputs", "logging_outputs_get"),
    admin("admin.logging_outputs_set", "admin", "Replace the daemon's log outputs",
          "virAdmConnectSetLoggingOutputs", "logging_outputs_set",
          need("outputs", "string", 'e.g. "1:journald"; "" resets')),
    admin("admin.daemon_timeout", "admin", "Exit the daemon after this many idle seconds",
          "virAdmConnectSetDaemonTimeout", "daemon_timeout_set",
          need("timeout", "unsigned", "seconds; 0 disables")),
    admin("admin.tls_reload", "admin", "Reload a server's TLS certificates and CRL",
          "virAdmServerUpdateTlsFiles", "tls_files_update", SERVER),
]
