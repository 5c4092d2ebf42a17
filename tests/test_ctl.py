"""virtmonctl against a real daemon on libvirt's in-process test driver (``test:///default``).

The daemon runs on the test's event loop, so ``main()`` (blocking) runs in a worker thread. The test
driver's default instance is shared within the process: the test's own read-write connection
changes the domains the daemon watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import http.server
import io
import json
import os
import shlex
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import daemon_config, running_daemon
from virtmon.app import Daemon
from virtmon.control.operations.domain_write import MIGRATIONS
from virtmon.ctl import cli, problems
from virtmon.ctl import format as ctl_format
from virtmon.ctl.client import OUTLAST_A_REQUEST

URI = "test:///default"
ROOT = Path(__file__).resolve().parent.parent
DOMAIN_XML = """<domain type='test'><name>{name}</name><memory>8192</memory>
<os><type>hvm</type></os></domain>"""


@dataclass(frozen=True)
class Run:
    """What one ``virtmonctl`` invocation did."""

    code: int
    out: str
    err: str

    def lines(self) -> list[str]:
        """stdout's lines."""
        return self.out.splitlines()

    def json_lines(self) -> list[dict[str, Any]]:
        """stdout as NDJSON."""
        return [json.loads(line) for line in self.lines()]


def run_ctl(sock: Path, *argv: str) -> Run:
    """``virtmonctl --socket SOCK ARGV...`` in this thread, with captured output."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--socket", str(sock), *argv], stdout=out, stderr=err, environ={})
    return Run(code, out.getvalue(), err.getvalue())


async def ctl_async(sock: Path, *argv: str) -> Run:
    """:func:`run_ctl` in a worker thread (the loop thread serves the daemon)."""
    return await asyncio.to_thread(run_ctl, sock, *argv)


@dataclass(frozen=True)
class Env:
    """A running daemon and its control socket."""

    daemon: Daemon
    sock: Path


@pytest.fixture
async def env(short_tmp: Path) -> AsyncIterator[Env]:
    """A daemon on the test driver for one test."""
    cfg = daemon_config(short_tmp, libvirt={"uri": URI})
    async with running_daemon(cfg) as daemon:
        yield Env(daemon, short_tmp / "control.sock")


def cycle_domain(name: str) -> None:
    """Define, start, destroy and undefine a domain on the shared test driver (blocking)."""
    conn = libvirt.open(URI)
    try:
        dom = conn.defineXML(DOMAIN_XML.format(name=name))
        dom.create()
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()


def fresh_name() -> str:
    """A domain name no other test uses."""
    return f"ctl-{uuid.uuid4().hex[:8]}"


async def journaled(
    sock: Path, name: str, count: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """The domain's journaled events, once there are at least ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        run = await ctl_async(sock, "events", "--since", "0", "--domain", name, "--json")
        assert run.code == 0, run.err
        if len(run.lines()) >= count:
            return run.json_lines()
        assert time.monotonic() < deadline, f"only {run.out!r} journaled for {name}"
        await asyncio.sleep(0.05)


async def wait_for_subscribers(daemon: Daemon, count: int, timeout: float = 10.0) -> None:
    """Until the bus has ``count`` live subscribers (a follower's request has reached it)."""
    deadline = time.monotonic() + timeout
    while len(daemon.bus._subscriptions) < count:  # no public count yet
        assert time.monotonic() < deadline, "the follower never subscribed"
        await asyncio.sleep(0.01)


async def test_status_shows_connected(env: Env) -> None:
    """`status` prints the libvirt connection state (connected) and its URI."""
    run = await ctl_async(env.sock, "status")
    assert run.code == 0, run.err
    state = next(line for line in run.lines() if line.startswith("libvirt.state "))
    assert state.split() == ["libvirt.state", "connected"]
    assert any(line.split() == ["libvirt.uri", URI] for line in run.lines())


async def test_status_json_is_the_server_document(env: Env) -> None:
    """`--json status` prints the server's status document."""
    run = await ctl_async(env.sock, "--json", "status")
    assert run.code == 0, run.err
    assert json.loads(run.out)["libvirt"]["state"] == "connected"


async def test_domains_table_lists_the_test_domain(env: Env) -> None:
    """`domains` prints a table with the test driver's domain `test`, running, persistent."""
    run = await ctl_async(env.sock, "domains")
    assert run.code == 0, run.err
    header, *rows = run.lines()
    assert header.split() == ["NAME", "STATE", "ID", "PERSISTENT", "UUID"]
    test_row = next(row.split() for row in rows if row.split()[0] == "test")
    assert test_row[1] == "running" and test_row[3] == "yes"
    uuid.UUID(test_row[4])


async def test_domain_lookup_by_name_uuid_and_id(env: Env) -> None:
    """`domain` finds the same domain by name, by UUID and by id (`domain X --json` too)."""
    by_name = await ctl_async(env.sock, "domain", "test", "--json")
    assert by_name.code == 0, by_name.err
    doc = json.loads(by_name.out)
    assert doc["name"] == "test"
    for key in (doc["uuid"], str(doc["id"])):
        run = await ctl_async(env.sock, "--json", "domain", key)
        assert run.code == 0, run.err
        assert json.loads(run.out) == doc
    human = await ctl_async(env.sock, "domain", doc["uuid"])
    assert any(line.split() == ["name", "test"] for line in human.lines())


async def test_unknown_domain_exits_1_with_the_daemons_words(env: Env) -> None:
    """An unknown domain is libvirt's "no domain": its detail on stderr without HTTP's title
    ("Not Found"), exit 1 (the operation failed, not a mistake in the command line)."""
    run = await ctl_async(env.sock, "domain", "no-such-domain")
    assert run.code == problems.EX_FAILED
    assert run.out == ""
    assert run.err == "virtmonctl: no domain named, with UUID or id 'no-such-domain'\n"


