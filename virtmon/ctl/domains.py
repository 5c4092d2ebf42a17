"""``virtmonctl`` commands about domains: ``domains``, ``domain [VERB] NAME``, the lifecycle verbs
(``start NAME``, ...), ``define``, ``set-memory`` and ``set-vcpus``.

:data:`VERBS` is the one table of lifecycle verbs: ``domain VERB NAME``, ``VERB NAME`` and the
completion of both read it.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from virtmon.ctl.client import Problem
from virtmon.ctl.command import Command, Context, assignments, read_text, run
from virtmon.ctl.format import scalar
from virtmon.ctl.problems import EX_OK, UsageError, suggestion, text_of

# Lifecycle verbs: the command word -> the operation.
VERBS = {
    "start": "domain.start", "stop": "domain.shutdown", "shutdown": "domain.shutdown",
    "destroy": "domain.destroy", "suspend": "domain.suspend", "resume": "domain.resume",
    "reboot": "domain.reboot", "reset": "domain.reset", "undefine": "domain.undefine",
}

DOMAIN_COLUMNS = ("name", "state", "id", "persistent", "uuid")


def args_domains(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="ask libvirt, not the inventory")


def cmd_domains(ctx: Context, args: argparse.Namespace) -> int:
    """``domains [--fresh]``: every domain, from the daemon's inventory (or libvirt)."""
    doc = ctx.client.get("/v1/domains", [("fresh", "1")] if args.fresh else [])
    if ctx.json:
        ctx.document(doc)
        return EX_OK
    domains = sorted(doc.get("domains", []), key=lambda d: str(d.get("name")))
    ctx.table([c.upper() for c in DOMAIN_COLUMNS],
              [[scalar(c, d.get(c)) for c in DOMAIN_COLUMNS] for d in domains])
    return EX_OK


def args_domain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("verb", nargs="?", metavar="VERB",
                        help=f"{', '.join(VERBS)}; none: show the domain")
    parser.add_argument("domain", metavar="NAME|UUID|ID", help="the domain")
    parser.add_argument("--fresh", action="store_true", help="ask libvirt, not the inventory")


def cmd_domain(ctx: Context, args: argparse.Namespace) -> int:
    """``domain [VERB] NAME|UUID|ID``: one domain (what ``virsh dominfo`` shows), or a
    lifecycle verb on it."""
    if args.verb is not None:
        if args.verb not in VERBS:
            raise UsageError(f"unknown verb {args.verb!r}{suggestion(args.verb, VERBS)} "
                             f"(one of {', '.join(VERBS)})")
        return run(ctx, VERBS[args.verb], {"domain": args.domain},
                   f"{args.domain}: {args.verb} done")
    if args.fresh:
        doc = ctx.client.get("/v1/domains/" + quote(args.domain, safe=""), [("fresh", "1")])
    else:
        doc = ctx.client.domain(args.domain)
    if ctx.json:
        ctx.document(doc)
        return EX_OK
    ctx.show(domain_info(ctx, doc))
    return EX_OK


# What ``domain NAME`` shows beside the name, UUID and id: (label, operation, how to show it).
DOMINFO: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("os_type", "domain.os_type", lambda r: r),
    ("state", "domain.state",
     lambda r: f"{r['state']['name']} ({r['reason']['name']})"),
    ("vcpus", "domain.info", lambda r: r["vcpus"]),
    ("cpu_time_ns", "domain.info", lambda r: r["cpu_time_ns"]),
    ("max_memory_kib", "domain.info", lambda r: r["max_memory_kib"]),
    ("memory_kib", "domain.info", lambda r: r["memory_kib"]),
    ("persistent", "domain.is_persistent", lambda r: r),
    ("autostart", "domain.autostart", lambda r: r),
    ("managed_save", "domain.has_managed_save", lambda r: r),
)


def domain_info(ctx: Context, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The fields ``virsh dominfo`` shows, asked of libvirt by the domain's UUID (the same
    with or without ``--fresh``); what libvirt cannot answer now is ``-``, with a warning."""
    shown: dict[str, Any] = {"id": doc.get("id"), "name": doc.get("name"),
                             "uuid": doc.get("uuid")}
    results: dict[str, Any] = {}
    for label, operation, pick in DOMINFO:
        if operation not in results:
            try:
                results[operation] = ctx.client.call(operation, domain=str(doc.get("uuid")))
            except Problem as exc:
                results[operation] = None
                ctx.warn(f"{operation}: {text_of(exc)}")
        result = results[operation]
        shown[label] = None if result is None else pick(result)
    return shown


# -- lifecycle verbs ------------------------------------------------------------------------------

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


# -- set-memory and set-vcpus ---------------------------------------------------------------------

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


def count(text: str) -> int:
    """A whole number of things (vCPUs), 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    return int(text)


def args_set_number(unit: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("domain", metavar="NAME|UUID|ID")
        parser.add_argument("value", type=size_kib if unit == "SIZE" else count, metavar=unit,
                            help="KiB, or with a unit: 512M, 1G, 1GiB, 2GB" if unit == "SIZE"
                            else None)
        parser.add_argument("--live", action="store_true", help="the running domain")
        parser.add_argument("--config", action="store_true", help="the persistent definition")
        parser.add_argument("--maximum", action="store_true", help="the maximum, not current")
    return add


def affected(args: argparse.Namespace) -> list[str]:
    """The flags of ``--live``, ``--config`` and ``--maximum``."""
    return [f for f in ("live", "config", "maximum") if getattr(args, f)]


def cmd_set_memory(ctx: Context, args: argparse.Namespace) -> int:
    """``set-memory NAME SIZE`` (KiB, or with a unit)."""
    return run(ctx, "domain.set_memory", {"domain": args.domain, "memory_kib": args.value,
                                          "flags": affected(args)})


def cmd_set_vcpus(ctx: Context, args: argparse.Namespace) -> int:
    """``set-vcpus NAME COUNT``."""
    return run(ctx, "domain.set_vcpus", {"domain": args.domain, "count": args.value,
                                         "flags": affected(args)})


COMMANDS: tuple[Command, ...] = (
    Command("domains", "every domain: name, state, id, persistent, UUID", cmd_domains,
            args_domains),
    Command("domain", "one domain by name, UUID or id", cmd_domain, args_domain),
    *(verb_command(verb) for verb in VERBS),
    Command("define", "define a domain from an XML file", cmd_define, args_define),
    Command("set-memory", "set a domain's memory: KiB, or with a unit (512M, 1G)",
            cmd_set_memory, args_set_number("SIZE")),
    Command("set-vcpus", "set a domain's vCPU count", cmd_set_vcpus, args_set_number("COUNT")),
)
# The commands whose first argument is a domain (what completion offers there).
DOMAIN_FIRST: tuple[str, ...] = (*VERBS, "set-memory", "set-vcpus")
