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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar, cast, get_origin, get_type_hints
from urllib.parse import urlsplit

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
# A migration destination's name: what a request gives as domain.migrate's ``destination``.
_DESTINATION_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
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
    """One configuration key as validation and the docs see it: the TOML types it accepts, its
    default in TOML form (None: required), its extra check, its range and whether a reload
    (SIGHUP) applies it to the running daemon."""

    type: type | tuple[type, ...]
    default: object
    check: Check | None = None
    limits: Limits | None = None  # a number's documented range (docs/configuration.md)
    reload: bool = False
    unit: str = ""  # what a number counts (docs/configuration.md)


@dataclass(frozen=True, slots=True)
class Setting:
    """What a section field declares beside its type and default (``field(metadata=...)``)."""

    check: Check | None = None
    limits: Limits | None = None
    reload: bool = False
    unit: str = ""


def setting(check: Check | None = None, limits: Limits | None = None, *, reload: bool = False,
            unit: str = "") -> dict[str, Setting]:
    """A field's metadata: ``x: float = field(default=1.0, metadata=setting(limits=...))``."""
    return {"setting": Setting(check, limits, reload, unit)}


@dataclass(frozen=True, slots=True)
class Receiver:
    """An alert webhook receiver (``[[alerts.receivers]]``)."""

    name: str = field(metadata=setting(_receiver_name))
    kind: str = field(metadata=setting(_one_of(*RECEIVER_KINDS)))
    urls: tuple[str, ...] = field(metadata=setting())
    timeout: float = field(default=10.0, metadata=setting(limits=Limits(0.01, 3600),
                                                          unit="seconds"))
    headers: Mapping[str, str] = field(default_factory=dict, metadata=setting())
    tls_ca_file: str = field(default="", metadata=setting(_readable_file))
    tls_cert_file: str = field(default="", metadata=setting(_readable_file))
    tls_key_file: str = field(default="", metadata=setting(_readable_file))
    hmac_secret_file: str = field(default="", metadata=setting(_readable_file))
    rate_limit: float = field(default=0.0, metadata=setting(  # per URL
        limits=Limits(0.001, 10_000, or_zero=True), unit="requests per second (0: unlimited)"))
    batch_size: int = field(default=64, metadata=setting(limits=Limits(1, 10_000),
                                                        unit="alerts per request"))
    # alertmanager: re-send firing alerts this often
    resend_interval: float = field(default=60.0, metadata=setting(limits=SECONDS,
                                                                  unit="seconds"))
    # an undelivered notification is retried this long
    max_age: float = field(default=86400.0, metadata=setting(limits=LONG_SECONDS,
                                                             unit="seconds (366 days)"))
    backoff_initial: float = field(default=1.0, metadata=setting(limits=SECONDS,
                                                                 unit="seconds"))
    backoff_max: float = field(default=300.0, metadata=setting(limits=SECONDS, unit="seconds"))


@dataclass(frozen=True, slots=True)
class LibvirtConfig:
    """``[libvirt]``: the connection to libvirtd."""

    uri: str = field(default="qemu:///system", metadata=setting(check_uri))
    readonly: bool = field(default=True, metadata=setting())
    open_timeout: float = field(default=10.0, metadata=setting(limits=Limits(0.01, 3600),
                                                               unit="seconds"))
    call_timeout: float = field(default=30.0, metadata=setting(limits=Limits(0.01, 3600),
                                                               unit="seconds"))
    max_concurrent_calls: int = field(default=4, metadata=setting(limits=Limits(1, 256),
                                                                  unit="threads"))
    keepalive_interval: int = field(default=5, metadata=setting(
        limits=Limits(1, 3600, or_zero=True), unit="seconds (0: off)"))
    keepalive_count: int = field(default=3, metadata=setting(limits=Limits(1, 100),
                                                             unit="probes"))
    auth_file: str = field(default="", metadata=setting(_readable_file))
    admin_uri: str = field(default=DEFAULT_ADMIN_URI, metadata=setting(check_uri))


