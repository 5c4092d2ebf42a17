"""Configuration: a TOML file into frozen dataclasses, with command-line overrides.

Validation gathers every problem (unknown key, wrong type, bad value, bad URI, unreadable file)
with its key path and reports them all at once; the caller exits with 78 (EX_CONFIG) before
anything starts. The schema below is the one place that knows the keys, their types and defaults.
"""

from __future__ import annotations

import json
import math
import os
import re
import ssl
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit
from xml.etree import ElementTree

from virtmon.address import check_listen, host_problem
from virtmon.admin.protocol import DEFAULT_URI as DEFAULT_ADMIN_URI

EX_CONFIG = 78
DEFAULT_PORT = 9786
LOG_LEVELS = ("debug", "info", "warning", "error")
RECEIVER_KINDS = ("alertmanager", "json", "cloudevents")


class ConfigError(Exception):
    """Every problem found in a configuration, each as "key.path: message"."""

    def __init__(self, problems: list[str]) -> None:
        # One line each (a parser's multi-line message joined), so that check-config's output
        # and the log keep one problem per line.
        problems = [" ".join(line.strip() for line in p.splitlines()) for p in problems]
        super().__init__("\n".join(problems))
        self.problems = problems


# -- value checks: each returns an error message or None ---------------------------------------

Check = Callable[[Any], "str | None"]

# RFC 3986: what a URI may hold unescaped (anything else is written %HH).
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*\Z")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 9110 5.1 and 5.5: a field name is a token; a value is visible ASCII, spaces and tabs
# inside (no CR, LF, NUL or other control character, which would split or end the request).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FIELD_VALUE = re.compile(r"([\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?)?\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
# Headers virtmon writes itself (or aiohttp does): one from the configuration would be sent
# twice or fight with the real one.
RESERVED_HEADERS = ("content-type", "content-length", "transfer-encoding", "host", "connection",
                    "user-agent", "idempotency-key", "x-virtmon-signature")
MAX_ID = 2**32 - 2  # uid_t and gid_t; 2^32 - 1 is "no id"


def key_text(key: str) -> str:
    """A key as a segment of a key path: bare as TOML writes it when it may be, else quoted
    (an empty key, or one with spaces, dots, colons or control characters, stays readable)."""
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass(frozen=True, slots=True)
class Limits:
    """The documented range of a number: ``low`` to ``high``, both included; with ``or_zero``
    0 too (it switches the feature off). Anything outside would crash or stall what uses it:
    a sleep of 1e300 s overflows, a rate of 1e-300 per second never sends."""

    low: float
    high: float
    or_zero: bool = False

    @property
    def span(self) -> str:
        """"LOW to HIGH"."""
        return f"{_number_text(self.low)} to {_number_text(self.high)}"

    def __str__(self) -> str:
        return f"0, or {self.span}" if self.or_zero else self.span

    def problem(self, value: float) -> str | None:
        """Why ``value`` is outside, if it is."""
        if not math.isfinite(value):
            return f"must be a finite number ({self}), not {value!r}"
        if (self.or_zero and value == 0) or self.low <= value <= self.high:
            return None
        return f"must be {'0 or ' if self.or_zero else ''}from {self.span}, not {value!r}"


SECONDS = Limits(0.01, 86400)  # a timeout or interval: 10 ms to a day
LONG_SECONDS = Limits(0.01, 366 * 86400)  # an age or hold time: up to a year (and a day)
DAYS = Limits(0.001, 36500)  # retention: 86.4 s to a hundred years


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _uri_chars_problem(value: str, what: str) -> str | None:
    """A character a URI cannot hold unescaped, or a ``%`` not followed by two hex digits."""
    if not _URI_CHARS.match(value):
        bad = next(c for c in value if not _URI_CHARS.match(c))
        return f"{value!r} is not {what}: {bad!r} must be percent-encoded (RFC 3986)"
    if _PERCENT.search(value):
        return f"{value!r} is not {what}: '%' must start a %HH escape"
    return None


