"""A day of traffic with incidents, replayed minute by minute: exactly one
firing and one resolve per incident and group, and nothing in the healthy
stretches (the rest of the day, the night included)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from sentinel.config import default_rules_dir
from sentinel.demo import EXPECTED
from sentinel.replay import replay_notifications
from sentinel.sources.demo import DemoTraffic, Incident
from sentinel.store import Store

DAY = datetime(2026, 11, 19, tzinfo=timezone.utc)
INCIDENTS = (
    Incident("vendor-503-storm", 9 * 60, 9 * 60 + 30, "VEND-07"),
    Incident("balance-exhausted", 10 * 60 + 30, 11 * 60, "ACC-1017"),
    Incident("codec-mismatch", 12 * 60, 12 * 60 + 30, "VEND-03"),
    Incident("asr-collapse", 13 * 60 + 30, 13 * 60 + 45, ""),
    Incident("unauthorized-scan", 15 * 60, 15 * 60 + 10, "203.0.113.66"),
    Incident("source-silent", 17 * 60, 17 * 60 + 15, ""),
)


@pytest.fixture(scope="module")
def day_notifications():
    start = int(DAY.timestamp() * 1000)
    traffic = DemoTraffic(start, incidents=INCIDENTS)
    store = Store(":memory:")
    for hour in range(24):
        store.ingest("demo", list(traffic.calls_between(start + hour * 3600_000,
                                                         start + (hour + 1) * 3600_000)))
    notes = list(replay_notifications(store, default_rules_dir(), start + 60 * 60000,
                                      start + 24 * 3600_000))
    return start, notes


def test_one_firing_and_one_resolve_per_incident_and_nothing_else(day_notifications):
    start, notes = day_notifications
    sent = [n for n in notes if not n.get("suppressed")]
    got = Counter((n["kind"], n["rule_id"], n["grp"]) for n in sent)
    want = Counter()
    for inc in INCIDENTS:
        want[("firing", EXPECTED[inc.name], inc.target)] += 1
        want[("resolved", EXPECTED[inc.name], inc.target)] += 1
    assert got == want


def test_each_alert_fires_during_its_incident_and_resolves_after(day_notifications):
    start, notes = day_notifications
    for inc in INCIDENTS:
        rule = EXPECTED[inc.name]
        fired = [n for n in notes if n["kind"] == "firing" and n["rule_id"] == rule
                 and not n.get("suppressed")]
        resolved = [n for n in notes if n["kind"] == "resolved" and n["rule_id"] == rule]
        f_min = (fired[0]["created_ms"] - start) // 60000
        r_min = (resolved[0]["created_ms"] - start) // 60000
        assert inc.start_min <= f_min <= inc.start_min + 12, (inc.name, f_min)
        assert inc.end_min <= r_min <= inc.end_min + 20, (inc.name, r_min)


def test_the_symptoms_an_incident_explains_are_on_record_but_not_sent(day_notifications):
    _, notes = day_notifications
    held = [n for n in notes if n.get("suppressed")]
    assert any(n["rule_id"] == "sip-5xx-share" and "inhibited by sip-503-share" in n["suppressed"]
               for n in held)
