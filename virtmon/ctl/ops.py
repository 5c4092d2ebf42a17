"""``virtmonctl`` commands that run operations by name or about the host: ``call``,
``operations``, ``host``, ``interfaces`` and ``admin ...``."""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from virtmon.ctl.client import Problem, Unreachable
from virtmon.ctl.command import Command, Context, assignments, call, explained, run
from virtmon.ctl.format import scalar
from virtmon.ctl.help import operation_help
from virtmon.ctl.problems import EX_OK, UsageError, suggestion, then

# -- call -----------------------------------------------------------------------------------------

def args_call(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("operation", nargs="?", metavar="OPERATION",
                        help="e.g. domain.info, or OBJECT OPERATION: domain info")
    parser.add_argument("rest", nargs="*", metavar="KEY=VALUE",
                        help="arguments: VALUE is JSON if it parses, @FILE reads a file, "
                             "KEY.SUB=VALUE builds an object; flags=live,config")
    parser.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="write a byte result (screenshot, block or memory peek) to FILE")
    parser.add_argument("-h", "--help", dest="help_operation", action="store_true",
                        help="show this help, or with OPERATION, the operation's")
    parser.set_defaults(call_help=parser.format_help)
    parser.epilog = ("`virtmonctl call OPERATION --help` (or `virtmonctl operations OPERATION`) "
                     "shows the operation's arguments, their types and flag names, its role "
                     "and the libvirt functions it calls.")


def operation_name(words: Sequence[str]) -> tuple[str, list[str]]:
    """``domain.info`` or ``domain info`` (and ``block-stats`` for ``block_stats``), and the
    words after it."""
    name, rest = words[0], list(words[1:])
    if "." not in name and rest and "=" not in rest[0]:
        name = f"{name}.{rest.pop(0)}"
    return name.replace("-", "_"), rest


def cmd_call(ctx: Context, args: argparse.Namespace) -> int:
    """``call OPERATION [KEY=VALUE ...] [--output FILE]``: any operation of the table;
    ``call OPERATION --help``: its help."""
    if args.operation is None:
        if args.help_operation:
            ctx.out.write(args.call_help())
            return EX_OK
        raise UsageError("call needs an OPERATION; `virtmonctl operations` lists them")
    name, rest = operation_name([args.operation, *args.rest])
    if args.help_operation:
        try:
            return show_operation(ctx, name)
        except Unreachable:
            ctx.out.write(args.call_help())  # the generic part, then why OP's is missing
            raise
    if args.output is None:
        return run(ctx, name, assignments(rest))
    try:  # an operation that returns no bytes is refused (406) before it runs
        data = ctx.client.call_bytes(name, **assignments(rest))
    except ValueError as exc:
        raise UsageError(f"{exc}: --output is for screenshots and peeks") from None
    except Problem as exc:
        if exc.status == 406:
            raise UsageError(f"{name} does not return bytes: --output is for screenshots and "
                             "peeks") from None
        raise explained(ctx, name, exc) from None
    args.output.write_bytes(data)
    ctx.line(f"{len(data)} bytes written to {args.output}")
    return EX_OK


