"""Fuzzing the control API from its own OpenAPI document with schemathesis, over the Unix socket.

Every operation gets a bounded number of generated requests, valid (positive) and invalid
(negative) ones. The daemon must answer each without a 5xx (a caller's mistake is a 4xx) and as
its document says (a listed status, the listed content type, the schema), and it must still be
healthy afterwards. Writes are off, so the generated calls cannot change the test
driver's shared state; they still go through validation, roles and the problem documents.

The event stream gets more cases (every parameter, Last-Event-ID, half of them as SSE) on a
journal whose start retention removed; its body is read until it ends or goes quiet, and each
SSE message (schemathesis) and NDJSON line (here) is checked against the document's schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema
import requests
import requests_unixsocket
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from tests.conftest import daemon_config, running_daemon
from tests.streamclient import get_json
from tests.waiting import wait_until
from virtmon.events.model import Event

EXAMPLES_PER_OPERATION = 4
TEST_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # the test driver's domain "test"
# The stream has the most parameters of any route, and their checks were once missing.
EXAMPLES_PER_STREAM = 60
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


class Fuzzer:
    """Sends generated cases on a Unix-socket session and keeps every unexpected 5xx."""

    def __init__(self, socket: Path, document: dict[str, Any]) -> None:
        self.base_url = "http+unix://" + urllib.parse.quote(str(socket), safe="")
        self.session = requests_unixsocket.Session()
        self.sent = 0
        self.streams = 0
        self.failures: list[str] = []
        # The stream's lines, checked against the document's own schema of them.
        self.line_schema = {"$ref": "#/components/schemas/StreamLine",
                            "components": document["components"]}

    def send(self, case: Any, label: str) -> None:
        """One case: schemathesis joins URLs itself, which loses the http+unix scheme, so the
        request is built from its keyword arguments and sent on the Unix-socket session."""
        kwargs = case.as_transport_kwargs(base_url="http://virtmon")
        shown_url = kwargs["url"]
        kwargs["url"] = self.base_url + kwargs["url"].removeprefix("http://virtmon")
        if case.path == "/v1/events":
            response = self.stream(case, kwargs)
        else:
            response = self.session.request(**kwargs, timeout=30)
        self.sent += 1
        # The admin helper is off in this daemon (admin operations would change the lab's
        # libvirtd): its operations answer 503, the one 5xx that is expected.
        helper_off = response.status_code == 503 and "admin helper is not running" in response.text
        if response.status_code >= 500 and not helper_off:
            self.failures.append(f"{case.method} {case.formatted_path} {label}: "
                                 f"{response.status_code} {response.text[:200]}")
        # The answer matches the document: a status it lists, its content type, its schema.
        # (Its failure report quotes the request as curl, which cannot show an http+unix URL.)
        response.request.url = shown_url
        try:
            case.validate_response(response, checks=CONFORMANCE)
        except FailureGroup as exc:
            self.failures.append(f"{case.method} {case.formatted_path} {label}: "
                                 f"{response.status_code} does not conform: {str(exc)[:300]}")

    def stream(self, case: Any, kwargs: dict[str, Any]) -> requests.Response:
        """An event stream: every other one as SSE; read until it ends or is quiet for half a
        second (a follower does not end), then checked line by line against the document's
        StreamLine (an event or a notice) before the checks schemathesis makes."""
        self.streams += 1
        sse = self.streams % 2 == 0
        kwargs["headers"] = {**(kwargs.get("headers") or {}),
                             "Accept": "text/event-stream" if sse else "application/x-ndjson"}
        response = self.session.request(**kwargs, timeout=(10, 0.5), stream=True)
        chunks: list[bytes] = []
        try:
            for chunk in response.iter_content(chunk_size=None):
                chunks.append(chunk)
        except requests.exceptions.ConnectionError:
            pass  # quiet for half a second: a follower, waiting for events
        finally:
            response.close()
        response._content = b"".join(chunks)
        response._content_consumed = True
        if response.status_code == 200:
            problems = stream_problems(response.text, sse, self.line_schema)
            self.failures += [f"GET {case.formatted_path}: {p}" for p in problems]
        return response

    def run(self, strategy: Any, label: str, examples: int | None = None) -> None:
        """A bounded number of examples from one strategy."""

        @settings(max_examples=examples or EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @hypothesis.given(case=strategy)
        def send(case: Any) -> None:
            self.send(case, label)

        # Nothing to make invalid in an operation without parameters.
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            send()


def stream_problems(text: str, sse: bool, schema: dict[str, Any]) -> list[str]:
    """What in an event stream's body is not as the document says: each NDJSON line is a
    StreamLine; each SSE frame an event (id = seq, event = kind), a notice, an id alone (a
    follower's starting position) or a comment."""
    problems = []
    if not sse:
        for line in text.splitlines():
            try:
                jsonschema.validate(json.loads(line), schema)
            except (ValueError, jsonschema.ValidationError) as exc:
                problems.append(f"line {line[:100]!r}: {str(exc)[:200]}")
        return problems
    for frame in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines()
                      if not line.startswith(":"))
        if not fields:
            continue  # a heartbeat comment, or the end
        if set(fields) == {"id"}:  # a follower's starting position, without an event
            if not fields["id"].isdigit():
                problems.append(f"frame {frame[:100]!r}: the id is no sequence number")
            continue
        try:
            data = json.loads(fields["data"])
            if "seq" in data:
                assert fields["id"] == str(data["seq"]) and fields["event"] == data["kind"]
            else:
                data = {fields["event"]: data}
            jsonschema.validate(data, schema)
        except (KeyError, ValueError, AssertionError, jsonschema.ValidationError) as exc:
            problems.append(f"frame {frame[:100]!r}: {str(exc)[:200]}")
    return problems


def fuzz(socket: Path, document: dict[str, Any]) -> tuple[int, list[str]]:
    """Run the generated requests (blocking); return how many were sent and every 5xx seen."""
    fuzzer = Fuzzer(socket, document)
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        operation = result.ok()
        examples = EXAMPLES_PER_STREAM if operation.path == "/v1/events" else None
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzzer.run(operation.as_strategy(generation_mode=mode), mode.name, examples)
    return fuzzer.sent, fuzzer.failures


async def test_no_generated_request_gets_a_5xx(short_tmp: Path) -> None:
    """Schemathesis cases for every operation: no 5xx, every answer as the document says, and
    the daemon is healthy afterwards."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"collectors": {"admin": False}},
                        control={"allow_write": False})
    async with running_daemon(cfg) as daemon:
        # A journal whose start retention removed: streams have events, and gap notices.
        for n in range(20):
            daemon.bus.publish(Event(time=time.time(), uri="test:///default", kind="lifecycle",
                                     name="started", domain="test", uuid=TEST_UUID,
                                     payload={"n": n}))
        await wait_until(lambda: daemon.journal.last_seq >= 20)
        daemon.journal.max_count = 10
        await daemon.prune_journal()
        document = await get_json(daemon.control_socket, "/v1/openapi.json")
        sent, failures = await asyncio.to_thread(fuzz, daemon.control_socket, document)
        assert sent > 100
        assert not failures, json.dumps(failures[:10], indent=1)
        status = await get_json(daemon.control_socket, "/v1/status")
        assert status["libvirt"]["state"] == "connected"
