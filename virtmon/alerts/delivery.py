"""Webhook delivery: one task per receiver URL, reading its own rows of the outbox.

Each URL of a receiver (each peer of an Alertmanager cluster) is its own target with its own
task, HTTP session and timeout, so a receiver that hangs or refuses delays no other. A target
sends its oldest pending rows first (up to ``batch_size`` in one request) and records the
outcome before it sends more:

- 2xx: delivered.
- 429: retried after ``Retry-After`` (seconds or an HTTP date), else after the backoff.
- 408, 5xx, connection errors and timeouts: retried with exponential backoff and jitter
  (``backoff_initial`` x 2^(attempts-1), at most ``backoff_max``, times a random 0.5..1:
  virtmon.backoff).
- any other status (3xx, 4xx): a dead letter, kept in the outbox and retryable.
- a row older than ``max_age`` is given up (expired), counted.

Delivery is at least once: a row is marked delivered only after the receiver's 2xx, so a crash
in between sends it again, with the same ``Idempotency-Key`` header.
"""

from __future__ import annotations

import hashlib
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import anyio
import anyio.to_thread
import structlog

from virtmon.alerts import formats
from virtmon.alerts.model import Alert, Notification
from virtmon.alerts.store import AlertStore, OutboxRow
from virtmon.backoff import backoff
from virtmon.config import Receiver, receiver_ssl_context

log = structlog.get_logger("virtmon.alerts.delivery").bind(component="webhooks")

IDLE_CHECK = 30.0  # seconds between queue checks with nothing to do (expiry, stats)
QUEUE_LOOK = 2.0  # seconds between expiry and counting passes while rows are being sent
MAX_RESPONSE = 64 * 1024


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def answer_kind(status: int | None) -> str:
    """What a receiver's answer means, for a delivery and a re-send alike: ``accepted`` (2xx),
    ``retry`` (no answer, 408, 429, 5xx: try again later) or ``refused`` (any other status:
    sending the same again will not help)."""
    if status is not None and 200 <= status < 300:
        return "accepted"
    if status is None or status in (408, 429) or status >= 500:
        return "retry"
    return "refused"


# A re-send's outcome by answer_kind: one refusal counts as rejected, not also as a failure.
RESEND_OUTCOMES = {"accepted": "resent", "retry": "resend_failed", "refused": "resend_rejected"}


@dataclass(frozen=True)
class ReceiverFiles:
    """What a receiver's files hold, read once (blocking): the HMAC secret, the TLS context, and
    a digest of every file's bytes, so a reload can tell a renewed file from an unchanged one."""

    secret: bytes | None
    ssl_context: ssl.SSLContext | None
    digest: str

    @classmethod
    def read(cls, receiver: Receiver) -> ReceiverFiles:
        """Read them; OSError or ssl.SSLError if one cannot be read or loaded."""
        digest = hashlib.sha256()
        for name in (receiver.hmac_secret_file, receiver.tls_ca_file, receiver.tls_cert_file,
                     receiver.tls_key_file):
            digest.update(Path(name).read_bytes() if name else b"")
            digest.update(b"\0")
        secret = (Path(receiver.hmac_secret_file).read_bytes().strip()
                  if receiver.hmac_secret_file else None)
        context = receiver_ssl_context(receiver.tls_ca_file, receiver.tls_cert_file,
                                       receiver.tls_key_file)
        return cls(secret, context, digest.hexdigest())


@dataclass(frozen=True)
class ResendRound:
    """One Alertmanager re-send round of a target, once finished (for benchmarks and debugging).

    ``complete`` is False when a request failed and the round stopped there."""

    ended_at: float
    seconds: float
    alerts: int
    requests: int
    complete: bool