# Each mistake in a `call` line, and the message that names it with the fix (exit 2).
CALL_MISTAKES = (
    (("call", "domain.info", "dom=test"),
     "unknown argument 'dom' for domain.info: did you mean 'domain'? "
     "see `virtmonctl operations domain.info`"),
    (("call", "domain.info"), "domain.info needs domain=NAME|UUID|ID; "
                              "see `virtmonctl operations domain.info`"),
    (("call", "domain.inf", "domain=test"),
     "unknown operation 'domain.inf': did you mean 'domain.info'? see `virtmonctl operations`"),
    (("host", "capabilites"), "unknown operation 'host.capabilites': did you mean "
                              "'host.capabilities'? see `virtmonctl operations`"),
    (("call", "domain.set_memory", "domain=test", "memory_kib=lots"),
     "bad memory_kib for domain.set_memory: must be an integer, not 'lots'; "
     "see `virtmonctl operations domain.set_memory`"),
    (("call", "domain.xml", "domain=test", "flags=inactiv"),
     "unknown flag 'inactiv' for flags of domain.xml: did you mean 'inactive'? (known: "
     "inactive, migratable, secure, update_cpu); see `virtmonctl operations domain.xml`"),
    (("call", "domain.state", "domain=test", "flags=abc"),
     "flags of domain.state has no flag names: give a number (0 for none); "
     "see `virtmonctl operations domain.state`"),
    (("call", "domain.info", "domain=test", "domain=other"),
     "domain given twice ('domain=test' and 'domain=other'): give it once"),
)


async def test_call_mistakes_exit_2_with_the_fix(env: Env) -> None:
    """An unknown argument, operation or flag name, a missing argument, a wrong type and a
    repeated key each exit 2 with a message in the command line's words and the fix."""
    for argv, message in CALL_MISTAKES:
        run = await ctl_async(env.sock, *argv)
        assert (run.code, run.out, run.err) == (
            problems.EX_USAGE, "", f"virtmonctl: {message}\n"), argv


async def test_a_refused_write_exits_1_and_says_how_to_allow_writes(env: Env) -> None:
    """A write on a daemon with control.allow_write off is "the operation said no" (exit 1),
    and the message names the setting and the role that allow it."""
    run = await ctl_async(env.sock, "call", "domain.suspend", "domain=test")
    assert run.code == problems.EX_FAILED
    assert run.err == (
        "virtmonctl: domain.suspend changes state, and this daemon does not allow writes: set "
        "control.allow_write = true in its configuration and restart it (make run "
        "ALLOW_WRITE=1 for the demo; callers also need the write role: control.write_uids or "
        "control.write_groups; root has it)\n")


async def test_one_operations_help_from_the_daemons_table(env: Env) -> None:
    """`operations domain.xml` and `call domain xml --help` print the same help: usage, role
    with its write condition, the libvirt function, each argument's type, required or default,
    and the flag names; an operation without flag names says to give a number."""
    run = await ctl_async(env.sock, "operations", "domain.xml")
    assert run.code == problems.EX_OK, run.err
    assert run.lines() == [
        "domain.xml: The domain's XML description",
        "",
        "usage: virtmonctl call domain.xml domain=NAME|UUID|ID [flags=A,B]",
        "",
        "role: read (write when flags is or includes secure or migratable)",
        "calls: virDomainGetXMLDesc",
        "",
        "arguments:",
        "  domain  a domain's name, UUID or id; required",
        "  flags   flag names, comma-separated, or a number; optional, default 0",
        "          flag names: inactive, migratable, secure, update_cpu",
    ]
    assert await ctl_async(env.sock, "call", "domain", "xml", "--help") == run
    state = await ctl_async(env.sock, "operations", "domain.state")
    assert state.lines()[-1].split(":", 1)[1].strip() == "none by name: give a number (0: none)"
    unknown = await ctl_async(env.sock, "operations", "domain.screenshoot")
    assert (unknown.code, unknown.err) == (
        problems.EX_USAGE, "virtmonctl: unknown operation 'domain.screenshoot': did you mean "
                      "'domain.screenshot'? see `virtmonctl operations`\n")


async def test_operations_by_area_glob_and_role(env: Env) -> None:
    """`operations interface` lists only interface.*, `operations '*memory*' --role write` only
    the write operations whose name matches; --json filters alike."""
    area = await ctl_async(env.sock, "operations", "interface")
    assert area.code == problems.EX_OK, area.err
    names = [line.split()[0] for line in area.lines()[1:]]
    assert names and all(n.startswith("interface.") for n in names)
    assert "interface.list" in names
    glob = await ctl_async(env.sock, "--json", "operations", "*memory*", "--role", "write")
    ops = json.loads(glob.out)["operations"]
    assert ops and all("memory" in o["name"] and o["role"] == "write" for o in ops)
    assert "domain.set_memory" in {o["name"] for o in ops}


def test_call_help_without_an_operation_is_the_commands_help(short_tmp: Path) -> None:
    """`call --help` needs no daemon: the command's own help, which says where OP's is."""
    run = run_ctl(short_tmp / "absent.sock", "call", "--help")
    assert run.code == problems.EX_OK
    assert run.out.startswith("usage: virtmonctl call")
    assert "`virtmonctl call OPERATION --help`" in run.out


