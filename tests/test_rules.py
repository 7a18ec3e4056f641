"""sentinel.rules: rule files parse into rules, and every mistake in a rule
file is reported with file, line, rule and field. Plus the shipped rule pack
compiles into real durable_rules rulesets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.engine import RuleEngine, rule_condition
from sentinel.metrics import Selector
from sentinel.rules import (Baseline, Clause, RuleError, load_rules, parse_condition,
                            parse_measure, parse_rule_file)

PACK_DIR = Path(__file__).resolve().parent.parent / "rules"

# A valid rule. Line 1 is a comment, so the [[rule]] header is line 3 and
# the field lines are 4..12, as numbered on the right.
GOOD = '''\
# vendor failures

[[rule]]
id = "sip-503-share"
title = "503 storm on vendor {group}"
severity = "critical"
group_by = "egress"
window = "5m"
measure = "share of sip 503"
fire_when = "> 10%"
min_calls = 30
diagnosis = "{value} of calls to {group} ended 503 (threshold {threshold})."
fixes = ["Move traffic off {group}"]
'''
LINE = {"[[rule]]": 3, "id": 4, "title": 5, "severity": 6, "group_by": 7, "window": 8,
        "measure": 9, "fire_when": 10, "min_calls": 11, "diagnosis": 12, "fixes": 13}


def test_line_table_matches_the_text():
    lines = GOOD.splitlines()
    for key, n in LINE.items():
        assert lines[n - 1].startswith(key), (key, n)


def with_field(key: str, value: str | None, text: str = GOOD) -> str:
    """GOOD with the `key = ...` line replaced by `key = value` (or removed)."""
    out = []
    for ln in text.splitlines():
        if ln.startswith(key + " ="):
            if value is None:
                continue
            ln = f"{key} = {value}"
        out.append(ln)
    return "\n".join(out) + "\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error_of(tmp_path: Path, text: str, name: str = "vendor.toml") -> RuleError:
    p = write(tmp_path, name, text)
    with pytest.raises(RuleError) as ei:
        parse_rule_file(p)
    e = ei.value
    assert e.file == str(p)
    assert str(p) in str(e)
    return e


# -- a good file ----------------------------------------------------------------

def test_good_rule_parses(tmp_path):
    [r] = parse_rule_file(write(tmp_path, "ok.toml", GOOD))
    assert (r.id, r.severity, r.group_by, r.window_min, r.min_calls) == (
        "sip-503-share", "critical", "egress", 5, 30)
    assert r.measure.selector == Selector("sip", (503,)) and r.measure.op == "share"
    assert r.clauses == (Clause(">", 10.0),)
    assert r.baseline is None and r.for_min == 0
    assert r.line == LINE["[[rule]]"]
    assert r.fixes == ("Move traffic off {group}",)


def test_defaults_and_disabled_rules(tmp_path):
    text = GOOD.replace('severity = "critical"\n', "").replace('group_by = "egress"\n', "")
    text += text.replace("sip-503-share", "off-rule").replace("[[rule]]", "[[rule]]\nenabled = false")
    rules = parse_rule_file(write(tmp_path, "d.toml", text))
    assert [(r.id, r.severity, r.group_by) for r in rules] == [("sip-503-share", "warning", "global")]


# -- errors inside a rule: file, line, rule, field ------------------------------------

@pytest.mark.parametrize("key,value,message", [
    ("severity", '"urgent"', "critical, warning, info"),
    ("group_by", '"vendor"', "egress"),
    ("window", '"5 minutes"', "duration"),
    ("measure", '"share of sip 99"', "100-699"),
    ("measure", '"share of reason abc"', "'abc'"),
    ("measure", '"median"', "unknown measure"),
    ("measure", '"share of class 7xx"', "1xx to 6xx"),
    ("fire_when", '"above 10"', "above 10"),
    ("fire_when", '"> 10% or < 5%"', "cannot read"),
    ("diagnosis", '"{valeu} of calls ended 503"', "{valeu}"),
    ("title", '"storm on {vendor}"', "{vendor}"),
    ("fixes", '["Call {group}", "Ask {who}"]', "{who}"),
    ("fixes", '"not a list"', "list"),
    ("min_calls", "-1", "whole number"),
    ("min_calls", '"30"', "whole number"),
    ("title", '""', "required"),
])
def test_bad_field_value_is_located(tmp_path, key, value, message):
    e = error_of(tmp_path, with_field(key, value))
    assert (e.rule, e.field, e.line) == ("sip-503-share", key, LINE[key])
    assert message in e.message
    assert f"vendor.toml:{LINE[key]}" in str(e) and f"'{key}'" in str(e)


def test_unknown_field_names_the_misspelt_key(tmp_path):
    text = GOOD.replace("min_calls = 30", "treshold = 30")
    e = error_of(tmp_path, text)
    assert (e.rule, e.field, e.line) == ("sip-503-share", "treshold", LINE["min_calls"])
    assert "unknown field" in e.message


@pytest.mark.parametrize("key", ["title", "diagnosis", "window", "measure", "fire_when"])
def test_missing_required_field_points_at_the_rule(tmp_path, key):
    e = error_of(tmp_path, with_field(key, None))
    assert (e.rule, e.field, e.line) == ("sip-503-share", key, LINE["[[rule]]"])
    assert "required" in e.message


def test_missing_id_names_the_rule_by_position(tmp_path):
    text = GOOD + GOOD.replace("sip-503-share", "second").replace('id = "second"\n', "")
    e = error_of(tmp_path, text)
    # the second [[rule]] starts at line 3 + 13 = 16 (GOOD is 13 lines)
    assert (e.rule, e.field, e.line) == ("#2", "id", 16)


def test_relative_condition_needs_a_baseline(tmp_path):
    e = error_of(tmp_path, with_field("fire_when", '"> 3x baseline and >= 20"'))
    assert (e.rule, e.field, e.line) == ("sip-503-share", "fire_when", LINE["fire_when"])
    assert "baseline" in e.message


@pytest.mark.parametrize("value", ['"last week"', '"preceding"', '"preceding 1 hour"', "60"])
def test_bad_baseline(tmp_path, value):
    text = with_field("fire_when", '"> 3x baseline"').replace(
        "min_calls = 30", f"min_calls = 30\nbaseline = {value}")
    e = error_of(tmp_path, text)
    # baseline is inserted after min_calls (line 11): line 12
    assert (e.rule, e.field, e.line) == ("sip-503-share", "baseline", 12)
    assert "1h" in e.message


def test_empty_baseline_span_is_refused(tmp_path):
    # "preceding 0m" would divide by a zero-minute span at evaluation time
    text = with_field("fire_when", '"> 3x baseline"').replace(
        "min_calls = 30", 'min_calls = 30\nbaseline = "preceding 0m"')
    e = error_of(tmp_path, text)
    assert (e.rule, e.field, e.line) == ("sip-503-share", "baseline", 12)


def test_empty_window_is_refused(tmp_path):
    # a 0-minute window never holds a call: the rule could never judge anything
    e = error_of(tmp_path, with_field("window", '"0m"'))
    assert (e.rule, e.field, e.line) == ("sip-503-share", "window", LINE["window"])


def test_duplicate_id_in_one_file_points_at_the_second(tmp_path):
    text = GOOD + "\n" + GOOD.replace("# vendor failures\n", "")
    e = error_of(tmp_path, text)
    # GOOD is 13 lines, then a blank line 14; the copy's blank line is 15,
    # its [[rule]] 16 and its id line 17
    assert text.splitlines()[16] == 'id = "sip-503-share"'
    assert (e.rule, e.field, e.line) == ("sip-503-share", "id", 17)
    assert "twice" in e.message


def test_invalid_toml_reports_the_parser_line(tmp_path):
    text = GOOD.replace('window = "5m"', "window = 5m")
    e = error_of(tmp_path, text)
    assert e.line == LINE["window"]
    assert e.rule is None and e.field is None
    assert "TOML" in e.message


@pytest.mark.parametrize("text,key,line", [
    ('version = 2\n\n' + GOOD, "version", 1),
    (GOOD + '\n[settings]\nmode = "strict"\n', "settings", 15),
], ids=["key-before-the-rules", "table-after-the-rules"])
def test_top_level_key_other_than_rule(tmp_path, text, key, line):
    e = error_of(tmp_path, text)
    assert key in e.message and "[[rule]]" in e.message
    assert e.rule is None
    assert e.line == line


# -- folders: one broken file does not hide the others ----------------------------------

def test_load_rules_keeps_good_files_and_reports_broken_ones(tmp_path):
    write(tmp_path, "a-broken.toml", with_field("severity", '"urgent"'))
    write(tmp_path, "b-good.toml", GOOD.replace("sip-503-share", "good-one")
          + GOOD.replace("sip-503-share", "good-two").replace("# vendor failures\n", ""))
    write(tmp_path, "c.test.toml", "this is not toml")      # test fixtures are skipped
    loaded = load_rules(tmp_path)
    assert [r.id for r in loaded.rules] == ["good-one", "good-two"]
    [e] = loaded.errors
    assert e.file == str(tmp_path / "a-broken.toml")
    assert (e.rule, e.field, e.line) == ("sip-503-share", "severity", LINE["severity"])
    assert loaded.files == [str(tmp_path / "a-broken.toml"), str(tmp_path / "b-good.toml")]


def test_same_id_in_two_files_is_an_error_of_the_second(tmp_path):
    write(tmp_path, "a.toml", GOOD)
    write(tmp_path, "b.toml", GOOD)
    loaded = load_rules(tmp_path)
    assert [r.file for r in loaded.rules] == [str(tmp_path / "a.toml")]
    [e] = loaded.errors
    assert e.file == str(tmp_path / "b.toml")
    assert str(tmp_path / "a.toml") in e.message
    assert (e.rule, e.field, e.line) == ("sip-503-share", "id", LINE["id"])


def test_missing_rules_folder_is_reported(tmp_path):
    loaded = load_rules(tmp_path / "nope")
    assert loaded.rules == [] and len(loaded.errors) == 1
    assert loaded.errors[0].file == str(tmp_path / "nope")


# -- measures and conditions ------------------------------------------------------

@pytest.mark.parametrize("text,op,kind,values", [
    ("share of sip 401 407", "share", "sip", (401, 407)),
    ("share of SIP 401, 407", "share", "sip", (401, 407)),
    ("count of reason -9 17", "count", "reason", (-9, 17)),
    ("count of reason 8", "count", "reason", (8,)),
    ("share of class 5xx", "share", "class", (5,)),
    ("share of class 4xx 5xx", "share", "class", (4, 5)),
])
def test_parse_measure_selectors(text, op, kind, values):
    m = parse_measure(text)
    assert (m.kpi, m.op, m.selector) == (None, op, Selector(kind, values))


@pytest.mark.parametrize("text", ["asr", "NER", "acd", "pdd_p95", "short_call_share"])
def test_parse_measure_kpis(text):
    assert parse_measure(text).kpi == text.lower()


@pytest.mark.parametrize("text", ["share of sip 8", "share of reason", "share sip 503",
                                  "ratio of sip 503", "", "share of sip 50x"])
def test_parse_measure_rejects(text):
    with pytest.raises(ValueError):
        parse_measure(text)


@pytest.mark.parametrize("text,clauses", [
    ("> 10%", (Clause(">", 10.0),)),
    ("> 3x baseline and >= 20", (Clause(">", 3.0, relative=True), Clause(">=", 20.0))),
    ("> 2.5 x baseline", (Clause(">", 2.5, relative=True),)),
    ("== 0", (Clause("==", 0.0),)),
    ("< 2.5s", (Clause("<", 2.5),)),
    ("<= 40 %", (Clause("<=", 40.0),)),
    ("!= -9", (Clause("!=", -9.0),)),
])
def test_parse_condition(text, clauses):
    assert parse_condition(text) == clauses


@pytest.mark.parametrize("text", ["above 10", "> ten", ">> 10", "> 10 and", "", "10 <"])
def test_parse_condition_rejects(text):
    with pytest.raises(ValueError):
        parse_condition(text)


def test_clause_holds():
    assert Clause(">", 3.0, relative=True).holds(31.0, 10.0)
    assert not Clause(">", 3.0, relative=True).holds(30.0, 10.0)
    assert Clause("==", 0.0).holds(0.0, None)
    assert Clause("<", 2.5).holds(2.4, None) and not Clause("<", 2.5).holds(2.5, None)


def test_baseline_parses(tmp_path):
    text = with_field("fire_when", '"> 3x baseline and >= 20"').replace(
        "min_calls = 30", 'min_calls = 30\nbaseline = "preceding 1h"\nfor = "10m"')
    [r] = parse_rule_file(write(tmp_path, "b.toml", text))
    assert r.baseline == Baseline("preceding", 60) and r.for_min == 10
    text = text.replace("preceding 1h", "yesterday")
    [r] = parse_rule_file(write(tmp_path, "b.toml", text))
    assert r.baseline == Baseline("yesterday", 0)


# -- the shipped pack and the engine ---------------------------------------------------

def test_shipped_pack_loads_and_compiles():
    loaded = load_rules(PACK_DIR)
    assert loaded.errors == []
    assert len(loaded.rules) >= 10
    engine = RuleEngine(loaded.rules)
    try:
        assert set(engine.rules) == {r.id for r in loaded.rules}
        compiled = [r.id for key in engine.fact_keys for r in engine.rules_for(key)]
        assert sorted(compiled) == sorted(r.id for r in loaded.rules)
    finally:
        engine.close()

    spikes = [r for r in loaded.rules if any(c.relative for c in r.clauses)]
    assert spikes, "the pack has a baseline (spike) rule"
    for r in spikes:
        cond = rule_condition(r)
        factor = next(c.number for c in r.clauses if c.relative)
        expected = {"$mul": {"$l": {"$m": "base_" + r.measure.field}, "$r": factor}}
        assert _contains(cond, expected), cond


def _contains(tree, part) -> bool:
    if tree == part:
        return True
    if isinstance(tree, dict):
        return any(_contains(v, part) for v in tree.values())
    if isinstance(tree, list):
        return any(_contains(v, part) for v in tree)
    return False


def test_engine_judges_equality_and_baseline_conditions(tmp_path):
    text = (with_field("fire_when", '"== 0"').replace("sip-503-share", "silent")
            .replace("share of sip 503", "calls").replace("min_calls = 30", "min_calls = 0")
            + "\n" + with_field("fire_when", '"> 3x baseline and >= 20"')
            .replace("# vendor failures\n", "").replace("sip-503-share", "spike")
            .replace("share of sip 503", "count of reason 8")
            .replace("min_calls = 30", 'min_calls = 0\nbaseline = "preceding 1h"'))
    rules = parse_rule_file(write(tmp_path, "e.toml", text))
    engine = RuleEngine(rules)
    try:
        silent = next(r for r in rules if r.id == "silent")
        spike = next(r for r in rules if r.id == "spike")
        assert engine.judge(silent.fact_key, [
            {"gid": "A", "calls": 0.0}, {"gid": "B", "calls": 4.0}]) == [("silent", "A")]
        facts = [
            # 31 > 3 x 10 and 31 >= 20
            {"gid": "up", "calls": 40, "base_calls": 40, "count_reason_8": 31.0, "base_count_reason_8": 10.0},
            # 30 is not > 3 x 10
            {"gid": "flat", "calls": 40, "base_calls": 40, "count_reason_8": 30.0, "base_count_reason_8": 10.0},
            # 19 > 3 x 1 but under the absolute floor of 20
            {"gid": "small", "calls": 40, "base_calls": 40, "count_reason_8": 19.0, "base_count_reason_8": 1.0},
        ]
        assert engine.judge(spike.fact_key, facts) == [("spike", "up")]
    finally:
        engine.close()
