"""The OpenAPI 3.1 document of the control API, generated from the operation table.

Each operation is ``POST /v1/ops/{name}`` with a JSON object of arguments; a read is also
``GET /v1/ops/{name}`` with the arguments in the query string; the console and channels are
WebSocket routes of their own. Errors are problem documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from virtmon import __version__
from virtmon.control.events_stream import HEARTBEAT_INTERVAL, PARAMETERS, WRITE_TIMEOUT
from virtmon.control.operations.domain_write import MIGRATIONS
from virtmon.control.operations.model import Operation
from virtmon.control.operations.streams import STREAMED
from virtmon.control.problems import PROBLEM_TYPE
from virtmon.events.catalog import SPECS_BY_CONSTANT
from virtmon.events.model import VIRTMON_KINDS

PROBLEM = {
    "type": "object",
    "required": ["title", "status"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "key": {"type": "string", "description": "the argument at fault (400)"},
        "libvirt_code": {"type": "integer"}, "libvirt_error": {"type": "string"},
        "libvirt_domain": {"type": "integer"},
        "last_seq": {"type": "integer",
                     "description": "the last journaled event (a position after it: 400)"},
    },
}
ERRORS = {
    "400": "bad arguments (the key is named)", "403": "the caller's role does not allow it",
    "404": "no such operation, domain, interface, snapshot, server or client",
    "406": "bytes asked for (Accept: application/octet-stream) from an operation without any",
    "409": "the object is in the wrong state for it (libvirt: operation invalid)",
    "408": "the request body did not arrive in time",
    "413": "request body too large", "422": "libvirt refused it (its error code says why)",
    "429": "this caller already has its share of requests being served "
           "(control.max_requests_per_caller); retry after Retry-After",
    "500": "a fault in virtmon itself (logged with its traceback)",
    "501": "this host's libvirt-python lacks the function the operation calls",
    "503": "libvirt or the admin helper is not reachable, or too many requests",
    "504": "the call overran its deadline and was abandoned",
}
# What a migration may answer besides: it involves a second host.
MIGRATION_ERRORS = {
    "502": "the migration failed between the hosts (the destination's libvirtd or QEMU, or the "
           "way to it); libvirt's error says what",
}
RESULT = {
    "type": "object", "required": ["operation", "result"],
    "properties": {"operation": {"type": "string"}, "result": {}},
}
JSON = "application/json"


def _problems(errors: Mapping[str, str]) -> dict[str, Any]:
    return {status: {"description": text,
                     "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/"
                                                                "Problem"}}}}
            for status, text in errors.items()}


def _responses(ok: dict[str, Any], description: str = "the result",
               raw: bool = False, more: Mapping[str, str] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": ok}}
    if raw:  # bytes as themselves, with Accept: application/octet-stream (or the image type)
        content["application/octet-stream"] = {"schema": {"type": "string",
                                                          "format": "binary"}}
    return {"200": {"description": description, "content": content},
            **_problems({**ERRORS, **(more or {})})}


def _arguments(op: Operation) -> dict[str, Any]:
    params = op.all_params()
    schema: dict[str, Any] = {
        "type": "object", "additionalProperties": False,
        "properties": {p.name: p.schema() for p in params},
    }
    required = [p.name for p in params if p.required]
    if required:
        schema["required"] = required
    return schema


def _query(op: Operation) -> list[dict[str, Any]]:
    """Query parameters of a GET: every value a string (lists comma-separated)."""
    return [{"name": p.name, "in": "query", "required": p.required,
             "schema": {"type": "string"}, "description": p.schema().get("description", "")}
            for p in op.all_params()]


def operation_paths(ops: Mapping[str, Operation]) -> dict[str, Any]:
    """One path item per operation."""
    paths: dict[str, Any] = {}
    for op in ops.values():
        common = {
            "summary": op.summary,
            "description": f"Role: {op.role}." + (
                f" The write role when {op.write_when.text}." if op.write_when else "") + (
                f" libvirt: {', '.join(op.functions)}." if op.functions else ""),
            "tags": [op.area],
            "responses": _responses(RESULT, raw=op.returns_bytes, more=(
                MIGRATION_ERRORS if op.name in MIGRATIONS else None)),
            "x-virtmon-role": op.role,
            **({"x-virtmon-write-when": op.write_when.text} if op.write_when else {}),
            "x-libvirt-functions": list(op.functions),
        }
        item: dict[str, Any] = {"post": {
            **common, "operationId": op.name,
            "requestBody": {"required": False,
                            "content": {JSON: {"schema": _arguments(op)}}},
        }}
        if op.role == "read":
            item["get"] = {**common, "operationId": f"{op.name}.get", "parameters": _query(op)}
        paths[f"/v1/ops/{op.name}"] = item
    return paths


# -- the event stream (docs/control-api.md, "The event stream") ---------------------------------

EVENT = {
    "type": "object", "description": "one journaled event (the SSE frame's data, an NDJSON line)",
    "required": ["seq", "time", "uri", "domain", "uuid", "kind", "name", "detail", "payload",
                 "synthetic"],
    "additionalProperties": False,
    "properties": {
        "seq": {"type": "integer", "minimum": 1,
                "description": "journal sequence number: gapless, survives restarts; the SSE id"},
        "time": {"type": "number", "description": "Unix time libvirt delivered it"},
        "uri": {"type": "string"},
        "domain": {"type": ["string", "null"], "description": "the domain's name"},
        "uuid": {"type": ["string", "null"]},
        "kind": {"type": "string", "description": "the SSE event name"},
        "name": {"type": "string"}, "detail": {"type": ["string", "null"]},
        "payload": {"type": "object"},
        "synthetic": {"type": "boolean",
                      "description": "inferred by reconciling after a reconnect"},
    },
}


def _notice(description: str, required: list[str],
            properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "description": description, "required": required,
            "properties": properties}


SEQ = {"type": "integer", "minimum": 0}
MESSAGE = {"type": "string"}
NOTICES = {
    "gap": _notice(
        "events since+1 to first-1 are no longer in the journal (retention removed them); the "
        "stream goes on with first, the first that is (or, on an emptied journal, will be). "
        "In SSE the frame carries id first-1.", ["since", "first", "missed"],
        {"message": MESSAGE, "since": SEQ, "first": SEQ, "missed": SEQ}),
    "overflow": _notice(
        "the follower was too slow (its queue of events.subscriber_queue_size filled): the "
        "stream ends; resume with since", ["since"], {"message": MESSAGE, "since": SEQ}),
    "end": _notice("the daemon is stopping: the stream ends; resume with since", ["since"],
                   {"message": MESSAGE, "since": SEQ}),
    "heartbeat": _notice(
        f"NDJSON only: nothing happened for {HEARTBEAT_INTERVAL:g} s (SSE sends the comment "
        "': heartbeat' instead)", ["time", "last_seq"],
        {"time": {"type": "number"}, "last_seq": SEQ}),
}
STREAM_LINE = {
    "description": "an NDJSON line: an event, or a notice (an object with one member, its name)",
    "oneOf": [{"$ref": "#/components/schemas/Event"},
              *({"type": "object", "required": [name], "additionalProperties": False,
                 "properties": {name: {"$ref": f"#/components/schemas/{name.title()}Notice"}}}
                for name in NOTICES)],
}

def _sse_data(schema: str) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": JSON,
            "contentSchema": {"$ref": f"#/components/schemas/{schema}"}}


# One SSE message, as OpenAPI 3.2 reads a text/event-stream schema (and 3.1 tools like
# schemathesis already do): an event, whose id is its seq and whose name its kind, a notice, or
# an id alone (a follower's starting position). A heartbeat is a comment line, no message.
SSE_MESSAGE = {
    "description": "one Server-Sent Events message: an event, a notice, or (first, for a "
                   "follower without a position) an id alone, which sets the EventSource's "
                   "last event id without an event",
    "oneOf": [
        {"type": "object", "required": ["id"], "not": {"required": ["data"]},
         "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}}},
        {"type": "object", "required": ["id", "event", "data"],
         "properties": {"id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
                        "event": {"type": "string", "not": {"enum": ["gap", "overflow", "end"]}},
                        "data": _sse_data("Event")}},
        {"type": "object", "required": ["id", "event", "data"],
         "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"},
                        "event": {"const": "gap"}, "data": _sse_data("GapNotice")}},
        *({"type": "object", "required": ["event", "data"], "not": {"required": ["id"]},
           "properties": {"event": {"const": name},
                          "data": _sse_data(f"{name.title()}Notice")}}
          for name in ("overflow", "end")),
    ],
}
STREAM_ERRORS = {
    "400": "a bad parameter, named in key: an unknown parameter, since or Last-Event-ID not a "
           "sequence number or after the last journaled event (last_seq says which that is), "
           "an unknown kind, an empty domain, an id no running domain has",
    "403": "the caller has no role",
    "429": "this caller has control.max_streams_per_caller streams open (Retry-After)",
    "503": "control.max_streams streams are open (Retry-After)",
}
STREAM_DESCRIPTION = (
    "The journal from a position, then the live events, in order, each once. Server-Sent "
    "Events with Accept: text/event-stream (id: seq, event: kind, data: the event), NDJSON "
    "otherwise (one event per line). The position is Last-Event-ID (what an EventSource sends "
    "when it reconnects), else since; without one, a follower starts at the present and a "
    "one-shot read at the start of the journal (in SSE the follower's first message is its "
    "position, an id alone). A position is continued exactly or the client "
    "is told: after the last journaled event it is a 400 (nothing was ever journaled there), "
    "before the first one still kept a gap notice says what retention removed. Notices "
    "(StreamLine): gap, overflow, end, heartbeat. A follower hears something at least every "
    f"{HEARTBEAT_INTERVAL:g} s; one that reads nothing for {WRITE_TIMEOUT:g} s while data waits "
    "is disconnected. Streams do not count against control.max_requests but against "
    "control.max_streams and control.max_streams_per_caller. See docs/control-api.md.")


CONSOLE_ERRORS = {
    "400": "a bad argument (force), named in key",
    "403": "the caller lacks the write role, or control.allow_write is off",
    "404": "no such domain, or it has no console or no channel of that name",
    "409": "the domain is not running, or another client has the stream (force=true takes it)",
    "426": "not a WebSocket opening request",
    "503": "libvirt is not connected, or the most consoles and channels are open",
    "504": "opening the stream overran control.request_timeout",
}
CONSOLE_DESCRIPTION = (
    "A WebSocket (RFC 6455): binary messages carry the bytes both ways. The stream ends with a "
    "close frame: 1000 the client closed, 1001 the daemon stops, 4000 the domain stopped, 4001 "
    "another client took it over, 4002 libvirt ended it, 4003 the client was too slow, 4004 the "
    "guest took no input. One client at a time. See docs/control-api.md and docs/adr/0005.")


def stream_paths() -> dict[str, Any]:
    """The console and channel routes (WebSockets), from their operation rows."""
    paths: dict[str, Any] = {}
    for name, (row, route) in STREAMED.items():
        parameters = [{"name": "domain", "in": "path", "required": True,
                       "schema": {"type": "string"}, "description": "name, UUID or id"}]
        if "{name}" in route:
            parameters.append({"name": "name", "in": "path", "required": True,
                               "schema": {"type": "string"},
                               "description": "the channel's target name"})
        parameters.append({"name": "force", "in": "query", "required": False,
                           "schema": {"type": "string", "enum": ["true", "false"]},
                           "description": "take the stream over from the client that has it"})
        paths[route] = {"get": {
            "summary": row.summary[0].upper() + row.summary[1:],
            "description": CONSOLE_DESCRIPTION, "operationId": name,
            "parameters": parameters,
            "responses": {"101": {"description": "switching to the WebSocket"},
                          **_problems(CONSOLE_ERRORS)},
            "x-virtmon-role": row.role, "x-virtmon-functions": list(row.functions),
        }}
    return paths


def _kinds() -> list[str]:
    return sorted({spec.kind for spec in SPECS_BY_CONSTANT.values()} | set(VIRTMON_KINDS))


def events_path() -> dict[str, Any]:
    """``GET /v1/events``: its parameters, formats, notices and errors."""
    params: dict[str, dict[str, Any]] = {
        "since": {"in": "query", "schema": {"type": "integer", "minimum": 0},
                  "description": "resume after this sequence number (Last-Event-ID wins)"},
        "follow": {"in": "query", "schema": {"type": "string",
                                             "enum": ["0", "1", "true", "false"]},
                   "description": "1: stay open for live events (default with SSE); 0: end "
                                  "after the journal"},
        "domain": {"in": "query", "style": "form", "explode": True,
                   "schema": {"type": "array", "items": {"type": "string", "minLength": 1}},
                   "description": "only these domains (repeatable): a name, a UUID (with or "
                                  "without dashes), or the id of a running domain"},
        "kind": {"in": "query", "style": "form", "explode": True,
                 "schema": {"type": "array", "items": {"anyOf": [
                     {"type": "string", "enum": _kinds()},
                     {"type": "string", "pattern": "^event_[0-9]{1,6}$"}]}},
                 "description": "only these kinds (repeatable); event_<id> for an event id "
                                "virtmon's catalog lacks"},
    }
    assert tuple(params) == PARAMETERS
    parameters = [{"name": name, "required": False, **spec} for name, spec in params.items()]
    parameters.append({"name": "Last-Event-ID", "in": "header", "required": False,
                       "schema": {"type": "string", "pattern": "^[0-9]+$"},
                       "description": "the position an EventSource resumes from; wins over "
                                      "since"})
    return {"get": {
        "summary": "The event stream: the journal from a position, then live events",
        "description": STREAM_DESCRIPTION,
        "operationId": "events",
        "parameters": parameters,
        "responses": {
            "200": {"description": "the stream (SSE or NDJSON)", "content": {
                "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/"
                                                            "StreamLine"}},
                "text/event-stream": {"schema": {"$ref": "#/components/schemas/"
                                                         "SseMessage"}}}},
            **_problems(STREAM_ERRORS),
        },
        "x-virtmon-heartbeat-seconds": HEARTBEAT_INTERVAL,
    }}


def document(ops: Mapping[str, Operation]) -> dict[str, Any]:
    """The whole OpenAPI document."""
    fresh = [{"name": "fresh", "in": "query", "required": False,
              "schema": {"type": "string", "enum": ["0", "1"]},
              "description": "1: ask libvirt now instead of the inventory"}]
    paths: dict[str, Any] = {
        "/v1/status": {"get": {"summary": "The daemon's state", "operationId": "status",
                               "responses": _responses({"type": "object"})}},
        "/v1/domains": {"get": {"summary": "Every domain (from the inventory)",
                                "operationId": "domains", "parameters": fresh,
                                "responses": _responses({"type": "object"})}},
        "/v1/domains/{domain}": {"get": {
            "summary": "One domain by name, UUID or id", "operationId": "domain",
            "parameters": [{"name": "domain", "in": "path", "required": True,
                            "schema": {"type": "string"}}, *fresh],
            "responses": _responses({"type": "object"})}},
        "/v1/events": events_path(),
        "/v1/ops": {"get": {"summary": "Every operation: name, role, parameters",
                            "operationId": "operations",
                            "responses": _responses({"type": "object"})}},
        **operation_paths(ops),
        **(stream_paths() if ops else {}),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "virtmon control API", "version": __version__,
                 "description": "The libvirt API over a local Unix socket, with roles. "
                                "See docs/control-api.md."},
        "paths": paths,
        "components": {"schemas": {
            "Problem": PROBLEM, "Event": EVENT, "StreamLine": STREAM_LINE,
            "SseMessage": SSE_MESSAGE,
            **{f"{name.title()}Notice": schema for name, schema in NOTICES.items()},
        }},
    }
