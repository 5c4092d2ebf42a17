"""Fuzzing the control API from its own OpenAPI document with schemathesis, over the Unix socket.

Every operation gets a bounded number of generated requests, valid (positive) and invalid
(negative) ones. The daemon must answer each without a 5xx (a caller's mistake is a 4xx) and as
its document says (a listed status, the listed content type, the schema), and it must still be
healthy afterwards. Writes are off, so the generated calls cannot change the test
driver's shared state; they still go through validation, roles and the problem documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from pathlib import Path
from typing import Any

import hypothesis
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

EXAMPLES_PER_OPERATION = 4
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


class Fuzzer:
    """Sends generated cases on a Unix-socket session and keeps every unexpected 5xx."""

    def __init__(self, socket: Path) -> None:
        self.base_url = "http+unix://" + urllib.parse.quote(str(socket), safe="")
        self.session = requests_unixsocket.Session()
        self.sent = 0
        self.failures: list[str] = []

    def send(self, case: Any, label: str) -> None:
        """One case: schemathesis joins URLs itself, which loses the http+unix scheme, so the
        request is built from its keyword arguments and sent on the Unix-socket session."""
        kwargs = case.as_transport_kwargs(base_url="http://virtmon")
        shown_url = kwargs["url"]
        kwargs["url"] = self.base_url + kwargs["url"].removeprefix("http://virtmon")
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

    def run(self, strategy: Any, label: str) -> None:
        """A bounded number of examples from one strategy."""

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @hypothesis.given(case=strategy)
        def send(case: Any) -> None:
            self.send(case, label)

        # Nothing to make invalid in an operation without parameters.
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            send()


def fuzz(socket: Path, document: dict[str, Any]) -> tuple[int, list[str]]:
    """Run the generated requests (blocking); return how many were sent and every 5xx seen."""
    fuzzer = Fuzzer(socket)
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        operation = result.ok()
        if operation.path == "/v1/events":
            continue  # a stream: it does not end on its own
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzzer.run(operation.as_strategy(generation_mode=mode), mode.name)
    return fuzzer.sent, fuzzer.failures


async def test_no_generated_request_gets_a_5xx(short_tmp: Path) -> None:
    """Schemathesis cases for every operation: no 5xx, every answer as the document says, and
    the daemon is healthy afterwards."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"collectors": {"admin": False}},
                        control={"allow_write": False})
    async with running_daemon(cfg) as daemon:
        document = await get_json(daemon.control_socket, "/v1/openapi.json")
        sent, failures = await asyncio.to_thread(fuzz, daemon.control_socket, document)
        assert sent > 100
        assert not failures, json.dumps(failures[:10], indent=1)
        status = await get_json(daemon.control_socket, "/v1/status")
        assert status["libvirt"]["state"] == "connected"
