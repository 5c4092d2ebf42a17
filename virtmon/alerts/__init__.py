"""Alerts: rules over events and collected values, alert state and an outbox in SQLite, webhooks.

Modules, one responsibility each:

- :mod:`virtmon.alerts.rules`: the rule types, event matching and message templates.
- :mod:`virtmon.alerts.ruleconfig`: rules from TOML (the shipped default set plus
  ``[[alerts.rules]]``), validated with key paths.
- :mod:`virtmon.alerts.model`: the alert, its fingerprint and the notification an outbox row holds.
- :mod:`virtmon.alerts.store`: alert state, the outbox and dead letters in the journal's database.
- :mod:`virtmon.alerts.engine`: turns journaled events and each cycle's families into transitions.
- :mod:`virtmon.alerts.formats`: the JSON, Alertmanager and CloudEvents bodies and the signature.
- :mod:`virtmon.alerts.delivery`: one task per receiver URL: backoff, dead letters, rate limit.
- :mod:`virtmon.alerts.metrics`: the ``virtmon_alerts_*`` and ``virtmon_webhook_*`` families.
- :mod:`virtmon.alerts.service`: the facade the daemon composes and runs.
"""
