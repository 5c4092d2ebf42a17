"""A listen address, ``HOST:PORT``, read one way: by the configuration's check, by the
daemon when it binds the metrics listener, and by the alerts for their generator URL.

An empty host listens on every address; an IPv6 address is written in brackets
(``[::1]:9786``). :func:`host_problem` is also the configuration's check of a URL's host.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
# ASCII digits only: str.isdigit() takes "²", which int() refuses, and "٣", which it reads.
_PORT = re.compile(r"[0-9]{1,5}\Z")


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IP address nor a DNS name (RFC 1123), if it is not."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        return f"{host!r} is neither an IP address nor a host name"
    return None


def split_listen(listen: str) -> tuple[str | None, int]:
    """``HOST:PORT`` as the host (None: every address; IPv6 without its brackets) and the port
    (1 to 65535); ValueError if it is not one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not _PORT.match(port) or not 0 < int(port) < 65536:
        raise ValueError(f"{listen!r} is not HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or None, int(port)


def check_listen(value: Any) -> str | None:
    """What is wrong with a listen address: not ``HOST:PORT`` with a port from 1 to 65535, or a
    host that is neither an IP address nor a host name."""
    try:
        host, _port = split_listen(str(value))
    except ValueError as exc:
        return str(exc)
    if host is not None and (problem := host_problem(host)):
        return f"{value!r} is not HOST:PORT: {problem}"
    return None
