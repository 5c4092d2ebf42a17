"""What the processes load: optional parts of the daemon only when configured, and nothing but
the admin API's needs in the admin helper (each module loaded is memory held for the process's
life). The daemon runs as its package installs it (tests.installed): with the checkout's test
extras on the path, structlog would load ``rich`` from them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.admin.conftest import ADMIN_URI
from tests.daemon import free_port
from tests.exposition.test_webconfig import make_certificate, write_web_config
from tests.installed import runtime_command, runtime_distributions, runtime_view
from virtmon.admin.client import HELPER_COMMAND

ROOT = Path(__file__).resolve().parent.parent
# Loaded for TLS and basic auth on /metrics only (a web config file).
WEB_CONFIG_MODULES = {"yaml", "bcrypt", "virtmon.exposition.tlssite"}
# Never installed with the daemon: test tools, and what structlog loads for console tracebacks
# when it finds it (the daemon's console log prints plain ones).
NEVER_INSTALLED = {"hypothesis", "pytest", "schemathesis", "rich", "pygments",
                   "better-exceptions"}
# Standard library modules the helper has no use for (ctypes.util and argparse pull them in;
# site, the virtualenv's .pth files).
NOT_FOR_THE_HELPER = {"subprocess", "tempfile", "shutil", "argparse", "gettext", "bz2", "lzma",
                      "random", "asyncio", "ssl", "email", "logging", "site"}

IMPORT_TIME = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)")


def imported(stderr: str) -> set[str]:
    """The modules a process run with ``python -X importtime`` imported, from its stderr."""
    # Searched for anywhere: a log line written meanwhile may precede one on the same line.
    return set(IMPORT_TIME.findall(stderr)) - {"package"}


def run_daemon(tmp: Path, *extra: str, scheme: str = "http") -> set[str]:
    """Run ``virtmon run`` as installed on the test driver until /metrics answered once; what
    it imported."""
    tmp.mkdir(exist_ok=True)
    port = free_port()
    command, env = runtime_command(
        runtime_view(tmp / "site"), "-X", "importtime", "-m", "virtmon.cli", "run",
        "--uri", "test:///default", "--listen", f"127.0.0.1:{port}",
        "--control-socket", str(tmp / "c.sock"), "--state-dir", str(tmp / "state"),
        "--no-collector.admin", "--log-level", "warning", *extra)
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp / "c.sock").exists():  # bound after the metrics listener
            assert process.poll() is None, "the daemon exited"
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        if scheme == "http":
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
                assert b"virtmon_build_info" in reply.read()
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    return imported(err)


def test_a_daemon_without_a_web_config_loads_no_yaml_bcrypt_or_tls_site(short_tmp: Path) -> None:
    """Serving /metrics as installed without a web config file loads neither YAML, bcrypt nor
    the TLS site; with one (TLS and a user) the three are loaded, so the check sees them when
    they are."""
    plain = run_daemon(short_tmp / "plain")
    assert "virtmon.app" in plain and plain & WEB_CONFIG_MODULES == set()
    web = short_tmp / "web"
    web.mkdir()
    make_certificate(web)
    configured = run_daemon(short_tmp / "tls", "--web.config.file",
                            str(write_web_config(web, "secret")), scheme="https")
    assert configured & WEB_CONFIG_MODULES == WEB_CONFIG_MODULES


def test_no_test_tool_or_console_extra_is_installed_with_the_daemon() -> None:
    """virtmon's runtime dependencies, followed through theirs, bring in no test tool and none
    of the console extras structlog loads when it finds them: an installed daemon cannot load
    them (a test run of it sees what an installed one does)."""
    assert "structlog" in runtime_distributions()
    assert set(runtime_distributions()) & NEVER_INSTALLED == set()


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
def test_the_running_admin_helper_loads_only_what_the_admin_api_needs() -> None:
    """The helper, started as the daemon starts it and answering a snapshot from libvirtd,
    loaded no module of the standard library that it has no use for."""
    python, *args = HELPER_COMMAND
    done = subprocess.run(
        [python, "-X", "importtime", *args, "--uri", ADMIN_URI],
        input='{"id": 1, "op": "snapshot"}\n', capture_output=True, text=True, timeout=60,
        cwd=ROOT, check=True)
    assert '"ok":true' in done.stdout.replace(" ", ""), done.stdout
    modules = imported(done.stderr)
    assert {"ctypes", "json", "virtmon.admin.binding"} <= modules
    assert {m.split(".")[0] for m in modules} & NOT_FOR_THE_HELPER == set()