def args_operations(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("operation", nargs="*", metavar="OPERATION|AREA|GLOB",
                        help="one operation's help (domain.info, or domain info); or only "
                             "the operations of an area (domain, host, interface, admin, "
                             "alerts) or matching a glob ('*memory*')")
    parser.add_argument("--role", choices=("read", "write", "admin"),
                        help="only the operations that need this role")


def show_operation(ctx: Context, name: str) -> int:
    """One operation's help, from the daemon's table."""
    ops = ctx.client.get("/v1/ops")["operations"]
    row = next((o for o in ops if o.get("name") == name), None)
    if row is None:
        names = [str(o.get("name")) for o in ops]
        raise UsageError(then(f"unknown operation {name!r}{suggestion(name, names)}",
                              "see `virtmonctl operations`"))
    if ctx.json:
        ctx.document(row)
    else:
        for text in operation_help(row):
            ctx.line(text)
    return EX_OK


def cmd_operations(ctx: Context, args: argparse.Namespace) -> int:
    """``operations [OPERATION]``: every operation with its role and parameters, or one
    operation's help."""
    doc = ctx.client.get("/v1/ops")
    ops = doc["operations"]
    areas = {str(o["name"]).partition(".")[0] for o in ops}
    if args.operation:
        name, rest = operation_name(args.operation)
        if rest:
            raise UsageError(f"operations takes one operation, not {' '.join(rest)!r}")
        if name in areas:
            ops = [o for o in ops if str(o["name"]).startswith(name + ".")]
        elif any(c in name for c in "*?["):
            ops = [o for o in ops if fnmatch.fnmatchcase(str(o["name"]), name)]
        else:
            return show_operation(ctx, name)
    if args.role is not None:
        ops = [o for o in ops if o["role"] == args.role]
    if ctx.json:
        ctx.document({**doc, "operations": ops})
        return EX_OK
    if not ops:
        ctx.warn("no operation matches")
        return EX_OK
    rows = [[o["name"], o["role"], " ".join(p["name"] + ("" if p["required"] else "?")
                                            for p in o["params"]), o["summary"]]
            for o in ops]
    ctx.table(["OPERATION", "ROLE", "ARGUMENTS", "SUMMARY"], rows)
    return EX_OK


# -- host and interfaces --------------------------------------------------------------------------

def args_host(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", default="info",
                        help="info (default), capabilities, sysinfo, hostname, version, "
                             "lib-version, connection, cpu-stats, memory-stats, free-memory, "
                             "cpu-map, security-model ...")
    parser.add_argument("rest", nargs="*", metavar="KEY=VALUE")


def cmd_host(ctx: Context, args: argparse.Namespace) -> int:
    """``host [WHAT]``: facts about the host."""
    return run(ctx, "host." + args.what.replace("-", "_"), assignments(args.rest))


def cmd_interfaces(ctx: Context, _args: argparse.Namespace) -> int:
    """``interfaces``: host interfaces."""
    result = call(ctx, "interface.list", {})
    if ctx.json:
        ctx.document(result)
        return EX_OK
    rows = [[i["name"], i["mac"] or "-", scalar("", i["active"])] for i in result["interfaces"]]
    ctx.table(["NAME", "MAC", "ACTIVE"], sorted(rows))
    return EX_OK


# -- admin ----------------------------------------------------------------------------------------

def _admin_action(sub: Any, name: str, help: str, fn: Any,
                  *positional: tuple[str, str]) -> argparse.ArgumentParser:
    child: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    child.add_argument("--server", default="libvirtd", help="libvirtd (default) or admin")
    for dest, text in positional:
        child.add_argument(dest, help=text)
    child.set_defaults(admin_run=fn)
    return child


def args_admin(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="admin_command", required=True, metavar="WHAT")
    srv = "server"
    _admin_action(sub, "servers", "the daemon's servers",
                  lambda c, a: run(c, "admin.servers", {}))
    tp = _admin_action(sub, "threadpool", "worker pool: get, or set KEY=VALUE "
                       "(minWorkers, maxWorkers, prioWorkers)",
                       lambda c, a: _get_set(c, a, "admin.threadpool"))
    tp.add_argument("action", nargs="?", choices=("get", "set"), default="get")
    tp.add_argument("rest", nargs="*", metavar="KEY=VALUE")
    lim = _admin_action(sub, "limits", "client limits: get, or set KEY=VALUE "
                        "(nclients_max, nclients_unauth_max)",
                        lambda c, a: _get_set(c, a, "admin.limits"))
    lim.add_argument("action", nargs="?", choices=("get", "set"), default="get")
    lim.add_argument("rest", nargs="*", metavar="KEY=VALUE")
    cl = _admin_action(sub, "clients", "clients: list, info ID, disconnect ID", _clients)
    cl.add_argument("action", nargs="?", choices=("list", "info", "disconnect"), default="list")
    cl.add_argument("id", nargs="?", type=int)
    lg = _admin_action(sub, "logging", "log filters and outputs: get, or set "
                       "filters=... outputs=...", _logging)
    lg.add_argument("action", nargs="?", choices=("get", "set"), default="get")
    lg.add_argument("rest", nargs="*", metavar="KEY=VALUE")
    _admin_action(sub, "timeout", "exit the daemon after SECONDS idle (0: never)",
                  lambda c, a: run(c, "admin.daemon_timeout", {"timeout": int(a.seconds)}),
                  ("seconds", "SECONDS"))
    _admin_action(sub, "tls-reload", "reload the server's TLS certificates",
                  lambda c, a: run(c, "admin.tls_reload", {srv: a.server}))


def _get_set(ctx: Context, args: argparse.Namespace, base: str) -> int:
    if args.action == "get":
        return run(ctx, f"{base}_get", {"server": args.server})
    params = assignments(args.rest)
    if not params:
        raise UsageError("set needs KEY=VALUE arguments")
    return run(ctx, f"{base}_set", {"server": args.server, "params": params})


def _clients(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "list":
        return run(ctx, "admin.clients", {"server": args.server})
    if args.id is None:
        raise UsageError(f"clients {args.action} needs a client ID")
    operation = "admin.client_info" if args.action == "info" else "admin.client_disconnect"
    return run(ctx, operation, {"server": args.server, "id": args.id},
               f"client {args.id} disconnected")


def _logging(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "get":
        result = {"filters": call(ctx, "admin.logging_filters_get", {}),
                  "outputs": call(ctx, "admin.logging_outputs_get", {})}
        ctx.show(result)
        return EX_OK
    values = assignments(args.rest)
    unknown = set(values) - {"filters", "outputs"}
    if unknown or not values:
        raise UsageError("logging set takes filters=... and/or outputs=...")
    for key, text in values.items():
        call(ctx, f"admin.logging_{key}_set", {key: str(text)})
    ctx.show(None)
    return EX_OK


def cmd_admin(ctx: Context, args: argparse.Namespace) -> int:
    """``admin WHAT ...``: the libvirt daemon's own administration."""
    code: int = args.admin_run(ctx, args)
    return code


COMMANDS: tuple[Command, ...] = (
    Command("call", "run any operation: call OPERATION [KEY=VALUE ...]", cmd_call, args_call,
            add_help=False),
    Command("operations", "every operation with its role and arguments; with OPERATION, its "
            "help", cmd_operations, args_operations),
    Command("host", "facts about the host (info by default)", cmd_host, args_host),
    Command("interfaces", "host network interfaces", cmd_interfaces),
    Command("admin", "the libvirt daemon: servers, threadpool, clients, limits, logging, "
            "timeout, tls-reload", cmd_admin, args_admin),
)
