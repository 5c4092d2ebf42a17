"""The operation routes (``/v1/ops``), the role gate and the request limits of the control server.

``GET|POST /v1/ops/{name}`` validates the arguments against the operation's row, checks the
caller's role (SO_PEERCRED), runs it through the :class:`~virtmon.control.executor.Executor` and
answers ``{"operation": name, "result": ...}`` or a problem document. Every call that needs more
than ``read``, or runs with more than a read-only libvirt connection (a write-role caller's
reads, the admin helper), is audited, refused ones included.
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from aiohttp import web

from virtmon.control.executor import Executor, Failure
from virtmon.control.operations.model import ArgumentError, Operation, jsonable, validate
from virtmon.control.problems import problem
from virtmon.control.roles import UNKNOWN, Peer, RoleMap, allows, peer_of

EVENTS_PATH = "/v1/events"
# A request body must have arrived within this time (a caller trickling one holds a slot).
BODY_TIMEOUT = 10.0
PEER_KEY = web.RequestKey("virtmon_peer", Peer)
ROLE_KEY = web.RequestKey("virtmon_role", str)
OCTET_STREAM = "application/octet-stream"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_peer(request: web.Request) -> Peer:
    """The caller's credentials (cached per connection by the transport's socket)."""
    transport = request.transport
    if transport is None:
        return UNKNOWN
    return peer_of(transport.get_extra_info("socket"))


def role_of(request: web.Request) -> str:
    """The caller's role, set by :func:`gate_middleware`."""
    return str(request.get(ROLE_KEY, "none"))


def is_stream(path: str) -> bool:
    """Whether a path is a stream that stays open for as long as its client wants: the event
    stream, a console or a channel."""
    if path == EVENTS_PATH:
        return True
    parts = path.split("/")
    # /v1/domains/{domain}/console, /v1/domains/{domain}/channels/{name}
    return parts[1:3] == ["v1", "domains"] and (
        (len(parts) == 5 and parts[4] == "console")
        or (len(parts) == 6 and parts[4] == "channels"))


def gate_middleware(roles: RoleMap, max_in_flight: int, max_per_caller: int | None = None,
                    streams: Callable[[str], bool] = is_stream) -> Any:
    """Every request needs at least ``read``; at most ``max_in_flight`` are served at once, at
    most ``max_per_caller`` of them for one uid (so one caller cannot take every slot).

    Streams (``streams``: the event stream, consoles and channels) are not counted here: they
    are open for hours, and keep limits of their own (``control.max_streams*`` for the event
    stream; one client per console or channel, and a daemon-wide bound, for the others).
    """
    in_flight: Counter[int] = Counter()
    own_uid = os.geteuid()
    per_caller = max_in_flight if max_per_caller is None else max_per_caller

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request_peer(request)
        # The daemon's own user can do whatever the daemon can anyway.
        role = "admin" if peer.uid == own_uid else roles.role(peer)
        request[PEER_KEY] = peer
        request[ROLE_KEY] = role
        if not allows(role, "read"):
            return problem(403, "Forbidden", f"uid {peer.uid} has no role on this socket "
                           "(control.read_groups/read_uids grant one)", role=role)
        if streams(request.path):
            return await handler(request)
        if in_flight[peer.uid] >= per_caller:
            return problem(429, "Too Many Requests",
                           f"uid {peer.uid} has {in_flight[peer.uid]} requests being served, "
                           "the most one caller may (control.max_requests_per_caller); "
                           "retry when one is answered", headers={"Retry-After": "1"})
        if in_flight.total() >= max_in_flight:
            return problem(503, "Service Unavailable",
                           f"{max_in_flight} requests are already being served; retry shortly",
                           headers={"Retry-After": "1"})
        in_flight[peer.uid] += 1
        try:
            return await handler(request)
        finally:
            in_flight[peer.uid] -= 1
            if in_flight[peer.uid] <= 0:
                del in_flight[peer.uid]

    return gate


class BodyTimeout(Exception):
    """The request body did not arrive within :data:`BODY_TIMEOUT`."""