def check_uri(value: Any) -> str | None:
    """A libvirt URI: ``driver[+transport]://[host][:port]/path``."""
    usage = "(like qemu:///system or qemu+ssh://host/system)"
    if problem := _uri_chars_problem(value, "a libvirt URI"):
        return problem
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - reading it checks the port: a number from 0 to 65535
    except ValueError as exc:
        return f"{value!r} is not a libvirt URI: {exc} {usage}"
    if not parts.scheme or "://" not in value:
        return f"{value!r} is not a libvirt URI {usage}"
    return None


def http_url_problem(url: str) -> str | None:
    """What is wrong with an http(s) URL: RFC 3986 characters, scheme http or https, a host
    name or IP address, and a port from 1 to 65535 if it has one (a receiver's URL that broke
    one of these would fail every delivery, or crash it)."""
    if problem := _uri_chars_problem(url, "a URL"):
        return problem
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL with a host"
    if problem := host_problem(parts.hostname):
        return f"{url!r}: {problem}"
    if port == 0:
        return f"{url!r}: port 0 cannot be connected to"
    return None


def _optional_http_url(value: Any) -> str | None:
    return http_url_problem(value) if value else None


def _path_problem(value: str) -> str | None:
    if "\0" in value:
        return f"{value!r} cannot be a path: it holds a NUL character"
    return None


