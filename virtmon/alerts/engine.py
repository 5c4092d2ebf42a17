"""The alert engine: journaled events and each cycle's families in, stored transitions out.

The engine tails the journal rather than a queue of its own: it handles every event after the
last one it handled (``alert_meta.last_seq``, stored in the same transaction as the transitions
those events caused). So a burst never overflows it, and an event the journal accepted is
handled even if virtmon is killed right after journaling it. The bus listener keeps the last
journaled events in memory (``RECENT`` of them), which the engine takes instead of reading the
journal as long as they follow on from ``last_seq``; after a gap (start-up, a burst beyond
``RECENT``) it reads the journal.
Events that change nothing (most of them: no rule matches) move ``last_seq`` in memory and are
stored with the next commit, or every ``LAST_SEQ_SAVE`` seconds: a page of them cost a
transaction. Killed in between, virtmon reads them again on start and they change nothing again.

Invariant: ``self.active`` mirrors the pending and firing rows of the ``alerts`` table; only
this engine's single task changes either, and it changes the mirror after the commit.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import anyio
import anyio.to_thread
import structlog

from virtmon.alerts.model import Alert, Notification, fingerprint
from virtmon.alerts.rules import (
    EventRule,
    EventRuleIndex,
    Rule,
    ThresholdRule,
    event_fields,
    render,
)
from virtmon.alerts.silences import Silences
from virtmon.alerts.store import AlertStore, Destination
from virtmon.events.journal import Journal
from virtmon.events.model import Event
from virtmon.exposition.family import LabelValues, MetricFamily

log = structlog.get_logger("virtmon.alerts.engine").bind(component="alerts")

PAGE = 500
RECENT = 2 * PAGE  # journaled events kept in memory for the engine (read again beyond that)
LAST_SEQ_SAVE = 5.0  # seconds: how long events that changed nothing go without storing last_seq
FAMILY_QUEUE = 4
GONE_SWEEP = 30.0  # seconds between looks for alerts whose domain no longer exists
# Transitions logged at info per rule and minute; beyond, they are counted and summed up once a
# minute (a flapping alert logged each change: 8 lines a second under domain churn).
LOG_BURST = 20
LOG_WINDOW = 60.0

# What tells the engine which domains exist: (libvirt URI, domain names), or None while that is
# not known (never connected).
PresentDomains = Callable[[], tuple[str, frozenset[str]] | None]


class TransitionLog:
    """Logs alert transitions at info, at most ``burst`` per rule and window; the rest are
    counted and reported in one line when the window ends."""

    def __init__(self, clock: Callable[[], float], burst: int = LOG_BURST,
                 window: float = LOG_WINDOW) -> None:
        self.clock = clock
        self.burst = burst
        self.window = window
        self._window_ends = 0.0
        self._logged: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()

    def transition(self, note: Notification) -> None:
        """Log one transition, or count it if its rule used its budget."""
        now = self.clock()
        if now >= self._window_ends:
            self.flush()
            self._window_ends = now + self.window
        if self._logged[note.rule] >= self.burst:
            self.suppressed[note.rule] += 1
            return
        self._logged[note.rule] += 1
        log.info("virtmon.alerts.transition", rule=note.rule, status=note.status,
                 fingerprint=note.fingerprint, domain=note.labels.get("domain"))

    def flush(self) -> None:
        """Report what the ending window did not log, and start counting anew."""
        if self.suppressed:
            log.info("virtmon.alerts.transitions_not_logged", window=self.window,
                     by_rule=dict(self.suppressed))
        self._logged.clear()
        self.suppressed.clear()


@dataclass(slots=True)
class Changes:
    """What handling a batch produced: alert states to store and notifications to enqueue."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)

    def put(self, alert: Alert, notify: bool, now: float) -> None:
        """Record a new state of an alert; ``notify`` adds its notification."""
        self.alerts[alert.fingerprint] = alert
        if notify:
            self.notifications.append(Notification.of(alert, now))

    def __bool__(self) -> bool:
        return bool(self.alerts)


