"""``virtmonctl`` commands that run operations: ``call``, lifecycle verbs, ``host``,
``interfaces``, ``operations`` and ``admin ...``.

Each is a row for :data:`virtmon.ctl.COMMANDS` (added by :func:`virtmon.ctl.parser`); like the rest
of virtmonctl it uses the standard library only.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from virtmon.control.client import Problem, Unreachable
from virtmon.ctl import EX_OK, Command, Context, UsageError, show
from virtmon.ctl_format import scalar, table
from virtmon.ctl_help import operation_help
from virtmon.ctl_problems import CtlError, call_problem, suggestion, then

# Lifecycle verbs: the command word -> the operation.
VERBS = {
    "start": "domain.start", "stop": "domain.shutdown", "shutdown": "domain.shutdown",
    "destroy": "domain.destroy", "suspend": "domain.suspend", "resume": "domain.resume",
    "reboot": "domain.reboot", "reset": "domain.reset", "undefine": "domain.undefine",
}


def value_of(text: str) -> Any:
    """A ``KEY=VALUE`` value: ``@FILE`` is the file's text, JSON if it parses, else the text."""
    if text.startswith("@"):
        return read_text(text[1:])
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_text(path: str) -> str:
    """A file's text ('-': standard input); a file that cannot be read is a usage error."""
    import sys

    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def assignments(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` words as arguments; ``a.b=1`` sets ``{"a": {"b": 1}}`` (typed params).

    A key given twice is refused rather than the last one winning silently (``domain=a
    domain=b`` would act on b: too easy to get wrong for a write)."""
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        if key in seen:
            raise UsageError(f"{key} given twice ({seen[key]!r} and {item!r}): give it once"
                             + ("; several flags go in one, flags=a,b" if key == "flags" else ""))
        seen[key] = item
        head, dot, sub = key.partition(".")
        if dot:
            out.setdefault(head, {})[sub] = value_of(text)
        else:
            out[key] = value_of(text)
    return out


def explained(ctx: Context, operation: str, problem: Problem) -> CtlError:
    """A problem answered to ``operation`` in the command line's words (exit 1 or 2)."""
    if problem.status not in (400, 403, 404):
        return call_problem(problem, operation, None)  # nothing the operation table explains
    try:
        ops = ctx.client.get("/v1/ops")["operations"]
    except (Problem, Unreachable, KeyError, TypeError):  # it only adds hints to the answer
        ops = None
    return call_problem(problem, operation, ops)


def call(ctx: Context, operation: str, arguments: Mapping[str, Any]) -> Any:
    """Run an operation; its result, or :class:`CtlError` in the command line's words."""
    try:
        return ctx.client.call(operation, **arguments)
    except Problem as exc:
        raise explained(ctx, operation, exc) from None


def run(ctx: Context, operation: str, arguments: Mapping[str, Any], done: str = "done") -> int:
    """Run an operation and show its result."""
    show(ctx, call(ctx, operation, arguments), done)
    return EX_OK


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
    for text in table(["OPERATION", "ROLE", "ARGUMENTS", "SUMMARY"], rows):
        ctx.line(text)
    return EX_OK


# -- domain verbs ---------------------------------------------------------------------------------

def args_verb(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain", metavar="NAME|UUID|ID")
    parser.add_argument("rest", nargs="*", metavar="KEY=VALUE", help="e.g. flags=paused")


def verb_command(verb: str) -> Command:
    """``VERB NAME [KEY=VALUE ...]`` for one lifecycle verb."""

    def run_verb(ctx: Context, args: argparse.Namespace) -> int:
        return run(ctx, VERBS[verb], {"domain": args.domain, **assignments(args.rest)},
                   f"{args.domain}: {verb} done")

    return Command(verb, f"{VERBS[verb].split('.')[1]} a domain", run_verb, args_verb)


def args_define(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="domain XML ('-' reads stdin)")


def cmd_define(ctx: Context, args: argparse.Namespace) -> int:
    """``define FILE``: define a domain from its XML."""
    return run(ctx, "domain.define", {"xml": read_text(args.file)})


# Size units as virsh takes them: binary for K/M/G/T and KiB..., decimal for KB/MB/GB/TB.
SIZE_UNITS = {"": 1024, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1 << 20,
              "mib": 1 << 20, "mb": 10**6, "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
              "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def size_kib(text: str) -> int:
    """A memory size as KiB: a bare number is KiB (as virsh setmem), else with a unit (512M,
    1G, 1GiB, 2GB), rounded up to a whole KiB."""
    found = SIZE_RE.match(text)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (KiB, or with a unit: 512M, 1G, 1GiB, 2GB)")
    return math.ceil(float(found.group(1)) * SIZE_UNITS[unit] / 1024)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    return int(text)


def args_set_number(unit: str) -> Any:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("domain", metavar="NAME|UUID|ID")
        parser.add_argument("value", type=size_kib if unit == "SIZE" else _count, metavar=unit,
                            help="KiB, or with a unit: 512M, 1G, 1GiB, 2GB" if unit == "SIZE"
                            else None)
        parser.add_argument("--live", action="store_true", help="the running domain")
        parser.add_argument("--config", action="store_true", help="the persistent definition")
        parser.add_argument("--maximum", action="store_true", help="the maximum, not current")
    return add


def _affect(args: argparse.Namespace) -> list[str]:
    return [f for f in ("live", "config", "maximum") if getattr(args, f)]


def cmd_set_memory(ctx: Context, args: argparse.Namespace) -> int:
    """``set-memory NAME SIZE`` (KiB, or with a unit)."""
    return run(ctx, "domain.set_memory", {"domain": args.domain, "memory_kib": args.value,
                                          "flags": _affect(args)})


def cmd_set_vcpus(ctx: Context, args: argparse.Namespace) -> int:
    """``set-vcpus NAME COUNT``."""
    return run(ctx, "domain.set_vcpus", {"domain": args.domain, "count": args.value,
                                         "flags": _affect(args)})


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
    for text in table(["NAME", "MAC", "ACTIVE"], sorted(rows)):
        ctx.line(text)
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
        show(ctx, result)
        return EX_OK
    values = assignments(args.rest)
    unknown = set(values) - {"filters", "outputs"}
    if unknown or not values:
        raise UsageError("logging set takes filters=... and/or outputs=...")
    for key, text in values.items():
        call(ctx, f"admin.logging_{key}_set", {key: str(text)})
    show(ctx, None)
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
    *(verb_command(verb) for verb in VERBS),
    Command("define", "define a domain from an XML file", cmd_define, args_define),
    Command("set-memory", "set a domain's memory: KiB, or with a unit (512M, 1G)",
            cmd_set_memory, args_set_number("SIZE")),
    Command("set-vcpus", "set a domain's vCPU count", cmd_set_vcpus, args_set_number("COUNT")),
    Command("host", "facts about the host (info by default)", cmd_host, args_host),
    Command("interfaces", "host network interfaces", cmd_interfaces),
    Command("admin", "the libvirt daemon: servers, threadpool, clients, limits, logging, "
            "timeout, tls-reload", cmd_admin, args_admin),
)
