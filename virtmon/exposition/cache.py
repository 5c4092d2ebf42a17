"""The exposition cache: one cycle's families, each form rendered when first asked for.

A scrape never touches libvirt. Each of the four bodies (Prometheus text or OpenMetrics, each
plain or gzip) is rendered once per cycle and served as bytes to every request until the next
cycle, so scrape cost does not grow with the number of scrapers. The forms scrapers asked for in
one cycle are rendered ahead for the next (:meth:`Exposition.render_ahead`, by the scheduler,
before it publishes): steady scrapers never wait for a render. A form asked for the first time
renders on that request, in a worker thread (~20 ms per 1,000 domains for OpenMetrics with gzip:
too long for the loop); requests for it arriving meanwhile wait for the same render. A cycle
after one nobody scraped renders nothing.
"""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import anyio
import anyio.to_thread
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from virtmon.exposition.family import MetricFamily
from virtmon.exposition.render import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    CarriedSeries,
    render_openmetrics,
    render_text,
)


def accepts(header: str, token: str) -> bool:
    """Whether an Accept-style header names ``token`` with a quality above 0 (``;q=0`` refuses)."""
    for part in header.split(","):
        name, *parameters = (piece.strip() for piece in part.split(";"))
        if name.lower() != token:
            continue
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class Variant(NamedTuple):
    """One form of the exposition: its format and whether it is gzip-compressed."""

    openmetrics: bool
    gzipped: bool

    @property
    def content_type(self) -> str:
        """The Content-Type header of this form."""
        return CONTENT_TYPE_OPENMETRICS if self.openmetrics else CONTENT_TYPE_TEXT

    @property
    def content_encoding(self) -> str | None:
        """The Content-Encoding header of this form (None: identity)."""
        return "gzip" if self.gzipped else None


def negotiate(accept: str, accept_encoding: str) -> Variant:
    """The form a request's ``Accept`` and ``Accept-Encoding`` headers ask for."""
    return Variant(openmetrics=accepts(accept, "application/openmetrics-text"),
                   gzipped=accepts(accept_encoding, "gzip"))


class _Collected(Collector):
    """Metrics already collected, handed out as they are."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


class Exposition:
    """One cycle's families, rendered per form on demand and cached for the cycle.

    ``client``: a prometheus_client registry (the ``process_*`` series) rendered by
    prometheus_client after the families. It is collected once, by the first render, so that
    every form of one cycle shows the same values. ``samples`` counts the families' samples only.
    ``carried``: the series carried from one cycle's renders to the next (the scheduler's).
    """

    def __init__(self, families: Sequence[MetricFamily],
                 client: CollectorRegistry | None = None,
                 carried: CarriedSeries | None = None) -> None:
        self.families = families
        self._carried = carried
        self.samples = sum(len(family.samples) for family in families)
        # Bodies made per form (a second one would be wasted work): for tests and benchmarks.
        self.renders: Counter[Variant] = Counter()
        # The forms requests asked for: the next cycle renders them ahead.
        self.asked: set[Variant] = set()
        self._client = client
        self._client_once: CollectorRegistry | None = None
        self._bodies: dict[Variant, bytes] = {}
        # The forms rendered ahead (asked for in the previous cycle).
        self._ahead: set[Variant] = set()
        # One render of each form at a time, across worker threads (a gzip body is made from
        # its plain one, so both of a format share a lock).
        self._format_locks = {False: threading.RLock(), True: threading.RLock()}
        self._lock = threading.Lock()  # the collected client and the counts
        # Forms being rendered for a request, on the loop: later requests wait for them.
        self._rendering: dict[Variant, anyio.Event] = {}

    def cached(self, variant: Variant) -> bytes | None:
        """The body of ``variant`` if it has been rendered (no work)."""
        return self._bodies.get(variant)

    def body(self, variant: Variant) -> bytes:
        """The body of ``variant``, rendered now unless done already (CPU work, any thread)."""
        body = self._bodies.get(variant)
        if body is not None:
            return body
        with self._format_locks[variant.openmetrics]:
            body = self._bodies.get(variant)
            if body is None:
                if variant.gzipped:
                    body = self._gzipped(variant._replace(gzipped=False))
                else:
                    body = self._render(variant.openmetrics)
                with self._lock:
                    self.renders[variant] += 1
                self._bodies[variant] = body
        return body

    async def serve(self, variant: Variant) -> bytes:
        """The body of ``variant`` for a request on the loop: cached bytes, else rendered in a
        worker thread, one render shared by the requests that ask for it meanwhile."""
        self.asked.add(variant)
        while (body := self._bodies.get(variant)) is None:
            pending = self._rendering.get(variant)
            if pending is not None:
                await pending.wait()  # the render failed if no body follows: try once more
                continue
            done = self._rendering[variant] = anyio.Event()
            try:
                return await anyio.to_thread.run_sync(self.body, variant)
            finally:
                del self._rendering[variant]
                done.set()
        return body

    def render_ahead(self, variants: Iterable[Variant]) -> None:
        """Render these forms now (CPU work, in a worker thread): the ones the previous cycle
        was asked for, so that its scrapers find them ready."""
        variants = list(variants)
        self._ahead.update(variants)
        for variant in variants:
            self.body(variant)

    @property
    def text(self) -> bytes:
        """Prometheus text format 0.0.4, plain."""
        return self.body(Variant(openmetrics=False, gzipped=False))

    @property
    def openmetrics(self) -> bytes:
        """OpenMetrics 1.0, plain."""
        return self.body(Variant(openmetrics=True, gzipped=False))

    def _gzipped(self, plain: Variant) -> bytes:
        """The gzip body made from the plain one. The plain body is kept only when it is asked
        for too: Prometheus asks for gzip alone, and the plain body is 5-15 times larger (~0.8
        MiB per 1,000 domains) and would be held for the whole cycle."""
        body = self._bodies.get(plain)
        if body is None:
            body = self._render(plain.openmetrics)
            with self._lock:
                self.renders[plain] += 1
            # Asked for meanwhile: a request for it waits on this format's lock.
            if plain in self.asked or plain in self._ahead:
                self._bodies[plain] = body
        # Level 1: several times faster than the default and nearly as small here.
        return gzip.compress(body, compresslevel=1, mtime=0)

    def _render(self, openmetrics: bool) -> bytes:
        client = self._collected_client()
        if openmetrics:
            return render_openmetrics(self.families, client, self._carried)
        return render_text(self.families, client, self._carried)

    def _collected_client(self) -> CollectorRegistry | None:
        """``client``'s metrics as the first render found them: both formats show the same."""
        if self._client is None:
            return None
        with self._lock:
            if self._client_once is None:
                once = CollectorRegistry(auto_describe=False)
                once.register(_Collected(self._client.collect()))
                self._client_once = once
            return self._client_once
