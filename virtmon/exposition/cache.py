"""The exposition cache: rendered once per collection cycle, served as bytes by every scrape.

A scrape never touches libvirt and never renders: it picks one of four prepared bodies (Prometheus
text or OpenMetrics, each plain or gzip) by ``Accept`` and ``Accept-Encoding``. Scrape cost does
not grow with the number of scrapers.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass

from virtmon.collectors.base import MetricFamily
from virtmon.exposition.render import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
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


@dataclass(frozen=True, slots=True)
class Exposition:
    """One cycle's rendered output in every form a scraper may ask for."""

    text: bytes
    text_gzip: bytes
    openmetrics: bytes
    openmetrics_gzip: bytes
    samples: int

    @classmethod
    def render(cls, families: Sequence[MetricFamily]) -> Exposition:
        """Render and compress (CPU work: call it in a worker thread for large outputs)."""
        text = render_text(families)
        openmetrics = render_openmetrics(families)
        return cls(
            text=text,
            # Level 1: several times faster than the default and nearly as small for this text.
            text_gzip=gzip.compress(text, compresslevel=1, mtime=0),
            openmetrics=openmetrics,
            openmetrics_gzip=gzip.compress(openmetrics, compresslevel=1, mtime=0),
            samples=sum(len(f.samples) for f in families),
        )

    def choose(self, accept: str, accept_encoding: str) -> tuple[bytes, str, str | None]:
        """(body, content type, content encoding) for a request's headers."""
        wants_openmetrics = accepts(accept, "application/openmetrics-text")
        wants_gzip = accepts(accept_encoding, "gzip")
        if wants_openmetrics:
            return (self.openmetrics_gzip if wants_gzip else self.openmetrics,
                    CONTENT_TYPE_OPENMETRICS, "gzip" if wants_gzip else None)
        return (self.text_gzip if wants_gzip else self.text, CONTENT_TYPE_TEXT,
                "gzip" if wants_gzip else None)
