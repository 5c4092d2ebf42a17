"""One operation's help for ``virtmonctl operations OP`` and ``virtmonctl call OP --help``.

Written from the daemon's operation table as ``GET /v1/ops`` serves it (virtmonctl never imports
the table: it would bring libvirt along), so it always describes the daemon being talked to:
the arguments with their types, required or optional with their defaults, flag and value
names, the role it needs and the libvirt functions it calls. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What a parameter kind (virtmon.control.operations.model.KINDS) is, in the command line's
# words: the placeholder after KEY= and a description of what may go there.
KIND_WORDS: dict[str, tuple[str, str]] = {
    "string": ("TEXT", "text"),
    "xml": ("XML", "an XML document; @FILE reads it from a file, @- from stdin"),
    "integer": ("N", "an integer"),
    "unsigned": ("N", "an integer, 0 or more"),
    "number": ("X", "a number"),
    "boolean": ("true|false", "true or false"),
    "typed": ("NAME=VALUE", "typed parameters: KEY.NAME=VALUE, once per name"),
    "strings": ("A,B", "a list of text, comma-separated"),
    "integers": ("1,2", "a list of integers, comma-separated"),
    "domain": ("NAME|UUID|ID", "a domain's name, UUID or id"),
    "interface": ("NAME|MAC", "a host interface's name or MAC address"),
    "flags": ("A,B", "flag names, comma-separated, or a number"),
    "enum": ("NAME", "one name, or a number"),
}


def placeholder(param: Mapping[str, Any]) -> str:
    """What goes after ``KEY=`` for this parameter of ``/v1/ops``."""
    return KIND_WORDS.get(str(param.get("kind")), ("VALUE", ""))[0]


def describe(param: Mapping[str, Any]) -> str:
    """The parameter's type in words, its default, and its own help."""
    kind = str(param.get("kind"))
    words = [KIND_WORDS.get(kind, ("", kind))[1]]
    default = param.get("default")
    if param.get("required"):
        words.append("required")
    elif default is None or default == "":
        words.append("optional")
    else:
        words.append(f"optional, default {default}")
    if param.get("help"):
        words.append(str(param["help"]))
    return "; ".join(w for w in words if w)


def operation_help(row: Mapping[str, Any]) -> list[str]:
    """The lines of one operation's help."""
    name = str(row.get("name"))
    params = list(row.get("params", []))
    usage = " ".join(f"{p['name']}={placeholder(p)}" if p.get("required")
                     else f"[{p['name']}={placeholder(p)}]" for p in params)
    lines = [f"{name}: {row.get('summary', '')}", "",
             f"usage: virtmonctl call {name} {usage}".rstrip(), ""]
    role = f"role: {row.get('role')}"
    if row.get("write_when"):
        role += f" (write when {row['write_when']})"
    lines.append(role)
    functions = row.get("functions") or []
    lines.append(f"calls: {', '.join(functions) if functions else 'virtmon itself (no libvirt)'}")
    if not params:
        lines += ["", "arguments: none"]
        return lines
    lines += ["", "arguments:"]
    width = max(len(str(p["name"])) for p in params)
    for param in params:
        lines.append(f"  {str(param['name']).ljust(width)}  {describe(param)}")
        choices = param.get("choices") or []
        if param.get("kind") == "flags":
            known = ", ".join(choices) if choices else "none by name: give a number (0: none)"
            lines.append(f"  {' ' * width}  flag names: {known}")
        elif choices:
            lines.append(f"  {' ' * width}  names: {', '.join(choices)}")
    return lines