async def test_a_list_of_objects_is_a_table_with_units(env: Env) -> None:
    """`call domain.vcpus` prints a table (no Python reprs), CPU time with a unit and its
    header without the unit suffix; --json keeps the exact nanoseconds."""
    run = await ctl_async(env.sock, "call", "domain.vcpus", "domain=test")
    assert run.code == problems.EX_OK, run.err
    header, *rows = run.lines()
    assert header.split() == ["NUMBER", "STATE", "CPU_TIME", "CPU", "AFFINITY"]
    assert rows and "{" not in run.out
    exact = json.loads((await ctl_async(env.sock, "--json", "call", "domain.vcpus",
                                        "domain=test")).out)["vcpus"]
    assert [row.split()[0] for row in rows] == [str(v["number"]) for v in exact]
    assert isinstance(exact[0]["cpu_time_ns"], int)
    assert rows[0].split()[2][-1] in "smhd"  # 2d 1h, 3h 20m, 15 s ...


async def test_domain_memory_in_human_units_and_exact_under_json(env: Env) -> None:
    """`domain test --fresh` shows memory in GiB/MiB under a key without `_kib`; --json has
    the KiB."""
    run = await ctl_async(env.sock, "domain", "test", "--fresh")
    assert run.code == problems.EX_OK, run.err
    exact = json.loads((await ctl_async(env.sock, "domain", "test", "--fresh", "--json")).out)
    shown = dict(line.split(None, 1) for line in run.lines())
    assert shown["max_memory"] == ctl_format.human_bytes(exact["max_memory_kib"] * 1024)
    assert shown["max_memory"].endswith(("KiB", "MiB", "GiB"))
    assert "max_memory_kib" not in shown


async def test_an_inactive_domain_shows_its_id_as_a_dash(env: Env) -> None:
    """A defined, shut-off domain's id (-1 for libvirt) is `-` in `domains`, as virsh shows."""
    name = fresh_name()
    conn = await asyncio.to_thread(libvirt.open, URI)
    dom = await asyncio.to_thread(conn.defineXML, DOMAIN_XML.format(name=name))
    try:
        await journaled(env.sock, name, 1)
        run = await ctl_async(env.sock, "domains")
        row = next(line.split() for line in run.lines() if line.split()[0] == name)
        assert row[1:3] == ["shutoff", "-"]
    finally:
        await asyncio.to_thread(dom.undefine)
        await asyncio.to_thread(conn.close)


async def test_status_with_units_times_ago_and_event_kinds_by_name(env: Env) -> None:
    """`status` shows the interval with its unit, start time with how long ago, and the
    registered event ids by kind name; --json keeps the numbers."""
    run = await ctl_async(env.sock, "status")
    shown = dict(line.split(None, 1) for line in run.lines())
    exact = json.loads((await ctl_async(env.sock, "--json", "status")).out)
    assert shown["collection.interval"] == "1 s" and exact["collection"]["interval"] == 1.0
    assert shown["started_at"].endswith("s ago)")
    ids = exact["libvirt"]["event_ids"]
    assert shown["libvirt.event_ids"] == (
        f"{len(ids)}: " + ", ".join(ctl_format.event_kind(i) for i in ids))
    assert shown["libvirt.event_ids"].startswith(f"{len(ids)}: lifecycle, reboot, ")


def test_the_event_kind_table_is_the_catalogs() -> None:
    """virtmonctl's names of event ids (it cannot import libvirt) are the catalog's."""
    from virtmon.events.catalog import domain_event_ids, kind_name

    assert {i: ctl_format.event_kind(i) for i in domain_event_ids()} == {
        i: kind_name(i) for i in domain_event_ids()}


def test_units_and_relative_times() -> None:
    """Bytes in binary units, durations with units, times as how long ago or to come."""
    assert [ctl_format.human_bytes(n) for n in (512, 1536, 8 << 20, 3 << 30)] == [
        "512 B", "1.5 KiB", "8 MiB", "3 GiB"]
    assert [ctl_format.human_seconds(s) for s in (0.00085, 0.00118397, 15, 125, 7260)] == [
        "850 µs", "1.18 ms", "15 s", "2m 5s", "2h 1m"]
    assert [ctl_format.ago(t, now=1000.0) for t in (895.0, 700.0, 1020.0)] == [
        "105s ago", "5m ago", "in 20s"]


async def test_events_n_gives_the_newest_and_follows_on(env: Env) -> None:
    """`events -n 2 --domain X` prints X's newest two events, `-n 1` the journal's last;
    `-n 1 --follow` prints the newest, then a live one."""
    name = fresh_name()
    await asyncio.to_thread(cycle_domain, name)
    events = await journaled(env.sock, name, 4)
    two = await ctl_async(env.sock, "events", "-n", "2", "--domain", name, "--json")
    assert [e["seq"] for e in two.json_lines()] == [e["seq"] for e in events[-2:]]
    last = await ctl_async(env.sock, "events", "-n", "1", "--json")
    assert [e["seq"] for e in last.json_lines()] == [env.daemon.journal.last_seq]
    before = len(env.daemon.bus._subscriptions)
    follower = asyncio.ensure_future(ctl_async(
        env.sock, "events", "-n", "1", "--follow", "--domain", name, "--count", "1",
        "--timeout", "30", "--json"))
    await wait_for_subscribers(env.daemon, before + 1)
    await asyncio.to_thread(cycle_domain, name)
    run = await asyncio.wait_for(follower, 30)
    assert run.code == problems.EX_OK, run.err
    old, new = run.json_lines()
    assert old["seq"] == events[-1]["seq"]
    assert (new["name"], new["seq"] > old["seq"]) == ("defined", True)


def test_alone_it_prints_its_help(short_tmp: Path) -> None:
    """`virtmonctl` without a command prints its help (and the exit codes), exit 0."""
    out = io.StringIO()
    assert cli.main([], stdout=out, stderr=io.StringIO(), environ={}) == problems.EX_OK
    assert out.getvalue().startswith("usage: virtmonctl") and "exit codes:" in out.getvalue()


