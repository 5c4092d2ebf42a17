"""The admin helper process on its own: JSON lines in, JSON lines out, never a crash."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import ADMIN_URI, BAD_SOCKET_URI, ROOT

# The helper's side of the admin package: what runs in the process that must never load
# libvirt-python (virtmon/admin/__init__.py).
HELPER_SIDE = ("protocol", "binding", "helper")


def talk(lines: list[str], uri: str = ADMIN_URI) -> list[dict[str, Any]]:
    """Feed request lines to a fresh helper and return every line it wrote."""
    done = subprocess.run(
        [sys.executable, "-m", "virtmon.admin.helper", "--uri", uri],
        input="".join(line + "\n" for line in lines), capture_output=True, text=True,
        timeout=60, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of its code."""
    tree = ast.parse(path.read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    return modules - {"__future__"}


@pytest.mark.parametrize("name", HELPER_SIDE)
def test_helper_side_imports_only_the_standard_library_and_each_other(name: str) -> None:
    """protocol, binding and helper import the standard library and one another, nothing else
    (no libvirt, no anyio, no other virtmon module)."""
    allowed = {f"virtmon.admin.{other}" for other in HELPER_SIDE}
    modules = imported_modules(ROOT / "virtmon" / "admin" / f"{name}.py")
    assert {m for m in modules if m not in allowed
            and m.split(".")[0] not in sys.stdlib_module_names} == set()


def test_running_the_helper_loads_only_the_standard_library() -> None:
    """Importing the helper the way `-m` does loads, beyond what Python loaded at start-up, the
    standard library and the helper's side of virtmon.admin only."""
    code = ("import sys; before = set(sys.modules); import virtmon.admin.helper; "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m.split('.')[0] not in sys.stdlib_module_names))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    assert done.stdout.strip() == repr(sorted(
        ["virtmon", "virtmon.admin", *(f"virtmon.admin.{name}" for name in HELPER_SIDE)]))


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
def test_round_trips_against_libvirtd() -> None:
    """server_list, lookup, versions and URI answer with the daemon's real values, ids echoed."""
    out = talk([
        json.dumps({"id": 1, "op": "server_list"}),
        json.dumps({"id": "two", "op": "server_lookup", "args": {"server": "libvirtd"}}),
        json.dumps({"id": 3, "op": "connect_get_lib_version"}),
        json.dumps({"id": 4, "op": "connect_get_uri"}),
        json.dumps({"id": 5, "op": "connect_is_alive"}),
        json.dumps({"id": 6, "op": "get_version"}),
    ])
    assert out[0]["event"] == "helper_ready"
    replies = {reply["id"]: reply for reply in out[1:]}
    assert all(reply["ok"] for reply in replies.values()), replies
    assert {"libvirtd", "admin"} <= set(replies[1]["result"])
    assert replies["two"]["result"] == {"name": "libvirtd"}
    assert replies[3]["result"] >= 9_000_000
    assert replies[4]["result"] == ADMIN_URI
    assert replies[5]["result"] is True
    assert replies[6]["result"] >= 9_000_000


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
def test_bad_input_gets_error_replies() -> None:
    """Malformed JSON, unknown op, unknown server/client and wrong types get errors; it goes on."""
    out = talk([
        "this is not json",
        "[1, 2]",
        json.dumps({"id": 1, "op": "no_such_op"}),
        json.dumps({"id": 2, "op": "threadpool_get", "args": {"server": "no-such-server"}}),
        json.dumps({"id": 3, "op": "threadpool_set",
                    "args": {"server": "libvirtd", "params": {"maxWorkers": "many"}}}),
        json.dumps({"id": 4, "op": "threadpool_set",
                    "args": {"server": "libvirtd", "params": {"maxWorkers": -1}}}),
        json.dumps({"id": 5, "op": "client_info", "args": {"server": "libvirtd", "id": 987654}}),
        json.dumps({"id": 6, "op": "threadpool_get", "args": {"server": 7}}),
        json.dumps({"id": 7, "op": "threadpool_get", "args": "libvirtd"}),
        json.dumps({"id": 8, "op": "threadpool_set",
                    "args": {"server": "libvirtd", "params": {"jobQueueDepth": 3}}}),
        json.dumps({"id": 9, "op": "server_list"}),
    ])
    replies = out[1:]
    assert [r["ok"] for r in replies] == [False] * 10 + [True]
    codes = {r["id"]: r["error"]["code"] for r in replies if not r["ok"] and r["id"] is not None}
    assert [r["id"] for r in replies[:2]] == [None, None]
    assert codes[1] == 3  # VIR_ERR_NO_SUPPORT
    assert codes[2] == 95  # VIR_ERR_NO_SERVER
    assert codes[3] == codes[4] == codes[6] == codes[7] == 8  # VIR_ERR_INVALID_ARG
    assert codes[5] == 96  # VIR_ERR_NO_CLIENT
    assert codes[8] > 0 and "jobQueueDepth" in replies[9]["error"]["message"]


def test_unreachable_socket_is_a_clear_error_reply() -> None:
    """A nonexistent admin socket gives libvirt's 'Failed to connect socket' error, per request."""
    requests = [json.dumps({"id": 1, "op": "snapshot"}), json.dumps({"id": 2, "op": "server_list"})]
    out = talk(requests, uri=BAD_SOCKET_URI)
    assert [r["ok"] for r in out[1:]] == [False, False]
    assert out[1]["error"]["code"] == 38  # VIR_ERR_SYSTEM_ERROR
    assert "Failed to connect socket" in out[1]["error"]["message"]


def test_library_version_needs_no_daemon(tmp_path: Path) -> None:
    """get_version answers from libvirt-admin.so alone, with no daemon behind the URI."""
    out = talk([json.dumps({"id": 1, "op": "get_version"})], uri=f"libvirtd:///system?socket={tmp_path}/none")
    assert out[1] == {"id": 1, "ok": True, "result": out[0]["version"]}


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
def test_client_ops_and_explicit_close_reopen() -> None:
    """client_list/lookup/info find the helper itself; connect_close then a request reopens."""
    out = talk([
        json.dumps({"id": 1, "op": "client_list", "args": {"server": "admin", "info": True}}),
        json.dumps({"id": 2, "op": "connect_close"}),
        json.dumps({"id": 3, "op": "connect_is_alive"}),
        json.dumps({"id": 4, "op": "snapshot", "args": {"client_info": False}}),
        json.dumps({"id": 5, "op": "connect_is_alive"}),
    ])
    replies = {r["id"]: r for r in out if "id" in r}
    me = [c for c in replies[1]["result"] if c["info"]["unix_process_id"] == out[0]["pid"]]
    assert len(me) == 1 and me[0]["transport"] == "unix"
    assert replies[2]["ok"] and replies[3]["result"] is False and replies[5]["result"] is True
    assert all("info" not in c for s in replies[4]["result"]["servers"].values()
               for c in s["clients"])
    assert {"event": "admin_connection_restored", "uri": ADMIN_URI} in out
    client_id = me[0]["id"]
    lookup = talk([
        json.dumps({"id": 1, "op": "client_lookup", "args": {"server": "admin", "id": client_id}}),
    ])
    assert lookup[1]["ok"] is False and lookup[1]["error"]["code"] == 96  # that helper is gone
