"""``virtmonctl`` commands about the daemon itself: ``status``, ``version`` and ``openapi``."""

from __future__ import annotations

import argparse

from virtmon import __version__
from virtmon.ctl.command import Command, Context
from virtmon.ctl.problems import EX_OK


def cmd_status(ctx: Context, _args: argparse.Namespace) -> int:
    """``status``: the daemon's state."""
    ctx.show(ctx.client.get("/v1/status"))
    return EX_OK


def cmd_version(ctx: Context, _args: argparse.Namespace) -> int:
    """``version``: this client's version, then the daemon's (exit 3 if it cannot be reached)."""
    if ctx.json:
        ctx.document({"virtmonctl": __version__,
                      "virtmon": ctx.client.get("/v1/status").get("version")})
        return EX_OK
    ctx.line(f"virtmonctl {__version__}")
    ctx.line(f"virtmon {ctx.client.get('/v1/status').get('version')} (the daemon at "
             f"{ctx.client.path})")
    return EX_OK


def cmd_openapi(ctx: Context, _args: argparse.Namespace) -> int:
    """``openapi``: the control API's OpenAPI document (JSON in either mode)."""
    ctx.document(ctx.client.get("/v1/openapi.json"))
    return EX_OK


COMMANDS: tuple[Command, ...] = (
    Command("status", "the daemon's state: libvirt connection, collection, journal", cmd_status),
    Command("openapi", "the control API's OpenAPI document", cmd_openapi),
    Command("version", "virtmonctl's version and the daemon's", cmd_version),
)