class Target:
    """Delivers one receiver URL's outbox rows; counts outcomes for the metrics."""

    def __init__(self, receiver: Receiver, url: str, store: AlertStore, host: str,
                 generator_url: str = "", clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 notified: Callable[[Sequence[Alert]], list[Alert]] | None = None,
                 files: ReceiverFiles | None = None) -> None:
        self.receiver = receiver
        self.url = url
        self.store = store
        self.host = host
        self.generator_url = generator_url
        self.clock = clock
        self.rng = rng or random.Random()
        # Of the firing alerts, those whose firing was announced (not silenced): re-sent.
        self.notified = notified or list
        self.endpoint = (formats.alertmanager_endpoint(url) if receiver.kind == "alertmanager"
                         else url)
        # Given when read already (off the loop, by the service); else read here.
        self.files = files if files is not None else ReceiverFiles.read(receiver)
        self.outcomes: Counter[str] = Counter()
        self.attempts = 0
        self.depth = 0
        self.oldest: float | None = None
        self._wake = anyio.Event()
        # One request at a time per URL: deliveries and Alertmanager re-sends never overtake.
        self._sending = anyio.Lock()
        self._counted = anyio.Event()  # the queue has been looked at once
        self._next_request = 0.0
        self.last_resend: ResendRound | None = None
        self._log = log.bind(receiver=receiver.name, url=url)

    def serves(self, receiver: Receiver, url: str, generator_url: str,
               files: ReceiverFiles) -> bool:
        """Whether this target, as it runs, is what ``receiver`` asks for ``url`` (a reload)."""
        return (self.receiver == receiver and self.url == url
                and self.generator_url == generator_url and self.files.digest == files.digest)

    def kick(self) -> None:
        """New rows may be due (called on the loop after the engine commits)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled (and re-send firing alerts to an Alertmanager)."""
        connector = aiohttp.TCPConnector(limit=4, ssl=self.files.ssl_context or True)
        async with aiohttp.ClientSession(connector=connector) as session, \
                anyio.create_task_group() as group:
            if self.receiver.kind == "alertmanager":
                group.start_soon(self._resend, session)
            await self._deliver(session)

    async def _sleep(self, seconds: float) -> None:
        with anyio.move_on_after(max(0.0, seconds)):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def _deliver(self, session: aiohttp.ClientSession) -> None:
        next_look = 0.0
        while True:
            now = self.clock()
            looked = now >= next_look
            if looked:
                await self._look_at_queue(now)
                next_look = now + QUEUE_LOOK
            rows = await anyio.to_thread.run_sync(
                self.store.due, self.receiver.name, self.url, self.receiver.batch_size)
            if not rows:
                # Nothing pending: nothing to expire, and the count is known without a scan.
                # (At 500 alerts/s the queue empties after nearly every request; a look here
                # cost three worker-thread steps per request.)
                self.depth, self.oldest = 0, None
                await self._sleep(IDLE_CHECK)
                continue
            if rows[0].next_attempt > now and not looked:  # the head backing off: in order;
                next_look = 0.0  # changed since the last look: count it before the wait
                continue
            if rows[0].next_attempt > now:
                await self._sleep(min(rows[0].next_attempt - now, IDLE_CHECK))
                continue
            batch = [r for r in rows if r.next_attempt <= now]
            await self._rate_limit()
            await self.send(session, batch)

    async def _look_at_queue(self, now: float) -> None:
        """Expire rows past max_age and count the queue (for the metrics and status). Both scan
        every pending row of the target, so a backlog is looked at every QUEUE_LOOK seconds,
        not before each request (at 20,000 pending that was 50 ms a request)."""
        expired = await anyio.to_thread.run_sync(
            self.store.expire, self.receiver.name, self.url, now - self.receiver.max_age, now)
        if expired:
            self.outcomes["expired"] += expired
            self._log.warning("virtmon.webhook.expired", rows=expired)
        self.depth, self.oldest = await anyio.to_thread.run_sync(
            self.store.queue_stats, self.receiver.name, self.url)
        self._counted.set()

    async def _rate_limit(self) -> None:
        if self.receiver.rate_limit <= 0:
            return
        now = time.monotonic()
        if self._next_request > now:
            await anyio.sleep(self._next_request - now)
        self._next_request = max(now, self._next_request) + 1.0 / self.receiver.rate_limit

    def body(self, notes: Sequence[Notification], now: float) -> tuple[bytes, str]:
        """The request body and content type for this receiver's kind."""
        kind = self.receiver.kind
        if kind == "alertmanager":
            return formats.alertmanager_body(notes, now, self.receiver.resend_interval,
                                             self.generator_url)
        if kind == "cloudevents":
            return formats.cloudevents_body(notes, self.host, self.receiver.batch_size != 1)
        return formats.json_body(notes, self.host, now)

    async def post(self, session: aiohttp.ClientSession, notes: Sequence[Notification],
                   key: str) -> tuple[int | None, str | None, str]:
        """One request under the Idempotency-Key ``key``: (status or None, Retry-After, error
        text)."""
        now = self.clock()
        body, content_type = self.body(notes, now)
        headers = {**self.receiver.headers, "Content-Type": content_type,
                   formats.IDEMPOTENCY_HEADER: key,
                   "User-Agent": "virtmon"}
        if self.files.secret is not None:
            headers[formats.SIGNATURE_HEADER] = formats.sign(self.files.secret, int(now), body)
        self.attempts += 1
        try:
            async with session.post(
                self.endpoint, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.receiver.timeout),
            ) as response:
                text = (await response.content.read(MAX_RESPONSE)).decode("utf-8", "replace")
                return response.status, response.headers.get("Retry-After"), text[:500]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, None, f"{type(exc).__name__}: {exc}"[:500]

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``, by the receiver's backoff settings."""
        return backoff(attempts, self.receiver.backoff_initial, self.receiver.backoff_max,
                       self.rng)

    async def send(self, session: aiohttp.ClientSession, rows: Sequence[OutboxRow]) -> str:
        """Send rows in one request and record the outcome; returns it."""
        notes = [r.notification for r in rows]
        # A retry carries the first attempt's key (its rows are the same ones: see due()).
        key = rows[0].batch or formats.batch_key(notes)
        async with self._sending:
            status, retry_after, error = await self.post(session, notes, key)
        now = self.clock()
        ids = [r.id for r in rows]
        attempts = max(r.attempts for r in rows) + 1
        kind = answer_kind(status)
        if kind == "accepted":
            outcome, state, next_attempt, error = "delivered", "delivered", now, ""
        elif kind == "refused":
            outcome, state, next_attempt = "dead", "dead", now
        elif status == 429:
            delay = retry_after_seconds(retry_after, now)
            outcome, state = "rate_limited", "pending"
            next_attempt = now + (delay if delay is not None else self.backoff(attempts))
        else:
            outcome, state = ("error" if status is None else "failed"), "pending"
            next_attempt = now + self.backoff(attempts)
        text = None if outcome == "delivered" else (f"HTTP {status}: {error}" if status else error)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                lambda: self.store.mark(ids, state, now, next_attempt=next_attempt, error=text,
                                        batch=key))
        self.outcomes[outcome] += len(rows)
        if outcome == "delivered":
            self._log.debug("virtmon.webhook.delivered", rows=len(rows), status=status)
        else:
            self._log.warning("virtmon.webhook.not_delivered", outcome=outcome, rows=len(rows),
                              status=status, error=text, retry_in=round(next_attempt - now, 2))
        return outcome

    async def _resend(self, session: aiohttp.ClientSession) -> None:
        """Re-send every firing alert while caught up, so Alertmanager keeps it active."""
        await self._counted.wait()
        while True:
            # Under the sending lock, with the queue read fresh: a resolve that is queued or
            # being sent is never overtaken by a stale "firing" re-send.
            async with self._sending:
                depth, _ = await anyio.to_thread.run_sync(
                    self.store.queue_stats, self.receiver.name, self.url)
                if depth == 0:
                    await self._resend_firing(session)
            await anyio.sleep(self.receiver.resend_interval)

    def _firing_notes(self) -> list[Notification]:
        """The notifications a re-send round repeats (blocking; a worker thread's job: at
        10,000 firing alerts building them takes 30-160 ms, which would stall the loop)."""
        alerts = self.notified(self.store.alerts("firing", limit=None))
        now = self.clock()
        return [Notification.of(a, now) for a in alerts]

    async def _resend_firing(self, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        notes = await anyio.to_thread.run_sync(self._firing_notes)
        requests, complete = 0, True
        for start in range(0, len(notes), self.receiver.batch_size):
            await self._rate_limit()
            batch = notes[start:start + self.receiver.batch_size]
            status, _, error = await self.post(session, batch, formats.batch_key(batch))
            requests += 1
            outcome = RESEND_OUTCOMES[answer_kind(status)]
            self.outcomes[outcome] += 1
            if outcome != "resent":
                self._log.info(f"virtmon.webhook.{outcome}", status=status, error=error)
                complete = False
                break
        self.last_resend = ResendRound(self.clock(), time.monotonic() - started, len(notes),
                                       requests, complete)