@dataclass(frozen=True, slots=True)
class CollectConfig:
    """``[collect]``: the collection cycle."""

    interval: float = field(default=15.0, metadata=setting(limits=SECONDS, reload=True,
                                                           unit="seconds"))
    deadline_ratio: float = field(default=0.8, metadata=setting(
        limits=Limits(0.0001, 1), reload=True, unit="of the interval"))
    max_abandoned_calls: int = field(default=2, metadata=setting(limits=Limits(1, 64),
                                                                 unit="calls"))
    resync_interval: float = field(default=600.0, metadata=setting(
        limits=LONG_SECONDS, reload=True, unit="seconds (366 days)"))
    # Collector name -> on/off, as given (the defaults are the collectors' own).
    collectors: Mapping[str, bool] = field(default_factory=dict, metadata=setting(reload=True))
    # The admin collector's series (libvirtd's thread pools and clients) are read from the admin
    # helper at most this often, and carried unchanged by the cycles between: each read costs
    # the helper one admin call per server and per client. At most the interval: every cycle.
    admin_interval: float = field(default=60.0, metadata=setting(limits=SECONDS, reload=True,
                                                                 unit="seconds"))
    # Block stats for every layer of each disk's backing chain (vda, vda[1], ...), not only
    # the active one: a series per layer, so off by default.
    block_backing_chain: bool = field(default=False, metadata=setting(reload=True))
    metadata_labels: Mapping[str, str] = field(default_factory=dict, metadata=setting())
    metadata_namespaces: Mapping[str, str] = field(default_factory=dict, metadata=setting())
    # The guest-agent poller (virtmon/virt/guest_agent.py): what the guests' agents say, on its
    # own interval; agent calls need a read-write libvirt connection, so it is opt-in.
    guest_agent: bool = field(default=False, metadata=setting())
    guest_agent_interval: float = field(default=60.0, metadata=setting(
        limits=SECONDS, reload=True, unit="seconds"))
    # Each domain's poll (three agent calls) is abandoned after this.
    guest_agent_timeout: float = field(default=10.0, metadata=setting(
        limits=Limits(0.01, 3600), reload=True, unit="seconds"))
    guest_agent_concurrency: int = field(default=4, metadata=setting(limits=Limits(1, 64),
                                                                     unit="polls"))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: the /metrics listener."""

    listen: str = field(default=f":{DEFAULT_PORT}", metadata=setting(check_listen))
    web_config_file: str = field(default="", metadata=setting(_readable_file))


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """``[control]``: the control socket, its roles (by SO_PEERCRED: admin > write > read) and
    its limits."""

    socket: str = field(default="/run/virtmon/virtmon.sock", metadata=setting(_socket_path))
    allow_write: bool = field(default=False, metadata=setting())
    socket_mode: str = field(default="0660", metadata=setting(_octal_mode))
    socket_group: str = field(default="virtmon", metadata=setting(_socket_group))
    admin_uids: tuple[int, ...] = field(default=(0,), metadata=setting(_uid_list))
    admin_groups: tuple[str | int, ...] = field(default=(), metadata=setting(_group_list))
    write_uids: tuple[int, ...] = field(default=(), metadata=setting(_uid_list))
    write_groups: tuple[str | int, ...] = field(default=(), metadata=setting(_group_list))
    read_uids: tuple[int, ...] = field(default=(), metadata=setting(_uid_list))
    read_groups: tuple[str | int, ...] = field(default=("virtmon",),
                                               metadata=setting(_group_list))
    request_timeout: float = field(default=30.0, metadata=setting(limits=Limits(0.01, 3600),
                                                                  unit="seconds"))
    max_body: int = field(default=1_048_576, metadata=setting(limits=Limits(1, 2**30),
                                                              unit="bytes (1 GiB)"))
    max_requests: int = field(default=64, metadata=setting(limits=Limits(1, 65536),
                                                           unit="requests"))
    # Per caller (uid), so one caller cannot take every slot; streams have their own limits.
    max_requests_per_caller: int = field(default=16, metadata=setting(
        limits=Limits(1, 65536), unit="requests"))
    max_streams: int = field(default=256, metadata=setting(limits=Limits(1, 65536),
                                                           unit="streams"))
    max_streams_per_caller: int = field(default=32, metadata=setting(limits=Limits(1, 65536),
                                                                     unit="streams"))
    # Where domain.migrate may send a domain: name -> the destination's libvirt URI. A request
    # names a destination; its URI, and the credentials it carries (keyfile=, pkipath=...), come
    # from here only.
    migration_destinations: Mapping[str, str] = field(default_factory=dict,
                                                      metadata=setting(reload=True))
    # A migration runs as long as the guest's memory and disks take to copy: its own deadline.
    migration_timeout: float = field(default=3600.0, metadata=setting(
        limits=Limits(0.01, 86400), reload=True, unit="seconds (a day)"))


@dataclass(frozen=True, slots=True)
class StateConfig:
    """``[state]``: where the journal and the outbox live."""

    dir: str = field(default="/var/lib/virtmon", metadata=setting(_directory))


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """``[events]``: the journal's retention and the queues."""

    retention_days: float = field(default=7.0, metadata=setting(limits=DAYS, reload=True,
                                                                unit="days"))
    retention_count: int = field(default=1_000_000, metadata=setting(
        limits=Limits(1, 10**12), reload=True, unit="events"))
    queue_size: int = field(default=10_000, metadata=setting(limits=Limits(1, 10**7),
                                                             unit="events"))
    subscriber_queue_size: int = field(default=1_000, metadata=setting(
        limits=Limits(1, 10**6), unit="events"))


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``."""

    level: str = field(default="info", metadata=setting(_one_of(*LOG_LEVELS), reload=True))
    format: str = field(default="auto", metadata=setting(_one_of("auto", "json", "console")))


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """``[alerts]``: rules and receivers. The alerts service reads the rule files and the
    receivers' files again on every reload; receiver URLs whose settings did not change keep
    delivering undisturbed."""

    receivers: tuple[Receiver, ...] = field(default=(), metadata=setting(reload=True))
    # Alert rules, as tables (virtmon.alerts.ruleconfig validates them; docs/alerts.md).
    rules: tuple[Mapping[str, object], ...] = field(default=(), metadata=setting(reload=True))
    default_rules: bool = field(default=True, metadata=setting(reload=True))
    default_rules_file: str = field(default="", metadata=setting(_readable_file, reload=True))
    resolve_after: float = field(default=3600.0, metadata=setting(
        limits=LONG_SECONDS, reload=True, unit="seconds (366 days)"))
    external_url: str = field(default="", metadata=setting(_optional_http_url, reload=True))
    retention_days: float = field(default=7.0, metadata=setting(limits=DAYS, unit="days"))


_S = TypeVar("_S")
Section = (LibvirtConfig | CollectConfig | MetricsConfig | ControlConfig | StateConfig
           | EventsConfig | LogConfig | AlertsConfig)


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration: one typed section per TOML table."""

    libvirt: LibvirtConfig = LibvirtConfig()
    collect: CollectConfig = CollectConfig()
    metrics: MetricsConfig = MetricsConfig()
    control: ControlConfig = ControlConfig()
    state: StateConfig = StateConfig()
    events: EventsConfig = EventsConfig()
    log: LogConfig = LogConfig()
    alerts: AlertsConfig = AlertsConfig()
    source: Path | None = None

    def section(self, name: str) -> Section:
        """The section of a TOML table name (``"collect"``)."""
        return cast(Section, getattr(self, name))

    def keeping(self, running: Config, keys: Iterable[str]) -> Config:
        """This configuration with ``keys`` (``section.key``, or ``section.key.entry`` of a
        table) as in ``running``: what a reload leaves for a restart."""
        by_section: dict[str, list[str]] = {}
        for key in keys:
            section, _, name = key.partition(".")
            by_section.setdefault(section, []).append(name)
        sections: dict[str, Any] = {
            section: keeping(self.section(section), running.section(section), names)
            for section, names in by_section.items()}
        return replace(self, **sections)

    def document(self) -> dict[str, dict[str, object]]:
        """Every key in TOML form (``configfile.build(cfg.document())`` validates it again)."""
        return {name: {key: _toml_form(getattr(self.section(name), key)) for key in keys}
                for name, keys in SCHEMA.items()}


