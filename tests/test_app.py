"""The pipeline keeps going: a broken source, rule file or notifier is reported,
never fatal, and nothing is lost or doubled across failures and restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.app import Sentinel
from sentinel.config import Config
from sentinel.sources import Batch, SourceError

from .traffic import NOW_MS, window_calls

RULE = '''
[[rule]]
id = "{id}"
title = "503 on {{group}}"
group_by = "egress"
window = "5m"
measure = "share of sip 503"
fire_when = "> {threshold}%"
min_calls = 10
diagnosis = "{{value}} ended 503"
'''


class ListSource:
    """Delivers prepared batches, one per pull (a real Source, in memory)."""
    kind = "list"

    def __init__(self, name, batches):
        self.name, self.batches = name, list(batches)

    def pull(self, store, now_ms):
        if self.batches:
            yield Batch(cdrs=self.batches.pop(0), watermark={"n": len(self.batches)})


class BrokenSource:
    """Fails while `down` is true, as a database that went away does."""
    kind = "broken"
    name = "broken"
    down = True

    def pull(self, store, now_ms):
        if self.down:
            raise SourceError("broken: database 10.0.0.1:3306 refused the connection")
        return iter(())


class Recorder:
    def __init__(self, fail_times=0):
        self.sent, self.fail_times = [], fail_times

    def deliver(self, batch, now_ms):
        if self.fail_times:
            self.fail_times -= 1
            return {n["id"]: "Slack unreachable" for n in batch}
        self.sent += batch
        return {n["id"]: None for n in batch}


def write_rules(folder: Path, threshold=10, rule_id="r503"):
    folder.mkdir(exist_ok=True)
    (folder / "r.toml").write_text(RULE.format(id=rule_id, threshold=threshold))


def app(tmp_path, sources, notifier, problems=None):
    cfg = Config(store=str(tmp_path / "s.db"), rules=str(tmp_path / "rules"))
    return Sentinel(cfg, sources=sources, notifiers=[notifier],
                    on_problem=(problems.append if problems is not None else None))


def storm():
    return window_calls(NOW_MS, 5, {200: 20, 503: 10}, egress="VEND-A")


def test_a_failing_source_does_not_stop_the_others(tmp_path):
    write_rules(tmp_path / "rules")
    problems, rec = [], Recorder()
    broken = BrokenSource()
    a = app(tmp_path, [broken, ListSource("ok", [storm()])], rec, problems)
    report = a.cycle(NOW_MS)
    assert report.ingested["ok"].new == 30                  # the other source still reads
    assert any("refused the connection" in p for p in problems)
    assert a.store.source_events("broken")[0]["level"] == "error"
    assert rec.sent == []       # alerts are held while a source is missing data
    broken.down = False
    a.cycle(NOW_MS)
    assert [n["rule_id"] for n in rec.sent] == ["r503"]


def test_a_broken_rule_file_keeps_the_others_running(tmp_path):
    write_rules(tmp_path / "rules")
    (tmp_path / "rules" / "zz-broken.toml").write_text("[[rule]]\nid = 'x'\ntitle = \n")
    problems, rec = [], Recorder()
    a = app(tmp_path, [ListSource("ok", [storm()])], rec, problems)
    a.cycle(NOW_MS)
    assert [(n["kind"], n["rule_id"]) for n in rec.sent] == [("problem", ""), ("firing", "r503")]
    assert "zz-broken.toml:3" in rec.sent[0]["payload"]["text"]   # reaches the notifiers
    assert any("zz-broken.toml" in p and "not valid TOML" in p for p in problems)
    problems.clear()
    a.cycle(NOW_MS + 60000)
    assert not any("zz-broken.toml" in p for p in problems)     # reported once
    assert [n["kind"] for n in rec.sent].count("problem") == 1


def test_an_undeliverable_notification_waits_in_the_outbox(tmp_path):
    write_rules(tmp_path / "rules")
    rec = Recorder(fail_times=1)
    a = app(tmp_path, [ListSource("ok", [storm()])], rec, [])
    a.cycle(NOW_MS)
    assert rec.sent == [] and len(a.store.pending_notifications()) == 1
    a.cycle(NOW_MS + 60000)
    assert [n["kind"] for n in rec.sent] == ["firing"]
    assert a.store.pending_notifications() == []


def test_restart_neither_resends_nor_forgets_a_firing_alert(tmp_path):
    write_rules(tmp_path / "rules")
    rec = Recorder()
    a = app(tmp_path, [ListSource("ok", [storm()])], rec)
    a.cycle(NOW_MS)
    a.store.close()
    rec2 = Recorder()
    healthy = window_calls(NOW_MS + 6 * 60000, 5, {200: 30}, egress="VEND-A")
    b = app(tmp_path, [ListSource("ok", [[], healthy])], rec2)
    b.cycle(NOW_MS + 60000)
    assert rec2.sent == []                                  # still firing: not re-sent
    b.cycle(NOW_MS + 6 * 60000)
    assert [n["kind"] for n in rec2.sent] == ["resolved"]   # and not forgotten


def test_rule_edits_take_effect_without_restart(tmp_path):
    write_rules(tmp_path / "rules", threshold=50)
    rec = Recorder()
    a = app(tmp_path, [ListSource("ok", [storm()])], rec)
    a.cycle(NOW_MS)
    assert rec.sent == []                                   # 33% is under 50%
    write_rules(tmp_path / "rules", threshold=20)
    import os
    os.utime(tmp_path / "rules" / "r.toml", ns=(1, 2_000_000_000_000_000_000))
    a.cycle(NOW_MS)
    assert [n["rule_id"] for n in rec.sent] == ["r503"]


def test_a_removed_rule_resolves_its_alerts_with_a_note(tmp_path):
    write_rules(tmp_path / "rules")
    rec = Recorder()
    a = app(tmp_path, [ListSource("ok", [storm()])], rec)
    a.cycle(NOW_MS)
    (tmp_path / "rules" / "r.toml").unlink()
    a.cycle(NOW_MS + 60000)
    assert [n["kind"] for n in rec.sent] == ["firing", "resolved"]
    assert "removed" in rec.sent[1]["payload"]["note"]


@pytest.mark.parametrize("bad", ["", "not toml at all ["])
def test_check_never_raises_on_garbage_rule_files(tmp_path, bad):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "x.toml").write_text(bad)
    a = app(tmp_path, [], Recorder(), [])
    a.cycle(NOW_MS)                       # no exception, no rules, no alerts


def test_valid_edit_keeps_the_state_of_unchanged_rules(tmp_path):
    rules = tmp_path / "rules"
    write_rules(rules)                                   # r503 in r.toml
    (rules / "other.toml").write_text(RULE.format(id="other", threshold=50))
    rec = Recorder()
    a = app(tmp_path, [ListSource("ok", [storm()])], rec)
    a.cycle(NOW_MS)
    assert [n["rule_id"] for n in rec.sent] == ["r503"]
    # Edit another file, and r503's own diagnosis: same identity, state kept.
    (rules / "other.toml").write_text(RULE.format(id="other", threshold=60))
    text = (rules / "r.toml").read_text().replace("ended 503", "ended 503 (edited)")
    (rules / "r.toml").write_text(text)
    a.cycle(NOW_MS + 60000)
    assert [n["rule_id"] for n in rec.sent] == ["r503"]          # no second firing
    assert a.alerts.current()[("r503", "VEND-A")].state == "firing"


def test_regrouped_rule_closes_its_old_alerts(tmp_path):
    rules = tmp_path / "rules"
    write_rules(rules)
    rec = Recorder()
    a = app(tmp_path, [ListSource("ok", [storm()])], rec)
    a.cycle(NOW_MS)
    (rules / "r.toml").write_text(RULE.format(id="r503", threshold=10).replace(
        'group_by = "egress"', 'group_by = "account"') + "\n")
    a.cycle(NOW_MS + 60000)
    kinds = [(n["kind"], n["grp"]) for n in rec.sent]
    assert ("resolved", "VEND-A") in kinds
    assert "groups by account" in rec.sent[kinds.index(("resolved", "VEND-A"))]["payload"]["note"]


def test_invalid_edit_keeps_the_previous_version_running(tmp_path):
    rules = tmp_path / "rules"
    write_rules(rules, threshold=50)
    rec, problems = Recorder(), []
    a = app(tmp_path, [ListSource("ok", [storm()])], rec, problems)
    a.cycle(NOW_MS)
    (rules / "r.toml").write_text(RULE.format(id="r503", threshold=20).replace(
        'window = "5m"', 'window = "five minutes"'))
    a.cycle(NOW_MS)
    assert [n["kind"] for n in rec.sent] == ["problem"]         # threshold 50 still in force
    assert "field 'window'" in rec.sent[0]["payload"]["text"]
    assert a.rulebook.rules["r503"].clauses[0].number == 50


class Refusing:
    """A notifier whose every answer is a PermanentError (a channel that is gone)."""

    def deliver(self, batch, now_ms):
        from sentinel.notifiers import PermanentError
        return {n["id"]: PermanentError("channel_not_found: #noc-alerts") for n in batch}


def test_an_error_no_retry_can_fix_is_reported_and_given_up(tmp_path):
    write_rules(tmp_path / "rules")
    problems = []
    a = app(tmp_path, [ListSource("ok", [storm()])], Refusing(), problems)
    a.cycle(NOW_MS)
    assert any("channel_not_found" in p for p in problems)
    assert a.store.pending_notifications() == []                 # not retried forever
    assert a.store.undeliverable()[0]["error"] == "channel_not_found: #noc-alerts"


def test_a_source_down_longer_than_alert_after_raises_source_health(tmp_path):
    write_rules(tmp_path / "rules")
    rec = Recorder()
    broken = BrokenSource()
    broken.alert_after_s = 300
    a = app(tmp_path, [broken], rec, [])
    for minute in range(0, 5):
        a.cycle(NOW_MS + minute * 60000)
    assert rec.sent == []                                   # 4 minutes down: not yet
    a.cycle(NOW_MS + 5 * 60000)
    [note] = rec.sent
    assert (note["kind"], note["rule_id"], note["grp"]) == ("firing", "source-health", "broken")
    assert "not delivering" in note["payload"]["title"]
    broken.down = False
    a.cycle(NOW_MS + 6 * 60000)
    assert [(n["kind"], n["rule_id"]) for n in rec.sent][-1] == ("resolved", "source-health")
