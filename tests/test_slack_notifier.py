"""The Slack notifier, end to end: crafted CDRs through the real pipeline
(`Sentinel`, a Store file, the rules), the real slack_sdk WebClient, and the
local stand-in of the Slack Web API. No mocks.

What an on-call engineer must be able to trust: the message says what fails
and how to fix it, hostile CDR values notify no one, a storm is one message,
what follows an alert lands in its thread (after a restart too), and Slack's
failures neither lose nor double a message.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sentinel.app import CycleReport, Sentinel
from sentinel.config import Config, ConfigError
from sentinel.metrics import Measure
from sentinel.notifiers import PermanentError, build_notifier
from sentinel.notifiers.slack import (ChannelPacer, SlackNotifier, SlackSettings, fit_to_limits,
                                      group_notifications, make_client, route_channel,
                                      top_gateways)
from sentinel.notifiers.terminal import TerminalNotifier
from sentinel.rules import parse_rule_file
from sentinel.slack_text import MAX_BLOCKS, MAX_FIELD_TEXT, MAX_HEADER_TEXT, MAX_SECTION_TEXT
from sentinel.sources import Batch
from sentinel.store import Store

from .slack_standin import SlackStandIn
from .traffic import NOW_MS, window_calls

MIN = 60_000

R503 = '''
[[rule]]
id = "r503"
title = "503 storm on vendor {group}"
severity = "critical"
group_by = "egress"
window = "5m"
measure = "share of sip 503"
fire_when = "> 10%"
resolve_when = "< 7%"
min_calls = 10
repeat_interval = "10m"
diagnosis = "{value} of {calls} calls to {group} ended 503 Service Unavailable."
fixes = ["Move traffic off {group}", "Ask the vendor about capacity"]
'''

ACCOUNT_503 = '''
[[rule]]
id = "acct-503"
title = "Account {group} gets 503s"
severity = "warning"
group_by = "account"
window = "5m"
measure = "share of sip 503"
fire_when = "> 10%"
min_calls = 10
diagnosis = "{value} of the calls of account {group} ended 503."
fixes = ["Tell {group}'s account manager"]
'''

GLOBAL_ASR = '''
[[rule]]
id = "asr-all"
title = "ASR collapsed on all traffic"
severity = "warning"
group_by = "global"
window = "5m"
measure = "asr"
fire_when = "< 50%"
min_calls = 10
diagnosis = "ASR is {value} over {calls} calls."
fixes = ["Look at the vendors below first"]
'''


class ListSource:
    """Delivers queued batches of CDRs, one per pull (a real Source, in memory)."""
    kind = "list"

    def __init__(self, name: str = "cdrs"):
        self.name, self.batches = name, []

    def pull(self, store, now_ms):
        if self.batches:
            yield Batch(cdrs=self.batches.pop(0), watermark={"left": len(self.batches)})


class FakeClock:
    """A clock that moves only when slept on: pacing without waiting."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


class Harness:
    """A Sentinel on a Store file in tmp_path, its rules, a queue of CDR
    batches, and a SlackNotifier pointed at the stand-in. `restart()` drops
    the app, the store and the notifier and builds them again on the same file."""

    def __init__(self, tmp_path: Path, slack: SlackStandIn, rules: str = R503, *,
                 slack_cfg: dict | None = None, pacer: ChannelPacer | None = None,
                 budget_s: float = 20.0, rules_provider=None):
        self.tmp_path, self.slack = tmp_path, slack
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / "r.toml").write_text(rules)
        self.cfg = Config(store=str(tmp_path / "sentinel.db"), rules=str(tmp_path / "rules"),
                          timezone="Europe/Paris")
        self.cfg.slack = {"default_channel": "#noc", "api_url": slack.api_url,
                          "channels_by_severity": {"critical": "#noc-critical"},
                          **(slack_cfg or {})}
        self.settings = SlackSettings.from_config(self.cfg.slack)
        self.source = ListSource()
        self.pacer = pacer or ChannelPacer(0)
        self.budget_s = budget_s
        self.rules_provider = rules_provider
        self.problems: list[str] = []
        self.start()

    def start(self) -> None:
        self.store = Store(self.cfg.store)
        self.app = Sentinel(self.cfg, store=self.store, sources=[self.source], notifiers=[],
                            on_problem=self.problems.append)
        app = self.app
        self.notifier = SlackNotifier(
            self.settings, self.store, self.rules_provider or (lambda: app.rulebook.rules),
            self.cfg.tz, client=make_client(self.settings, "xoxb-test", backoff_s=0.01),
            pacer=self.pacer, budget_s=self.budget_s)
        self.app.notifiers = [self.notifier]

    def restart(self) -> None:
        if self.app.rulebook.engine is not None:
            self.app.rulebook.engine.close()
        self.store.close()
        del self.app, self.notifier, self.store
        self.start()

    def feed(self, cdrs) -> None:
        self.source.batches.append(cdrs)

    def cycle(self, now_ms: int):
        return self.app.cycle(now_ms)


