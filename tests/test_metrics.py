"""sentinel.metrics: every KPI on data whose answer is worked out by hand."""

from __future__ import annotations

import pytest

from sentinel.metrics import (KPIS, GroupStats, Measure, Selector, acd, asr, format_value,
                              group_stats, isa, ner, pdd_avg, pdd_p95, pdd_quantile, seer,
                              ser, short_call_share)
from sentinel.rules import parse_measure
from sentinel.store import N_PDD_BUCKETS, RollupRow, Store

from .helpers import BASE_MINUTE, at, make_cdr

# 100 attempts on one vendor. end reason -> number of calls.
MIX = {200: 55, 486: 10, 480: 5, 603: 3, 302: 2, 408: 8, 503: 7, 404: 5, 500: 5}


def mix_calls() -> list:
    """The 100 calls of MIX.

    Talk: of the 55 answered calls, 5 last 2 s (short) and 50 last 40 s.
    PDD by position in the list (answered first): calls 0-49 have 1500 ms,
    50-89 have 2500 ms, 90-99 have 6500 ms.
    """
    calls = []
    i = 0
    for reason, n in MIX.items():
        for k in range(n):
            talk = (2 if k < 5 else 40) if reason == 200 else 0
            pdd = 1500 if i < 50 else 2500 if i < 90 else 6500
            calls.append(make_cdr(stop_ms=at(i % 3, 20), end_reason=reason, talk_s=talk,
                                  pdd_ms=pdd, egress="VEND-A"))
            i += 1
    assert i == 100
    return calls


@pytest.fixture(scope="module")
def mix_stats(tmp_path_factory) -> GroupStats:
    """MIX through the real store: ingest, read the 3-minute window, group."""
    s = Store(tmp_path_factory.mktemp("metrics") / "m.db")
    s.ingest("t", mix_calls())
    stats = group_stats(s.window_rollups("egress", BASE_MINUTE, BASE_MINUTE + 3))
    s.close()
    assert set(stats) == {"VEND-A"}
    return stats["VEND-A"]


def test_counts(mix_stats):
    assert (mix_stats.calls, mix_stats.answered) == (100, 55)
    assert mix_stats.talk_s == 5 * 2 + 50 * 40            # 2010
    assert mix_stats.short_calls == 5
    assert mix_stats.top_reasons(3) == [(200, 55), (486, 10), (408, 8)]


def test_asr(mix_stats):
    assert asr(mix_stats) == pytest.approx(55.0)                    # 55 / 100


def test_ner_counts_busy_no_answer_and_decline_as_effective(mix_stats):
    # answered 55 + 486 x10 + 480 x5 + 603 x3 = 73 of 100; 408 is not effective
    assert ner(mix_stats) == pytest.approx(73.0)


def test_ser_removes_redirects_from_the_denominator(mix_stats):
    assert ser(mix_stats) == pytest.approx(100 * 55 / 98)           # 56.12...


def test_seer(mix_stats):
    assert seer(mix_stats) == pytest.approx(100 * 73 / 98)          # 74.49...


def test_isa_counts_408_500_503_504(mix_stats):
    # 408 x8 + 503 x7 + 500 x5 (+ 504 x0) = 20 of 100; 404 is not ISA
    assert isa(mix_stats) == pytest.approx(20.0)


def test_acd_divides_by_answered_not_attempts(mix_stats):
    assert acd(mix_stats) == pytest.approx(2010 / 55)               # 36.545... s


def test_short_call_share(mix_stats):
    assert short_call_share(mix_stats) == pytest.approx(100 * 5 / 55)   # 9.09 %


def test_pdd_average(mix_stats):
    # (50 x 1500 + 40 x 2500 + 10 x 6500) / 100 = (75000 + 100000 + 65000) / 100 = 2400 ms
    assert pdd_avg(mix_stats) == pytest.approx(2.4)


def test_pdd_p95_interpolates_inside_the_histogram_bucket(mix_stats):
    # buckets: 1500 -> (1000, 2000] x50, 2500 -> (2000, 3000] x40, 6500 -> (6000, 8000] x10
    # rank = 0.95 x 100 = 95; 90 calls lie below the (6000, 8000] bucket, so
    # p95 = 6000 + (8000 - 6000) x (95 - 90) / 10 = 7000 ms (not the true 6500)
    assert pdd_p95(mix_stats) == pytest.approx(7.0)
    # median: rank 50 falls at the top of the first occupied bucket:
    # 1000 + (2000 - 1000) x (50 - 0) / 50 = 2000 ms
    assert pdd_quantile(mix_stats, 0.5) == pytest.approx(2.0)
    # rank 70: 50 below (2000, 3000]; 2000 + 1000 x (70 - 50) / 40 = 2500 ms
    assert pdd_quantile(mix_stats, 0.7) == pytest.approx(2.5)


def test_pdd_p95_in_the_open_last_bucket_reports_its_lower_bound():
    s = GroupStats()
    h = [0] * N_PDD_BUCKETS
    h[0], h[-1] = 10, 90          # 10 calls <= 1 s, 90 above 30 s
    s.add(RollupRow("g", 408, 100, 0, 0, 0, 100, 10 * 500 + 90 * 32000, tuple(h)))
    assert pdd_p95(s) == pytest.approx(30.0)
    # 10 x 0.5 s + 90 x 32 s = 2885 s over 100 calls
    assert pdd_avg(s) == pytest.approx(28.85)


