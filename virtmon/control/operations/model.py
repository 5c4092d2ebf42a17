"""What an operation is: its name, parameters, role, the libvirt functions it covers, its body.

One :class:`Operation` row drives everything about it: the route (``/v1/ops/NAME``), argument
validation (:func:`validate`), the role checked before it runs, the OpenAPI document and the
coverage table in docs/control-api.md. Nothing here imports libvirt; the area modules
(``domain``, ``host``, ``interface``, ``admin``) fill the rows.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ROLES = ("read", "write", "admin")
# Where an operation runs: on a domain, a host interface, the connection, the admin helper, or
# virtmon's own alerts service (no libvirt: ``body`` takes the AlertService).
TARGETS = ("domain", "interface", "host", "admin", "alerts")

KINDS = {
    "string": {"type": "string"},
    "xml": {"type": "string", "description": "an XML document"},
    "integer": {"type": "integer"},
    "unsigned": {"type": "integer", "minimum": 0},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "typed": {"type": "object", "description": "typed parameters: name -> value",
              "additionalProperties": {"type": ["string", "number", "boolean"]}},
    "strings": {"type": "array", "items": {"type": "string"}},
    "integers": {"type": "array", "items": {"type": "integer"}},
    "domain": {"type": "string", "description": "a domain's name, UUID or id"},
    "interface": {"type": "string", "description": "a host interface's name or MAC address"},
}
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
MAX_INT = (1 << 64) - 1


class ArgumentError(ValueError):
    """A request's arguments do not fit the operation; ``key`` names the offending one."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Param:
    """One argument: its kind (a key of :data:`KINDS`, or ``flags``/``enum``), default, names."""

    name: str
    kind: str
    required: bool = False
    default: Any = None
    help: str = ""
    # flags/enum: name -> number (flags may be given as a list of names, one name, or a number).
    choices: Mapping[str, int] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        """This parameter's JSON schema."""
        if self.kind == "flags":
            names = sorted(self.choices)
            item: dict[str, Any] = {"type": "string", "enum": names} if names else {
                "type": "string"}
            schema: dict[str, Any] = {"oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "array", "items": item},
                item,
            ], "description": "flags: a list of names or their numeric OR"}
        elif self.kind == "enum":
            schema = {"oneOf": [{"type": "integer"},
                                {"type": "string", "enum": sorted(self.choices)}]}
        else:
            schema = dict(KINDS[self.kind])  # type: ignore[call-overload]
        if self.help:
            schema["description"] = self.help
        return schema