@pytest.fixture
def slack(monkeypatch):
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with SlackStandIn() as s:
        yield s


def posts(slack, *, top_level: bool | None = None):
    calls = slack.calls("chat.postMessage")
    if top_level is None:
        return calls
    return [c for c in calls if ("thread_ts" in c.body) != top_level]


def all_text(blocks) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def strings(value):
    """Every string inside a request body (blocks, text, form fields)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def storm(now=NOW_MS, egress="VEND-A", bad=10, good=20, **kw):
    return window_calls(now, 5, {200: good, 503: bad}, egress=egress, **kw)


def healthy(now, egress="VEND-A", **kw):
    return window_calls(now, 5, {200: 30}, egress=egress, **kw)


# -- content -----------------------------------------------------------------

def test_firing_message_says_what_where_when_and_what_to_do(tmp_path, slack):
    h = Harness(tmp_path, slack)
    h.feed(storm())
    h.cycle(NOW_MS)
    [post] = posts(slack)
    body = post.body
    assert body["channel"] == "#noc-critical"                 # routed by severity
    assert "link_names" not in body and "parse" not in body
    blocks = body["blocks"]
    header = blocks[0]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert header["text"]["text"] == "🔴 CRITICAL · 503 storm on vendor VEND-A"
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert "*Where*\nvendor gateway VEND-A" in fields
    assert "*When*\nfiring since 2026-11-21 09:20 CET" in fields      # operator's time zone
    assert ("*Measured*\nshare of SIP 503 = *33.3%*\nfires when &gt; 10%, resolves when &lt; 7%"
            in fields)
    assert "*Calls*\n30 in the last 5m" in fields
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    assert "*Diagnosis*\n33.3% of 30 calls to VEND-A ended 503 Service Unavailable." in texts
    assert "*What to do*\n• Move traffic off VEND-A\n• Ask the vendor about capacity" in texts
    tops = next(t for t in texts if t.startswith("*Top SIP codes"))
    assert "503 Service Unavailable: 10 calls" in tops and "200 OK" not in tops
    assert blocks[-1] == {"type": "context", "elements": [
        {"type": "mrkdwn", "text": "rule r503 · window 5m · severity critical · Sentinel"}]}
    assert body["text"] == ("🔴 CRITICAL: 503 storm on vendor VEND-A: share of SIP 503 33.3% "
                            "(fires when &gt; 10%), 30 calls in 5m")
    assert h.store.pending_notifications() == []


def test_global_alert_lists_the_gateways_with_most_failing_calls(tmp_path, slack):
    h = Harness(tmp_path, slack, GLOBAL_ASR)
    h.feed(window_calls(NOW_MS, 5, {200: 2, 503: 28}, egress="VEND-BAD")
           + window_calls(NOW_MS, 5, {200: 10, 480: 10}, egress="VEND-MEH")
           + window_calls(NOW_MS, 5, {200: 10}, egress="VEND-OK"))
    h.cycle(NOW_MS)
    [post] = posts(slack)
    blocks = post.body["blocks"]
    assert "*Where*\nall traffic" in [f["text"] for f in blocks[1]["fields"]]
    top = next(b["text"]["text"] for b in blocks if b["type"] == "section"
               and b.get("text", {}).get("text", "").startswith("*Top vendor gateways*"))
    assert top == ("*Top vendor gateways* (unanswered calls)\n"
                   "• VEND-BAD: 28 of 30 calls\n• VEND-MEH: 10 of 20 calls")


@pytest.mark.parametrize("measure, fire_when, label, first", [
    ("share of sip 503", "> 10% and count >= 5", "calls that ended SIP 503", ("VEND-BAD", 28)),
    ("share of sip 200", "< 50%", "calls that did not end SIP 200", ("VEND-BAD", 28)),
    ("pdd_avg", "> 5s", "unanswered calls", ("VEND-BAD", 28)),
])
def test_top_gateways_count_what_the_rule_counts(tmp_path, measure, fire_when, label, first):
    text = GLOBAL_ASR.replace('measure = "asr"', f'measure = "{measure}"').replace(
        'fire_when = "< 50%"', f'fire_when = "{fire_when}"')
    [rule] = parse_rule_file(tmp_path / "g.toml", text=text)
    store = Store(":memory:")
    store.ingest("t", window_calls(NOW_MS, 5, {200: 2, 503: 28}, egress="VEND-BAD")
                 + window_calls(NOW_MS, 5, {200: 10, 480: 10}, egress="VEND-MEH")
                 + window_calls(NOW_MS, 5, {200: 10}, egress="VEND-OK"))
    top = top_gateways(store, rule, NOW_MS)
    assert top["label"] == label
    assert (top["rows"][0]["gateway"], top["rows"][0]["failing"]) == first
    assert "VEND-OK" not in [r["gateway"] for r in top["rows"]]


def test_hostile_cdr_values_are_text_everywhere(tmp_path, slack):
    """A gateway named <!channel>, an account <https://evil|click>&co: shown
    as text in every block, the fallback, the resolve and the chart; nobody
    is notified and no link is made."""
    h = Harness(tmp_path, slack, R503 + ACCOUNT_503)
    gw, acct = "<!channel>", "<https://evil|click>&co"
    h.feed(storm(egress=gw, account=acct))
    h.cycle(NOW_MS)
    h.feed(healthy(NOW_MS + 6 * MIN, egress=gw, account=acct))
    h.cycle(NOW_MS + 6 * MIN)
    calls = [c for c in slack.calls() if c.method != "upload"]
    methods = {c.method for c in calls}
    assert {"chat.postMessage", "chat.update", "files.completeUploadExternal"} <= methods
    for c in calls:
        for s in strings(c.body):
            assert "<" not in s and ">" not in s, (c.method, s)
            assert not re.search(r"&(?!amp;|lt;|gt;)", s), (c.method, s)
        assert "link_names" not in c.body and "parse" not in c.body
    shown = all_text([c.body for c in posts(slack, top_level=True)])
    assert "&lt;!channel&gt;" in shown
    assert "&lt;https://evil|click&gt;&amp;co" in shown
    fallbacks = " ".join(c.body["text"] for c in posts(slack))
    assert "&lt;!channel&gt;" in fallbacks and "&lt;https://evil|click&gt;&amp;co" in fallbacks


# -- storms and limits -----------------------------------------------------------

def test_a_storm_of_40_gateways_is_one_message_and_resolves_in_it(tmp_path, slack):
    h = Harness(tmp_path, slack)
    gateways = [f"VEND-{i:02d}" for i in range(40)]
    cdrs = []
    for i, gw in enumerate(gateways):
        cdrs += storm(egress=gw, bad=4 + i)            # VEND-39 is the worst
    h.feed(cdrs)
    h.cycle(NOW_MS)
    [post] = posts(slack)
    assert len(h.store.notifications()) == 40 and h.store.pending_notifications() == []
    blocks = post.body["blocks"]
    assert blocks[0]["text"]["text"] == ("🔴 CRITICAL · 40 vendor gateways: share of SIP 503 "
                                         "&gt; 10%")
    listed = re.findall(r"\*(VEND-\d\d)\*", all_text(blocks))
    assert listed[:3] == ["VEND-39", "VEND-38", "VEND-37"] and len(listed) == 30
    assert "and 10 more" in all_text(blocks)
    assert "VEND-39" in post.body["text"] and "and 37 more" in post.body["text"]
    assert len(slack.calls("files.completeUploadExternal")) == 1        # one chart
    ts = h.notifier.ledger.message_for("r503", "VEND-00", None).ts

    # The two worst recover: the same message is updated, and a note in its thread.
    h.feed(healthy(NOW_MS + 6 * MIN, egress="VEND-39") + healthy(NOW_MS + 6 * MIN, egress="VEND-38")
           + sum((storm(NOW_MS + 6 * MIN, egress=g, bad=20) for g in gateways[:38]), []))
    h.cycle(NOW_MS + 6 * MIN)
    [update] = slack.calls("chat.update")
    assert update.body["ts"] == ts
    assert update.body["blocks"][0]["text"]["text"].startswith("🔴 CRITICAL")   # not all resolved
    shown = all_text(update.body["blocks"])
    assert "~VEND-39~ resolved 09:26, after 6 min" in shown and "~VEND-38~ resolved" in shown
    assert "38 firing, 2 resolved" in shown
    [note] = posts(slack, top_level=False)
    assert note.body["thread_ts"] == ts
    assert "38 of 40 still firing" in all_text(note.body["blocks"])
    assert "VEND-39" in note.body["text"] and "VEND-38" in note.body["text"]

    # All recover: the header says resolved.
    h.feed(sum((healthy(NOW_MS + 12 * MIN, egress=g) for g in gateways), []))
    h.cycle(NOW_MS + 12 * MIN)
    last = slack.calls("chat.update")[-1]
    assert last.body["ts"] == ts
    assert last.body["blocks"][0]["text"]["text"].startswith("✅ RESOLVED · 40 vendor gateways")
    assert len(posts(slack, top_level=True)) == 1


def test_200_firing_groups_fit_slack_limits(tmp_path, slack):
    h = Harness(tmp_path, slack)
    cdrs = []
    for i in range(199):
        cdrs += storm(egress=f"VEND-{i:03d}", bad=4 + i % 40)
    cdrs += storm(egress="<!here>" + "X" * 3000, bad=50)      # absurdly long and hostile
    h.feed(cdrs)
    h.cycle(NOW_MS)
    [post] = posts(slack)
    blocks = post.body["blocks"]
    assert len(blocks) <= MAX_BLOCKS
    for b in blocks:
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= MAX_HEADER_TEXT
        if b["type"] == "section":
            assert len(b.get("text", {}).get("text", "")) <= MAX_SECTION_TEXT
            assert len(b.get("fields", [])) <= 10
            assert all(len(f["text"]) <= MAX_FIELD_TEXT for f in b.get("fields", []))
        if b["type"] == "context":
            assert len(b["elements"]) <= 10
    assert "200 vendor gateways" in blocks[0]["text"]["text"]
    assert "and 170 more" in all_text(blocks)
    assert "&lt;!here&gt;XXX" in all_text(blocks)                       # listed first: worst
    assert len(post.body["text"]) <= 3000
    assert h.store.pending_notifications() == []


def test_fit_to_limits_cuts_whatever_it_is_given():
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "h" * 500}}]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": "&amp;" * 1000}}] * 80
    blocks += [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 20}]
    out = fit_to_limits(blocks)
    assert len(out) == MAX_BLOCKS and out[-1]["type"] == "context"
    assert len(out[0]["text"]["text"]) == MAX_HEADER_TEXT
    assert all(len(b["text"]["text"]) <= MAX_SECTION_TEXT and b["text"]["text"].endswith("&amp;…")
               for b in out[1:-2])
    assert "33 more blocks left out" in out[-2]["text"]["text"]
    assert len(out[-1]["elements"]) == 10


def test_group_stage_groups_by_kind_rule_and_cycle_in_outbox_order():
    def n(i, kind, rule, created, grp="g"):
        return {"id": i, "kind": kind, "rule_id": rule, "created_ms": created, "grp": grp,
                "payload": {}}
    batch = [n(3, "firing", "a", 1, "x"), n(1, "firing", "a", 1, "y"), n(2, "firing", "b", 1),
             n(4, "resolved", "a", 2, "x"), n(5, "firing", "a", 2, "z")]
    groups = group_notifications(batch)
    assert [(g.kind, g.rule_id, g.created_ms, [i["id"] for i in g.items]) for g in groups] == [
        ("firing", "a", 1, [1, 3]), ("firing", "b", 1, [2]), ("resolved", "a", 2, [4]),
        ("firing", "a", 2, [5])]


# -- charts ----------------------------------------------------------------------

def test_chart_is_uploaded_in_the_alert_thread(tmp_path, slack):
    h = Harness(tmp_path, slack)
    h.feed(storm())
    h.cycle(NOW_MS)
    [post] = posts(slack)
    ts = h.notifier.ledger.message_for("r503", "VEND-A", NOW_MS).ts
    [url] = slack.calls("files.getUploadURLExternal")
    assert url.body["filename"] == "r503-VEND-A.png"
    [upload] = slack.calls("upload")
    assert upload.raw.startswith(b"\x89PNG\r\n\x1a\n")
    [done] = slack.calls("files.completeUploadExternal")
    assert done.body["thread_ts"] == ts and done.body["channel_id"] == "#noc-critical"
    assert json.loads(done.body["files"])[0]["title"] == "share of SIP 503, VEND-A, last 3 h"


def test_a_failed_chart_upload_still_posts_the_alert(tmp_path, slack, caplog):
    h = Harness(tmp_path, slack)
    slack.fail_next("files.getUploadURLExternal", error="internal_error")
    h.feed(storm())
    with caplog.at_level(logging.ERROR, logger="sentinel.slack"):
        h.cycle(NOW_MS)
    assert len(posts(slack)) == 1
    assert h.store.pending_notifications() == [] and h.problems == []
    assert "chart of r503 not posted" in caplog.text


class BrokenMeasure(Measure):
    """A measure whose computation fails: a chart that cannot be drawn."""

    def value(self, s):
        raise ZeroDivisionError("broken on purpose")


def test_a_chart_that_cannot_be_drawn_still_posts_the_alert(tmp_path, slack, caplog):
    holder = {}
    h = Harness(tmp_path, slack, rules_provider=lambda: holder)
    h.app.reload_rules()
    holder["r503"] = replace(h.app.rulebook.rules["r503"], measure=BrokenMeasure(kpi="asr"))
    h.feed(storm())
    with caplog.at_level(logging.ERROR, logger="sentinel.slack"):
        h.cycle(NOW_MS)
    assert len(posts(slack)) == 1 and slack.calls("files.getUploadURLExternal") == []
    assert h.store.pending_notifications() == []
    assert "broken on purpose" in caplog.text


# -- threads: resolve, reminders, notes -------------------------------------------

def test_resolve_updates_the_message_and_notes_in_its_thread_after_a_restart(tmp_path, slack):
    h = Harness(tmp_path, slack)
    h.feed(storm())
    h.cycle(NOW_MS)
    [post] = posts(slack)
    ts = h.notifier.ledger.message_for("r503", "VEND-A", NOW_MS).ts
    h.restart()                                           # a new process on the same store
    h.feed(healthy(NOW_MS + 6 * MIN))
    h.cycle(NOW_MS + 6 * MIN)
    [update] = slack.calls("chat.update")
    assert update.body["channel"] == "#noc-critical" and update.body["ts"] == ts
    header = update.body["blocks"][0]["text"]["text"]
    assert header == "✅ RESOLVED · 503 storm on vendor VEND-A"
    assert "*Resolved* at 2026-11-21 09:26 CET after 6 min" in all_text(update.body["blocks"])
    assert update.body["text"].startswith("✅ RESOLVED after 6 min")
    [note] = posts(slack, top_level=False)
    assert note.body["thread_ts"] == ts and note.body["channel"] == "#noc-critical"
    assert "resolved at 2026-11-21 09:26 CET after 6 min" in note.body["text"]
    assert len(posts(slack, top_level=True)) == 1


def test_reminders_go_in_the_thread(tmp_path, slack):
    h = Harness(tmp_path, slack)                          # repeat_interval = 10m
    h.feed(storm())
    h.cycle(NOW_MS)
    ts = h.notifier.ledger.message_for("r503", "VEND-A", NOW_MS).ts
    h.restart()
    h.feed(storm(NOW_MS + 10 * MIN, bad=15))
    h.cycle(NOW_MS + 10 * MIN)
    [reminder] = posts(slack, top_level=False)
    assert reminder.body["thread_ts"] == ts
    assert "⏰ *Still firing*" in all_text(reminder.body["blocks"])
    assert "still firing at 2026-11-21 09:30 CET, for 10 min: share of SIP 503 = 42.9%" \
        in reminder.body["text"]
    assert len(posts(slack, top_level=True)) == 1


def test_flapping_and_stable_notes_go_in_the_thread(tmp_path, slack):
    h = Harness(tmp_path, slack)
    h.feed(storm())
    h.cycle(NOW_MS)
    ts = h.notifier.ledger.message_for("r503", "VEND-A", NOW_MS).ts
    base = {"rule_id": "r503", "group": "VEND-A", "group_key": "VEND-A", "severity": "critical",
            "title": "503 storm on vendor VEND-A", "fired_ms": NOW_MS + 3 * MIN}
    h.store.save_alert_changes([], [
        {"created_ms": NOW_MS + 4 * MIN, "kind": "flapping", "rule_id": "r503", "grp": "VEND-A",
         "payload": {**base, "kind": "flapping", "at_ms": NOW_MS + 4 * MIN,
                     "note": "changed state 4 times in the last hour"}},
        {"created_ms": NOW_MS + 65 * MIN, "kind": "stable", "rule_id": "r503", "grp": "VEND-A",
         "payload": {**base, "kind": "stable", "at_ms": NOW_MS + 65 * MIN,
                     "note": "stable again; now firing"}}])
    h.app.deliver(NOW_MS + 65 * MIN)
    notes = posts(slack, top_level=False)
    assert [n.body["thread_ts"] for n in notes] == [ts, ts]
    assert notes[0].body["text"] == "🔁 Flapping: VEND-A: changed state 4 times in the last hour"
    assert notes[1].body["text"] == "🟰 Stable again: VEND-A: stable again; now firing"
    assert h.store.pending_notifications() == []


def test_a_resolve_without_its_message_stands_alone_in_the_channel(tmp_path, slack):
    h = Harness(tmp_path, slack)
    h.store.save_alert_changes([], [{
        "created_ms": NOW_MS, "kind": "resolved", "rule_id": "gone", "grp": "VEND-Z",
        "payload": {"kind": "resolved", "rule_id": "gone", "group": "VEND-Z", "group_key": "VEND-Z",
                    "title": "gone on VEND-Z", "fired_ms": NOW_MS - 30 * MIN,
                    "resolved_ms": NOW_MS, "at_ms": NOW_MS, "severity": "info",
                    "note": "the rule was removed from the rule files"}}])
    h.app.deliver(NOW_MS)
    [post] = posts(slack)
    assert "thread_ts" not in post.body and post.body["channel"] == "#noc"
    assert post.body["blocks"][0]["text"]["text"] == "✅ RESOLVED · [info] gone on VEND-Z"
    assert "after 30 min. the rule was removed" in post.body["text"]


def test_rule_file_problems_go_to_the_default_channel(tmp_path, slack):
    h = Harness(tmp_path, slack)
    (tmp_path / "rules" / "zz.toml").write_text("[[rule]]\nid = 'x'\ntitle = \n")
    h.cycle(NOW_MS)
    [post] = posts(slack)
    assert post.body["channel"] == "#noc"
    assert post.body["blocks"][0]["text"]["text"] == "⚠️ Rule file error"
    assert "zz.toml:3" in post.body["text"]


# -- delivery: retries, permanent errors, restarts ---------------------------------

def test_429_waits_for_retry_after_then_posts_once(tmp_path, slack):
    h = Harness(tmp_path, slack)
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "1"})
    h.feed(storm())
    h.cycle(NOW_MS)
    assert len(posts(slack)) == 2                       # refused once, then accepted
    assert h.store.pending_notifications() == [] and h.problems == []
    h.cycle(NOW_MS + MIN)
    assert len(posts(slack)) == 2                       # one message in the channel, not two


def test_500_is_retried_then_posts_once(tmp_path, slack):
    h = Harness(tmp_path, slack)
    slack.fail_next("chat.postMessage", status=500)
    h.feed(storm())
    h.cycle(NOW_MS)
    assert len(posts(slack)) == 2
    assert h.store.pending_notifications() == [] and h.problems == []


def test_channel_not_found_is_a_permanent_error(tmp_path, slack):
    h = Harness(tmp_path, slack)
    slack.fail_next("chat.postMessage", error="channel_not_found", times=2)
    h.feed(storm())
    h.app.reload_rules()
    h.app.pull(NOW_MS, CycleReport(NOW_MS))
    h.app.evaluate(NOW_MS)
    batch = h.store.pending_notifications()
    result = h.notifier.deliver(batch, NOW_MS)
    [outcome] = result.values()
    assert isinstance(outcome, PermanentError) and "channel_not_found" in outcome
    h.app.deliver(NOW_MS)                               # now through the app: given up, reported
    assert h.store.undeliverable()[0]["error"] == "Slack chat.postMessage: channel_not_found"
    assert any("cannot be delivered" in p for p in h.problems)
    assert h.store.pending_notifications() == []


def test_other_errors_are_retried_next_cycle(tmp_path, slack):
    h = Harness(tmp_path, slack)
    slack.fail_next("chat.postMessage", error="internal_error")
    h.feed(storm())
    h.cycle(NOW_MS)
    assert len(h.store.pending_notifications()) == 1
    assert any("not delivered yet: Slack chat.postMessage: internal_error" in p for p in h.problems)
    h.cycle(NOW_MS + MIN)
    assert h.store.pending_notifications() == []
    assert len(posts(slack)) == 2


def test_an_unreachable_slack_is_retried_next_cycle(tmp_path, slack):
    h = Harness(tmp_path, slack, slack_cfg={"api_url": "http://127.0.0.1:9/api/"})
    h.feed(storm())
    h.cycle(NOW_MS)
    [pending] = h.store.pending_notifications()
    assert pending["attempts"] == 1
    assert any("not delivered yet: Slack chat.postMessage: URLError" in p for p in h.problems)


def test_a_resolve_waits_behind_its_undelivered_alert(tmp_path, slack):
    h = Harness(tmp_path, slack)
    slack.fail_next("chat.postMessage", status=500, times=3)      # past the retries
    h.feed(storm())
    h.cycle(NOW_MS)
    slack.fail_next("chat.postMessage", status=500, times=3)
    h.feed(healthy(NOW_MS + 6 * MIN))
    h.cycle(NOW_MS + 6 * MIN)                  # firing fails again; its resolve must wait
    assert [n["kind"] for n in h.store.pending_notifications()] == ["firing", "resolved"]
    h.cycle(NOW_MS + 7 * MIN)
    ok = [c for c in posts(slack)][-2:]
    assert "thread_ts" not in ok[0].body and ok[1].body["thread_ts"]
    assert len(slack.calls("chat.update")) == 1
    assert h.store.pending_notifications() == []


def test_restart_with_undelivered_messages_sends_each_once(tmp_path, slack):
    h = Harness(tmp_path, slack)
    # 1. Slack is down: the alert waits in the outbox.
    slack.fail_next("chat.postMessage", status=503, times=3)
    h.feed(storm())
    h.cycle(NOW_MS)
    assert len(h.store.pending_notifications()) == 1
    # 2. A restart: the waiting alert goes out, once.
    h.restart()
    h.cycle(NOW_MS + MIN)
    assert len(posts(slack)) == 3 + 1 and h.store.pending_notifications() == []
    ts = h.notifier.ledger.message_for("r503", "VEND-A", NOW_MS).ts
    # 3. The resolve is posted, then the process dies before the outbox is marked.
    h.feed(healthy(NOW_MS + 6 * MIN))
    h.app.pull(NOW_MS + 6 * MIN, CycleReport(NOW_MS + 6 * MIN))
    h.app.evaluate(NOW_MS + 6 * MIN)
    h.notifier.deliver(h.store.pending_notifications(), NOW_MS + 6 * MIN)   # posted; no mark
    assert len(h.store.pending_notifications()) == 1
    h.restart()
    h.cycle(NOW_MS + 7 * MIN)
    # 4. Recognised: marked delivered, not posted again.
    assert h.store.pending_notifications() == []
    assert len(slack.calls("chat.update")) == 1
    [note] = posts(slack, top_level=False)
    assert note.body["thread_ts"] == ts
    assert len(posts(slack, top_level=True)) == 4


def test_a_pruned_outbox_never_hands_out_a_posted_id_again(tmp_path, slack):
    """Once the outbox is pruned empty, a new notification must not get the id
    of one posted weeks ago (the outbox's ids are AUTOINCREMENT), and the
    ledger posts what is new and only that."""
    h = Harness(tmp_path, slack)
    h.feed(storm())
    h.cycle(NOW_MS)
    [first] = h.store.notifications()
    later = NOW_MS + 20 * 86_400_000
    h.store.prune(14, later)                        # the delivered outbox row goes
    h.feed(storm(later, egress="VEND-B"))
    h.cycle(later)
    reminder, second = h.store.notifications()
    assert reminder["id"] > first["id"] and reminder["kind"] == "reminder"
    assert second["grp"] == "VEND-B"
    assert len(posts(slack, top_level=True)) == 2 and len(posts(slack, top_level=False)) == 1
    assert h.store.pending_notifications() == []


# -- pacing -----------------------------------------------------------------------

def four_rules() -> str:
    return "".join(R503.replace('id = "r503"', f'id = "r{i}"').replace('repeat_interval = "10m"\n', "")
                   for i in range(1, 5))


def test_messages_are_paced_per_channel(tmp_path, slack):
    clock = FakeClock()
    h = Harness(tmp_path, slack, four_rules(), pacer=ChannelPacer(1.0, clock.clock, clock.sleep),
                slack_cfg={"charts": False, "channels_by_rule": {
                    "r1": "#a", "r2": "#a", "r3": "#b", "r4": "#a"}})
    h.feed(storm())
    h.cycle(NOW_MS)
    assert [c.body["channel"] for c in posts(slack)] == ["#a", "#a", "#b", "#a"]
    assert clock.sleeps == [1.0, 1.0]          # #a waits before its 2nd and 4th; #b never
    assert clock.now == 2.0


def test_pacing_stops_at_the_budget_and_the_rest_waits(tmp_path, slack):
    clock = FakeClock()
    h = Harness(tmp_path, slack, four_rules(), pacer=ChannelPacer(1.0, clock.clock, clock.sleep),
                budget_s=1.5, slack_cfg={"charts": False, "default_channel": "#a",
                                         "channels_by_severity": {}})
    h.feed(storm())
    h.cycle(NOW_MS)
    assert len(posts(slack)) == 2
    pending = h.store.pending_notifications()
    assert [p["rule_id"] for p in pending] == ["r3", "r4"]
    assert all(p["attempts"] == 0 for p in pending) and h.problems == []   # waiting, not failing
    clock.now += 60                                     # the next cycle, a minute later
    h.cycle(NOW_MS + MIN)
    assert len(posts(slack)) == 4 and h.store.pending_notifications() == []


def test_channel_pacer_alone():
    clock = FakeClock()
    pacer = ChannelPacer(1.0, clock.clock, clock.sleep)
    for ch in ["#a", "#b", "#a", "#a", "#b"]:
        pacer.wait(ch)
    assert clock.sleeps == [1.0, 1.0]      # #a at 0, 1, 2; #b at 0, then 2 (already past 1)
    clock.now += 10
    assert pacer.delay("#a") == 0.0


# -- configuration ---------------------------------------------------------------

def test_settings_defaults_and_routing():
    s = SlackSettings.from_config({"default_channel": "#noc",
                                   "channels_by_severity": {"critical": "#noc-critical"},
                                   "channels_by_rule": {"sip-503-share": "C0VENDORS"},
                                   "api_url": "http://127.0.0.1:8080/api"})
    assert (s.token_env, s.charts, s.chart_hours, s.pace_seconds) == ("SLACK_BOT_TOKEN", True, 3.0, 1.0)
    assert s.api_url == "http://127.0.0.1:8080/api/"
    assert route_channel(s, "sip-503-share", "critical") == "C0VENDORS"
    assert route_channel(s, "other", "critical") == "#noc-critical"
    assert route_channel(s, "other", "warning") == "#noc"


@pytest.mark.parametrize("section, key", [
    ({}, "default_channel"),
    ({"default_channel": "#noc", "chanels_by_rule": {}}, "chanels_by_rule"),
    ({"default_channel": "noc alerts"}, "default_channel"),
    ({"default_channel": "#noc", "channels_by_severity": {"urgent": "#x"}}, "channels_by_severity"),
    ({"default_channel": "#noc", "channels_by_severity": {"critical": 5}}, "channels_by_severity.critical"),
    ({"default_channel": "#noc", "channels_by_rule": "#x"}, "channels_by_rule"),
    ({"default_channel": "#noc", "token_env": "$TOKEN"}, "token_env"),
    ({"default_channel": "#noc", "api_url": "slack.com/api"}, "api_url"),
    ({"default_channel": "#noc", "pace_seconds": -1}, "pace_seconds"),
    ({"default_channel": "#noc", "chart_hours": 0}, "chart_hours"),
    ({"default_channel": "#noc", "charts": "yes"}, "charts"),
])
def test_settings_errors_name_the_key(section, key):
    with pytest.raises(ConfigError) as e:
        SlackSettings.from_config(section)
    assert f"key {key!r}" in str(e.value)


def test_build_notifier_picks_slack_only_with_a_table_and_a_token(tmp_path, monkeypatch, slack):
    monkeypatch.delenv("SENTINEL_TEST_TOKEN", raising=False)
    cfg = Config(timezone="Europe/Paris")
    assert isinstance(build_notifier(cfg, io.StringIO()), TerminalNotifier)
    cfg.slack = {"default_channel": "#noc", "api_url": slack.api_url, "token_env": "SENTINEL_TEST_TOKEN"}
    assert isinstance(build_notifier(cfg, io.StringIO()), TerminalNotifier)     # no token: terminal
    monkeypatch.setenv("SENTINEL_TEST_TOKEN", "xoxb-from-env")
    store = Store(tmp_path / "s.db")
    n = build_notifier(cfg, io.StringIO(), store=store, rules_provider=lambda: {})
    assert isinstance(n, SlackNotifier) and n.store is store and n.tz == ZoneInfo("Europe/Paris")
    n.client.auth_test()
    assert slack.calls("auth.test")[0].headers["Authorization"] == "Bearer xoxb-from-env"
    cfg.slack["colour"] = "red"
    cfg.path = "sentinel.toml"
    with pytest.raises(ConfigError, match=r"sentinel.toml: \[slack\] key 'colour'"):
        build_notifier(cfg, io.StringIO())


def test_the_readme_example_is_a_valid_slack_table():
    import tomllib
    text = (Path(__file__).resolve().parent.parent / "docs" / "slack.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    s = SlackSettings.from_config(tomllib.loads(block)["slack"])
    assert route_channel(s, "unauthorized-ip", "critical") == "#security"
    assert route_channel(s, "sip-503-share", "critical") == "#noc-critical"


# -- the demo ---------------------------------------------------------------------

def test_demo_posts_its_diagnoses_to_slack(slack, monkeypatch):
    from sentinel.demo import run_demo
    from sentinel.sources.demo import DEFAULT_INCIDENTS
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-demo")
    cfg = Config(timezone="Europe/Paris")
    cfg.slack = {"default_channel": "#noc-demo", "api_url": slack.api_url, "pace_seconds": 0}
    summary = run_demo(cfg, hours=2, out=io.StringIO(), incidents=DEFAULT_INCIDENTS[:2])
    assert summary.missed == [] and summary.unexplained == []
    top = posts(slack, top_level=True)
    assert top and all(p.body["channel"] == "#noc-demo" for p in top)
    storm_post = next(p for p in top if "503 Service Unavailable storm on vendor VEND-07"
                      in p.body["blocks"][0]["text"]["text"])
    assert "*Diagnosis*" in all_text(storm_post.body["blocks"])
    update = next(u for u in slack.calls("chat.update")
                  if "VEND-07" in u.body["blocks"][0]["text"]["text"])
    assert update.body["blocks"][0]["text"]["text"].startswith("✅ RESOLVED")
    assert any(p.body.get("thread_ts") == update.body["ts"] and "VEND-07" in p.body["text"]
               for p in posts(slack, top_level=False))
    assert any("ACC-1017" in p.body["text"] for p in top)
