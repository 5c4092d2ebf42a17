"""The README's commands work as written."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path

import libvirt

from tests.conftest import daemon_config, running_daemon
from tests.waiting import wait_until

README = Path(__file__).resolve().parent.parent / "README.md"


def curl_examples() -> list[list[str]]:
    """Every `curl --unix-socket` line of the README, split like a shell would."""
    return [shlex.split(line) for line in README.read_text().splitlines()
            if re.match(r"curl --unix-socket ", line)]


def define_and_undefine(name: str) -> None:
    """Two lifecycle events on the test driver's shared default instance."""
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(f"<domain type='test'><name>{name}</name><memory>1024</memory>"
                             "<os><type>hvm</type></os></domain>")
        dom.undefine()
    finally:
        conn.close()


def test_readme_names_the_two_commands() -> None:
    """The README gives `make run` and `make test`."""
    text = README.read_text()
    assert "make run" in text and "make test" in text


async def test_readme_curl_examples_work_as_written(short_tmp: Path) -> None:
    """Each curl example, run against a daemon on the socket it names, returns JSON lines."""
    examples = curl_examples()
    assert len(examples) >= 2
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"collectors": {"admin": False}})
    async with running_daemon(cfg) as daemon:
        await asyncio.to_thread(define_and_undefine, "readme-example")
        await wait_until(lambda: daemon.bus.published_seq >= 2)
        for argv in examples:
            assert argv[2] == "run/virtmon.sock"  # the path make run uses
            argv[2] = str(daemon.control_socket)
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 30)
            assert process.returncode == 0, err
            lines = [json.loads(line) for line in out.decode().splitlines() if line]
            assert lines, argv
            if argv[-1].endswith("/v1/domains"):
                assert any(d["name"] == "test" for d in lines[0]["domains"])
            if "/v1/events" in argv[-1]:
                assert [e["name"] for e in lines][:2] == ["defined", "undefined"]