@pytest.mark.parametrize("text,value", [
    ("share of sip 503", 7.0),
    ("count of sip 503", 7.0),
    ("share of sip 486 480", 15.0),             # 10 + 5
    ("count of sip 408 503 504", 15.0),         # 8 + 7 + 0
    ("share of class 5xx", 12.0),               # 503 x7 + 500 x5
    ("count of class 4xx", 28.0),               # 486 x10, 480 x5, 408 x8, 404 x5
    ("count of class 3xx 6xx", 5.0),            # 302 x2 + 603 x3
    ("share of sip 200", 55.0),
    ("count of reason 8", 0.0),
    ("calls", 100.0),
    ("answered", 55.0),
])
def test_share_and_count_measures(mix_stats, text, value):
    assert parse_measure(text).value(mix_stats) == pytest.approx(value)


def test_negative_and_server_end_reasons_are_counted_by_reason():
    rows = [
        RollupRow("", -9, 25, 0, 0, 0, 0, 0, ()),
        RollupRow("", 8, 10, 2, 600, 0, 0, 0, ()),   # 2 cut for balance after talking
        RollupRow("", 200, 60, 60, 3600, 0, 0, 0, ()),
        RollupRow("", 503, 5, 0, 0, 0, 0, 0, ()),
    ]
    s = group_stats(rows)[""]
    assert s.calls == 100
    assert Measure(op="count", selector=Selector("reason", (-9,))).value(s) == 25.0
    assert Measure(op="share", selector=Selector("reason", (-9, 8))).value(s) == pytest.approx(35.0)
    # a class only covers SIP codes: -9 and 8 are not "5xx"
    assert Measure(op="count", selector=Selector("class", (5,))).value(s) == 5.0
    # answered includes the 2 calls with talk time that ended 8: (60 + 2) / 100
    assert asr(s) == pytest.approx(62.0)


def test_vos_server_reasons_2_and_3_are_effective_and_no_double_count():
    rows = [
        RollupRow("g", 200, 4, 4, 240, 0, 0, 0, ()),
        RollupRow("g", 486, 2, 1, 30, 0, 0, 0, ()),   # one 486 had talk time: answered
        RollupRow("g", 2, 2, 0, 0, 0, 0, 0, ()),      # VOS User Busy
        RollupRow("g", 3, 1, 0, 0, 0, 0, 0, ()),      # VOS No Answer
        RollupRow("g", 408, 1, 0, 0, 0, 0, 0, ()),
    ]
    s = group_stats(rows)["g"]
    # answered 4 + 1 = 5; effective = 5 + (486: 2 - 1) + 2 + 1 = 9 of 10
    assert ner(s) == pytest.approx(90.0)
    assert seer(s) == pytest.approx(90.0)        # no 3xx: same denominator
    assert asr(s) == pytest.approx(50.0)


def test_rows_of_several_minutes_and_groups_add_up():
    rows = [
        RollupRow("A", 200, 3, 3, 90, 1, 3, 6000, (0, 0, 3) + (0,) * (N_PDD_BUCKETS - 3)),
        RollupRow("A", 200, 2, 2, 10, 2, 1, 900, (1,) + (0,) * (N_PDD_BUCKETS - 1)),
        RollupRow("B", 503, 4, 0, 0, 0, 0, 0, (0,) * N_PDD_BUCKETS),
    ]
    g = group_stats(rows)
    assert set(g) == {"A", "B"}
    a = g["A"]
    assert (a.calls, a.answered, a.talk_s, a.short_calls) == (5, 5, 100, 3)
    assert (a.pdd_n, a.pdd_sum) == (4, 6900)
    assert a.pdd_hist[:3] == [1, 0, 3]
    assert a.by_reason == {200: [5, 5]}
    assert acd(a) == pytest.approx(20.0)                 # 100 s / 5
    assert pdd_avg(a) == pytest.approx(1.725)            # 6900 ms / 4
    assert isa(g["B"]) == pytest.approx(100.0)


def test_empty_group_gives_none_for_ratios():
    s = GroupStats()
    for kpi in ("asr", "ner", "ser", "seer", "isa", "acd", "pdd_avg", "pdd_p95",
                "short_call_share"):
        assert KPIS[kpi].compute(s) is None, kpi
    assert KPIS["calls"].compute(s) == 0.0
    assert parse_measure("share of sip 503").value(s) is None
    assert parse_measure("count of sip 503").value(s) == 0.0


def test_ratios_with_zero_denominator_are_none_not_zero():
    only_redirects = group_stats([RollupRow("g", 302, 5, 0, 0, 0, 0, 0, ())])["g"]
    assert ser(only_redirects) is None and seer(only_redirects) is None
    assert asr(only_redirects) == 0.0
    no_answer = group_stats([RollupRow("g", 486, 5, 0, 0, 0, 0, 0, ())])["g"]
    assert acd(no_answer) is None and short_call_share(no_answer) is None
    assert pdd_avg(no_answer) is None and pdd_p95(no_answer) is None


def test_measure_fields_units_and_descriptions():
    m = parse_measure("count of reason -9 17")
    assert (m.field, m.unit, m.is_count) == ("count_reason_m9_17", "", True)
    m = parse_measure("share of class 5xx")
    assert (m.field, m.unit) == ("share_class_5xx", "%")
    assert m.describe() == "share of 5xx"
    m = parse_measure("share of sip 401 407")
    assert m.field == "share_sip_401_407" and m.describe() == "share of SIP 401/407"
    assert parse_measure("acd").unit == "s" and parse_measure("asr").describe() == "ASR"


@pytest.mark.parametrize("value,unit,text", [
    (None, "%", "n/a"),
    (None, "", "n/a"),
    (12.345, "%", "12.3%"),
    (100.0, "%", "100.0%"),
    (2.44, "s", "2.4 s"),
    (36.0, "s", "36.0 s"),
    (7.0, "", "7"),
    (7.26, "", "7.3"),
    (0.0, "", "0"),
])
def test_format_value(value, unit, text):
    assert format_value(value, unit) == text
