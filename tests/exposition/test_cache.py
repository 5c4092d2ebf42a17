"""The exposition cache: each form rendered once a cycle, ahead for the forms the last cycle
was asked for, else on its first request, and nothing rendered after a cycle nobody scraped."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.conftest import daemon_config, running_daemon
from tests.waiting import next_cycle
from virtmon.exposition.cache import Exposition, Variant
from virtmon.exposition.family import MetricFamily
from virtmon.exposition.process import process_registry

TEST_URI = "test:///default"
NO_ADMIN = {"collectors": {"admin": False}}
# Long enough that no second cycle runs during a test: the exposition stays put.
SLOW = {"interval": 30.0, **NO_ADMIN}
# Every form a scraper may ask for: (Accept, Accept-Encoding) -> the form.
REQUESTS = {
    ("text/plain", "identity"): Variant(openmetrics=False, gzipped=False),
    ("text/plain", "gzip"): Variant(openmetrics=False, gzipped=True),
    ("application/openmetrics-text", "identity"): Variant(openmetrics=True, gzipped=False),
    ("application/openmetrics-text", "gzip"): Variant(openmetrics=True, gzipped=True),
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that leaves gzip bodies compressed."""
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


async def scrape(session: aiohttp.ClientSession, url: str, accept: str, encoding: str) -> bytes:
    """One GET of /metrics with these headers: its body as sent."""
    async with session.get(url, headers={"Accept": accept,
                                         "Accept-Encoding": encoding}) as response:
        assert response.status == 200
        return await response.read()


def series(families: Iterable[object]) -> dict[tuple[str, tuple[tuple[str, str], ...]], str]:
    """Every sample by name and labels, its value as text (NaN equals NaN)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): repr(sample.value)
            for family in families for sample in family.samples}  # type: ignore[attr-defined]


async def test_cycles_nobody_scrapes_render_nothing(short_tmp: Path) -> None:
    """Cycles run without a scrape publish their families and render no form at all."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI},
                        collect={"interval": 0.2, **NO_ADMIN})
    async with running_daemon(cfg) as daemon:
        published = [daemon.scheduler.exposition]
        for _ in range(3):
            await next_cycle(daemon.scheduler)
            published.append(daemon.scheduler.exposition)
    assert len({id(exposition) for exposition in published}) == len(published)
    assert all(exposition.samples > 0 for exposition in published)
    assert [sum(exposition.renders.values()) for exposition in published] == [0] * 4


async def test_concurrent_scrapes_render_each_form_once(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """Eight concurrent scrapes of each of the four forms render each form once in the cycle,
    and every scrape of a form gets the same bytes."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        url = daemon.metrics_address + "/metrics"
        exposition = daemon.scheduler.exposition
        assert not exposition.renders
        asked = [key for key in REQUESTS for _ in range(8)]
        bodies = await asyncio.gather(*(scrape(session, url, *key) for key in asked))
        assert daemon.scheduler.exposition is exposition  # no cycle ran in between
    assert exposition.renders == dict.fromkeys(REQUESTS.values(), 1)
    for key in REQUESTS:
        assert len({body for asked_key, body in zip(asked, bodies, strict=True)
                    if asked_key == key}) == 1, key


async def test_concurrent_first_requests_share_one_render() -> None:
    """Requests for a form that arrive while its first render runs wait for that render."""
    family = MetricFamily("virtmon_test_value", "gauge", "A value.", ("domain",))
    for index in range(20_000):
        family.add((f"domain-{index}",), index)
    exposition = Exposition([family], process_registry())
    variants = list(REQUESTS.values()) * 8
    bodies = await asyncio.gather(*(exposition.serve(variant) for variant in variants))
    assert exposition.renders == dict.fromkeys(REQUESTS.values(), 1)
    assert all(body is exposition.cached(variant)
               for variant, body in zip(variants, bodies, strict=True))


async def test_a_new_cycle_is_rendered_afresh(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """A scrape after the next cycle serves that cycle's values, rendered for it, not the
    previous cycle's bytes."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI},
                        collect={"interval": 0.3, **NO_ADMIN})
    async with running_daemon(cfg) as daemon:
        url = daemon.metrics_address + "/metrics"
        first = daemon.scheduler.exposition
        before = await scrape(session, url, "text/plain", "identity")
        await next_cycle(daemon.scheduler)
        second = daemon.scheduler.exposition
        after = await scrape(session, url, "text/plain", "identity")
        assert second is not first

    def last_success(body: bytes) -> float:
        return next(sample.value for family in parse_text(body.decode())
                    for sample in family.samples
                    if sample.name == "virtmon_collection_last_success_timestamp_seconds")

    assert last_success(after) > last_success(before)
    assert (first.renders, second.renders) == ({REQUESTS["text/plain", "identity"]: 1},) * 2


