"""What ``virtmonctl`` makes of the daemon's problem documents: an exit code and a message in
the command line's words, with the fix.

The exit codes are a contract (``virtmonctl --help``, README, docs/control-api.md):

- 0: done;
- 1: the operation failed: libvirt or virtmon said no (a libvirt error, a refused write, a
  missing object, a limit, the daemon's own fault);
- 2: the caller's mistake: the command line, an unknown operation or argument, a value of the
  wrong type, a repeated key, an unknown flag name, an event filter the daemon refused;
- 3: virtmon cannot be reached (no socket, refused, permission denied, the daemon went away);
- 130: interrupted (Ctrl-C).

The daemon says which is which: a problem that carries ``libvirt_code`` is libvirt's answer (1);
a 400, 405, 406 or 413 without one is about the request itself (2); a 404 without one is an
unknown operation only where the caller can tell (:func:`call_problem`), else a missing object
(1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from virtmon.ctl.client import Problem
from virtmon.ctl.help import placeholder

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 2
EX_UNREACHABLE = 3  # not sysexits' EX_UNAVAILABLE (69), which the daemon's check-config uses
EX_INTERRUPTED = 130  # 128 + SIGINT

# Statuses that refuse the request as it was written, whatever it asked for.
REQUEST_STATUSES = frozenset({400, 405, 406, 413})
# Problem titles that are HTTP's words, not the operation's: left out of messages.
HTTP_TITLES = frozenset({
    "Bad Request", "Not Found", "Forbidden", "Method Not Allowed", "Not Acceptable",
    "Request Timeout", "Payload Too Large", "Request Entity Too Large", "Too Many Requests",
    "Internal Server Error", "Not Implemented", "Service Unavailable", "Gateway Timeout",
    "Unprocessable Entity", "Conflict",
})


class CtlError(Exception):
    """A command that ends with a message on stderr and ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CtlError):
    """The caller's mistake (exit 2): argparse accepted the line, but it makes no sense."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EX_USAGE)


class Failed(CtlError):
    """The operation failed: libvirt or virtmon said no (exit 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EX_FAILED)


def suggestion(word: str, known: Iterable[str]) -> str:
    """``: did you mean 'X'?`` for the closest known word, or nothing."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f": did you mean {close[0]!r}?" if close else ""


def then(text: str, see: str) -> str:
    """``text`` and where to look next: after a question a space, else a semicolon."""
    return f"{text} {see}" if text.endswith("?") else f"{text}; {see}"


def is_request_mistake(problem: Problem) -> bool:
    """Whether the daemon refused the request as written (not what it asked for)."""
    return "libvirt_code" not in problem.document and problem.status in REQUEST_STATUSES


def text_of(problem: Problem) -> str:
    """The problem's own words: its detail, after the title unless that is only HTTP's."""
    if problem.title in HTTP_TITLES or not problem.title:
        return problem.detail or problem.title
    return f"{problem.title}: {problem.detail}" if problem.detail else problem.title


def write_refusal(problem: Problem, operation: str,
                  row: Mapping[str, Any] | None = None) -> str:
    """A 403 said in full: what was refused, why, and how writes are turned on."""
    doc = problem.document
    needs = doc.get("needs")
    if isinstance(needs, str):
        role = doc.get("role", "none")
        return (f"{operation} needs the {needs} role and you have {role}: an administrator "
                f"grants it with control.{needs}_uids or control.{needs}_groups in virtmon's "
                "configuration (writes also need control.allow_write = true; docs/security.md)")
    if "allow_write" in problem.detail:
        # A read that needs a write only with some arguments (secure XML) says which.
        what = (f"{operation} with {row['write_when']} needs a write"
                if row is not None and row.get("role") == "read" and row.get("write_when")
                else f"{operation} changes state")
        return (f"{what}, and this daemon does not allow writes: set control.allow_write = "
                "true in its configuration and restart it (make run ALLOW_WRITE=1 for the demo; "
                "callers also need the write role: control.write_uids or control.write_groups; "
                "root has it)")
    return text_of(problem)


def general(problem: Problem) -> CtlError:
    """Any problem, where nothing more is known of the request: exit 2 or 1."""
    if problem.status == 403:
        return Failed(write_refusal(problem, "the request"))
    if is_request_mistake(problem):
        return UsageError(text_of(problem))
    return Failed(text_of(problem))


def _operation_row(ops: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((o for o in ops if o.get("name") == name), None)


def call_problem(problem: Problem, operation: str,
                 ops: Sequence[Mapping[str, Any]] | None) -> CtlError:
    """A problem answered to ``call OPERATION``, in the command line's words.

    ``ops`` is ``/v1/ops``'s listing (None: it could not be read): it tells an unknown operation
    from a missing object and gives argument names and flag names for "did you mean"."""
    see = f"see `virtmonctl operations {operation}`"
    doc = problem.document
    row = _operation_row(ops, operation) if ops is not None else None
    if problem.status == 404 and "libvirt_code" not in doc and ops is not None and row is None:
        names = [str(o.get("name")) for o in ops]
        return UsageError(then(f"unknown operation {operation!r}"
                               f"{suggestion(operation, names)}", "see `virtmonctl operations`"))
    if problem.status == 403:
        return Failed(write_refusal(problem, operation, row))
    key = doc.get("key")
    if problem.status == 400 and isinstance(key, str) and "libvirt_code" not in doc:
        return UsageError(argument_message(problem, operation, key, row, see))
    return general(problem)


def argument_message(problem: Problem, operation: str, key: str,
                     row: Mapping[str, Any] | None, see: str) -> str:
    """A 400 naming the argument ``key``: unknown, required, a bad value or an unknown flag."""
    params = {str(p.get("name")): p for p in (row or {}).get("params", [])}
    detail = problem.detail.removeprefix(f"{key}: ")
    if detail.startswith("unknown argument"):
        hint = suggestion(key, params) or f" ({operation} takes {', '.join(params) or 'none'})"
        return then(f"unknown argument {key!r} for {operation}{hint}", see)
    if detail == "required":
        wanted = placeholder(params[key]) if key in params else "..."
        return f"{operation} needs {key}={wanted}; {see}"
    param = params.get(key)
    if detail.startswith("unknown flag") and param is not None:
        choices = [str(c) for c in param.get("choices", [])]
        flag = detail.split("'")[1] if detail.count("'") >= 2 else ""
        if not choices:
            return (f"{key} of {operation} has no flag names: give a number (0 for none); "
                    f"{see}")
        return (f"unknown flag {flag!r} for {key} of {operation}{suggestion(flag, choices)} "
                f"(known: {', '.join(choices)}); {see}")
    if detail.startswith("unknown value") and param is not None:
        choices = [str(c) for c in param.get("choices", [])]
        value = detail.split("'")[1] if detail.count("'") >= 2 else ""
        return (f"unknown value {value!r} for {key} of {operation}"
                f"{suggestion(value, choices)} (known: {', '.join(choices)}); {see}")
    return f"bad {key} for {operation}: {detail}; {see}"
