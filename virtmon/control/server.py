"""The control API application: status, the inventory and the event stream, under /v1/."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from aiohttp import web

from virtmon.control.api import EVENTS_PATH, add_operation_routes, gate_middleware
from virtmon.control.console import Consoles
from virtmon.control.events_stream import StreamLimits, StreamSlots, events_handler
from virtmon.control.executor import Executor, Failure
from virtmon.control.openapi import document
from virtmon.control.operations import OPERATIONS
from virtmon.control.problems import problem, problem_middleware
from virtmon.control.roles import RoleMap
from virtmon.events.bus import EventBus
from virtmon.virt.inventory import Inventory


def _fresh(request: web.Request) -> bool:
    return request.query.get("fresh", "0") not in ("0", "", "false", "no")


def control_app(
    bus: EventBus,
    inventory: Inventory,
    status: Callable[[], dict[str, Any]],
    subscriber_queue_size: int = 1000,
    max_body: int = 1 << 20,
    executor: Executor | None = None,
    roles: RoleMap | None = None,
    max_in_flight: int = 64,
    max_per_caller: int | None = None,
    stream_limits: StreamLimits | None = None,
    stream_slots: StreamSlots | None = None,
    consoles: Consoles | None = None,
) -> web.Application:
    """The aiohttp application served on the control socket.

    With ``executor`` it serves the operation table under ``/v1/ops``; with ``roles`` every
    request is gated by the caller's role (SO_PEERCRED). Without them (unit tests of the event
    stream over TCP) only the status, inventory and event routes exist, ungated.
    ``stream_limits`` bound the event streams (their queue size is ``subscriber_queue_size``
    unless the limits say otherwise); ``stream_slots`` counts the open ones (for the status).
    With an executor, consoles and channels are served too (``consoles`` keeps the open ones).
    """
    limits = stream_limits or StreamLimits(queue_size=subscriber_queue_size)
    operations = OPERATIONS if executor is not None else {}

    async def fresh_call(name: str, args: dict[str, Any]) -> Any:
        # Plain reads for every caller: on the read-only connection, so nothing to audit.
        assert executor is not None
        return await executor.run(OPERATIONS[name], args, "read")

    async def get_status(_request: web.Request) -> web.Response:
        return web.json_response(status())

    async def list_domains(request: web.Request) -> web.Response:
        if executor is not None and _fresh(request):
            try:
                listing = await fresh_call("domain.list", {"flags": 0})
            except Failure as exc:
                return problem(exc.status, exc.title, exc.detail, **exc.extra)
            return web.json_response({"fresh": True, "domains": listing["domains"]})
        return web.json_response({"domains": [d.to_dict() for d in inventory.all()]})

    async def get_domain(request: web.Request) -> web.Response:
        key = request.match_info["domain"]
        if executor is not None and _fresh(request):
            try:
                found_now = await fresh_call("domain.lookup", {"domain": key})
                found_now.update(await fresh_call("domain.info", {"domain": key}))
            except Failure as exc:
                return problem(exc.status, exc.title, exc.detail, **exc.extra)
            return web.json_response({"fresh": True, **found_now})
        found = inventory.find(key)
        if found is None:
            return problem(404, "Not Found", f"no domain named, with UUID or id {key!r}",
                           libvirt_code=42, libvirt_error="VIR_ERR_NO_DOMAIN")
        return web.json_response(found.to_dict())

    async def openapi(_request: web.Request) -> web.Response:
        # Built for each request, in a worker thread (~40 ms of CPU): it is asked for rarely, and
        # kept it would hold ~2.7 MiB of objects (~1 MiB as JSON) for the daemon's life.
        body = await anyio.to_thread.run_sync(lambda: json.dumps(document(operations)))
        return web.Response(text=body, content_type="application/json")

    middlewares: list[Any] = [problem_middleware]
    if roles is not None:
        middlewares.append(gate_middleware(roles, max_in_flight, max_per_caller))
    app = web.Application(middlewares=middlewares, client_max_size=max_body)
    if executor is not None:
        add_operation_routes(app, executor, OPERATIONS)
        (consoles or Consoles(executor)).add_routes(app)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/domains", list_domains)
    app.router.add_get("/v1/domains/{domain}", get_domain)
    app.router.add_get(EVENTS_PATH, events_handler(bus, inventory, limits, stream_slots))
    app.router.add_get("/v1/openapi.json", openapi)
    return app