def _denominators(names: tuple[str, ...],
                  divisor: MetricFamily | None) -> Callable[[LabelValues], float | None]:
    """The divisor's value for a series of label ``names``, looked up by its label values: the
    divisor's series with the same labels, or None. Looked up by the values themselves where
    both families name their labels in the same order (one dict built in C), else by the
    sorted label pairs."""
    if divisor is None:
        return lambda _values: None
    if divisor.label_names == names:
        return dict(divisor.samples).get
    by_labels = {tuple(sorted(zip(divisor.label_names, values, strict=True))): value
                 for values, value in divisor.samples}
    return lambda values: by_labels.get(tuple(sorted(zip(names, values, strict=True))))


class AlertEngine:
    """Evaluates event and threshold rules and stores every transition with its deliveries."""

    def __init__(self, rules: Sequence[Rule], store: AlertStore, journal: Journal,
                 targets: Sequence[Destination], host: str, default_resolve_after: float = 3600.0,
                 on_enqueued: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time,
                 silences: Silences | None = None,
                 present_domains: PresentDomains = lambda: None) -> None:
        self._event_index = EventRuleIndex(r for r in rules if isinstance(r, EventRule))
        self.threshold_rules = [r for r in rules if isinstance(r, ThresholdRule)]
        self.store = store
        self.journal = journal
        self.targets = list(targets)
        self.host = host
        self.default_resolve_after = default_resolve_after
        self.on_enqueued = on_enqueued
        self.clock = clock
        self.silences = silences
        self.present_domains = present_domains
        self.transitions = TransitionLog(clock)
        self._gone_since: dict[str, float] = {}  # alert fingerprint -> first seen without domain
        self._next_sweep = 0.0
        self.active: dict[str, Alert] = {}
        self.last_seq = 0
        self._recent: deque[Event] = deque(maxlen=RECENT)  # the last journaled events
        self._last_seq_saved = -math.inf  # time.monotonic() of the last commit of last_seq
        self.notifications: Counter[str] = Counter()  # by status
        self.families_dropped = 0
        self._streaks: dict[str, int] = {}  # threshold series fingerprint -> readings beyond
        # Threshold rule -> the read_at of the carried reading it last counted (see
        # MetricFamily.read_at): a reading carried over several cycles is counted once.
        self._counted_reading: dict[str, float] = {}
        self._wake = anyio.Event()
        self._rules_changed = False
        self._rules_generation = 0  # which rule set a threshold evaluation ran with
        # Commits come from two tasks (the main loop and the threshold rules): one at a time, so
        # that what a commit decided from ``active`` still holds when it is stored.
        self._commit_lock = anyio.Lock()
        self._families_send, self._families_receive = anyio.create_memory_object_stream[
            list[MetricFamily]](FAMILY_QUEUE)
        self.ready = anyio.Event()

    # -- inputs (on the loop; never block) ---------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Bus listener: the journal has a new event (numbered); kept for the engine."""
        self._recent.append(event)
        self.wake()

    def wake(self) -> None:
        """Look at the journal, the timers and the silences now (on the loop)."""
        self._wake.set()

    def on_families(self, families: Sequence[MetricFamily]) -> None:
        """A cycle's families for the threshold rules (a full queue drops and counts)."""
        if not self.threshold_rules:
            return
        try:
            self._families_send.send_nowait(list(families))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.families_dropped += 1

    # -- the task ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Handle events, cycles and timers until cancelled."""
        self.active = {a.fingerprint: a for a in await anyio.to_thread.run_sync(self.store.active)}
        stored = await anyio.to_thread.run_sync(self.store.last_seq)
        # The first run starts at the journal's end: history before virtmon had alerts is old.
        self.last_seq = self.journal.last_seq if stored is None else stored
        if stored is None:
            await self._commit(Changes(), self.last_seq)
        await self._resolve_orphans()
        log.info("virtmon.alerts.started", rules=len(self.event_rules) + len(self.threshold_rules),
                 active=len(self.active), since_seq=self.last_seq)
        self.ready.set()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._thresholds)
                while True:
                    if self._rules_changed:
                        self._rules_changed = False
                        await self._resolve_orphans()
                    await self._drain_journal()
                    await self._timers()
                    await self._sweep_gone()
                    with anyio.move_on_after(self._next_timer()):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            self.close()

    def use_rules(self, rules: Sequence[Rule], default_resolve_after: float) -> None:
        """Evaluate these rules from now on (a reload); alerts of removed rules resolve."""
        self._event_index = EventRuleIndex(r for r in rules if isinstance(r, EventRule))
        self.threshold_rules = [r for r in rules if isinstance(r, ThresholdRule)]
        self.default_resolve_after = default_resolve_after
        self._rules_changed = True
        self._rules_generation += 1
        self.wake()

    async def _resolve_orphans(self) -> None:
        # A rule removed from the configuration can no longer resolve its alerts: resolve them.
        async with self._commit_lock:  # after any threshold commit already under way
            names = {r.name for r in self.event_rules} | {r.name for r in self.threshold_rules}
            orphans = Changes()
            for alert in self.active.values():
                if alert.rule not in names:
                    orphans.put(alert.resolved(self.clock()), alert.state == "firing",
                                self.clock())
            if orphans:
                await self._store(orphans, None)

    def close(self) -> None:
        """Release the families queue (done by :meth:`run` when it ends)."""
        self._families_send.close()
        self._families_receive.close()

    def _recent_page(self) -> list[Event]:
        """The kept events after ``last_seq``, if they follow on from it (else none, and the
        journal is read)."""
        recent = self._recent
        while recent and recent[0].seq <= self.last_seq:
            recent.popleft()
        if not recent or recent[0].seq != self.last_seq + 1:
            return []
        page = [recent.popleft() for _ in range(min(PAGE, len(recent)))]
        return page

    async def _drain_journal(self) -> None:
        while True:
            page = self._recent_page()
            # Caught up once the kept events are taken: the bus tells of the next one.
            caught_up = bool(page) and not self._recent
            if not page:
                page = await anyio.to_thread.run_sync(
                    self.journal.read_since, self.last_seq, PAGE)
            if not page:
                return
            changes = Changes()
            for event in page:
                self.handle_event(event, changes)
            now = time.monotonic()
            if changes or now >= self._last_seq_saved + LAST_SEQ_SAVE:
                await self._commit(changes, page[-1].seq)
                self._last_seq_saved = now
            else:
                self.last_seq = page[-1].seq
            if caught_up:
                return

    async def _thresholds(self) -> None:
        async with self._families_receive:
            async for families in self._families_receive:
                changes = Changes()
                generation = self._rules_generation
                # Off the loop: a pass over every selected sample takes tens of ms on a host of
                # a thousand domains, which the loop would feel as lag. Only this task creates
                # threshold alerts and changes streaks, so a copy of the active alerts will do.
                await anyio.to_thread.run_sync(
                    self.evaluate_thresholds, families, changes, dict(self.active))
                if not changes:
                    continue
                async with self._commit_lock:
                    if generation != self._rules_generation:
                        continue  # a reload changed the rules meanwhile: the next cycle decides
                    await self._store(changes, None)
                self.wake()  # a silence may now hold one of these: its end must be timed

    async def _timers(self) -> None:
        changes = Changes()
        self.handle_timers(self.clock(), changes)
        if changes:
            await self._commit(changes, None)
        if self.silences is not None and self.silences.holds_any():
            async with self._commit_lock:  # no resolve may slip in between (it would be dropped)
                firing = [a for a in self.active.values() if a.state == "firing"]
                released = await anyio.to_thread.run_sync(
                    self.silences.released, firing, self.clock())
                if released:
                    await self._store(Changes(), None, released)

    def _next_timer(self) -> float:
        deadlines = [a.resolve_at for a in self.active.values() if a.resolve_at is not None]
        deadlines += [a.starts_at + self._for(a) for a in self.active.values()
                      if a.state == "pending"]
        silence_ends = self.silences.next_end() if self.silences is not None else None
        if silence_ends is not None:
            deadlines.append(silence_ends)
        if self.active:
            deadlines.append(self._next_sweep)
        if not deadlines:
            return math.inf
        return max(0.0, min(min(deadlines) - self.clock(), 60.0)) + 0.01

    async def _sweep_gone(self) -> None:
        now = self.clock()
        if now < self._next_sweep:
            return
        # At least twice within resolve_after, so that it is kept to within half of it.
        self._next_sweep = now + min(GONE_SWEEP, self.default_resolve_after / 2)
        changes = Changes()
        self.resolve_gone(now, changes)
        if changes:
            await self._commit(changes, None)

    def resolve_gone(self, now: float, changes: Changes) -> None:
        """Event-rule alerts whose domain has not existed for ``default_resolve_after`` seconds
        resolve (a rule may wait for an event that a deleted domain never sends)."""
        present = self.present_domains()
        if present is None:
            return
        uri, names = present
        event_rules = {r.name for r in self.event_rules}
        gone_since: dict[str, float] = {}
        for alert in list(self.active.values()):
            domain = alert.labels.get("domain")
            if (alert.rule not in event_rules or domain is None or domain in names
                    or alert.labels.get("uri") != uri):
                continue
            since = gone_since[alert.fingerprint] = self._gone_since.get(alert.fingerprint, now)
            if now - since >= self.default_resolve_after:
                reason = f"domain {domain} no longer exists"
                resolved = replace(alert.resolved(now), annotations={
                    **alert.annotations, "resolved_reason": reason})
                changes.put(resolved, alert.state == "firing", now)
        self._gone_since = gone_since

    def _for(self, alert: Alert) -> float:
        rule = next((r for r in self.event_rules if r.name == alert.rule), None)
        return rule.for_seconds if rule is not None else 0.0

    async def _commit(self, changes: Changes, last_seq: int | None) -> None:
        """Store a batch (waiting for a commit of the other task to finish first)."""
        async with self._commit_lock:
            await self._store(changes, last_seq)

    async def _store(self, changes: Changes, last_seq: int | None,
                     released: Sequence[Alert] = ()) -> None:
        """Store a batch, holding the commit lock; ``released`` alerts (a silence over them
        ended) are announced too."""
        now = self.clock()
        with anyio.CancelScope(shield=True):
            if self.silences is not None and changes.notifications:
                # The one place notifications are enqueued: silenced ones stop here.
                changes.notifications = await anyio.to_thread.run_sync(
                    self.silences.filter, changes.notifications, now)
            changes.notifications += [Notification.of(alert, now) for alert in released]
            await anyio.to_thread.run_sync(
                self.store.apply, list(changes.alerts.values()), changes.notifications,
                self.targets, now, last_seq)
            if released and self.silences is not None:
                # After the outbox rows: killed in between, the release is enqueued again on
                # restart, and the outbox's idempotency key ignores the second copy.
                await anyio.to_thread.run_sync(self.silences.forget, released)
        if last_seq is not None:
            self.last_seq = last_seq
        for alert in changes.alerts.values():
            if alert.active:
                self.active[alert.fingerprint] = alert
            else:
                self.active.pop(alert.fingerprint, None)
        for note in changes.notifications:
            self.notifications[note.status] += 1
            self.transitions.transition(note)
        if changes.notifications:
            self.on_enqueued()

    # -- pure evaluation (tests call these directly) -----------------------------------------

    def _current(self, fp: str, changes: Changes,
                 active: Mapping[str, Alert] | None = None) -> Alert | None:
        alert = changes.alerts.get(fp) or (self.active if active is None else active).get(fp)
        return alert if alert is not None and alert.active else None

    def _active_of(self, rule: str, changes: Changes,
                   active: Mapping[str, Alert] | None = None) -> list[Alert]:
        merged = {**(self.active if active is None else active), **changes.alerts}
        return [a for a in merged.values() if a.rule == rule and a.active]

    @property
    def event_rules(self) -> tuple[EventRule, ...]:
        """The event rules, in order."""
        return self._event_index.rules

    def handle_event(self, event: Event, changes: Changes) -> None:
        """Apply the event rules to one event: those whose matchers accept its kind and name
        (no other can fire or resolve on it)."""
        for rule in self._event_index.for_event(event):
            if rule.resolve and rule.resolves_on(event):
                for alert in self._active_of(rule.name, changes):
                    if rule.same_as(alert.labels, event):
                        # A pending alert that never fired resolves silently.
                        changes.put(alert.resolved(event.time), alert.state == "firing",
                                    event.time)
            if rule.fires_on(event):
                self._fire(rule, event, changes)

    def _fire(self, rule: EventRule, event: Event, changes: Changes) -> None:
        labels = rule.alert_labels(event, self.host)
        fp = fingerprint(labels)
        after = rule.resolve_after
        if after is None and not rule.resolve:
            after = self.default_resolve_after
        resolve_at = event.time + after if after is not None else None
        current = self._current(fp, changes)
        if current is not None:  # de-duplicated: the same condition again
            changes.put(replace(current.repeated(event.time), resolve_at=resolve_at), False,
                        event.time)
            return
        fields = event_fields(event, self.host, labels)
        alert = Alert(
            rule=rule.name, labels=labels,
            annotations={"summary": render(rule.summary, fields),
                         "description": render(rule.description, fields),
                         "event_seq": str(event.seq)},
            state="pending" if rule.for_seconds > 0 else "firing",
            starts_at=event.time, updated_at=event.time, resolve_at=resolve_at, fingerprint=fp)
        changes.put(alert, alert.state == "firing", event.time)

    def handle_timers(self, now: float, changes: Changes) -> None:
        """Pending alerts whose ``for`` has passed fire; one-shot alerts past resolve_at resolve."""
        for alert in list(self.active.values()):
            if alert.state == "pending" and now >= alert.starts_at + self._for(alert):
                changes.put(alert.fired(now), True, now)
            elif alert.resolve_at is not None and now >= alert.resolve_at:
                changes.put(alert.resolved(now), alert.state == "firing", now)

    def evaluate_thresholds(self, families: Iterable[MetricFamily], changes: Changes,
                            active: Mapping[str, Alert] | None = None) -> None:
        """One cycle: series beyond a threshold in ``for_cycles`` readings in a row fire,
        others resolve (a reading carried from an earlier cycle counts once: see
        :attr:`MetricFamily.read_at`).

        ``active``: a copy of :attr:`active` to read instead, so that this can run in a worker
        thread while the loop goes on changing the original.
        """
        now = self.clock()
        by_name: Mapping[str, MetricFamily] = {f.name: f for f in families}
        streaks: dict[str, int] = {}
        counted: dict[str, float] = {}
        for rule in self.threshold_rules:
            family = by_name.get(rule.metric)
            reading = None if family is None else family.read_at
            last = self._counted_reading.get(rule.name)
            # Not collected this cycle (collector off or failed), or a reading already counted
            # (carried from an earlier cycle): no change.
            if family is None or (reading is not None and reading == last):
                if last is not None:
                    counted[rule.name] = last
                streaks.update({k: v for k, v in self._streaks.items()
                                if k.startswith(f"{rule.name}:")})
                continue
            if reading is not None:
                counted[rule.name] = reading
            names = family.label_names
            denominator_of = (_denominators(names, by_name.get(rule.divide_by))
                              if rule.divide_by else None)
            beyond: set[str] = set()
            # Most samples are within their threshold: the value is compared first, and the
            # series' labels made only for those beyond it.
            for values, value in family.samples:
                if denominator_of is not None:
                    denominator = denominator_of(values)
                    if not denominator:
                        continue
                    value = value / denominator
                if not rule.compare(value):
                    continue
                series = dict(zip(names, values, strict=True))
                if not rule.selects(series):
                    continue
                labels = {"alertname": rule.name, "severity": rule.severity,
                          "instance": self.host, **series}
                fields = {"metric": rule.metric, "value": value, "threshold": rule.value,
                          "labels": labels, "host": self.host, "op": rule.op}
                for key, template in rule.labels.items():
                    labels[key] = render(template, fields)
                fp = fingerprint(labels)
                beyond.add(fp)
                streak = streaks[f"{rule.name}:{fp}"] = self._streaks.get(
                    f"{rule.name}:{fp}", 0) + 1
                if streak >= rule.for_cycles and self._current(fp, changes, active) is None:
                    fields["cycles"] = streak
                    alert = Alert(rule=rule.name, labels=labels, annotations={
                        "summary": render(rule.summary, fields),
                        "description": render(rule.description, fields),
                        "value": f"{value:g}"}, state="firing", starts_at=now, updated_at=now,
                        fingerprint=fp)
                    changes.put(alert, True, now)
            for alert in self._active_of(rule.name, changes, active):
                if alert.fingerprint not in beyond:
                    changes.put(alert.resolved(now), True, now)
        self._streaks = streaks
        self._counted_reading = counted