async def test_both_tools_answer_version(env: Env) -> None:
    """`virtmon --version`, `virtmon version`, `virtmonctl --version` and `virtmonctl
    version` (which names the daemon's too) all give the package's version."""
    from virtmon import __version__

    script = Path(sys.executable).parent / "virtmon"
    for argv, expected in ((["--version"], f"virtmon {__version__}\n"),
                           (["version"], f"{__version__}\n")):
        proc = await asyncio.to_thread(subprocess.run, [str(script), *argv],
                                       capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (0, expected), argv
    client = await ctl_async(env.sock, "--version")
    assert (client.code, client.out) == (0, f"virtmonctl {__version__}\n")
    both = await ctl_async(env.sock, "version")
    assert both.lines() == [f"virtmonctl {__version__}",
                            f"virtmon {__version__} (the daemon at {env.sock})"]


async def test_domain_shows_what_dominfo_shows_with_or_without_fresh(env: Env) -> None:
    """`domain test` shows virsh dominfo's fields (OS type, state with its reason by name,
    vCPUs, memory in units, persistent, autostart, managed save), and `--fresh` the same."""
    run = await ctl_async(env.sock, "domain", "test")
    assert run.code == problems.EX_OK, run.err
    shown = dict(line.split(None, 1) for line in run.lines())
    assert list(shown) == ["id", "name", "uuid", "os_type", "state", "vcpus", "cpu_time",
                           "max_memory", "memory", "persistent", "autostart", "managed_save"]
    info = json.loads((await ctl_async(env.sock, "--json", "call", "domain.state",
                                       "domain=test")).out)
    assert shown["state"] == f"{info['state']['name']} ({info['reason']['name']})"
    assert (shown["persistent"], shown["autostart"]) == ("yes", "no")
    fresh = await ctl_async(env.sock, "domain", "test", "--fresh")
    assert [line.split(None, 1)[0] for line in fresh.lines()] == list(shown)


async def test_domains_fresh_asks_libvirt(env: Env) -> None:
    """`domains --fresh` lists libvirt's domains now (it used to be refused), as a table."""
    run = await ctl_async(env.sock, "domains", "--fresh")
    assert run.code == problems.EX_OK, run.err
    test_row = next(line.split() for line in run.lines()[1:] if line.split()[0] == "test")
    assert test_row[1] == "running"
    assert json.loads((await ctl_async(env.sock, "--json", "domains", "--fresh")).out)["fresh"]


async def test_a_mistyped_verb_exits_2_with_a_suggestion(env: Env) -> None:
    """`domain suspnd test` names the verb meant (exit 2)."""
    run = await ctl_async(env.sock, "domain", "suspnd", "test")
    assert run.code == problems.EX_USAGE
    assert run.err.startswith("virtmonctl: unknown verb 'suspnd': did you mean 'suspend'? ")


async def test_set_memory_takes_units(short_tmp: Path) -> None:
    """`set-memory NAME 4M --config` sets 4096 KiB (a bare number is KiB, as virsh setmem);
    a size it cannot read exits 2."""
    cfg = daemon_config(short_tmp, libvirt={"uri": URI}, control={"allow_write": True})
    async with running_daemon(cfg):
        sock = short_tmp / "control.sock"
        name = fresh_name()
        conn = await asyncio.to_thread(libvirt.open, URI)
        dom = await asyncio.to_thread(conn.defineXML, DOMAIN_XML.format(name=name))
        try:
            for size, kib in (("4M", 4096), ("1.5MiB", 1536), ("6000", 6000)):
                run = await ctl_async(sock, "set-memory", name, size, "--config")
                assert run.code == problems.EX_OK, run.err
                assert (await asyncio.to_thread(dom.info))[2] == kib, size
            refused = await ctl_async(sock, "set-memory", name, "lots", "--config")
            assert refused.code == problems.EX_USAGE and "not a size: 'lots'" in refused.err
        finally:
            await asyncio.to_thread(dom.undefine)
            await asyncio.to_thread(conn.close)


def on_a_terminal(sock: Path, *argv: str, columns: int = 80, **env: str) -> tuple[int, str]:
    """``virtmonctl --socket SOCK ARGV`` (the real process) with its stdout on a pseudo
    terminal of ``columns``: its exit code and what the terminal showed (blocking)."""
    main_fd, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "PAGER")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtmon.ctl", "--socket", str(sock), *argv], cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE,
        env={**environ, "TERM": "xterm", **env})
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # EIO: every writer of the terminal has closed it
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    proc.communicate(timeout=30)
    return proc.returncode, shown.decode().replace("\r\n", "\n")


async def test_colour_and_pager_on_a_terminal_only(env: Env) -> None:
    """On a terminal `domains` colours the state and goes through $PAGER; NO_COLOR and
    --no-pager turn them off; into a pipe there is neither."""
    paged = "sed s/^/paged:/"
    code, shown = await asyncio.to_thread(on_a_terminal, env.sock, "domains", PAGER=paged)
    assert code == problems.EX_OK, shown
    row = next(line for line in shown.splitlines() if line.startswith("paged:test "))
    assert "\x1b[32mrunning" in row
    code, plain = await asyncio.to_thread(on_a_terminal, env.sock, "domains", "--no-pager",
                                          PAGER=paged, NO_COLOR="1")
    assert code == problems.EX_OK and plain.startswith("NAME ") and "\x1b[" not in plain
    piped = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "virtmon.ctl", "--socket", str(env.sock),
                         "domains"], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={**os.environ, "TERM": "xterm", "PAGER": paged})
    assert piped.stdout.startswith("NAME ") and "\x1b[" not in piped.stdout


