"""Live figures from the store (sentinel.insights), over crafted CDRs whose counts
are known, and the alerts the real pipeline raises on them."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from sentinel.answers import LiveSubject, live_answer
from sentinel.app import Sentinel
from sentinel.config import Config, default_rules_dir
from sentinel.insights import code_figures, rules_measuring
from sentinel.rules import load_rules
from sentinel.store import Store

from .traffic import NOW_MS, window_calls

DAY_MS = 86_400_000


def seed(store: Store) -> None:
    """Last hour: 360 calls, 60 of them 488 (VEND-A 50 of 190, VEND-B 10 of 110);
    accounts ACC-1 30, ACC-3 20, ACC-2 10. Yesterday's hour: 10 of 200.
    Preceding 3 h: 10 of 300. Plus a -9 scan and some 8s that reach no vendor."""
    store.ingest("t", window_calls(NOW_MS, 60, {200: 100, 488: 30}, egress="VEND-A",
                                   account="ACC-1"))
    store.ingest("t", window_calls(NOW_MS, 60, {200: 100, 488: 10}, egress="VEND-B",
                                   account="ACC-2"))
    store.ingest("t", window_calls(NOW_MS, 60, {200: 50, 486: 10}, egress="VEND-C",
                                   account="ACC-1"))
    store.ingest("t", window_calls(NOW_MS, 5, {200: 40, 488: 20}, egress="VEND-A",
                                   account="ACC-3"))
    store.ingest("t", window_calls(NOW_MS - DAY_MS, 60, {200: 190, 488: 10}, egress="VEND-A"))
    store.ingest("t", window_calls(NOW_MS, 180, {200: 290, 488: 10}, offset_min=60,
                                   egress="VEND-B"))


@pytest.fixture
def store():
    s = Store(":memory:")
    seed(s)
    yield s
    s.close()


@pytest.fixture(scope="module")
def rules():
    return {r.id: r for r in load_rules(default_rules_dir()).rules}


def test_counts_share_and_top_groups(store, rules):
    fig = code_figures(store, [488], NOW_MS, rules)
    assert (fig.start_min, fig.end_min) == (NOW_MS // 60000 - 60, NOW_MS // 60000)
    assert fig.calls == 360 and fig.matching == 60
    assert fig.share == pytest.approx(100 * 60 / 360)
    eg = [(g.group, g.calls, g.group_calls) for g in fig.top["egress"]]
    assert eg[:2] == [("VEND-A", 50, 190), ("VEND-B", 10, 110)]
    assert all(g.calls for g in fig.top["egress"])            # VEND-C had no 488
    assert fig.top["egress"][0].share_of_group == pytest.approx(100 * 50 / 190)
    acc = [(g.group, g.calls, g.group_calls) for g in fig.top["account"]]
    assert acc == [("ACC-1", 30, 190), ("ACC-3", 20, 60), ("ACC-2", 10, 110)]
    assert fig.unrouted == 0


def test_trend_names_both_baselines(store, rules):
    fig = code_figures(store, [488], NOW_MS, rules)
    y, p = fig.baselines
    assert y.label == "same hour yesterday"
    assert (y.matching, y.calls) == (10, 200) and y.share == pytest.approx(5.0)
    assert p.label == "preceding 3 h, hourly average"
    assert (p.end_min - p.start_min) == 180 and p.end_min == fig.start_min
    assert p.matching == pytest.approx(10 / 3) and p.calls == pytest.approx(100)


def test_calls_that_reached_no_vendor_show_ingress_and_caller_ip(rules):
    s = Store(":memory:")
    s.ingest("t", window_calls(NOW_MS, 60, {-9: 25}, ingress="CUST-X",
                               caller_ip="203.0.113.66"))
    s.ingest("t", window_calls(NOW_MS, 60, {200: 75}, egress="VEND-A"))
    fig = code_figures(s, [-9], NOW_MS, rules)
    assert (fig.matching, fig.calls, fig.unrouted) == (25, 100, 25)
    assert fig.top["egress"] == [] and fig.top["account"] == []
    assert [(g.group, g.calls) for g in fig.top["caller_ip"]] == [("203.0.113.66", 25)]
    assert [(g.group, g.calls) for g in fig.top["ingress"]] == [("CUST-X", 25)]
    text = live_answer(fig, LiveSubject((-9,), "end reason -9"), ZoneInfo("UTC")).to_text()
    assert "25 of these calls never reached a vendor gateway" in text
    assert "203.0.113.66: 25 calls" in text
    assert "unauthorized-ip" in text                       # the rule that watches -9


def test_alerts_firing_on_the_code_come_from_the_real_pipeline(store, rules, tmp_path):
    cfg = Config(store=":memory:", sources=[])
    app = Sentinel(cfg, store=store, sources=[], notifiers=[])
    app.cycle(NOW_MS)
    assert any(a["rule_id"] == "sip-488-codec" and a["state"] == "firing"
               for a in store.alerts())
    fig = code_figures(store, [488], NOW_MS, rules)
    assert [(a.rule_id, a.group, a.state, a.exact) for a in fig.alerts] == [
        ("sip-488-codec", "VEND-A", "firing", True)]
    assert fig.alerts[0].title == "Codec mismatch on vendor VEND-A (488)"
    assert fig.alerts[0].silenced_until_ms is None
    # a silence on it shows
    store.add_silence("sip-488-codec", "VEND-A", NOW_MS, NOW_MS + 3_600_000, "test", "t")
    fig = code_figures(store, [488], NOW_MS, rules)
    assert fig.alerts[0].silenced_until_ms == NOW_MS + 3_600_000
    # other codes do not show it
    assert code_figures(store, [486], NOW_MS, rules).alerts == []


def test_rules_measuring_exact_sets_and_classes(rules):
    got = {r.id: exact for r, exact in rules_measuring(rules, [503])}
    assert got["sip-503-share"] is True
    assert got["sip-5xx-share"] is False                   # measures the whole class
    assert "sip-488-codec" not in got
    assert {r.id for r, _ in rules_measuring(rules, [8])} == {"balance-insufficient-spike"}
    assert rules_measuring(rules, [299]) == []


def test_empty_store_and_stale_data(rules):
    s = Store(":memory:")
    fig = code_figures(s, [503], NOW_MS, rules)
    assert (fig.calls, fig.matching, fig.share, fig.latest_ms) == (0, 0, None, None)
    text = live_answer(fig, LiveSubject((503,), "SIP 503"), ZoneInfo("UTC")).to_text()
    assert "no calls at all" in text and "holds no CDRs yet" in text
    old = window_calls(NOW_MS - 3 * 3_600_000, 10, {503: 4})
    s.ingest("t", old)
    fig = code_figures(s, [503], NOW_MS, rules)
    gap = NOW_MS // 60000 - max(c.stop_ms for c in old) // 60000
    assert 180 < gap < 190 and fig.stale_min == gap
    assert f"{gap} min before now" in live_answer(fig, LiveSubject((503,), "SIP 503"),
                                               ZoneInfo("UTC")).to_text()


def test_reads_only(store, rules):
    conn = store.db.conn
    before = conn.total_changes
    code_figures(store, [488, 486, -9, 8], NOW_MS, rules)
    assert conn.total_changes == before


def test_live_answer_renders_the_figures(store, rules):
    fig = code_figures(store, [488], NOW_MS, rules)
    a = live_answer(fig, LiveSubject((488,), "SIP 488 Not Acceptable Here"), ZoneInfo("UTC"))
    text = a.to_text()
    assert "Last 1h (07:20-08:20 UTC, 2026-11-21): 60 of 360 calls ended with it " \
           "(16.7% of all calls)" in text
    assert "same hour yesterday: 10 of 200 calls per hour (5.0%); share now ×3.3" in text
    assert "preceding 3 h, hourly average: 3.3 of 100 calls per hour (3.3%)" in text
    assert "VEND-A: 50 calls, 26.3% of its 190 calls" in text
    assert "ACC-3: 20 calls, 33.3% of its 60 calls" in text
    assert "sip-488-codec" in text