async def test_the_forms_asked_for_are_rendered_ahead_for_the_next_cycle(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """A form scraped during one cycle is ready when the next is published (its scrapers do
    not wait for a render); forms nobody asked for are not rendered, nor kept when a gzip body
    is made from them; a cycle after one nobody scraped renders nothing."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI},
                        collect={"interval": 0.3, **NO_ADMIN})
    openmetrics_gzip = REQUESTS["application/openmetrics-text", "gzip"]
    async with running_daemon(cfg) as daemon:
        url = daemon.metrics_address + "/metrics"
        await scrape(session, url, "application/openmetrics-text", "gzip")
        await next_cycle(daemon.scheduler)
        ahead = daemon.scheduler.exposition
        assert ahead.cached(openmetrics_gzip) is not None  # before any scrape of this cycle
        assert ahead.cached(openmetrics_gzip._replace(gzipped=False)) is None
        await next_cycle(daemon.scheduler)
        unscraped = daemon.scheduler.exposition
    # The gzip body is made from its plain one; no text form was asked for or made.
    assert set(ahead.renders) == {openmetrics_gzip, openmetrics_gzip._replace(gzipped=False)}
    assert not unscraped.renders


async def test_both_formats_carry_the_same_series_and_values(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """Within one cycle, text and OpenMetrics (plain or gzip) carry the same samples with the
    same values, the process series included."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        url = daemon.metrics_address + "/metrics"
        exposition = daemon.scheduler.exposition
        bodies = {key: await scrape(session, url, *key) for key in REQUESTS}
        assert daemon.scheduler.exposition is exposition
    plain = {key: gzip.decompress(body) if key[1] == "gzip" else body
             for key, body in bodies.items()}
    assert plain["text/plain", "gzip"] == plain["text/plain", "identity"]
    openmetrics = plain["application/openmetrics-text", "identity"]
    assert plain["application/openmetrics-text", "gzip"] == openmetrics
    text_series = series(parse_text(plain["text/plain", "identity"].decode()))
    om_series = series(parse_openmetrics(openmetrics.decode()))  # type: ignore[no-untyped-call]
    assert any(name == "process_cpu_seconds_total" for name, _ in text_series)
    assert any(name.startswith("libvirt_domain_") for name, _ in text_series)
    assert om_series == text_series


async def test_head_answers_with_the_headers_of_get_and_no_body(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """HEAD /metrics gets GET's status, content type, encoding and length, without a body."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        url = daemon.metrics_address + "/metrics"
        for accept, encoding in REQUESTS:
            headers = {"Accept": accept, "Accept-Encoding": encoding}
            async with session.head(url, headers=headers) as head:
                assert head.status == 200
                assert await head.read() == b""
            async with session.get(url, headers=headers) as get:
                body = await get.read()
            for name in ("Content-Type", "Content-Encoding", "Vary"):
                assert head.headers.get(name) == get.headers.get(name), name
            assert head.headers["Content-Length"] == str(len(body))