def bash_completes(sock: Path, cache: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` through `virtmonctl completion bash`
    (blocking; bash is essential on Debian)."""
    line = " ".join(shlex.quote(w) for w in ("virtmonctl", *words))
    code = ('source <(virtmonctl completion bash); '
            f'COMP_WORDS=({line}); COMP_CWORD={len(words)}; _virtmonctl; '
            'printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(
        ["bash", "-c", code], capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
             "VIRTMON_SOCKET": str(sock), "XDG_CACHE_HOME": str(cache)})
    return [w for w in proc.stdout.splitlines() if w]


async def test_bash_completes_commands_operations_arguments_flags_and_domains(
        env: Env, short_tmp: Path) -> None:
    """The bash script completes commands, operation names, KEY= words, flag names after a
    comma and domain names from the daemon; without a daemon it offers nothing, quietly."""
    cache = short_tmp / "cache"

    def offers(*words: str) -> list[str]:
        return bash_completes(env.sock, cache, *words)

    assert await asyncio.to_thread(offers, "doma") == ["domains", "domain"]
    assert await asyncio.to_thread(offers, "call", "domain.inf") == ["domain.info"]
    assert await asyncio.to_thread(offers, "call", "domain.xml", "") == ["domain=", "flags="]
    assert await asyncio.to_thread(offers, "call", "domain.xml", "domain=test",
                                   "flags=inactive,s") == ["flags=inactive,secure"]
    assert await asyncio.to_thread(offers, "suspend", "te") == ["test"]
    assert await asyncio.to_thread(offers, "console", "te") == ["test"]
    assert "test" in await asyncio.to_thread(offers, "events", "--domain", "")
    absent = await asyncio.to_thread(bash_completes, short_tmp / "absent.sock",
                                     short_tmp / "cache2", "call", "dom")
    assert absent == []
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["__complete", "--socket", str(short_tmp / "absent.sock"), "call", "dom"],
                    stdout=out, stderr=err, environ={"XDG_CACHE_HOME": str(cache)})
    assert (code, out.getvalue(), err.getvalue()) == (problems.EX_OK, "", "")


async def test_a_write_refused_for_the_callers_role_says_who_grants_it(
        short_tmp: Path) -> None:
    """A read-role caller (a real peer uid, under setpriv) asking for a write on a daemon that
    allows writes: exit 1, and the message names the role and the keys that grant it."""
    from tests.control.peers import unused_ids

    os.chmod(short_tmp, 0o755)
    [reader] = unused_ids(1)
    cfg = daemon_config(short_tmp, libvirt={"uri": URI}, collect={"collectors": {"admin": False}},
                        control={"socket_mode": "0666", "read_uids": [reader],
                                 "allow_write": True})
    async with running_daemon(cfg) as daemon:
        proc = await asyncio.to_thread(
            subprocess.run,
            ["setpriv", f"--reuid={reader}", f"--regid={reader}", "--clear-groups",
             sys.executable, "-m", "virtmon.ctl", "--socket", str(daemon.control_socket),
             "suspend", "test"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")})
    assert proc.returncode == problems.EX_FAILED, proc.stderr
    assert proc.stderr == (
        "virtmonctl: domain.suspend needs the write role and you have read: an administrator "
        "grants it with control.write_uids or control.write_groups in virtmon's configuration "
        "(writes also need control.allow_write = true; docs/security.md)\n")


async def test_tables_fit_an_80_column_terminal_without_a_pager(env: Env) -> None:
    """On an 80-column terminal without a pager, `operations` lines end in … at 80 columns
    (as systemctl's do); --full prints them whole; JSON (openapi's, even without --json) is
    never cut."""
    code, shown = await asyncio.to_thread(on_a_terminal, env.sock, "--no-pager", "operations")
    assert code == problems.EX_OK, shown
    lines = shown.splitlines()
    assert lines[0].split()[:2] == ["OPERATION", "ROLE"]
    assert max(len(line) for line in lines) == 80
    assert any(line.endswith("…") for line in lines)
    code, full = await asyncio.to_thread(on_a_terminal, env.sock, "--no-pager", "operations",
                                         "--full")
    assert max(len(line) for line in full.splitlines()) > 80 and "…" not in full
    code, document = await asyncio.to_thread(on_a_terminal, env.sock, "--no-pager", "openapi")
    assert "/v1/events" in json.loads(document)["paths"]


def test_a_mistyped_command_exits_2_with_a_suggestion(short_tmp: Path) -> None:
    """`virtmonctl domian` names the command it did not know and the one meant (exit 2)."""
    run = run_ctl(short_tmp / "absent.sock", "domian", "test")
    assert run.code == problems.EX_USAGE
    assert run.err.splitlines()[-1] == ("virtmonctl: unknown command 'domian': did you mean "
                                        "'domain'?")


def test_help_states_the_exit_codes() -> None:
    """`virtmonctl --help` ends with the exit-code contract, 0 to 3."""
    out = io.StringIO()
    assert cli.main(["--help"], stdout=out, stderr=io.StringIO(), environ={}) == problems.EX_OK
    codes = out.getvalue().split("exit codes:\n", 1)[1]
    assert [line.split()[0] for line in codes.splitlines() if line[:3].strip().isdigit()] == [
        "0", "1", "2", "3", "130"]


async def test_event_filters_the_daemon_refuses_exit_2(env: Env) -> None:
    """`events --kind lifecycl` suggests the kind meant; `--since abc` and a --since after the
    journal say what is wrong in the command line's words; all exit 2."""
    kind = await ctl_async(env.sock, "events", "--kind", "lifecycl")
    assert (kind.code, kind.err) == (
        problems.EX_USAGE, "virtmonctl: unknown event kind 'lifecycl': did you mean 'lifecycle'?\n")
    since = await ctl_async(env.sock, "events", "--since", "abc")
    assert since.code == problems.EX_USAGE
    assert since.err.splitlines()[-1] == ("virtmonctl events: argument --since: must be a whole "
                                          "number, 0 or more, not 'abc'")


async def test_events_since_0_json_prints_journaled_events(env: Env) -> None:
    """`events --since 0 --json` prints the journaled lifecycle events of a domain, as NDJSON."""
    name = fresh_name()
    await asyncio.to_thread(cycle_domain, name)
    events = await journaled(env.sock, name, 4)
    lifecycle = [e["name"] for e in events if e["kind"] == "lifecycle"]
    assert lifecycle == ["defined", "started", "stopped", "undefined"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    after = await ctl_async(env.sock, "events", "--since", str(seqs[1]), "--domain", name,
                            "--json")
    assert [e["seq"] for e in after.json_lines()] == seqs[2:]


async def test_events_human_format_one_line_per_event(env: Env) -> None:
    """Human `events`: seq, ISO time, domain, kind, name/detail on one line per event."""
    name = fresh_name()
    await asyncio.to_thread(cycle_domain, name)
    events = await journaled(env.sock, name, 4)
    run = await ctl_async(env.sock, "events", "--since", "0", "--domain", name,
                          "--kind", "lifecycle")
    assert run.code == 0, run.err
    assert len(run.lines()) == len(events)
    for line, event in zip(run.lines(), events, strict=True):
        seq, when, domain, kind, what = line.split()
        assert int(seq) == event["seq"] and domain == name and kind == "lifecycle"
        assert what == f"{event['name']}/{event['detail']}"
        assert abs(time.mktime(time.strptime(when[:19], "%Y-%m-%dT%H:%M:%S"))
                   - event["time"]) < 2


async def test_follow_receives_an_event_produced_after_it_started(env: Env) -> None:
    """`events --follow --count 1` prints a live event that happens after it subscribed."""
    name = fresh_name()
    before = len(env.daemon.bus._subscriptions)
    follower = asyncio.ensure_future(ctl_async(
        env.sock, "events", "--follow", "--domain", name, "--count", "1", "--timeout", "30",
        "--json"))
    await wait_for_subscribers(env.daemon, before + 1)
    await asyncio.to_thread(cycle_domain, name)
    run = await asyncio.wait_for(follower, 30)
    assert run.code == 0, run.err
    [event] = run.json_lines()
    assert (event["domain"], event["kind"], event["name"]) == (name, "lifecycle", "defined")


async def test_follow_timeout_ends_quietly(env: Env) -> None:
    """`events --follow --timeout S` with nothing happening stops after S seconds with exit 0."""
    started = time.monotonic()
    # Nothing else would end this follower: it must end by itself (bounded, for a loaded
    # machine; a hung one ends with the daemon at teardown).
    run = await asyncio.wait_for(ctl_async(env.sock, "events", "--follow", "--domain",
                                           fresh_name(), "--timeout", "0.5"), 30)
    assert (run.code, run.out, run.err) == (0, "", "")
    assert time.monotonic() - started > 0.4  # it did wait for S


async def test_follow_reports_a_daemon_that_stops(short_tmp: Path) -> None:
    """A follower whose daemon stops says so, with where to resume, and exits 3 (cannot connect)."""
    async with running_daemon(daemon_config(short_tmp, libvirt={"uri": URI})) as daemon:
        before = len(daemon.bus._subscriptions)
        follower = asyncio.ensure_future(ctl_async(
            short_tmp / "control.sock", "events", "--follow", "--since", "0", "--timeout", "30"))
        await wait_for_subscribers(daemon, before + 1)
    run = await asyncio.wait_for(follower, 30)
    assert run.code == problems.EX_UNREACHABLE
    last = int(run.lines()[-1].split()[0]) if run.lines() else 0
    assert run.err.startswith("virtmonctl: the daemon ended the stream")
    assert run.err.endswith(f"resume with --since {last}\n")


async def test_openapi_prints_the_document(env: Env) -> None:
    """`openapi` prints the OpenAPI document with the paths the server serves."""
    run = await ctl_async(env.sock, "openapi")
    assert run.code == 0, run.err
    assert "/v1/events" in json.loads(run.out)["paths"]


def test_missing_socket_exits_3(short_tmp: Path) -> None:
    """No socket at the path: a message naming it on stderr and exit 3 (cannot connect)."""
    sock = short_tmp / "absent.sock"
    run = run_ctl(sock, "status")
    assert run.code == problems.EX_UNREACHABLE
    assert run.err.startswith(f"virtmonctl: cannot reach virtmon at {sock}: no such socket")


def test_a_socket_path_that_is_no_socket_says_so(short_tmp: Path) -> None:
    """--socket naming a file or a directory: "not a socket but a file/a directory", exit 3."""
    a_file = short_tmp / "virtmon.toml"
    a_file.write_text("")
    for path, what in ((a_file, "a file"), (short_tmp, "a directory")):
        run = run_ctl(path, "status")
        assert run.code == problems.EX_UNREACHABLE
        assert run.err.startswith(f"virtmonctl: cannot reach virtmon at {path}: not a socket "
                                  f"but {what} ")


def test_socket_from_the_environment(short_tmp: Path) -> None:
    """Without --socket, VIRTMON_SOCKET chooses the socket."""
    err = io.StringIO()
    sock = short_tmp / "from-env.sock"
    code = cli.main(["status"], stdout=io.StringIO(), stderr=err,
                    environ={"VIRTMON_SOCKET": str(sock)})
    assert code == problems.EX_UNREACHABLE and str(sock) in err.getvalue()


# root bypasses file modes unless it gives up CAP_DAC_OVERRIDE (setpriv drops it for the child).
DROP_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
            "--inh-caps", "-dac_override,-dac_read_search"]


async def test_permission_denied_exits_3(env: Env) -> None:
    """A caller who may not open the socket gets a permission message and exit 3."""
    os.chmod(env.sock, 0)
    if os.geteuid() != 0:
        run = await ctl_async(env.sock, "status")
        code, err = run.code, run.err
    else:
        proc = await asyncio.to_thread(
            subprocess.run,
            [*DROP_DAC, sys.executable, "-m", "virtmon.ctl", "--socket", str(env.sock), "status"],
            cwd=ROOT, capture_output=True, text=True, timeout=30)
        code, err = proc.returncode, proc.stderr
    assert code == problems.EX_UNREACHABLE, err
    assert err.startswith(f"virtmonctl: cannot reach virtmon at {env.sock}: permission denied")


OVERFLOWED = (
    b'{"seq":7,"time":0,"uri":"test:///default","domain":"a","uuid":null,"kind":"lifecycle",'
    b'"name":"started","detail":"booted","payload":{},"synthetic":true}\n'
    b'{"overflow":{"message":"subscriber too slow: disconnected; resume with since","since":7}}\n'
)


EVENT_20 = OVERFLOWED.splitlines()[0].replace(b'"seq":7', b'"seq":20') + b"\n"
# Every notice the stream has, in the order a follower may meet them (after a restart of the
# daemon that had pruned, say): a gap, a heartbeat, one of a later version, then the end.
NOTICES = (
    OVERFLOWED.splitlines()[0] + b"\n"
    + b'{"gap":{"message":"...","since":7,"first":20,"missed":12}}\n'
    + EVENT_20
    + b'{"heartbeat":{"time":1,"last_seq":20}}\n'
    + b'{"novelty":{"since":20}}\n'
    + b'{"end":{"message":"the daemon is stopping; resume with since","since":20}}\n'
)
STREAMS = {"overflow": OVERFLOWED, "notices": NOTICES}


class _Stub(http.server.BaseHTTPRequestHandler):
    """A stand-in daemon: an event stream (the one ``domain=`` names in :data:`STREAMS`,
    overflowing by default), a 400 problem for the domain ``bad-request`` and a 503 problem
    for everything else."""

    def do_GET(self) -> None:
        if self.path.startswith("/v1/events"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            body = STREAMS[query.get("domain", ["overflow"])[0]]
            status, kind = 200, "application/x-ndjson"
        elif self.path.startswith("/v1/domains/bad-request"):
            status, kind = 400, "application/problem+json"
            body = json.dumps({"type": "about:blank", "title": "Bad Request", "status": 400,
                               "detail": "fresh must be 0 or 1"}).encode()
        else:
            status, kind = 503, "application/problem+json"
            body = json.dumps({"type": "about:blank", "title": "Service Unavailable",
                               "status": 503, "detail": "libvirt is not connected"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def address_string(self) -> str:
        """A Unix peer has no host/port."""
        return "unix"


@contextlib.contextmanager
def stub_server(sock: Path) -> Iterator[None]:
    """The stand-in daemon on a Unix socket, served from a thread."""
    server = socketserver.UnixStreamServer(str(sock), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_server_error_exits_1(short_tmp: Path) -> None:
    """A 5xx problem document prints `virtmonctl: <detail>` (no HTTP title) and exits 1."""
    sock = short_tmp / "stub.sock"
    with stub_server(sock):
        run = run_ctl(sock, "domains")
    assert run.code == problems.EX_FAILED
    assert run.err == "virtmonctl: libvirt is not connected\n"


def test_a_request_the_daemon_refuses_as_written_exits_2(short_tmp: Path) -> None:
    """A 400 problem without libvirt's code (the request itself is wrong) exits 2 with its
    detail, whatever the command."""
    sock = short_tmp / "stub.sock"
    with stub_server(sock):
        run = run_ctl(sock, "domain", "bad-request")
    assert (run.code, run.err) == (problems.EX_USAGE, "virtmonctl: fresh must be 0 or 1\n")


def test_overflow_notice_exits_1_with_the_resume_point(short_tmp: Path) -> None:
    """A stream cut off for slowness: events so far printed, then where to resume, exit 1."""
    sock = short_tmp / "stub.sock"
    with stub_server(sock):
        run = run_ctl(sock, "events", "--follow")
    assert run.code == problems.EX_FAILED
    [line] = run.lines()
    assert line.split()[0] == "7" and line.split()[2:] == ["a", "lifecycle", "started/booted",
                                                           "synthetic"]
    assert run.err.endswith("resume with --since 7\n")


def test_every_notice_of_the_stream_is_understood(short_tmp: Path) -> None:
    """A gap is a warning saying what was missed, and the stream goes on; a heartbeat is not
    shown; an unknown notice is named and skipped; the end says where to resume (exit 3)."""
    sock = short_tmp / "stub.sock"
    with stub_server(sock):
        run = run_ctl(sock, "events", "--follow", "--domain", "notices")
        as_json = run_ctl(sock, "events", "--follow", "--domain", "notices", "--json")
    assert run.code == problems.EX_UNREACHABLE
    assert [line.split()[0] for line in run.lines()] == ["7", "20"]
    assert run.err.splitlines() == [
        "virtmonctl: gap: events 8 to 19 (12 events) are no longer in the journal (retention "
        "removed them); continuing from 20",
        "virtmonctl: unknown notice 'novelty' in the event stream, ignored: "
        '{"novelty":{"since":20}}',
        "virtmonctl: the daemon ended the stream (it is stopping); resume with --since 20",
    ]
    # Scripts get the notices in the stream, as they came; heartbeats are left out.
    assert as_json.code == problems.EX_UNREACHABLE
    assert [next(iter(x)) if "seq" not in x else x["seq"] for x in as_json.json_lines()] == [
        7, "gap", 20, "novelty", "end"]


async def test_events_since_before_a_pruned_journal_warns_of_the_gap_and_goes_on(
        env: Env) -> None:
    """On a journal whose start retention removed, --since 0 prints what was missed as a
    warning and then every event still there (it used to stop at "unexpected line")."""
    journal = env.daemon.journal
    await asyncio.to_thread(cycle_domain, fresh_name())  # events to lose
    name = fresh_name()
    await asyncio.to_thread(cycle_domain, name)
    events = await journaled(env.sock, name, 4)
    journal.max_count = journal.last_seq - events[0]["seq"] + 1
    await env.daemon.prune_journal()
    first = journal.read_since(0, 1)[0].seq
    assert first == events[0]["seq"] > 4
    run = await ctl_async(env.sock, "events", "--since", "0", "--domain", name)
    assert run.code == problems.EX_OK, run.err
    assert [int(line.split()[0]) for line in run.lines()] == [e["seq"] for e in events]
    assert run.err == (f"virtmonctl: gap: events 1 to {first - 1} ({first - 1} events) are no "
                       f"longer in the journal (retention removed them); continuing from "
                       f"{first}\n")


async def test_a_position_after_the_journal_is_refused(env: Env) -> None:
    """--since after the last journaled event (a reset state directory) is refused in the
    command line's words (exit 2), never a silent jump to whatever comes next."""
    last = env.daemon.journal.last_seq
    run = await ctl_async(env.sock, "events", "--follow", "--since", str(last + 50))
    assert run.code == problems.EX_USAGE and run.out == ""
    assert run.err.startswith(f"virtmonctl: --since {last + 50} is after the last "
                              f"journaled event ({last})")
    assert run.err.endswith(f"resume with --since {last} or less, or follow without --since\n")


def test_stale_socket_exits_3(short_tmp: Path) -> None:
    """A socket file nobody listens on (a daemon that died) is refused: exit 3."""
    sock = short_tmp / "stale.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock))
    run = run_ctl(sock, "status")
    assert run.code == problems.EX_UNREACHABLE
    assert "connection refused" in run.err


# Run in a fresh interpreter: what virtmonctl loads, beyond what Python itself had loaded at
# start-up, is the standard library, the virtmon package (for its version) and virtmon.ctl.
STANDARD_LIBRARY_ONLY = """
import importlib, pkgutil, runpy, sys
before = set(sys.modules)
{load}
loaded = set(sys.modules) - before
foreign = sorted(m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names
                 and m != "virtmon" and not m.startswith("virtmon.ctl"))
print(len(loaded), foreign)
"""


@pytest.mark.parametrize("load", [
    "import virtmon.ctl",
    # Every module of the package, those a command loads late included.
    "import virtmon.ctl\n"
    "for module in pkgutil.iter_modules(virtmon.ctl.__path__, 'virtmon.ctl.'):\n"
    "    if module.name != 'virtmon.ctl.__main__':\n"
    "        importlib.import_module(module.name)",
    # The main module, as `python -m virtmon.ctl` runs it (to the end of `--help`).
    "sys.argv = ['virtmonctl', 'domains', '--help']\n"
    "try:\n"
    "    runpy.run_module('virtmon.ctl', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass",
], ids=["package", "every-module", "main-module"])
def test_virtmonctl_imports_only_the_standard_library(load: str) -> None:
    """virtmonctl's package, each of its modules and its main module load only the standard
    library and virtmon.ctl: no aiohttp, anyio, libvirt, structlog or other daemon module."""
    proc = subprocess.run([sys.executable, "-c", STANDARD_LIBRARY_ONLY.format(load=load)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    count, foreign = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 0 and foreign == "[]"


def _spawn_follower(sock: Path, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "virtmon.ctl", "--socket", str(sock), "events", "--follow", *argv],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_ctrl_c_exits_130_quietly(env: Env) -> None:
    """SIGINT to a follower ends it with exit 130 and nothing on stderr."""
    before = len(env.daemon.bus._subscriptions)
    proc = _spawn_follower(env.sock)
    try:
        await wait_for_subscribers(env.daemon, before + 1)
        proc.send_signal(signal.SIGINT)
        _out, err = await asyncio.to_thread(proc.communicate, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
    assert (proc.returncode, err) == (130, b"")


async def test_broken_pipe_exits_quietly(env: Env) -> None:
    """A follower whose reader went away (`| head -1`) exits 0 without a traceback."""
    name = fresh_name()
    before = len(env.daemon.bus._subscriptions)
    proc = _spawn_follower(env.sock, "--domain", name, "--timeout", "30")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        await wait_for_subscribers(env.daemon, before + 1)
        await asyncio.to_thread(cycle_domain, name)
        first = await asyncio.to_thread(proc.stdout.readline)
        assert name in first.decode()
        proc.stdout.close()  # like head -1: the pipe's reader is gone
        await asyncio.to_thread(cycle_domain, name)
        code = await asyncio.to_thread(proc.wait, 10)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        proc.stderr.close()
    assert (code, err) == (0, b"")


def test_every_command_has_help() -> None:
    """`virtmonctl COMMAND --help` exits 0 with a usage line, for every command in the table."""
    for argv in ([], *([command.name] for command in cli.COMMANDS)):
        shown = io.StringIO()
        assert cli.main([*argv, "--help"], stdout=shown, stderr=io.StringIO(),
                        environ={}) == problems.EX_OK, argv
        assert shown.getvalue().startswith("usage: virtmonctl"), argv


def test_the_client_waits_for_the_daemon_on_every_migration() -> None:
    """virtmonctl waits for the daemon's answer on exactly the daemon's migrations."""
    assert OUTLAST_A_REQUEST == MIGRATIONS
