"""Tests of the control API's event stream (``GET /v1/events``) and domain lookups, through
control_app on aiohttp's test server (and once on a real Unix socket)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import logging
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_sse_client.client import EventSource

from tests.events.samples import ev
from tests.waiting import wait_until
from virtmon.control.events_stream import StreamLimits
from virtmon.control.server import control_app
from virtmon.events.bus import EventBus
from virtmon.events.journal import Journal
from virtmon.events.model import Event
from virtmon.virt.inventory import DomainState, Inventory

NDJSON = "application/x-ndjson"
PROBLEM = "application/problem+json"
UUID_A = "11111111-1111-1111-1111-111111111111"


@dataclass
class Env:
    """A bus with its journal, an inventory, and a client of the control app."""

    bus: EventBus
    inventory: Inventory
    client: TestClient[web.Request, web.Application]

    async def publish(self, *events: Event) -> int:
        """Publish and wait until everything is journaled and fanned out; the last seq."""
        target = self.bus.published_seq + len(events)
        for event in events:
            assert self.bus.publish(event)
        await wait_until(lambda: self.bus.published_seq >= target)
        return target


@contextlib.asynccontextmanager
async def control_env(
    tmp_path: Path, queue_size: int = 1000, journal_cls: type[Journal] = Journal,
    limits: StreamLimits | None = None,
) -> AsyncIterator[Env]:
    """Run a bus and the control app on a test server for the body of a ``with``."""
    journal = journal_cls(tmp_path / "journal.db")
    bus = EventBus(journal)
    inventory = Inventory()
    task = asyncio.ensure_future(bus.run())
    app = control_app(bus, inventory, lambda: {"ok": True}, subscriber_queue_size=queue_size,
                      stream_limits=limits)
    client = TestClient(TestServer(app, shutdown_timeout=2))
    await client.start_server()
    try:
        yield Env(bus, inventory, client)
    finally:
        for sub in list(bus._subscriptions):
            bus.unsubscribe(sub)  # ends followers still waiting for events
        await client.close()
        bus.close()
        await asyncio.wait_for(task, 5)
        journal.close()


async def start_follow(env: Env, query: str, headers: dict[str, str] | None = None
                       ) -> asyncio.Future[aiohttp.ClientResponse]:
    """Start GET /v1/events?query; return once the handler's live subscription exists."""
    before = len(env.bus._subscriptions)
    request = asyncio.ensure_future(env.client.get(f"/v1/events?{query}", headers=headers))
    await wait_until(lambda: len(env.bus._subscriptions) > before)
    return request


