"""Charts: the line is the rule's own measure (the value evaluation judged),
the thresholds are the rule's, and drawing never needs a screen."""

from __future__ import annotations

import struct
from zoneinfo import ZoneInfo

import pytest

from sentinel.charts import (DEFAULT_STEP_MIN, MAX_LINES, MetricChart, Threshold, alert_chart,
                             chartable, render_png, sample_times)
from sentinel.engine import RuleEngine
from sentinel.evaluate import evaluate
from sentinel.health import health_rule
from sentinel.rules import parse_rule_file
from sentinel.store import Store

from .traffic import NOW_MS, window_calls

MIN = 60_000
TZ = ZoneInfo("Europe/Paris")

RULES = '''
[[rule]]
id = "r503"
title = "503 storm on vendor {group}"
group_by = "egress"
window = "5m"
measure = "share of sip 503"
fire_when = "> 10% and count >= 5"
resolve_when = "< 7%"
min_calls = 10
diagnosis = "{value}"

[[rule]]
id = "spike"
title = "503 count spike on {group}"
group_by = "egress"
window = "10m"
measure = "count of sip 503"
baseline = "preceding 1h"
fire_when = "> 3x baseline and >= 20"
diagnosis = "{value}"

[[rule]]
id = "asr-all"
title = "ASR low"
group_by = "global"
window = "5m"
measure = "asr"
fire_when = "< 50%"
diagnosis = "{value}"
'''


@pytest.fixture
def rules(tmp_path):
    return {r.id: r for r in parse_rule_file(tmp_path / "r.toml", text=RULES)}


@pytest.fixture
def store():
    s = Store(":memory:")
    # Two hours of traffic on VEND-A and VEND-B: healthy, then a 503 storm on
    # VEND-A in the last 15 minutes.
    cdrs = []
    for k in range(24):
        end = NOW_MS - k * 5 * MIN
        codes = {200: 20, 503: 15} if k < 3 else {200: 28, 503: 2}
        cdrs += window_calls(end, 5, codes, egress="VEND-A")
        cdrs += window_calls(end, 5, {200: 25, 480: 5}, egress="VEND-B")
    s.ingest("t", cdrs)
    yield s
    s.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_sample_times_cover_the_span_every_step():
    times = sample_times(NOW_MS, hours=3)
    assert len(times) == 3 * 60 // DEFAULT_STEP_MIN + 1
    assert times[-1] == NOW_MS and times[0] == NOW_MS - 3 * 3600_000
    assert {b - a for a, b in zip(times, times[1:])} == {DEFAULT_STEP_MIN * MIN}


@pytest.mark.parametrize("rule_id, group", [("r503", "VEND-A"), ("spike", "VEND-A"),
                                            ("asr-all", "")])
def test_the_line_is_the_value_evaluation_judged(store, rules, rule_id, group):
    """At every point, the chart shows what `evaluate` computes at that time."""
    rule = rules[rule_id]
    engine = RuleEngine(list(rules.values()))
    try:
        chart = alert_chart(store, rule, [group], end_ms=NOW_MS, fired_ms=NOW_MS - 10 * MIN,
                            hours=1)
        line = next(iter(chart.lines.values()))
        for t, value in list(zip(chart.times_ms, line))[-4:]:
            obs = evaluate(store, engine, t).observations[rule_id][group]
            assert value == pytest.approx(obs.value)
            if rule_id == "spike":                    # the baseline threshold follows it
                relative = next(th for th in chart.thresholds if th.values)
                assert relative.values[chart.times_ms.index(t)] == pytest.approx(3 * obs.baseline)
    finally:
        engine.close()


def test_thresholds_and_firing_period(store, rules):
    chart = alert_chart(store, rules["r503"], ["VEND-A"], end_ms=NOW_MS,
                        fired_ms=NOW_MS - 10 * MIN, hours=3)
    assert [(t.label, t.value, t.resolve) for t in chart.thresholds] == [     # not "count >= 5"
        ("fires when > 10%", 10.0, False), ("resolves when < 7%", 7.0, True)]
    assert chart.firing == [(NOW_MS - 10 * MIN, NOW_MS)]
    assert chart.title == "share of SIP 503: VEND-A, last 3 h"
    assert chart.lines["VEND-A"][-1] == pytest.approx(100 * 15 / 35)
    assert chart.lines["VEND-A"][0] is None                     # before the traffic: no data
    spike = alert_chart(store, rules["spike"], ["VEND-A"], end_ms=NOW_MS, fired_ms=None)
    assert [t.label for t in spike.thresholds] == ["fires when > 3x baseline", "fires when >= 20"]
    assert spike.firing == []


def test_a_storm_chart_draws_the_worst_few(store, rules):
    groups = ["VEND-A", "VEND-B"] + [f"VEND-{i}" for i in range(10)]
    chart = alert_chart(store, rules["r503"], groups, end_ms=NOW_MS, fired_ms=NOW_MS)
    assert list(chart.lines) == groups[:MAX_LINES]
    assert chart.title == f"share of SIP 503: {MAX_LINES} worst groups, last 3 h"


def test_render_png_off_screen(store, rules):
    chart = alert_chart(store, rules["asr-all"], [""], end_ms=NOW_MS, fired_ms=NOW_MS - 10 * MIN)
    assert list(chart.lines) == ["all traffic"]
    png = render_png(chart, TZ)
    assert png_size(png) == (800, 360)


def test_render_survives_hostile_names_and_empty_series():
    times = sample_times(NOW_MS, hours=1)
    chart = MetricChart(
        title="share of $\\frac{1}{0}$ on <!channel>", unit="%", times_ms=times,
        lines={"$x^$": [None] * len(times), "<https://evil|click>" + "X" * 500: [None] * len(times)},
        thresholds=[Threshold("fires when > 10%", value=10.0),
                    Threshold("fires when > 3x baseline", values=[None] * len(times))],
        firing=[(times[3], times[-1])])
    assert png_size(render_png(chart, TZ))[0] == 800


def test_only_rules_over_rollups_are_charted(rules):
    assert chartable(rules["r503"]) and chartable(rules["asr-all"])
    assert not chartable(health_rule()) and not chartable(None)
