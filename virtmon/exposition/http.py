"""The Prometheus endpoint: /metrics from the cache, /healthz, /readyz and a landing page.

No handler here calls libvirt: /metrics serves the last cycle's families, each form rendered
once per cycle off the loop (see :mod:`virtmon.exposition.cache`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from virtmon import __version__
from virtmon.exposition.cache import Exposition, negotiate

LANDING = """<!doctype html><html><head><title>virtmon</title></head><body>
<h1>virtmon {version}</h1><p>libvirt monitoring daemon.</p>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/healthz">/healthz</a></li>
<li><a href="/readyz">/readyz</a></li></ul></body></html>
"""


def metrics_app(
    exposition: Callable[[], Exposition],
    ready: Callable[[], tuple[bool, str]],
) -> web.Application:
    """The aiohttp application; ``exposition`` returns the current cache entry."""

    async def metrics(request: web.Request) -> web.Response:
        variant = negotiate(request.headers.get("Accept", ""),
                            request.headers.get("Accept-Encoding", ""))
        body = await exposition().serve(variant)
        # The body depends on both headers: a cache in between must not mix the variants.
        headers = {"Content-Type": variant.content_type, "Vary": "Accept, Accept-Encoding"}
        if variant.content_encoding:
            headers["Content-Encoding"] = variant.content_encoding
        return web.Response(body=body, headers=headers)

    async def healthz(_request: web.Request) -> web.Response:
        # Answering at all proves the loop is alive.
        return web.Response(text=f"ok {time.time():.3f}\n")

    async def readyz(_request: web.Request) -> web.Response:
        ok, why = ready()
        return web.Response(text=why + "\n", status=200 if ok else 503)

    async def landing(_request: web.Request) -> web.Response:
        return web.Response(text=LANDING.format(version=__version__), content_type="text/html")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", landing)
    return app