def _readable_file(value: Any) -> str | None:
    """"" (none), or a regular file this process can open for reading (not a directory, FIFO
    or device, which would fail or block the reader)."""
    if value == "":
        return None
    if problem := _path_problem(value):
        return problem
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(value, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot read {value!r}: {exc.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return f"{value!r} is not a regular file"
    finally:
        os.close(fd)
    return None


def _directory(value: Any) -> str | None:
    """A directory, or a path where one can be made (its nearest existing parent is one)."""
    if value == "":
        return "must name a directory"
    if problem := _path_problem(value):
        return problem
    path = Path(value).absolute()
    for existing in (path, *path.parents):
        try:
            mode = existing.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there (yet): is its parent a directory?
        except OSError as exc:
            return f"cannot use {value!r}: {existing}: {exc.strerror}"
        if stat.S_ISDIR(mode):
            return None
        if existing == path:
            return f"{value!r} exists and is not a directory"
        return f"{value!r} cannot be made: {existing} is not a directory"
    return None


def _receiver_name(value: Any) -> str | None:
    """Names a receiver in metrics labels, the outbox and virtmonctl: printable, not empty."""
    if not value.strip() or _CONTROL.search(value) or value != value.strip():
        return f"must be a printable name, without surrounding spaces, not {value!r}"
    return None


def _octal_mode(value: Any) -> str | None:
    return None if re.fullmatch(r"0?[0-7]{3}", str(value)) else "must be an octal mode like 0660"


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def _group_name(value: str) -> bool:
    return bool(value) and not _CONTROL.search(value)


def _uid_list(value: Any) -> str | None:
    ok = all(_is_id(v) for v in value)
    return None if ok else f"must be a list of numeric uids (0 to {MAX_ID})"


def _group_list(value: Any) -> str | None:
    ok = all((isinstance(v, str) and _group_name(v)) or _is_id(v) for v in value)
    return None if ok else f"must be a list of group names or numeric gids (0 to {MAX_ID})"


def _socket_group(value: Any) -> str | None:
    return None if value == "" or _group_name(value) else "must be a group name (or empty)"


def _socket_path(value: Any) -> str | None:
    """Where the control socket is bound: a path that fits in sun_path, and not an existing
    file or directory (a stale socket of a killed run is removed, nothing else may be)."""
    if value == "":
        return "must name a socket path"
    if problem := _path_problem(value):
        return problem
    # AF_UNIX paths are limited to 108 bytes including the terminating NUL.
    if len(value.encode()) >= 108:
        return "is longer than a Unix socket path may be"
    try:
        mode = os.stat(value).st_mode
    except OSError:
        return None  # nothing there yet (or nothing this process may look at): bound at start
    return None if stat.S_ISSOCK(mode) else f"{value!r} exists and is not a socket"


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key: its type, default and extra check."""

    type: type | tuple[type, ...]
    default: Any
    check: Check | None = None
    limits: Limits | None = None  # a number's documented range (docs/configuration.md)


SCHEMA: dict[str, dict[str, Key]] = {
    "libvirt": {
        "uri": Key(str, "qemu:///system", check_uri),
        "readonly": Key(bool, True),
        "open_timeout": Key((int, float), 10.0, limits=Limits(0.01, 3600)),
        "call_timeout": Key((int, float), 30.0, limits=Limits(0.01, 3600)),
        "max_concurrent_calls": Key(int, 4, limits=Limits(1, 256)),
        "keepalive_interval": Key(int, 5, limits=Limits(1, 3600, or_zero=True)),
        "keepalive_count": Key(int, 3, limits=Limits(1, 100)),
        "auth_file": Key(str, "", _readable_file),
        "admin_uri": Key(str, DEFAULT_ADMIN_URI, check_uri),
    },
    "collect": {
        "interval": Key((int, float), 15.0, limits=SECONDS),
        "deadline_ratio": Key((int, float), 0.8, limits=Limits(0.0001, 1)),
        "max_abandoned_calls": Key(int, 2, limits=Limits(1, 64)),
        "resync_interval": Key((int, float), 600.0, limits=LONG_SECONDS),
        "collectors": Key(dict, {}),
        # Block stats for every layer of each disk's backing chain (vda, vda[1], ...), not only
        # the active one: a series per layer, so off by default.
        "block_backing_chain": Key(bool, False),
        "metadata_labels": Key(dict, {}),
        "metadata_namespaces": Key(dict, {}),
    },
    "metrics": {
        "listen": Key(str, f":{DEFAULT_PORT}", check_listen),
        "web_config_file": Key(str, "", _readable_file),
    },
    "control": {
        "socket": Key(str, "/run/virtmon/virtmon.sock", _socket_path),
        "allow_write": Key(bool, False),
        "socket_mode": Key(str, "0660", _octal_mode),
        "socket_group": Key(str, "virtmon", _socket_group),
        # Roles by peer credentials (SO_PEERCRED): admin > write > read.
        "admin_uids": Key(list, [0], _uid_list),
        "admin_groups": Key(list, [], _group_list),
        "write_uids": Key(list, [], _uid_list),
        "write_groups": Key(list, [], _group_list),
        "read_uids": Key(list, [], _uid_list),
        "read_groups": Key(list, ["virtmon"], _group_list),
        "request_timeout": Key((int, float), 30.0, limits=Limits(0.01, 3600)),
        "max_body": Key(int, 1_048_576, limits=Limits(1, 2**30)),
        "max_requests": Key(int, 64, limits=Limits(1, 65536)),
        # Per caller (uid), so one caller cannot take every slot; streams have their own limits.
        "max_requests_per_caller": Key(int, 16, limits=Limits(1, 65536)),
        "max_streams": Key(int, 256, limits=Limits(1, 65536)),
        "max_streams_per_caller": Key(int, 32, limits=Limits(1, 65536)),
    },
    "state": {
        "dir": Key(str, "/var/lib/virtmon", _directory),
    },
    "events": {
        "retention_days": Key((int, float), 7.0, limits=DAYS),
        "retention_count": Key(int, 1_000_000, limits=Limits(1, 10**12)),
        "queue_size": Key(int, 10_000, limits=Limits(1, 10**7)),
        "subscriber_queue_size": Key(int, 1_000, limits=Limits(1, 10**6)),
    },
    "log": {
        "level": Key(str, "info", _one_of(*LOG_LEVELS)),
        "format": Key(str, "auto", _one_of("auto", "json", "console")),
    },
    "alerts": {
        "receivers": Key(list, []),
        # Alert rules (virtmon.alerts.ruleconfig validates them; docs/alerts.md).
        "rules": Key(list, []),
        "default_rules": Key(bool, True),
        "default_rules_file": Key(str, "", _readable_file),
        "resolve_after": Key((int, float), 3600.0, limits=LONG_SECONDS),
        "external_url": Key(str, "", _optional_http_url),
        "retention_days": Key((int, float), 7.0, limits=DAYS),
    },
}

RECEIVER_SCHEMA: dict[str, Key] = {
    "name": Key(str, None, _receiver_name),
    "kind": Key(str, None, _one_of(*RECEIVER_KINDS)),
    "urls": Key(list, None),
    "timeout": Key((int, float), 10.0, limits=Limits(0.01, 3600)),
    "headers": Key(dict, {}),
    "tls_ca_file": Key(str, "", _readable_file),
    "tls_cert_file": Key(str, "", _readable_file),
    "tls_key_file": Key(str, "", _readable_file),
    "hmac_secret_file": Key(str, "", _readable_file),
    "rate_limit": Key((int, float), 0.0, limits=Limits(0.001, 10_000, or_zero=True)),
    "batch_size": Key(int, 64, limits=Limits(1, 10_000)),
    "resend_interval": Key((int, float), 60.0, limits=SECONDS),
    "max_age": Key((int, float), 86400.0, limits=LONG_SECONDS),
    "backoff_initial": Key((int, float), 1.0, limits=SECONDS),
    "backoff_max": Key((int, float), 300.0, limits=SECONDS),
}


@dataclass(frozen=True, slots=True)
class Receiver:
    """An alert webhook receiver."""

    name: str
    kind: str
    urls: tuple[str, ...]
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    hmac_secret_file: str = ""
    rate_limit: float = 0.0  # requests per second per URL; 0: unlimited
    batch_size: int = 64  # alerts per request
    resend_interval: float = 60.0  # alertmanager: re-send firing alerts this often
    max_age: float = 86400.0  # seconds an undelivered notification is retried
    backoff_initial: float = 1.0
    backoff_max: float = 300.0


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration, one attribute per ``section.key`` (flattened with '_')."""

    values: Mapping[str, Mapping[str, Any]]
    receivers: tuple[Receiver, ...] = ()
    source: Path | None = None

    def __getitem__(self, dotted: str) -> Any:
        section, _, key = dotted.partition(".")
        return self.values[section][key]

    @property
    def uri(self) -> str:
        """``libvirt.uri``."""
        return str(self["libvirt.uri"])

    @property
    def state_dir(self) -> Path:
        """``state.dir``."""
        return Path(self["state.dir"])

    @property
    def collectors(self) -> Mapping[str, bool]:
        """``collect.collectors``: collector name -> enabled, as given (defaults elsewhere)."""
        return dict(self["collect.collectors"])


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a table", list: "an array"}
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(dict.fromkeys(names[k] for k in kinds if k is not int or float not in kinds))


def _check_value(path: str, key: Key, value: Any, problems: list[str]) -> bool:
    kinds = key.type if isinstance(key.type, tuple) else (key.type,)
    # bool is an int in Python; TOML keeps them apart and so do we.
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
        problems.append(f"{path}: must be {_type_name(key.type)}, not {value!r}")
        return False
    message = key.check(value) if key.check is not None else None
    if message is None and key.limits is not None:
        message = key.limits.problem(cast(float, value))  # the type check passed
    elif message is None and isinstance(value, float) and not math.isfinite(value):
        message = f"must be a finite number, not {value!r}"
    if message is not None:
        problems.append(f"{path}: {message}")
        return False
    return True


def receiver_ssl_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """The TLS context of a receiver's https URLs (None: the system's defaults).

    Blocking (reads the files); OSError or ssl.SSLError when one cannot be loaded.
    """
    if not (ca_file or cert_file):
        return None
    context = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def _tls_files_problem(values: Mapping[str, Any]) -> str | None:
    """Why a receiver's CA file or client certificate cannot be loaded, if it cannot."""
    try:
        receiver_ssl_context(values.get("tls_ca_file", ""), values.get("tls_cert_file", ""),
                             values.get("tls_key_file", ""))
    except (OSError, ssl.SSLError) as exc:  # readable was checked: the contents are wrong
        return f"cannot load the TLS files: {exc}"
    return None


def headers_problems(headers: Mapping[str, Any]) -> list[str]:
    """What is wrong with a receiver's extra headers, each as "Name: message" (RFC 9110)."""
    problems = []
    seen: set[str] = set()
    for name, value in headers.items():
        if not _TOKEN.match(name):
            problems.append(f"{key_text(name)}: not a header name (letters, digits and "
                            "!#$%&'*+-.^_`|~ only, RFC 9110)")
        elif name.lower() in RESERVED_HEADERS:
            problems.append(f"{key_text(name)}: virtmon sets this header itself")
        elif name.lower() in seen:
            problems.append(f"{key_text(name)}: given twice (header names ignore case)")
        if not isinstance(value, str):
            problems.append(f"{key_text(name)}: must be a string")
        elif not _FIELD_VALUE.match(value):
            problems.append(f"{key_text(name)}: {value!r} is not a header value (visible ASCII "
                            "characters, spaces and tabs inside; no CR, LF or other control "
                            "character)")
        seen.add(name.lower())
    return problems


def read_secret(path: str) -> bytes:
    """An HMAC secret file's key: its bytes without surrounding whitespace (blocking)."""
    return Path(path).read_bytes().strip()


def _secret_problem(path: str) -> str | None:
    try:
        secret = read_secret(path)
    except OSError as exc:  # readable was checked: it changed since
        return f"cannot read {path!r}: {exc.strerror}"
    return None if secret else f"{path!r} is empty (a signature with an empty key proves nothing)"


def _receivers(raw: Any, problems: list[str]) -> tuple[Receiver, ...]:
    receivers: list[Receiver] = []
    for index, item in enumerate(raw):
        base = f"alerts.receivers[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{base}: must be a table")
            continue
        values: dict[str, Any] = {}
        for name, value in item.items():
            if name not in RECEIVER_SCHEMA:
                problems.append(f"{base}.{key_text(name)}: unknown key")
            elif _check_value(f"{base}.{name}", RECEIVER_SCHEMA[name], value, problems):
                values[name] = value
        for name, key in RECEIVER_SCHEMA.items():
            if key.default is None and name not in item:
                problems.append(f"{base}.{name}: required")
        for url_index, url in enumerate(values.get("urls", [])):
            problem = (http_url_problem(url) if isinstance(url, str)
                       else f"must be a string, not {url!r}")
            if problem:
                problems.append(f"{base}.urls[{url_index}]: {problem}")
        if not values.get("urls", [None]):
            problems.append(f"{base}.urls: must not be empty")
        problems.extend(f"{base}.headers.{p}" for p in headers_problems(values.get("headers", {})))
        if values.get("hmac_secret_file"):
            problem = _secret_problem(values["hmac_secret_file"])
            if problem:
                problems.append(f"{base}.hmac_secret_file: {problem}")
        if values.get("tls_key_file") and not values.get("tls_cert_file"):
            problems.append(f"{base}.tls_key_file: needs tls_cert_file")
        elif values.get("tls_ca_file") or values.get("tls_cert_file"):
            problem = _tls_files_problem(values)
            if problem:
                problems.append(f"{base}: {problem}")
        earlier = [r.get("name") for r in raw[:index] if isinstance(r, dict)]
        if "name" in values and values["name"] in earlier:
            problems.append(f"{base}.name: {values['name']!r} is used by another receiver")
        if all(name in values for name in ("name", "kind", "urls")):
            numbers = {k: float(v) for k, v in values.items()
                       if k not in ("batch_size",) and isinstance(v, int | float)}
            receivers.append(Receiver(
                values["name"], values["kind"], tuple(values["urls"]),
                **{**numbers, **{k: v for k, v in values.items()
                                 if k not in ("name", "kind", "urls") and k not in numbers}},
            ))
    return tuple(receivers)


def _metadata_path_problems(collect: Mapping[str, Any]) -> list[str]:
    """Each metadata label path that ElementTree cannot evaluate (bad syntax, unknown prefix):
    found here, not by every domain's read failing later."""
    from virtmon.virt.domain_cache import MetadataLabels  # here: it imports libvirt

    namespaces = {k: v for k, v in collect["metadata_namespaces"].items() if isinstance(v, str)}
    problems = []
    for label, path in collect["metadata_labels"].items():
        if not isinstance(path, str):
            continue  # reported above
        try:
            MetadataLabels({label: path}, namespaces).read(ElementTree.Element("domain"))
        except Exception as exc:  # ElementPath reports a bad path with several types
            problems.append(f"collect.metadata_labels.{key_text(label)}: {path!r} is not a path "
                            f"ElementTree can follow: {exc}")
    return problems


def build(
    raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, source: Path | None = None
) -> Config:
    """Validate a parsed TOML document plus ``section.key`` overrides; raise ConfigError."""
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {
        section: {name: key.default for name, key in keys.items()}
        for section, keys in SCHEMA.items()
    }
    for section, table in raw.items():
        if section not in SCHEMA:
            problems.append(f"{key_text(section)}: unknown section")
            continue
        if not isinstance(table, dict):
            problems.append(f"{section}: must be a table")
            continue
        for name, value in table.items():
            path = f"{section}.{key_text(name)}"
            if name not in SCHEMA[section]:
                problems.append(f"{path}: unknown key")
            elif _check_value(path, SCHEMA[section][name], value, problems):
                values[section][name] = value
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, name = dotted.partition(".")
        if _check_value(f"{dotted} (command line)", SCHEMA[section][name], value, problems):
            values[section][name] = value
    from virtmon.collectors import COLLECTORS  # here: the collectors import libvirt

    for name, enabled in values["collect"]["collectors"].items():
        if name not in COLLECTORS:
            problems.append(f"collect.collectors.{key_text(name)}: unknown collector "
                            f"(known: {', '.join(COLLECTORS)})")
        elif not isinstance(enabled, bool):
            problems.append(f"collect.collectors.{key_text(name)}: must be true or false")
    for key in ("metadata_labels", "metadata_namespaces"):
        for name, text in values["collect"][key].items():
            if not isinstance(text, str):
                problems.append(f"collect.{key}.{key_text(name)}: must be a string")
            elif key == "metadata_labels" and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                problems.append(f"collect.{key}.{key_text(name)}: "
                                "not a valid Prometheus label name")
    problems.extend(_metadata_path_problems(values["collect"]))
    web_config = values["metrics"]["web_config_file"]
    if web_config and not any(p.startswith("metrics.web_config_file") for p in problems):
        from virtmon.exposition.webconfig import WebConfigError, load_web_config

        try:
            load_web_config(Path(web_config))
        except WebConfigError as exc:
            problems.extend(f"metrics.web_config_file: {p}" for p in exc.problems)
    receivers = _receivers(values["alerts"]["receivers"], problems)
    from virtmon.alerts.ruleconfig import load_rules

    load_rules(values["alerts"], problems)  # every rule problem with its key path
    if problems:
        raise ConfigError(problems)
    return Config(values, receivers, source)


def load(path: Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a TOML file (None: defaults only); raise ConfigError with every problem."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return build(raw, overrides, path)
