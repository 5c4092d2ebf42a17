"""The configuration fuzzer: generated documents through `virtmon check-config`, `virtmon run`
and a SIGHUP reload of a running daemon. The only outcomes allowed: valid, and started or
applied (its receivers able to send); or exit 78 and a rejected reload, both with every problem
and its key path, the same problems. Never a traceback, a dead daemon or a crashing delivery.

The suite runs a short, derandomized pass; ``make fuzz`` runs thousands of random examples
(VIRTMON_FUZZ_EXAMPLES) and prints how many ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from tests.configfuzz import Files, documents, receiver_documents, toml_document
from tests.daemon import free_port
from virtmon import cli, config, configfile
from virtmon.alerts.delivery import ReceiverFiles, Target
from virtmon.alerts.model import Notification
from virtmon.alerts.service import generator_url
from virtmon.alerts.store import AlertStore

LONG_RUN = int(os.environ.get("VIRTMON_FUZZ_EXAMPLES", "0"))  # 0: the suite's short run
FUZZ = settings(
    max_examples=LONG_RUN or 300, derandomize=not LONG_RUN, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
STARTS = settings(FUZZ, max_examples=max(3, LONG_RUN // 50))
# A problem: "key.path: message", each segment bare or quoted, with [index]es; or the file's
# own problem ("/path: not valid TOML"); a rule file's problems start with its path.
_SEGMENT = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
_KEY_PATH = rf"{_SEGMENT}(?:\.{_SEGMENT}|\[\d+\])*(?: \(command line\))?"
PROBLEM = re.compile(rf"^(?:/\S*: )?(?:{_KEY_PATH}|/\S*): \S", re.S)
ANNOUNCEMENT = re.compile(r"virtmon \S+: metrics at \S+, control socket at ")  # not a log record
COUNTS = {"examples": 0, "valid": 0, "started": 0}


class Receiver(BaseHTTPRequestHandler):
    """Answers every POST with 204, as a webhook receiver that accepts everything."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass  # quiet


