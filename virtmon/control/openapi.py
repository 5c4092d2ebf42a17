"""The OpenAPI 3.1 document of the control API, generated from the operation table.

Each operation is ``POST /v1/ops/{name}`` with a JSON object of arguments; a read is also
``GET /v1/ops/{name}`` with the arguments in the query string. Errors are problem documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from virtmon import __version__
from virtmon.control.operations.model import Operation

PROBLEM = {
    "type": "object",
    "required": ["title", "status"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "key": {"type": "string", "description": "the argument at fault (400)"},
        "libvirt_code": {"type": "integer"}, "libvirt_error": {"type": "string"},
        "libvirt_domain": {"type": "integer"},
    },
}
ERRORS = {
    "400": "bad arguments (the key is named)", "403": "the caller's role does not allow it",
    "404": "no such operation, domain, interface, snapshot, server or client",
    "406": "bytes asked for (Accept: application/octet-stream) from an operation without any",
    "409": "the object is in the wrong state for it (libvirt: operation invalid)",
    "413": "request body too large", "422": "libvirt refused it (its error code says why)",
    "500": "a fault in virtmon itself (logged with its traceback)",
    "501": "this host's libvirt-python lacks the function the operation calls",
    "503": "libvirt or the admin helper is not reachable, or too many requests",
    "504": "the call overran its deadline and was abandoned",
}
RESULT = {
    "type": "object", "required": ["operation", "result"],
    "properties": {"operation": {"type": "string"}, "result": {}},
}
JSON = "application/json"
PROBLEM_TYPE = "application/problem+json"


def _responses(ok: dict[str, Any], description: str = "the result",
               raw: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": ok}}
    if raw:  # bytes as themselves, with Accept: application/octet-stream (or the image type)
        content["application/octet-stream"] = {"schema": {"type": "string",
                                                          "format": "binary"}}
    out: dict[str, Any] = {"200": {"description": description, "content": content}}
    for status, text in ERRORS.items():
        out[status] = {"description": text,
                       "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/"
                                                                  "Problem"}}}}
    return out


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
            "responses": _responses(RESULT, raw=op.returns_bytes),
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
        "/v1/events": {"get": {
            "summary": "Event stream (SSE or NDJSON); since=SEQ resumes",
            "operationId": "events",
            "responses": {"200": {"description": "events",
                                  "content": {"application/x-ndjson": {"schema": {}},
                                              "text/event-stream": {"schema": {}}}}}}},
        "/v1/ops": {"get": {"summary": "Every operation: name, role, parameters",
                            "operationId": "operations",
                            "responses": _responses({"type": "object"})}},
        **operation_paths(ops),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "virtmon control API", "version": __version__,
                 "description": "The libvirt API over a local Unix socket, with roles. "
                                "See docs/control-api.md."},
        "paths": paths,
        "components": {"schemas": {"Problem": PROBLEM}},
    }