# TOML table name -> its section class, in the file's order.
def keeping(new: _S, running: _S, names: Iterable[str]) -> _S:
    """``new`` (a section) with ``names`` (a key, or ``key.entry`` of a table) as in
    ``running``; an entry ``running`` does not have is left out."""
    kept: dict[str, Any] = {}  # field values, of the section's various types
    for dotted in names:
        name, _, entry = dotted.partition(".")
        value = getattr(running, name)
        if entry:
            table = dict(kept.get(name, getattr(new, name)))
            table.pop(entry, None)
            if entry in value:
                table[entry] = value[entry]
            value = table
        kept[name] = value
    return replace(cast(Any, new), **kept)  # type: ignore[no-any-return]


SECTIONS: dict[str, type[Section]] = {
    name: hint for name, hint in get_type_hints(Config).items() if name != "source"}


def _toml_types(hint: object) -> type | tuple[type, ...]:
    """The TOML value types a field of this Python type is written as."""
    origin = get_origin(hint) or hint
    if origin is float:
        return (int, float)  # a TOML integer is a number too
    if origin is tuple:
        return list
    if origin is Mapping:
        return dict
    assert origin in (bool, int, str), hint
    return cast(type, origin)


def _toml_form(value: object) -> object:
    """A value as TOML reads it: tuples as arrays, mappings and receivers as tables."""
    if isinstance(value, Receiver):
        return {f.name: _toml_form(getattr(value, f.name)) for f in fields(Receiver)}
    if isinstance(value, tuple):
        return [_toml_form(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _toml_form(v) for k, v in value.items()}
    return value


def _python_form(hint: object, value: Any) -> object:
    """A validated TOML value as its field's type: floats, tuples, read-only copies."""
    origin = get_origin(hint) or hint
    if origin is float:
        return float(value)
    if origin is tuple:
        return tuple(value)
    if origin is Mapping:
        return dict(value)
    return value


def keys_of(cls: type[Section] | type[Receiver]) -> dict[str, Key]:
    """The keys a section (or receiver) class declares, in their order."""
    hints = get_type_hints(cls)
    keys = {}
    for f in fields(cls):
        declared: Setting = f.metadata["setting"]
        if f.default is not MISSING:
            default = _toml_form(f.default)
        elif f.default_factory is not MISSING:
            default = _toml_form(f.default_factory())
        else:
            default = None  # required
        keys[f.name] = Key(_toml_types(hints[f.name]), default, declared.check, declared.limits,
                           declared.reload, declared.unit)
    return keys


SCHEMA: dict[str, dict[str, Key]] = {name: keys_of(cls) for name, cls in SECTIONS.items()}
RECEIVER_SCHEMA: dict[str, Key] = keys_of(Receiver)


def reloadable_keys() -> frozenset[str]:
    """The ``section.key`` names a reload applies without a restart (the rest keep their
    running value until one)."""
    return frozenset(f"{section}.{name}" for section, keys in SCHEMA.items()
                     for name, key in keys.items() if key.reload)


def _section_of(cls: type[_S], values: Mapping[str, Any]) -> _S:
    """A section (or receiver) of validated TOML values (keys not given keep their default)."""
    hints = get_type_hints(cls)
    return cls(**{name: _python_form(hints[name], value) for name, value in values.items()})


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
            receivers.append(_section_of(Receiver, values))
    return tuple(receivers)


def check_document(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None,
                   problems: list[str]) -> dict[str, dict[str, Any]]:
    """Every key of a parsed TOML document, and each ``section.key`` override, checked against
    the schema (type, range, value check; receivers whole): the values, defaults filled in, with
    each problem appended to ``problems``. What needs the parts that use a key (collector
    names, label paths, the web config, rules) is checked by virtmon.configfile."""
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
    for name, enabled in values["collect"]["collectors"].items():
        if not isinstance(enabled, bool):
            problems.append(f"collect.collectors.{key_text(name)}: must be true or false")
    for key in ("metadata_labels", "metadata_namespaces"):
        for name, text in values["collect"][key].items():
            if not isinstance(text, str):
                problems.append(f"collect.{key}.{key_text(name)}: must be a string")
            elif key == "metadata_labels" and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                problems.append(f"collect.{key}.{key_text(name)}: "
                                "not a valid Prometheus label name")
    for name, uri in values["control"]["migration_destinations"].items():
        path = f"control.migration_destinations.{key_text(name)}"
        if not _DESTINATION_NAME.fullmatch(name):
            problems.append(f"{path}: a destination's name is letters, digits, '.', '_' and "
                            "'-' (a request names it)")
        elif not isinstance(uri, str):
            problems.append(f"{path}: must be a string (the destination's libvirt URI)")
        elif problem := check_uri(uri):
            problems.append(f"{path}: {problem}")
    values["alerts"]["receivers"] = _receivers(values["alerts"]["receivers"], problems)
    return values


def from_values(values: Mapping[str, Mapping[str, Any]], source: Path | None = None) -> Config:
    """The typed configuration of values :func:`check_document` found valid."""
    return Config(
        libvirt=_section_of(LibvirtConfig, values["libvirt"]),
        collect=_section_of(CollectConfig, values["collect"]),
        metrics=_section_of(MetricsConfig, values["metrics"]),
        control=_section_of(ControlConfig, values["control"]),
        state=_section_of(StateConfig, values["state"]),
        events=_section_of(EventsConfig, values["events"]),
        log=_section_of(LogConfig, values["log"]),
        alerts=_section_of(AlertsConfig, values["alerts"]),
        source=source,
    )


# -- the reference in docs/configuration.md ----------------------------------------------------

_TYPE_WORDS = {bool: "boolean", int: "integer", str: "string", list: "array", dict: "table"}


def _toml_text(value: object) -> str:
    """A default as written in a TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _reference_row(path: str, key: Key) -> str:
    kinds = key.type if isinstance(key.type, tuple) else (key.type,)
    kind = "number" if float in kinds else _TYPE_WORDS[kinds[0]]
    default = "required" if key.default is None else f"`{_toml_text(key.default)}`"
    limits = "" if key.limits is None else str(key.limits)
    reload = "applies" if key.reload else "restart"
    return f"| `{path}` | {limits} | {key.unit} | {kind} | {default} | {reload} |"


def reference() -> str:
    """The table of every key (range, unit, type, default, what a reload does) that
    docs/configuration.md holds; a test keeps the two equal (``python -m virtmon.config``)."""
    rows = [_reference_row(f"{section}.{name}", key)
            for section, keys in SCHEMA.items() for name, key in keys.items()]
    # A receiver's keys change with alerts.receivers: as a whole.
    whole = SCHEMA["alerts"]["receivers"].reload
    rows += [_reference_row(f"alerts.receivers[].{name}", replace(key, reload=whole))
             for name, key in RECEIVER_SCHEMA.items()]
    return "\n".join(["| key | range | unit | type | default | on reload |",
                      "|---|---|---|---|---|---|", *rows]) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