class DaemonLog:
    """A daemon's stderr as JSON records, read on a thread; other lines are kept as findings."""

    def __init__(self, pipe: IO[str]) -> None:
        self.records: list[dict[str, Any]] = []
        self.raw: list[str] = []  # lines that are not JSON records (a traceback)
        self._changed = threading.Condition()
        self._pipe = pipe
        self._reader = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Once the process has ended: read to the end, and close the pipe."""
        self._reader.join(timeout=30)
        self._pipe.close()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._changed:
                try:
                    self.records.append(json.loads(line))
                except ValueError:
                    if not ANNOUNCEMENT.match(line):
                        self.raw.append(line)
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], since: int,
                 alive: Callable[[], bool], timeout: float = 60.0) -> dict[str, Any]:
        """The first record from index ``since`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((r for r in self.records[since:] if predicate(r)), None)
                if found is not None:
                    return found
                assert alive(), f"the daemon died: {''.join(self.raw)[-3000:]}"
                assert time.monotonic() < deadline, f"no such record within {timeout} s"
                self._changed.wait(0.05)


class RunningDaemon:
    """`virtmon run` on the test driver, its configuration file rewritten for every reload."""

    def __init__(self, root: Path) -> None:
        self.config = root / "virtmon.toml"
        self.config.write_text("")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "virtmon.cli", "run", "--config", str(self.config),
             *daemon_flags(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        self.log = DaemonLog(self.process.stderr)
        self.log.wait_for(lambda r: r.get("event") == "virtmon.started", 0, self.alive)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def reload(self, text: str) -> tuple[bool, list[str]]:
        """Rewrite the file, send SIGHUP: (applied, the problems a rejection logged)."""
        since = len(self.log.records)
        self.config.write_text(text, encoding="utf-8")
        self.process.send_signal(signal.SIGHUP)
        outcome = self.log.wait_for(
            lambda r: r.get("event") in ("virtmon.reload.done", "virtmon.reload.rejected"),
            since, self.alive)
        records = self.log.records[since:]
        return (outcome["event"] == "virtmon.reload.done",
                [r["problem"] for r in records if r.get("event") == "virtmon.reload.invalid"])

    def findings(self, since: tuple[int, int] = (0, 0)) -> list[str]:
        """What must never happen: a traceback, a crashed reload or delivery task (since a
        ``mark()``)."""
        bad = {"virtmon.reload.crashed", "virtmon.webhook.target_failed"}
        return [*self.log.raw[since[1]:], *(json.dumps(r) for r in self.log.records[since[0]:]
                                            if r.get("event") in bad or "exception" in r)]

    def mark(self) -> tuple[int, int]:
        """Where the log is now, for ``findings``."""
        return len(self.log.records), len(self.log.raw)

    def stop(self) -> int:
        """SIGTERM, and the exit status (killed if it does not end)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            self.log.close()


def daemon_flags(root: Path) -> list[str]:
    """Flags that keep a fuzzed daemon on the test driver and in ``root`` (they override the
    file's keys, which are validated all the same)."""
    return ["--uri", "test:///default", "--listen", f"127.0.0.1:{free_port()}",
            "--control-socket", str(root / "c.sock"), "--state-dir", str(root / "state"),
            "--log-format", "json", "--log-level", "info", "--no-collector.admin"]


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """A short directory (socket paths are limited) for the files and daemons of the module."""
    path = Path(tempfile.mkdtemp(prefix="vmfz-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def files(root: Path) -> Files:
    """Files of every kind the documents name."""
    (root / "files").mkdir()
    return Files.make(root / "files")


@pytest.fixture(scope="module")
def receiver_port() -> Iterator[int]:
    """A webhook receiver on loopback answering 204; its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def daemon(root: Path) -> Iterator[RunningDaemon]:
    """One daemon for every reload of the module; it must survive them all."""
    (root / "reloaded").mkdir()
    running = RunningDaemon(root / "reloaded")
    yield running
    alive = running.alive()
    status = running.stop()
    assert alive, "the daemon died"
    assert status == 0
    assert running.findings() == []


def main(*args: str) -> tuple[int, list[str]]:
    """`virtmon` in this process: its exit status and stderr lines."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(list(args))
    return status, err.getvalue().splitlines()


async def send_through_each_url(cfg: config.Config, store: AlertStore) -> None:
    """One request per receiver URL through the delivery code: it may fail as a delivery
    fails (an error, a status), never raise (that crashed the delivery task every 5 s)."""
    now = time.time()
    notification = Notification("k" * 32, "firing", "f" * 16, "FuzzRule", {"alertname": "FuzzRule"},
                        {"summary": "fuzz"}, now, None, now)
    for receiver in cfg.alerts.receivers:
        files = ReceiverFiles.read(receiver)
        connector = aiohttp.TCPConnector(limit=4, ssl=files.ssl_context or True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for url in receiver.urls:
                target = Target(receiver, url, store, "fuzzhost",
                                generator_url(cfg.alerts, cfg.metrics.listen, "fuzzhost"),
                                files=files)
                status, _retry_after, error = await target.post(session, [notification],
                                                                "k" * 32)
                assert status is not None or error, (url, status, error)


def assert_problem_lines(problems: list[str]) -> None:
    """Each problem names a key path (or the file) and says what is wrong."""
    assert problems, "rejected without a problem"
    for problem in problems:
        assert PROBLEM.match(problem), f"no key path in {problem!r}"


def test_fuzz_check_config_run_and_reload(
    root: Path, files: Files, receiver_port: int, daemon: RunningDaemon,
) -> None:
    """Every generated document: check-config exits 0 or 78 with key paths; `run` agrees on an
    invalid one (78, the same problems); a SIGHUP applies exactly the valid ones and rejects the
    others with the same problems; the daemon lives on, nothing logs a traceback, and each
    receiver URL of an applied document can be sent to without the delivery code raising."""
    path = root / "fuzzed.toml"
    store = AlertStore(root / "probe.db")
    # A delivery task crashes after its reload is done: a finding may belong to the document
    # before, so the last few are reported with it.
    recent: deque[str] = deque(maxlen=3)

    @FUZZ
    @given(document=st.one_of(documents(files, receiver_port),
                              receiver_documents(files, receiver_port)))
    def check(document: dict[str, Any]) -> None:
        COUNTS["examples"] += 1
        text = toml_document(document)
        note(f"the document:\n{text}")
        recent.append(text)
        path.write_text(text, encoding="utf-8")
        mark = daemon.mark()
        status, lines = main("check-config", str(path))
        assert status in (0, config.EX_CONFIG), lines
        valid = status == 0
        problems = [line.removeprefix(f"{path}: ") for line in lines] if not valid else []
        if not valid:
            assert_problem_lines(problems)
            run_status, run_lines = main("run", "--config", str(path), *daemon_flags(root))
            assert run_status == config.EX_CONFIG
            assert [line.removeprefix("virtmon: config: ") for line in run_lines] == problems
        applied, reload_problems = daemon.reload(text)
        assert (applied, reload_problems) == (valid, problems)
        if findings := daemon.findings(mark):
            note("the last documents:\n" + "\n----\n".join(recent))
        assert findings == []
        if valid:
            COUNTS["valid"] += 1
            asyncio.run(send_through_each_url(configfile.load(path), store))

    try:
        check()
    finally:
        store.close()
        print(f"\nconfiguration fuzzer: {COUNTS['examples']} documents, "
              f"{COUNTS['valid']} valid and applied", file=sys.stderr)


def test_fuzz_run_starts_on_valid_documents(root: Path, files: Files, receiver_port: int) -> None:
    """`virtmon run` on a generated valid document starts, serves, and stops cleanly on SIGTERM
    with no traceback (its receivers set up, its rules loaded)."""
    path = root / "started.toml"

    @STARTS
    @given(document=st.one_of(documents(files, receiver_port),
                              receiver_documents(files, receiver_port)))
    def start(document: dict[str, Any]) -> None:
        text = toml_document(document)
        note(f"the document:\n{text}")
        path.write_text(text, encoding="utf-8")
        assume(main("check-config", str(path))[0] == 0)
        where = root / f"run-{COUNTS['started']}"
        where.mkdir()
        process = subprocess.Popen(
            [sys.executable, "-m", "virtmon.cli", "run", "--config", str(path),
             *daemon_flags(where)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        log = DaemonLog(process.stderr)
        try:
            log.wait_for(lambda r: r.get("event") == "virtmon.started", 0,
                         lambda: process.poll() is None)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            log.close()
        assert log.raw == []
        assert [r for r in log.records if "exception" in r
                or r.get("event") == "virtmon.webhook.target_failed"] == []
        COUNTS["started"] += 1

    start()
    print(f"\nconfiguration fuzzer: {COUNTS['started']} valid documents started",
          file=sys.stderr)