Body = Callable[[Any, dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class WriteWhen:
    """Arguments with which libvirt refuses a read on a read-only connection.

    With them the operation needs the ``write`` role (and so runs on the read-write
    connection): ``param`` is a flags argument that includes any of ``names``, an enum
    argument equal to one of them, or a boolean argument that is true (``names`` empty).
    Declared in the table, shown in OpenAPI and ``/v1/ops``.
    """

    param: str
    names: tuple[str, ...] = ()

    def applies(self, param: Param, value: Any) -> bool:
        """Whether ``value`` (converted) of ``param`` is one of the privileged ones."""
        if param.kind == "boolean":
            return bool(value)
        values = [param.choices[name] for name in self.names]
        if param.kind == "flags":
            return any(int(value or 0) & bits for bits in values)
        return value in values

    @property
    def text(self) -> str:
        """How a reader sees it: ``flags is or includes secure or migratable``."""
        if not self.names:
            return f"{self.param} is true"
        return f"{self.param} is or includes {' or '.join(self.names)}"


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the control API.

    ``body(obj, args)`` runs in a worker thread: ``obj`` is the domain or interface object for
    those targets, the libvirt connection for ``host``; admin operations name a helper request
    in ``helper_op`` instead (``body`` then maps the arguments to the helper's).

    ``role`` is the least role that may call it. It is ``write`` (at least) for every libvirt
    function that a read-only connection refuses, because the connection a call runs on is
    chosen by the caller's role, never by the operation (docs/adr/0004).
    """

    name: str
    target: str
    role: str
    summary: str
    functions: tuple[str, ...]
    body: Body
    params: tuple[Param, ...] = ()
    helper_op: str = ""
    # Arguments that libvirt refuses on a read-only connection (secure XML shows passwords):
    # with them a read needs the write role.
    write_when: WriteWhen | None = None
    # The result carries bytes ({"size", "base64"[, "mime_type"]}): a caller may ask for them
    # raw with ``Accept: application/octet-stream`` (or the image's own type).
    returns_bytes: bool = False

    def needs(self, args: dict[str, Any]) -> str:
        """The least role that may call it with these (validated) arguments."""
        when = self.write_when
        if when is not None and self.role == "read":
            param = next(p for p in self.params if p.name == when.param)
            if when.applies(param, args.get(when.param)):
                return "write"
        return self.role

    @property
    def area(self) -> str:
        """The part before the dot: domain, host, interface or admin."""
        return self.name.partition(".")[0]

    @property
    def method(self) -> str:
        """``GET`` for reads (POST works too), ``POST`` for everything that changes state."""
        return "GET" if self.role == "read" else "POST"

    def all_params(self) -> tuple[Param, ...]:
        """The target's address (domain/interface) first, then the operation's own."""
        if self.target == "domain":
            return (Param("domain", "domain", required=True), *self.params)
        if self.target == "interface":
            return (Param("interface", "interface", required=True), *self.params)
        return self.params


def _to_int(key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ArgumentError(key, f"must be an integer, not {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            raise ArgumentError(key, f"must be an integer, not {value!r}") from None
    if not isinstance(value, int):
        raise ArgumentError(key, f"must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise ArgumentError(key, f"must be at least {minimum}, not {value}")
    if not -(1 << 63) <= value <= MAX_INT:
        raise ArgumentError(key, f"is out of range: {value}")
    return value


def _flags(param: Param, value: Any) -> int:
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        value = [v for v in re.split(r"[,|\s]+", value) if v]
    if isinstance(value, list):
        total = 0
        for item in value:
            if isinstance(item, str) and item.lower() in param.choices:
                total |= param.choices[item.lower()]
            elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
                total |= item
            else:
                known = ", ".join(sorted(param.choices)) or "none by name"
                raise ArgumentError(param.name, f"unknown flag {item!r} (known: {known})")
        return total
    number = _to_int(param.name, value, minimum=0)
    if number > 0xFFFFFFFF:
        raise ArgumentError(param.name, "flags must fit in 32 bits")
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ArgumentError(key, f"must be true or false, not {value!r}")


def convert(param: Param, value: Any) -> Any:
    """One argument in its Python form; raise :class:`ArgumentError`."""
    key, kind = param.name, param.kind
    if kind in ("string", "xml", "domain", "interface"):
        if isinstance(value, int) and not isinstance(value, bool) and kind == "domain":
            return str(value)
        if not isinstance(value, str):
            raise ArgumentError(key, f"must be a string, not {value!r}")
        if kind != "xml" and "\x00" in value:
            raise ArgumentError(key, "must not contain NUL")
        if kind in ("domain", "interface") and not value:
            raise ArgumentError(key, "must not be empty")
        return value
    if kind == "integer":
        return _to_int(key, value)
    if kind == "unsigned":
        return _to_int(key, value, minimum=0)
    if kind == "number":
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ArgumentError(key, f"must be a number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentError(key, f"must be a number, not {value!r}")
        return value
    if kind == "boolean":
        return _bool(key, value)
    if kind == "flags":
        return _flags(param, value)
    if kind == "enum":
        if isinstance(value, str) and value.lower() in param.choices:
            return param.choices[value.lower()]
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            known = ", ".join(sorted(param.choices))
            raise ArgumentError(key, f"unknown value {value!r} (known: {known})")
        return _to_int(key, value)
    if kind == "typed":
        if not isinstance(value, dict) or not all(
                isinstance(v, (str, int, float)) for v in value.values()):
            raise ArgumentError(key, "must be an object of name -> string/number/boolean")
        return dict(value)
    if kind == "strings":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ArgumentError(key, "must be a list of strings")
        return value
    if kind == "integers":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ArgumentError(key, "must be a list of integers")
        return [_to_int(key, v) for v in value]
    raise AssertionError(f"unknown parameter kind {kind}")


def validate(op: Operation, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of one call, converted, with defaults; raise :class:`ArgumentError`."""
    params = {p.name: p for p in op.all_params()}
    for key in raw:
        if key not in params:
            known = ", ".join(params) or "none"
            raise ArgumentError(key, f"unknown argument (this operation takes: {known})")
    args: dict[str, Any] = {}
    for name, param in params.items():
        if name in raw and raw[name] is not None:
            args[name] = convert(param, raw[name])
        elif param.required:
            raise ArgumentError(name, "required")
        else:
            args[name] = param.default
    return args


def domain_key(key: str) -> tuple[str, Any]:
    """How a domain is addressed: ``("id", 3)``, ``("uuid", "...")`` or ``("name", "...")``."""
    if key.isdigit():
        return "id", int(key)
    if UUID_RE.match(key):
        return "uuid", key
    return "name", key


def jsonable(value: Any) -> Any:
    """A libvirt result as JSON: tuples become lists, bytes become base64, keys strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def op(name: str, target: str, role: str, summary: str, functions: str, body: Body,
       *params: Param, helper_op: str = "", write_when: WriteWhen | None = None,
       returns_bytes: bool = False) -> Operation:
    """One table row, compactly: ``functions`` is a space-separated list of C functions."""
    assert target in TARGETS and role in ROLES, (name, target, role)
    if write_when is not None:
        param = next((p for p in params if p.name == write_when.param), None)
        assert param is not None and param.kind in ("flags", "enum", "boolean"), (name, param)
        assert set(write_when.names) <= set(param.choices), (name, write_when)
    return Operation(name, target, role, summary, tuple(functions.split()), body, params,
                     helper_op, write_when, returns_bytes)


def flags_param(choices: Mapping[str, int], name: str = "flags", help: str = "") -> Param:
    """An optional flags argument (default 0)."""
    return Param(name, "flags", default=0, choices=dict(choices), help=help)


def arg(name: str, kind: str, default: Any = None, help: str = "") -> Param:
    """An optional argument."""
    return Param(name, kind, default=default, help=help)


def need(name: str, kind: str, help: str = "") -> Param:
    """A required argument."""
    return Param(name, kind, required=True, help=help)


def enum(name: str, choices: Mapping[str, int], default: int | None = None,
         help: str = "") -> Param:
    """An enum argument, by name or number; required when it has no default."""
    return Param(name, "enum", required=default is None, default=default,
                 choices=dict(choices), help=help)


def done(_result: Any = None) -> None:
    """libvirt's 0 ("done") as JSON null."""
    return None
