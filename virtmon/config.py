"""Configuration: a TOML file into frozen dataclasses, with command-line overrides.

Validation gathers every problem (unknown key, wrong type, bad value, bad URI, unreadable file)
with its key path and reports them all at once; the caller exits with 78 (EX_CONFIG) before
anything starts. The schema below is the one place that knows the keys, their types and defaults.
"""

from __future__ import annotations

import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EX_CONFIG = 78
DEFAULT_PORT = 9786
LOG_LEVELS = ("debug", "info", "warning", "error")
RECEIVER_KINDS = ("alertmanager", "json", "cloudevents")


class ConfigError(Exception):
    """Every problem found in a configuration, each as "key.path: message"."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- value checks: each returns an error message or None ---------------------------------------

Check = Callable[[Any], "str | None"]


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must not be negative"


def _ratio(value: Any) -> str | None:
    return None if 0 < value <= 1 else "must be in (0, 1]"


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def check_uri(value: Any) -> str | None:
    """A libvirt URI: ``driver[+transport]://[host][:port]/path``."""
    usage = "(like qemu:///system or qemu+ssh://host/system)"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - reading it checks the port: a number from 0 to 65535
    except ValueError as exc:
        return f"{value!r} is not a libvirt URI: {exc} {usage}"
    if not parts.scheme or "://" not in value:
        return f"{value!r} is not a libvirt URI {usage}"
    return None


def http_url_problem(url: str) -> str | None:
    """What is wrong with a receiver's URL: it must be http(s), name a host, and have a port
    from 1 to 65535 if it has one (such a URL would otherwise fail every delivery)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL with a host"
    if port == 0:
        return f"{url!r}: port 0 cannot be connected to"
    return None


def check_listen(value: Any) -> str | None:
    """``HOST:PORT`` with a port from 1 to 65535 (an empty host listens on every address)."""
    _host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{value!r} is not HOST:PORT"
    return None


def _readable_file(value: Any) -> str | None:
    if value == "":
        return None
    try:
        with open(value, "rb"):
            return None
    except OSError as exc:
        return f"cannot read {value!r}: {exc.strerror}"


def _octal_mode(value: Any) -> str | None:
    return None if re.fullmatch(r"0?[0-7]{3}", str(value)) else "must be an octal mode like 0660"


def _uid_list(value: Any) -> str | None:
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    return None if ok else "must be a list of numeric uids"


def _group_list(value: Any) -> str | None:
    ok = all(isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
             for v in value)
    return None if ok else "must be a list of group names or numeric gids"


def _socket_path(value: Any) -> str | None:
    # AF_UNIX paths are limited to 108 bytes including the terminating NUL.
    return None if len(str(value).encode()) < 108 else "is longer than a Unix socket path may be"


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key: its type, default and extra check."""

    type: type | tuple[type, ...]
    default: Any
    check: Check | None = None


SCHEMA: dict[str, dict[str, Key]] = {
    "libvirt": {
        "uri": Key(str, "qemu:///system", check_uri),
        "readonly": Key(bool, True),
        "open_timeout": Key((int, float), 10.0, _positive),
        "call_timeout": Key((int, float), 30.0, _positive),
        "max_concurrent_calls": Key(int, 4, _positive),
        "keepalive_interval": Key(int, 5, _non_negative),
        "keepalive_count": Key(int, 3, _positive),
        "auth_file": Key(str, "", _readable_file),
        "admin_uri": Key(str, "libvirtd:///system", check_uri),
    },
    "collect": {
        "interval": Key((int, float), 15.0, _positive),
        "deadline_ratio": Key((int, float), 0.8, _ratio),
        "max_abandoned_calls": Key(int, 2, _positive),
        "resync_interval": Key((int, float), 600.0, _positive),
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
        "socket_group": Key(str, "virtmon"),
        # Roles by peer credentials (SO_PEERCRED): admin > write > read.
        "admin_uids": Key(list, [0], _uid_list),
        "admin_groups": Key(list, [], _group_list),
        "write_uids": Key(list, [], _uid_list),
        "write_groups": Key(list, [], _group_list),
        "read_uids": Key(list, [], _uid_list),
        "read_groups": Key(list, ["virtmon"], _group_list),
        "request_timeout": Key((int, float), 30.0, _positive),
        "max_body": Key(int, 1_048_576, _positive),
        "max_requests": Key(int, 64, _positive),
        # Per caller (uid), so one caller cannot take every slot; streams have their own limits.
        "max_requests_per_caller": Key(int, 16, _positive),
        "max_streams": Key(int, 256, _positive),
        "max_streams_per_caller": Key(int, 32, _positive),
    },
    "state": {
        "dir": Key(str, "/var/lib/virtmon"),
    },
    "events": {
        "retention_days": Key((int, float), 7.0, _positive),
        "retention_count": Key(int, 1_000_000, _positive),
        "queue_size": Key(int, 10_000, _positive),
        "subscriber_queue_size": Key(int, 1_000, _positive),
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
        "resolve_after": Key((int, float), 3600.0, _positive),
        "external_url": Key(str, ""),
        "retention_days": Key((int, float), 7.0, _positive),
    },
}

RECEIVER_SCHEMA: dict[str, Key] = {
    "name": Key(str, None),
    "kind": Key(str, None, _one_of(*RECEIVER_KINDS)),
    "urls": Key(list, None),
    "timeout": Key((int, float), 10.0, _positive),
    "headers": Key(dict, {}),
    "tls_ca_file": Key(str, "", _readable_file),
    "tls_cert_file": Key(str, "", _readable_file),
    "tls_key_file": Key(str, "", _readable_file),
    "hmac_secret_file": Key(str, "", _readable_file),
    "rate_limit": Key((int, float), 0.0, _non_negative),
    "batch_size": Key(int, 64, _positive),
    "resend_interval": Key((int, float), 60.0, _positive),
    "max_age": Key((int, float), 86400.0, _positive),
    "backoff_initial": Key((int, float), 1.0, _positive),
    "backoff_max": Key((int, float), 300.0, _positive),
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
    if key.check is not None and (message := key.check(value)) is not None:
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
                problems.append(f"{base}.{name}: unknown key")
            elif _check_value(f"{base}.{name}", RECEIVER_SCHEMA[name], value, problems):
                values[name] = value
        for name, key in RECEIVER_SCHEMA.items():
            if key.default is None and name not in item:
                problems.append(f"{base}.{name}: required")
        for url_index, url in enumerate(values.get("urls", [])):
            problem = http_url_problem(str(url))
            if problem:
                problems.append(f"{base}.urls[{url_index}]: {problem}")
        if not values.get("urls", [None]):
            problems.append(f"{base}.urls: must not be empty")
        for header, text in values.get("headers", {}).items():
            if not isinstance(text, str):
                problems.append(f"{base}.headers.{header}: must be a string")
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
            problems.append(f"{section}: unknown section")
            continue
        if not isinstance(table, dict):
            problems.append(f"{section}: must be a table")
            continue
        for name, value in table.items():
            path = f"{section}.{name}"
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
            problems.append(f"collect.collectors.{name}: unknown collector "
                            f"(known: {', '.join(COLLECTORS)})")
        elif not isinstance(enabled, bool):
            problems.append(f"collect.collectors.{name}: must be true or false")
    for key in ("metadata_labels", "metadata_namespaces"):
        for name, text in values["collect"][key].items():
            if not isinstance(text, str):
                problems.append(f"collect.{key}.{name}: must be a string")
            elif key == "metadata_labels" and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                problems.append(f"collect.{key}.{name}: not a valid Prometheus label name")
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
