"""Every rule of the default pack: fires on the fault it describes, stays quiet
on healthy traffic, and stays quiet when there are too few calls to judge."""

from __future__ import annotations

import pytest

from sentinel.config import default_rules_dir
from sentinel.engine import RuleEngine
from sentinel.evaluate import evaluate
from sentinel.rules import load_rules
from sentinel.sources.demo import DemoTraffic
from sentinel.store import Store

from .traffic import NOW_MS, scale, window_calls

PACK = load_rules(default_rules_dir())


@pytest.fixture(scope="module")
def engine():
    assert not PACK.errors, PACK.errors
    e = RuleEngine(PACK.rules)
    yield e
    e.close()


# rule id -> (group the alert must name, window minutes, outcome mix that is the
# fault, factor that brings the same mix below the rule's minimum sample)
FAULTS = {
    "sip-503-share": ("VEND-T", 5, {200: 45, 503: 15}, 0.6),          # 25% of 60
    "sip-408-timeouts": ("VEND-T", 5, {200: 45, 408: 15}, 0.6),       # 25%
    "sip-488-codec": ("VEND-T", 5, {200: 48, 488: 12}, 0.6),          # 20%
    "sip-auth-failures": ("VEND-T", 5, {200: 50, 401: 5, 407: 5}, 0.4),   # 16.7%
    "sip-routing-failures": ("VEND-T", 10, {200: 40, 404: 12, 484: 8}, 0.6),  # 33%
    "sip-5xx-share": ("VEND-T", 10, {200: 42, 500: 8, 502: 6, 504: 4}, 0.6),  # 30%
    "sip-6xx-rejects": ("VEND-T", 10, {200: 48, 603: 8, 604: 4}, 0.6),    # 20%
    "sip-200-low": ("", 5, {200: 120, 486: 80, 480: 60, 503: 40}, 0.5),  # 40% of 300
    "capacity-limits": ("ACC-T", 5, {200: 30, 19: 8, 18: 4}, 0.6),     # 28.6% of 42
    "unauthorized-ip": ("198.51.100.200", 5, {-9: 30}, 0.5),          # 30 >= 20
    "asr-low-vendor": ("VEND-T", 15, {200: 30, 480: 50, 487: 40}, 0.6),  # ASR 25% of 120
}


def fresh_store() -> Store:
    return Store(":memory:")


def fired(store: Store, engine: RuleEngine, rule_id: str, now_ms: int = NOW_MS) -> dict:
    ev = evaluate(store, engine, now_ms)
    return {g: o for g, o in ev.observations.get(rule_id, {}).items() if o.matched}


def test_every_default_rule_has_a_fault_scenario():
    covered = set(FAULTS) | {"balance-insufficient-spike", "talk-time-collapse", "no-cdrs"}
    assert {r.id for r in PACK.rules} == covered


@pytest.mark.parametrize("rule_id", sorted(FAULTS))
def test_rule_fires_on_its_fault_and_names_the_group(engine, rule_id):
    group, minutes, mix, _ = FAULTS[rule_id]
    store = fresh_store()
    store.ingest("t", window_calls(NOW_MS, minutes, mix))
    hits = fired(store, engine, rule_id)
    assert list(hits) == [group]
    rule = engine.rules[rule_id]
    assert hits[group].calls >= rule.min_calls


@pytest.mark.parametrize("rule_id", sorted(FAULTS))
def test_rule_stays_quiet_below_its_minimum_sample(engine, rule_id):
    group, minutes, mix, factor = FAULTS[rule_id]
    store = fresh_store()
    store.ingest("t", window_calls(NOW_MS, minutes, scale(mix, factor)))
    assert fired(store, engine, rule_id) == {}


def test_fault_outside_the_window_is_not_seen(engine):
    store = fresh_store()
    # The 503 storm ended 10 minutes ago: the 5-minute window no longer sees it.
    store.ingest("t", window_calls(NOW_MS, 5, {200: 45, 503: 15}, offset_min=10))
    assert fired(store, engine, "sip-503-share") == {}


def test_balance_spike_fires_against_a_quiet_baseline(engine):
    store = fresh_store()
    # Preceding hour: normal calls, no end reason 8. Last 10 minutes: 25 of them.
    store.ingest("t", window_calls(NOW_MS, 60, {200: 300}, offset_min=10))
    store.ingest("t", window_calls(NOW_MS, 10, {200: 20, 8: 25}))
    hits = fired(store, engine, "balance-insufficient-spike")
    assert list(hits) == ["ACC-T"]
    assert hits["ACC-T"].value == 25 and hits["ACC-T"].baseline == 0


def test_balance_spike_quiet_when_the_baseline_is_already_high(engine):
    store = fresh_store()
    # 8 per minute all along (80 per 10 minutes): 90 now is not 3 times that.
    store.ingest("t", window_calls(NOW_MS, 60, {8: 480}, offset_min=10))
    store.ingest("t", window_calls(NOW_MS, 10, {8: 90}))
    assert fired(store, engine, "balance-insufficient-spike") == {}


def test_balance_spike_quiet_below_twenty_calls(engine):
    store = fresh_store()
    store.ingest("t", window_calls(NOW_MS, 10, {200: 20, 8: 15}))
    assert fired(store, engine, "balance-insufficient-spike") == {}


def test_talk_time_collapse(engine):
    store = fresh_store()
    short = window_calls(NOW_MS, 15, {200: 50}, talk_s=2)
    normal = window_calls(NOW_MS, 15, {200: 30}, talk_s=90)
    store.ingest("t", short + normal)
    hits = fired(store, engine, "talk-time-collapse")
    assert list(hits) == ["VEND-T"]
    assert hits["VEND-T"].value == pytest.approx(62.5)       # 50 of 80 answered
    quiet = fresh_store()
    quiet.ingest("t", window_calls(NOW_MS, 15, {200: 30}, talk_s=2))   # 30 < 60 calls
    assert fired(quiet, engine, "talk-time-collapse") == {}


def test_no_cdrs_fires_on_silence_and_not_while_calls_flow(engine):
    store = fresh_store()
    store.ingest("t", window_calls(NOW_MS, 20, {200: 100}, offset_min=11))
    assert list(fired(store, engine, "no-cdrs")) == [""]
    store.ingest("t", window_calls(NOW_MS, 1, {200: 1}))
    assert fired(store, engine, "no-cdrs") == {}


def test_healthy_traffic_raises_nothing(engine):
    """Two hours of healthy demo traffic: no rule fires at any minute."""
    start = NOW_MS - 3 * 3600_000
    traffic = DemoTraffic(start, incidents=())
    store = fresh_store()
    store.ingest("demo", list(traffic.calls_between(start, NOW_MS)))
    loud = []
    for t in range(start + 3600_000, NOW_MS + 1, 5 * 60000):
        ev = evaluate(store, engine, t)
        loud += [(o.rule.id, o.group, t) for o in ev.matched()]
    assert loud == []
