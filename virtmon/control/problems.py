"""Errors as RFC 9457 problem documents (``application/problem+json``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

PROBLEM_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str = "", *,
            headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
    """A problem document response (``extra`` members go into the document)."""
    body = {"type": "about:blank", "title": title, "status": status, **extra}
    if detail:
        body["detail"] = detail
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE,
                        headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn aiohttp's own HTTP errors (404, 405, 413, ...) into problem documents."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason, exc.text or "")
