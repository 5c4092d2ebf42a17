"""Shell completion for ``virtmonctl``: ``virtmonctl completion bash|zsh`` prints the script; the
script asks ``virtmonctl __complete WORD...`` for the candidates of the last word.

Candidates come from the command table (commands, their options and sub-commands) and, for
operation names, argument names, flag names and domain names, from the daemon. What the daemon
said is cached for a few seconds per socket (``$XDG_CACHE_HOME/virtmonctl``), so a burst of
<Tab>s asks once; a daemon that cannot be reached gives no candidates, never an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from virtmon.ctl.client import ControlClient, Problem, Unreachable
from virtmon.ctl.command import Command, Context
from virtmon.ctl.domains import DOMAIN_FIRST, VERBS
from virtmon.ctl.problems import EX_OK

CACHE_SECONDS = 10.0

BASH = """# bash completion for virtmonctl (virtmonctl completion bash)
_virtmonctl() {
    local IFS=$'\\n'
    COMPREPLY=($(virtmonctl __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
    [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]] && compopt -o nospace
}
complete -F _virtmonctl virtmonctl
"""
# zsh's own: bash's script through bashcompinit fails in zsh (its ${a[@]:1:n} is no zsh), and
# the file is both autoloaded from $fpath (the first <Tab> runs it: it must complete then too)
# and sourced after compinit.
ZSH = """#compdef virtmonctl
# zsh completion for virtmonctl (virtmonctl completion zsh)
_virtmonctl() {
    local -a offered keys others
    offered=(${(f)"$(virtmonctl __complete "${(@)words[2,CURRENT]}" 2>/dev/null)"})
    keys=(${(M)offered:#*=})
    others=(${offered:#*=})
    (( $#keys )) && compadd -S '' -a keys
    (( $#others )) && compadd -a others
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _virtmonctl "$@"
else
    compdef _virtmonctl virtmonctl
fi
"""


class Cache:
    """The daemon's answers for completion, kept for :data:`CACHE_SECONDS` per socket."""

    def __init__(self, socket: str, environ: Mapping[str, str]) -> None:
        base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        key = hashlib.sha256(socket.encode()).hexdigest()[:16]
        self.dir = Path(base) / "virtmonctl" / key
        self.client = ControlClient(socket, timeout=2.0)

    def get(self, name: str, fetch: Callable[[ControlClient], Any]) -> Any:
        """A cached answer, or a fresh one (None if the daemon cannot give it)."""
        path = self.dir / f"{name}.json"
        try:
            if time.time() - path.stat().st_mtime < CACHE_SECONDS:
                return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        try:
            value = fetch(self.client)
        except (Problem, Unreachable, KeyError, TypeError, ValueError):
            return None
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(json.dumps(value), encoding="utf-8")
        except OSError:
            pass  # no cache: the next <Tab> asks again
        return value

    def operations(self) -> list[dict[str, Any]]:
        """``/v1/ops``'s operations."""
        return self.get("ops", lambda c: c.get("/v1/ops")["operations"]) or []

    def domains(self) -> list[str]:
        """The domains' names."""
        return self.get("domains", lambda c: sorted(
            str(d["name"]) for d in c.get("/v1/domains")["domains"])) or []


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's sub-commands by name (none: {})."""
    for action in parser._actions:  # argparse offers no public way to list them
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> list[str]:
    """A parser's long options."""
    return [o for action in parser._actions for o in action.option_strings if o.startswith("--")]


def candidates(top: argparse.ArgumentParser, words: Sequence[str],
               environ: Mapping[str, str]) -> list[str]:
    """What may replace the last of ``words`` (the words after ``virtmonctl``)."""
    *before, current = list(words) or [""]
    socket = top.get_default("socket")
    positional: list[str] = []
    parser = top
    chain: list[str] = []
    skip = False
    taking = ""
    for word in before:
        if skip:
            skip = False
            if taking == "--socket":
                socket = word
            continue
        if word.startswith("-"):
            action = parser._option_string_actions.get(word) or top._option_string_actions.get(
                word)
            skip = action is not None and action.nargs != 0  # the next word is its value
            taking = word
            continue
        children = subcommands(parser)
        if word in children and not positional:
            parser = children[word]
            chain.append(word)
            continue
        positional.append(word)
    cache = Cache(socket, environ)
    if skip and taking == "--domain":
        return _starting(cache.domains(), current)
    if skip:
        return []  # the value of an option: nothing to offer
    if current.startswith("-"):
        return _starting(options(parser), current)
    children = subcommands(parser)
    if children and not positional:
        return _starting(list(children), current)
    command = chain[0] if chain else ""
    if command in ("call", "operations"):
        return _operation_words(cache, positional, current)
    if command == "domain":
        if not positional:
            return _starting([*VERBS, *cache.domains()], current)
        return _starting(cache.domains(), current) if len(positional) == 1 else []
    if command in (*DOMAIN_FIRST, "console") and not positional:
        return _starting(cache.domains(), current)
    if command == "host" and not positional:
        names = [str(o["name"]).removeprefix("host.").replace("_", "-")
                 for o in cache.operations() if str(o["name"]).startswith("host.")]
        return _starting(names, current)
    return []


def _operation_words(cache: Cache, positional: Sequence[str], current: str) -> list[str]:
    """An operation's name, then its ``KEY=`` words, flag names and domain names."""
    ops = {str(o["name"]): o for o in cache.operations()}
    if not positional:
        return _starting(list(ops), current)
    row = ops.get(positional[0])
    if row is None:
        return []
    params = {str(p["name"]): p for p in row.get("params", [])}
    key, sep, value = current.partition("=")
    if not sep:
        given = {w.partition("=")[0] for w in positional[1:]}
        return _starting([f"{name}=" for name in params if name not in given], current)
    param = params.get(key)
    if param is None:
        return []
    if param.get("kind") == "domain":
        return _starting([f"{key}={d}" for d in cache.domains()], current)
    if param.get("kind") == "flags":
        done, _, last = value.rpartition(",")
        head = f"{key}={done}," if done else f"{key}="
        return [head + c for c in param.get("choices", []) if str(c).startswith(last)]
    return _starting([f"{key}={c}" for c in param.get("choices", [])], current)


def _starting(words: Sequence[str], prefix: str) -> list[str]:
    return [w for w in words if w.startswith(prefix)]


def script(shell: str) -> str:
    """The completion script for ``shell``."""
    return BASH if shell == "bash" else ZSH


def args_completion(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh"),
                        help="e.g. virtmonctl completion bash > "
                             "/etc/bash_completion.d/virtmonctl")


def cmd_completion(ctx: Context, args: argparse.Namespace) -> int:
    """``completion bash|zsh``: the shell's completion script."""
    ctx.out.write(script(args.shell))
    return EX_OK


COMMANDS: tuple[Command, ...] = (
    Command("completion", "the completion script for bash or zsh", cmd_completion,
            args_completion),
)
