"""The control API application: status, the inventory and the event stream, under /v1/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from virtmon import __version__
from virtmon.control.events_stream import events_handler
from virtmon.control.problems import problem, problem_middleware
from virtmon.events.bus import EventBus
from virtmon.virt.inventory import Inventory

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "virtmon control API", "version": __version__},
    "paths": {
        "/v1/status": {"get": {"summary": "The daemon's state", "operationId": "status"}},
        "/v1/domains": {"get": {"summary": "Every domain (from the inventory)",
                                "operationId": "domain_list"}},
        "/v1/domains/{domain}": {"get": {"summary": "One domain by name, UUID or id",
                                         "operationId": "domain_get"}},
        "/v1/events": {"get": {"summary": "Event stream (SSE or NDJSON); since=SEQ resumes",
                               "operationId": "events"}},
    },
}


def control_app(
    bus: EventBus,
    inventory: Inventory,
    status: Callable[[], dict[str, Any]],
    subscriber_queue_size: int = 1000,
    max_body: int = 1 << 20,
) -> web.Application:
    """The aiohttp application served on the control socket."""

    async def get_status(_request: web.Request) -> web.Response:
        return web.json_response(status())

    async def list_domains(_request: web.Request) -> web.Response:
        return web.json_response({"domains": [d.to_dict() for d in inventory.all()]})

    async def get_domain(request: web.Request) -> web.Response:
        key = request.match_info["domain"]
        found = inventory.find(key)
        if found is None:
            return problem(404, "Not Found", f"no domain named, with UUID or id {key!r}",
                           libvirt_code=42, libvirt_error="VIR_ERR_NO_DOMAIN")
        return web.json_response(found.to_dict())

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    app = web.Application(middlewares=[problem_middleware], client_max_size=max_body)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/domains", list_domains)
    app.router.add_get("/v1/domains/{domain}", get_domain)
    app.router.add_get("/v1/events", events_handler(bus, subscriber_queue_size))
    app.router.add_get("/v1/openapi.json", openapi)
    return app