async def read_json_lines(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` NDJSON lines of a streaming response."""
    lines: list[dict[str, Any]] = []
    for _ in range(count):
        line = await asyncio.wait_for(response.content.readline(), 5)
        assert line.endswith(b"\n"), f"stream ended early after {lines}"
        lines.append(json.loads(line))
    return lines


def parse_sse(text: str) -> list[dict[str, str]]:
    """SSE frames as dicts of field -> value."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            frame[field] = value
        frames.append(frame)
    return frames


# -- one-shot reads ----------------------------------------------------------------------------


async def test_ndjson_since_zero_returns_the_journal(tmp_path: Path) -> None:
    """since=0 without follow returns every journaled event as NDJSON, then ends."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1), ev(2, "b"), ev(3, None, "connection"))
        response = await env.client.get("/v1/events?since=0")
        assert response.status == 200
        assert response.headers["Content-Type"] == NDJSON
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
        assert [line["seq"] for line in lines] == [1, 2, 3]
        assert lines[0] == env.bus.journal.read_since(0)[0].to_dict()
        assert [line["domain"] for line in lines] == ["a", "b", None]


async def test_ndjson_without_since_or_follow_reads_from_the_start(tmp_path: Path) -> None:
    """A plain GET (NDJSON, no since, no follow) is a one-shot read of the whole journal."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1), ev(2))
        response = await env.client.get("/v1/events")
        assert [json.loads(x)["seq"] for x in (await response.text()).splitlines()] == [1, 2]


async def test_since_n_returns_exactly_the_later_events(tmp_path: Path) -> None:
    """since=N returns the events with seq > N and nothing else."""
    async with control_env(tmp_path) as env:
        await env.publish(*(ev(i) for i in range(10)))
        for since, expected in [(0, range(1, 11)), (4, range(5, 11)), (9, [10]), (10, [])]:
            response = await env.client.get(f"/v1/events?since={since}")
            got = [json.loads(x)["seq"] for x in (await response.text()).splitlines()]
            assert got == list(expected), since


async def test_replay_spans_journal_pages(tmp_path: Path) -> None:
    """A replay longer than one journal page (1000) returns every event once."""
    async with control_env(tmp_path) as env:
        await env.publish(*(ev(i) for i in range(2345)))
        response = await env.client.get("/v1/events?since=0")
        got = [json.loads(x)["seq"] for x in (await response.text()).splitlines()]
        assert got == list(range(1, 2346))


async def test_domain_and_kind_filters(tmp_path: Path) -> None:
    """domain= and kind= (repeatable) select events in the replay."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1, "a"), ev(2, "b"), ev(3, "a", "reboot"), ev(4, "c", "reboot"))

        async def seqs(query: str) -> list[int]:
            response = await env.client.get(f"/v1/events?since=0&{query}")
            return [json.loads(x)["seq"] for x in (await response.text()).splitlines()]

        assert await seqs("domain=a") == [1, 3]
        assert await seqs("domain=a&domain=c") == [1, 3, 4]
        assert await seqs("kind=reboot") == [3, 4]
        assert await seqs("domain=b&kind=reboot") == []


async def test_sse_format(tmp_path: Path) -> None:
    """Accept: text/event-stream gives frames with id:, event: and data: (the event's JSON)."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1), ev(2, "b", "reboot"))
        response = await env.client.get(
            "/v1/events?since=0&follow=0", headers={"Accept": "text/event-stream"}
        )
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        text = await response.text()
        assert text.startswith("id: 1\nevent: lifecycle\ndata: {")
        frames = parse_sse(text)
        assert [(f["id"], f["event"]) for f in frames] == [("1", "lifecycle"), ("2", "reboot")]
        journaled = env.bus.journal.read_since(0)
        assert [json.loads(f["data"]) for f in frames] == [e.to_dict() for e in journaled]


# -- following ---------------------------------------------------------------------------------


async def test_follow_receives_live_events(tmp_path: Path) -> None:
    """follow=1 without since skips history and receives events published after connecting."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1), ev(2))
        request = await start_follow(env, "follow=1")
        await env.publish(ev(3), ev(4, "b"))
        response = await asyncio.wait_for(request, 5)
        assert response.headers["Content-Type"] == NDJSON
        lines = await read_json_lines(response, 2)
        assert [(x["seq"], x["payload"]["n"]) for x in lines] == [(3, 3), (4, 4)]
        await env.publish(ev(5))
        assert [x["seq"] for x in await read_json_lines(response, 1)] == [5]
        response.close()


async def test_sse_follows_by_default(tmp_path: Path) -> None:
    """With SSE and since, the replay is followed by live events (follow defaults on)."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1))
        request = await start_follow(env, "since=0", {"Accept": "text/event-stream"})
        await env.publish(ev(2))
        response = await asyncio.wait_for(request, 5)
        text = b""
        while text.count(b"\n\n") < 2:
            text += await asyncio.wait_for(response.content.readany(), 5)
        assert [f["id"] for f in parse_sse(text.decode())] == ["1", "2"]
        response.close()


async def test_live_filter_applies_to_followers(tmp_path: Path) -> None:
    """A follower with domain= receives only that domain's live events."""
    async with control_env(tmp_path) as env:
        request = await start_follow(env, "follow=1&domain=b")
        await env.publish(ev(1, "a"), ev(2, "b"), ev(3, "a"), ev(4, "b"))
        response = await asyncio.wait_for(request, 5)
        assert [x["seq"] for x in await read_json_lines(response, 2)] == [2, 4]
        response.close()


async def test_no_gap_and_no_duplicate_between_replay_and_live(tmp_path: Path) -> None:
    """Events published while a since= replay is read arrive exactly once, contiguously."""
    history, live = 2500, 1500
    async with control_env(tmp_path, queue_size=10 * (history + live)) as env:
        await env.publish(*(ev(i) for i in range(history)))
        seq_at_subscribe: list[int] = []

        async def publisher() -> None:
            for chunk in range(live // 10):
                if chunk == live // 20 and not env.bus._subscriptions:
                    # Half published and the request not subscribed yet (a loaded machine):
                    # the rest waits for it, so the stream still starts amid the publishing.
                    await wait_until(lambda: bool(env.bus._subscriptions), 30)
                if not seq_at_subscribe and env.bus._subscriptions:
                    seq_at_subscribe.append(env.bus.published_seq)
                for i in range(10):
                    assert env.bus.publish(ev(history + chunk * 10 + i))
                await asyncio.sleep(0.001)

        publishing = asyncio.ensure_future(publisher())
        response = await env.client.get("/v1/events?since=0&follow=1")
        got: list[int] = []
        while not got or got[-1] < history + live:
            line = await asyncio.wait_for(response.content.readline(), 10)
            assert line, "stream ended"
            got.append(json.loads(line)["seq"])
        await publishing
        assert got == list(range(1, history + live + 1))
        # The subscription came while events were still being published: the two overlapped.
        assert seq_at_subscribe and history <= seq_at_subscribe[0] < history + live
        # Nothing queued twice behind the last one: the next line is the next event.
        await env.publish(ev(-1))
        assert [x["seq"] for x in await read_json_lines(response, 1)] == [history + live + 1]
        response.close()


class RacyJournal(Journal):
    """A journal whose read_page lets the test publish (and fan out) events around the read.

    ``hook(when)`` runs in the reader's worker thread, "before" and "after" the SELECT.
    """

    hook: Callable[[str], None] = staticmethod(lambda when: None)

    def read_page(self, seq: int, limit: int = 1000) -> tuple[list[Event], int]:
        """read_page with the test's hook run before and after the query."""
        self.hook("before")
        page = super().read_page(seq, limit)
        self.hook("after")
        return page


async def test_events_fanned_out_during_a_replay_read_come_exactly_once(tmp_path: Path) -> None:
    """Events journaled and fanned out just before and just after each replay page is read
    are neither lost (gap) nor sent twice (duplicate)."""
    history, per_hook = 1500, 5
    async with control_env(tmp_path, queue_size=10_000, journal_cls=RacyJournal) as env:
        await env.publish(*(ev(i) for i in range(history)))
        loop = asyncio.get_running_loop()
        reads: list[str] = []

        def publish_and_wait(when: str) -> None:
            # In the handler's worker thread: publish on the loop, wait until fanned out.
            if len(reads) >= 6:
                return
            reads.append(when)
            target = env.bus.published_seq + per_hook
            for _ in range(per_hook):
                loop.call_soon_threadsafe(env.bus.publish, ev(-1))
            deadline = time.monotonic() + 5
            while env.bus.published_seq < target and time.monotonic() < deadline:
                time.sleep(0.001)

        assert isinstance(env.bus.journal, RacyJournal)
        env.bus.journal.hook = publish_and_wait
        response = await env.client.get("/v1/events?since=0&follow=1")
        await wait_until(lambda: len(reads) >= 4)  # both pages read, with events around each
        total = history + per_hook * len(reads)
        got: list[int] = []
        while not got or got[-1] < total:
            line = await asyncio.wait_for(response.content.readline(), 10)
            assert line, "stream ended"
            got.append(json.loads(line)["seq"])
        assert reads[:4] == ["before", "after", "before", "after"]
        assert got == list(range(1, total + 1))
        env.bus.journal.hook = lambda when: None
        await env.publish(ev(-2))
        assert [x["seq"] for x in await read_json_lines(response, 1)] == [total + 1]
        response.close()


async def test_slow_follower_is_cut_off_with_a_resume_point(tmp_path: Path) -> None:
    """A follower whose queue overflows gets a final overflow message with since; resuming from
    that since returns exactly the rest."""
    async with control_env(tmp_path, queue_size=2) as env:
        request = await start_follow(env, "follow=1")
        (sub,) = env.bus._subscriptions
        await env.publish(*(ev(i) for i in range(20)))  # one batch: far more than 2
        response = await asyncio.wait_for(request, 5)
        lines = [json.loads(x) for x in (await asyncio.wait_for(response.text(), 5)).splitlines()]
        *events, final = lines
        seqs = [x["seq"] for x in events]
        assert seqs == list(range(1, len(seqs) + 1)) and 2 <= len(seqs) < 20
        assert final == {"overflow": {
            "message": "subscriber too slow: disconnected; resume with since",
            "since": seqs[-1],
        }}
        assert env.bus.dropped[sub.name] == 1
        resumed = await env.client.get(f"/v1/events?since={final['overflow']['since']}")
        rest = [json.loads(x)["seq"] for x in (await resumed.text()).splitlines()]
        assert seqs + rest == list(range(1, 21))


async def test_slow_sse_follower_gets_an_overflow_event(tmp_path: Path) -> None:
    """In SSE the cut-off is an ``event: overflow`` frame whose data carries since."""
    async with control_env(tmp_path, queue_size=2) as env:
        request = await start_follow(env, "", {"Accept": "text/event-stream"})
        await env.publish(*(ev(i) for i in range(20)))
        response = await asyncio.wait_for(request, 5)
        frames = parse_sse(await asyncio.wait_for(response.text(), 5))
        assert frames[-1]["event"] == "overflow"
        assert "id" not in frames[-1]
        assert json.loads(frames[-1]["data"])["since"] == int(frames[-2]["id"])


async def test_follower_unsubscribes_when_the_client_goes(tmp_path: Path) -> None:
    """A follower whose client disconnected is unsubscribed at the next event written."""
    async with control_env(tmp_path) as env:
        request = await start_follow(env, "follow=1")
        response = await asyncio.wait_for(request, 5)
        response.close()
        # The server learns of the close when a write fails: publish until one has (bounded).
        deadline = time.monotonic() + 30
        for i in itertools.count():
            await env.publish(ev(i))
            if not env.bus._subscriptions:
                break
            assert time.monotonic() < deadline, "still subscribed"
            await asyncio.sleep(0.01)


# -- errors and domains ------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["since=abc", "since=-1", "since=1.5", "follow=yes"])
async def test_bad_query_is_a_400_problem(tmp_path: Path, query: str) -> None:
    """A bad since or follow gives 400 application/problem+json and takes no subscription."""
    async with control_env(tmp_path) as env:
        response = await env.client.get(f"/v1/events?{query}")
        assert response.status == 400
        assert response.headers["Content-Type"].startswith(PROBLEM)
        body = await response.json(content_type=None)
        assert body["status"] == 400 and body["title"] == "Bad Request" and body["detail"]
        assert env.bus._subscriptions == set()


async def test_unknown_domain_is_a_404_problem(tmp_path: Path) -> None:
    """/v1/domains/{x} for an unknown domain gives 404 problem+json with libvirt's code."""
    async with control_env(tmp_path) as env:
        response = await env.client.get("/v1/domains/nosuch")
        assert response.status == 404
        assert response.headers["Content-Type"].startswith(PROBLEM)
        body = await response.json(content_type=None)
        assert body == {
            "type": "about:blank", "title": "Not Found", "status": 404,
            "detail": "no domain named, with UUID or id 'nosuch'",
            "libvirt_code": 42, "libvirt_error": "VIR_ERR_NO_DOMAIN",
        }


async def test_known_domain_by_name_uuid_and_id(tmp_path: Path) -> None:
    """/v1/domains/{x} finds a domain by name, UUID or id; /v1/domains lists them."""
    async with control_env(tmp_path) as env:
        env.inventory.replace_all([DomainState("vm1", UUID_A, 4, 1, 1, True)])
        for key in ("vm1", UUID_A, "4"):
            response = await env.client.get(f"/v1/domains/{key}")
            assert response.status == 200
            assert (await response.json())["name"] == "vm1"
        listing = await (await env.client.get("/v1/domains")).json()
        assert [d["uuid"] for d in listing["domains"]] == [UUID_A]


async def test_unknown_route_is_a_404_problem(tmp_path: Path) -> None:
    """aiohttp's own 404 for an unknown path is turned into a problem document."""
    async with control_env(tmp_path) as env:
        response = await env.client.get("/v2/nothing")
        assert response.status == 404
        assert response.headers["Content-Type"].startswith(PROBLEM)
        assert (await response.json(content_type=None))["status"] == 404


async def test_over_a_real_unix_socket() -> None:
    """The control app serves the event stream on an AF_UNIX socket (short /tmp path)."""
    directory = Path(tempfile.mkdtemp(prefix="vmctl-", dir="/tmp"))
    journal = Journal(directory / "journal.db")
    bus = EventBus(journal)
    task = asyncio.ensure_future(bus.run())
    runner = web.AppRunner(control_app(bus, Inventory(), lambda: {}), shutdown_timeout=2)
    await runner.setup()
    path = directory / "c.sock"
    assert len(str(path).encode()) < 108
    try:
        await web.UnixSite(runner, str(path)).start()
        bus.publish(ev(1))
        await wait_until(lambda: bus.published_seq == 1)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as s:
            async with s.get("http://localhost/v1/events?since=0") as response:
                assert [json.loads(x)["seq"] for x in (await response.text()).splitlines()] == [1]
            async with s.get("http://localhost/v1/status") as response:
                assert await response.json() == {}
    finally:
        await runner.cleanup()
        bus.close()
        await asyncio.wait_for(task, 5)
        journal.close()
        shutil.rmtree(directory, ignore_errors=True)


# -- the client's position: continued exactly, or told ------------------------------------------


async def ndjson(env: Env, query: str, headers: dict[str, str] | None = None
                 ) -> list[dict[str, Any]]:
    """A one-shot read's lines."""
    response = await env.client.get(f"/v1/events?{query}", headers=headers)
    assert response.status == 200, await response.text()
    return [json.loads(x) for x in (await response.text()).splitlines()]


async def problem_of(env: Env, query: str, headers: dict[str, str] | None = None
                     ) -> dict[str, Any]:
    """The 400 problem document a request gets (fails on anything else)."""
    response = await env.client.get(f"/v1/events?{query}", headers=headers)
    assert response.status == 400, await response.text()
    assert response.headers["Content-Type"].startswith(PROBLEM)
    assert env.bus._subscriptions == set()
    body: dict[str, Any] = await response.json(content_type=None)
    return body


async def test_a_position_after_the_journal_is_a_400_not_a_silent_jump(tmp_path: Path) -> None:
    """since past the last journaled event (a client of a daemon whose state directory was
    reset) is refused with the last seq, as since or as Last-Event-ID, followed or not: the
    follower used to get 200 and the next event, the ones between never mentioned."""
    async with control_env(tmp_path) as env:
        await env.publish(*(ev(i) for i in range(10)))
        for query, headers, key in [("since=60", None, "since"),
                                    ("since=11&follow=1", None, "since"),
                                    ("follow=1", {"Last-Event-ID": "60"}, "Last-Event-ID")]:
            body = await problem_of(env, query, headers)
            assert body["key"] == key and body["last_seq"] == 10
            assert f"{key}={'11' if '11' in query else '60'} is after the last journaled event " \
                   "(10)" in body["detail"]
        assert [x["seq"] for x in await ndjson(env, "since=10&follow=0")] == []


@pytest.mark.parametrize("since", ["99999999999999999999999", "9" * 5000, "+5", " 5", "1_0",
                                   "٣"])
async def test_a_huge_or_odd_since_is_a_400(tmp_path: Path, since: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A since too large for SQLite (it raised OverflowError: a traceback and a 200 with an
    empty body) or not plainly digits is a 400 problem, and nothing is logged as a failure."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1))
        body = await problem_of(env, "since=" + urllib.parse.quote(since))
        assert body["key"] == "since"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_gap_notice_when_retention_emptied_the_journal(tmp_path: Path) -> None:
    """A journal pruned to nothing still knows its last seq: since before it gets a gap notice
    naming the first event that can come (the next one), then the live events; it used to get
    200 with nothing and then the next events, the pruned ones never mentioned."""
    async with control_env(tmp_path) as env:
        await env.publish(*(ev(i) for i in range(30)))
        env.bus.journal.max_count = 0
        env.bus.journal.prune()
        assert env.bus.journal.count() == 0
        assert await ndjson(env, "since=10") == [{"gap": {
            "message": "events 11 to 30 are no longer in the journal (retention removed them); "
                       "the stream goes on", "since": 10, "first": 31, "missed": 20}}]
        request = await start_follow(env, "since=10&follow=1")
        await env.publish(ev(31))
        response = await asyncio.wait_for(request, 5)
        gap, event = await read_json_lines(response, 2)
        assert gap["gap"]["first"] == 31 and event["seq"] == 31
        response.close()


async def test_a_gap_notice_when_retention_removed_the_start(tmp_path: Path) -> None:
    """since before the oldest event left: a gap notice with the first one, then from there. In
    SSE the notice carries the id before the first, so a reconnect continues after the gap."""
    async with control_env(tmp_path) as env:
        await env.publish(*(ev(i) for i in range(30)))
        env.bus.journal.max_count = 10
        env.bus.journal.prune()
        gap, *events = await ndjson(env, "since=5")
        assert gap == {"gap": {"message": "events 6 to 20 are no longer in the journal "
                                          "(retention removed them); the stream goes on",
                               "since": 5, "first": 21, "missed": 15}}
        assert [x["seq"] for x in events] == list(range(21, 31))
        response = await env.client.get("/v1/events?since=5&follow=0",
                                        headers={"Accept": "text/event-stream"})
        frames = parse_sse(await response.text())
        assert (frames[0]["id"], frames[0]["event"]) == ("20", "gap")
        assert json.loads(frames[0]["data"])["first"] == 21
        assert [f["id"] for f in frames[1:]] == [str(s) for s in range(21, 31)]
        # Exactly continued: no notice. Without a position: no notice either (none was asked).
        assert [x["seq"] for x in await ndjson(env, "since=20")] == list(range(21, 31))
        assert [x["seq"] for x in await ndjson(env, "")] == list(range(21, 31))


async def test_a_gap_notice_however_the_stream_is_filtered(tmp_path: Path) -> None:
    """The gap is about the journal, not the filter: a filtered reader is told too."""
    async with control_env(tmp_path) as env:
        await env.publish(*(ev(i, "a" if i % 2 else "b") for i in range(30)))
        env.bus.journal.max_count = 10
        env.bus.journal.prune()
        gap, *events = await ndjson(env, "since=5&domain=b")
        assert gap["gap"]["first"] == 21
        assert [x["seq"] for x in events] == list(range(21, 31, 2))


# -- filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "key"), [
    ("domian=a", "domian"), ("since=0&Since=1", "Since"), ("kind=lifecyle", "kind"),
    ("kind=lifecycle&kind=", "kind"), ("domain=", "domain"), ("follow=1&follow=0", "follow"),
    ("since=1&since=2", "since"), ("domain=4", "domain"), ("follow=yes", "follow"),
])
async def test_every_parameter_is_checked_and_named(tmp_path: Path, query: str,
                                                    key: str) -> None:
    """A typo in a parameter's name or in a kind is a 400 naming it, not a stream filtered
    by nothing (everything) or by something that never comes (nothing, for ever); an id is a
    running domain's, or a 400."""
    async with control_env(tmp_path) as env:
        body = await problem_of(env, query)
        assert body["key"] == key, body
        assert body["title"] == "Bad Request" and body["detail"]


async def test_domain_by_name_uuid_or_id(tmp_path: Path) -> None:
    """domain= takes what the rest of the API does: a name, a UUID (with or without dashes, any
    case) or the id of a running domain; it used to match names only."""
    async with control_env(tmp_path) as env:
        env.inventory.replace_all([DomainState("vm1", UUID_A, 4, 1, 1, True)])
        vm1 = [replace(ev(i, "vm1"), uuid=UUID_A) for i in range(3)]
        other = replace(ev(9, "vm2"), uuid="22222222-2222-2222-2222-222222222222")
        await env.publish(vm1[0], other, vm1[1], ev(5, None, "connection"), vm1[2])
        for key in ("vm1", UUID_A, UUID_A.replace("-", "").upper(), "4"):
            got = await ndjson(env, "since=0&domain=" + key)
            assert [x["seq"] for x in got] == [1, 3, 5], key
        request = await start_follow(env, f"follow=1&domain={UUID_A}")
        await env.publish(other, vm1[0])
        response = await asyncio.wait_for(request, 5)
        assert [x["seq"] for x in await read_json_lines(response, 1)] == [7]
        response.close()


async def test_known_kinds_are_accepted(tmp_path: Path) -> None:
    """Every kind virtmon journals is a valid filter, and so is a generic event_<id>."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1, "a", "reboot"), ev(2, None, "audit"))
        assert [x["seq"] for x in await ndjson(
            env, "since=0&kind=reboot&kind=audit&kind=event_99&kind=nic_mac_change")] == [1, 2]


# -- Last-Event-ID, heartbeats, the end, limits -------------------------------------------------


async def test_last_event_id_wins_over_since_for_a_reconnecting_event_source(
        tmp_path: Path) -> None:
    """A real EventSource opened on ?since=0 reconnects with Last-Event-ID: it continues after
    the last event it has, not from since=0 again (300 duplicates per reconnect before)."""
    async with control_env(tmp_path) as env:
        await env.publish(*(ev(i) for i in range(5)))
        url = env.client.make_url("/v1/events?since=0&follow=0")
        seen: list[int] = []
        # follow=0: each connection ends after its replay, and the client reconnects at once.
        async with EventSource(url, reconnection_time=datetime.timedelta(milliseconds=5),
                               max_connect_retry=3) as source:
            async for message in source:
                seen.append(int(message.last_event_id))
                if len(seen) == 5:
                    await env.publish(ev(6))
                if len(seen) == 6:
                    break
        assert seen == [1, 2, 3, 4, 5, 6]


async def test_an_event_source_without_a_position_loses_nothing_across_a_reconnect(
        tmp_path: Path) -> None:
    """An SSE follower opened without a position is told where it starts (an id-only message),
    so an EventSource that reconnects before any event came resumes exactly there: events
    journaled while it was away are replayed, not skipped."""
    async with control_env(tmp_path) as env:
        await env.publish(ev(1))
        url = env.client.make_url("/v1/events")
        async with EventSource(url, reconnection_time=datetime.timedelta(milliseconds=200),
                               max_connect_retry=3) as source:
            await wait_until(lambda: len(env.bus._subscriptions) == 1)
            env.bus.end_streams()  # the connection ends before any event (a daemon restart)
            await env.publish(ev(2))  # while the client is away
            kinds = []
            async with asyncio.timeout(10):
                async for message in source:
                    kinds.append((message.type, message.last_event_id))
                    if message.type == "lifecycle":
                        break
        assert kinds == [("end", "1"), ("lifecycle", "2")]


async def test_an_idle_follower_gets_heartbeats(tmp_path: Path) -> None:
    """With nothing to send, a follower hears a heartbeat each interval: an SSE comment (which an
    EventSource ignores) or an NDJSON heartbeat notice, so a dead stream shows."""
    limits = StreamLimits(heartbeat=0.05)
    async with control_env(tmp_path, limits=limits) as env:
        await env.publish(ev(1))
        request = await start_follow(env, "", {"Accept": "text/event-stream"})
        response = await asyncio.wait_for(request, 5)
        text = b""
        while text.count(b": heartbeat\n\n") < 2:
            text += await asyncio.wait_for(response.content.readany(), 5)
        # The follower's position first (an id without an event), then only heartbeats.
        assert text.startswith(b"id: 1\n\n")
        assert set(text.split(b"\n\n")[1:]) <= {b": heartbeat", b""}
        response.close()
        await wait_until(lambda: not env.bus._subscriptions)  # the next heartbeat finds it gone
        request = await start_follow(env, "follow=1")
        response = await asyncio.wait_for(request, 5)
        (beat,) = await read_json_lines(response, 1)
        assert beat["heartbeat"]["last_seq"] == 1 and beat["heartbeat"]["time"] > 0
        response.close()


async def test_a_follower_hears_the_end_when_the_daemon_stops(tmp_path: Path) -> None:
    """At shutdown a follower's stream ends with an end notice saying where to resume."""
    async with control_env(tmp_path) as env:
        request = await start_follow(env, "follow=1")
        await env.publish(ev(1))
        response = await asyncio.wait_for(request, 5)
        assert (await read_json_lines(response, 1))[0]["seq"] == 1
        env.bus.end_streams()
        assert json.loads(await asyncio.wait_for(response.text(), 5)) == {"end": {
            "message": "the daemon is stopping; resume with since", "since": 1}}


async def test_streams_are_limited_per_caller_and_in_total(tmp_path: Path) -> None:
    """Beyond control.max_streams_per_caller a caller's next stream is 429, beyond
    control.max_streams anyone's is 503, both with Retry-After; a closed stream frees its
    slot."""
    for limits, status in [(StreamLimits(max_streams=5, max_streams_per_caller=2), 429),
                           (StreamLimits(max_streams=2, max_streams_per_caller=5), 503)]:
        async with control_env(tmp_path / str(status), limits=limits) as env:
            first = await asyncio.wait_for(await start_follow(env, "follow=1"), 5)
            second = await asyncio.wait_for(await start_follow(env, "follow=1"), 5)
            refused = await env.client.get("/v1/events?follow=1")
            assert refused.status == status and refused.headers["Retry-After"]
            assert "max_streams" in (await refused.json(content_type=None))["detail"]
            first.close()
            await wait_until(lambda: len(env.bus._subscriptions) == 1)
            third = await asyncio.wait_for(await start_follow(env, "follow=1"), 5)
            assert third.status == 200
            second.close()
            third.close()


async def test_a_follower_that_stops_reading_is_disconnected(tmp_path: Path) -> None:
    """A client that reads nothing while the daemon has data for it is disconnected once a write
    has waited write_timeout: its slot and subscription do not stay taken for ever."""
    limits = StreamLimits(queue_size=10_000, write_timeout=0.5)
    async with control_env(tmp_path, limits=limits) as env:
        request = await start_follow(env, "follow=1")
        response = await asyncio.wait_for(request, 5)
        big = "x" * 65536
        for _ in range(20):  # up to 80 MB: more than any socket buffers hold
            await env.publish(*(replace(ev(i), payload={"x": big}) for i in range(64)))
            if not env.bus._subscriptions:
                break
        await wait_until(lambda: not env.bus._subscriptions, timeout=10)
        response.close()