async def _arguments(request: web.Request) -> Mapping[str, Any]:
    if request.method == "GET":
        out: dict[str, Any] = {}
        for key in request.query:
            values = request.query.getall(key)
            out[key] = values[0] if len(values) == 1 else list(values)
        return out
    with anyio.move_on_after(BODY_TIMEOUT) as scope:
        body = await request.read()
    if scope.cancelled_caught:
        raise BodyTimeout
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ArgumentError("(body)", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ArgumentError("(body)", "must be a JSON object of arguments")
    return doc


def wants_raw(accept: str, result: Mapping[str, Any]) -> bool:
    """Whether ``Accept`` asks for a byte result as itself rather than base64 in JSON."""
    asked = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return OCTET_STREAM in asked or str(result.get("mime_type", "")).lower() in asked - {""}


def only_raw(accept: str) -> bool:
    """Whether ``Accept`` takes bytes but not JSON (nor anything at all)."""
    asked = {part.split(";")[0].strip().lower() for part in accept.split(",")} - {""}
    return bool(asked) and not asked & {"application/json", "application/*", "*/*"} and (
        OCTET_STREAM in asked)


def add_operation_routes(app: web.Application, executor: Executor,
                         operations: Mapping[str, Operation]) -> None:
    """``/v1/ops`` and ``/v1/ops/{name}``."""

    async def listing(_request: web.Request) -> web.Response:
        return web.json_response({"operations": [
            {"name": op.name, "role": op.role, "summary": op.summary,
             "functions": list(op.functions),
             **({"write_when": op.write_when.text} if op.write_when else {}),
             "params": [{"name": p.name, "kind": p.kind, "required": p.required,
                         **({} if p.required else {"default": jsonable(p.default)}),
                         **({"help": p.help} if p.help else {}),
                         **({"choices": sorted(p.choices)} if p.choices else {})}
                        for p in op.all_params()]}
            for op in operations.values()]})

    async def call(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        op = operations.get(name)
        if op is None:
            return problem(404, "Not Found", f"no operation {name!r} (GET /v1/ops lists them)")
        if request.method == "GET" and op.role != "read":
            response = problem(405, "Method Not Allowed", f"{name} changes state: use POST",
                               headers={"Allow": "POST"})
        elif only_raw(request.headers.get("Accept", "")) and not op.returns_bytes:
            # Refused before it runs: a write must not happen for an answer nobody can take.
            response = problem(406, "Not Acceptable", f"{name} does not return bytes; "
                               "ask for application/json")
        else:
            response = await answer(request, op)
        executor.stats.answers[(op.name, response.status)] += 1
        return response

    async def answer(request: web.Request, op: Operation) -> web.Response:
        try:
            args = validate(op, await _arguments(request))
        except ArgumentError as exc:
            return problem(400, "Bad Request", str(exc), key=exc.key)
        except BodyTimeout:
            return problem(408, "Request Timeout", "the request body did not arrive within "
                           f"{BODY_TIMEOUT:g} s", headers={"Connection": "close"})
        peer = request.get(PEER_KEY, UNKNOWN)
        role = role_of(request)
        needed = op.needs(args)
        privileged = executor.privileged(op, role)
        audited = needed != "read" or privileged
        who = {"caller_role": role, "needs": needed, "privileged": privileged}
        if not allows(role, needed):
            if audited:
                executor.audit(op, args, peer, {**who, "ok": False, "status": 403,
                                                "title": "Forbidden"})
            return problem(403, "Forbidden", f"{op.name} needs the {needed} role; "
                           f"uid {peer.uid} has {role}", role=role, needs=needed)
        try:
            result = await executor.run(op, args, role)
        except Failure as exc:
            if audited:
                executor.audit(op, args, peer, {**who, "ok": False, **exc.as_dict()})
            return problem(exc.status, exc.title, exc.detail, **exc.extra)
        if audited:
            executor.audit(op, args, peer, {**who, "ok": True, "result": _summary(result)})
        if op.returns_bytes and wants_raw(request.headers.get("Accept", ""), result):
            return web.Response(body=base64.b64decode(result["base64"]),
                                content_type=result.get("mime_type") or OCTET_STREAM)
        return web.json_response({"operation": op.name, "result": result})

    app.router.add_get("/v1/ops", listing)
    app.router.add_route("GET", "/v1/ops/{name}", call)
    app.router.add_route("POST", "/v1/ops/{name}", call)


def _summary(result: Any) -> Any:
    """What an audit record keeps of a result: small ones whole, large ones by size."""
    text = json.dumps(result)
    return result if len(text) <= 512 else {"size": len(text)}
