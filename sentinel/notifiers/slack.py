"""Alerts in Slack: one message per alert, or per alert storm, with
everything that follows in its thread, never lost and never doubled.

Delivery is a chain of small stages, after Alertmanager's notification
pipeline; each is a function or a small class that is tested on its own:

    group -> route -> thread -> render -> limits -> pace -> send/retry -> record

- group (`group_notifications`): the firing notifications of one rule in one
  cycle become one message. Forty gateways crossing a rule together are one
  incident: one message listing them, not forty pings at 3 a.m.
- route (`route_channel`): the rule's channel, else its severity's, else the
  default channel.
- thread (`plan_jobs`): what follows an alert (resolve, reminder, flapping,
  stable) finds the message it belongs to in the ledger, after a restart too,
  and goes in its thread; the resolve also updates the message itself.
- render (`render_alert`, `render_note`, ...): Block Kit with a plain-text
  fallback. Every value that comes from CDRs goes through `slack_text.escape`:
  a caller named `<!channel>` shows as text and notifies no one.
- limits (`fit_to_limits`): 50 blocks, 3000 characters a section, 150 a
  header, however many groups fire.
- pace (`ChannelPacer`): about one message a second per channel, as Slack asks.
- send/retry (`make_client`, `outcome_of`): slack_sdk's retry handlers wait out
  a 429's Retry-After and retry 5xx and connection errors a bounded number of
  times. What still fails is a `PermanentError` when no retry can help
  (channel_not_found, invalid_auth...) or a string: retried next cycle.
- record (`SlackLedger`): the channel and ts of every message, written as soon
  as Slack answers and before `deliver` returns. A notification the ledger
  already holds is never posted again: that is a crash between the post and
  the outbox's mark, and the message is already in the channel.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (BackoffRetryIntervalCalculator, ConnectionErrorRetryHandler,
                                  Jitter, RateLimitErrorRetryHandler)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

from ..config import ConfigError
from ..evaluate import window_bounds
from ..metrics import group_stats
from ..rules import SEVERITIES, Rule
from ..slack_text import (MAX_BLOCKS, MAX_CONTEXT_ELEMENTS, MAX_FIELD_TEXT, MAX_HEADER_TEXT,
                          MAX_SECTION_TEXT, clip, escape)
from ..store import Store
from . import PermanentError
from .terminal import fmt_duration, fmt_time

log = logging.getLogger("sentinel.slack")

DEFAULT_API_URL = "https://slack.com/api/"
DEFAULT_TOKEN_ENV = "SLACK_BOT_TOKEN"


# == settings ===================================================================

# "#noc-alerts" or "C0123456789". Slack allows more than ASCII in names, so
# only what can never be part of one is refused (spaces, mention syntax).
_CHANNEL_RE = re.compile(r"^#?[^\s#<>&@]{1,80}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SlackSettings:
    """The [slack] table, checked. A typo is an error naming the key, not a
    setting silently ignored."""
    default_channel: str
    channels_by_severity: dict[str, str] = field(default_factory=dict)
    channels_by_rule: dict[str, str] = field(default_factory=dict)
    token_env: str = DEFAULT_TOKEN_ENV
    api_url: str = DEFAULT_API_URL
    charts: bool = True
    chart_hours: float = 3.0
    pace_seconds: float = 1.0

    KEYS = ("default_channel", "channels_by_severity", "channels_by_rule", "token_env",
            "api_url", "charts", "chart_hours", "pace_seconds")

    @classmethod
    def from_config(cls, section: dict) -> "SlackSettings":
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"[slack] key {key!r}: {why}")

        if not isinstance(section, dict):
            raise ConfigError("[slack]: write it as a [slack] table")
        unknown = sorted(set(section) - set(cls.KEYS))
        if unknown:
            raise bad(unknown[0], "unknown key; known keys are " + ", ".join(cls.KEYS))

        def channel(value, key: str) -> str:
            if not isinstance(value, str) or not _CHANNEL_RE.match(value.strip()):
                raise bad(key, f"expected a channel such as \"#noc-alerts\" or a channel ID "
                               f"such as \"C0123456789\", got {value!r}")
            return value.strip()

        def channel_table(key: str, allowed: Iterable[str] | None = None) -> dict[str, str]:
            table = section.get(key, {})
            if not isinstance(table, dict):
                raise bad(key, "write it as a table, e.g. " + key + " = { critical = \"#noc-critical\" }")
            for name in table:
                if allowed is not None and name not in allowed:
                    raise bad(key, f"{name!r} is not a severity; use {', '.join(allowed)}")
            return {name: channel(v, f"{key}.{name}") for name, v in table.items()}

        def number(key: str, default: float, low: float, high: float, *, low_open: bool) -> float:
            v = section.get(key, default)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                    or (v <= low if low_open else v < low) or v > high:
                lower = f"more than {low:g}" if low_open else f"at least {low:g}"
                raise bad(key, f"must be a number, {lower} and at most {high:g}; got {v!r}")
            return float(v)

        if "default_channel" not in section:
            raise bad("default_channel", "is required: where alerts no other key routes go, "
                                         "and rule-file problems")
        token_env = section.get("token_env", DEFAULT_TOKEN_ENV)
        if not isinstance(token_env, str) or not _ENV_RE.match(token_env):
            raise bad("token_env", f"must name an environment variable, got {token_env!r}")
        api_url = section.get("api_url", DEFAULT_API_URL)
        if not isinstance(api_url, str) or not re.match(r"^https?://[^\s/]+", api_url):
            raise bad("api_url", f"must be an http(s) URL such as {DEFAULT_API_URL!r}, got {api_url!r}")
        charts = section.get("charts", True)
        if not isinstance(charts, bool):
            raise bad("charts", "must be true or false")
        return cls(
            default_channel=channel(section["default_channel"], "default_channel"),
            channels_by_severity=channel_table("channels_by_severity", SEVERITIES),
            channels_by_rule=channel_table("channels_by_rule"),
            token_env=token_env,
            api_url=api_url if api_url.endswith("/") else api_url + "/",
            charts=charts,
            chart_hours=number("chart_hours", 3.0, 0, 48, low_open=True),
            pace_seconds=number("pace_seconds", 1.0, 0, 60, low_open=False),
        )

    def token(self) -> str | None:
        return (os.environ.get(self.token_env) or "").strip() or None


# == group ======================================================================

@dataclass
class NotificationGroup:
    """Outbox notifications of one kind, one rule and one cycle: what one
    Slack message (or one thread note) says together."""
    kind: str
    rule_id: str
    created_ms: int
    items: list[dict]                 # outbox rows, oldest first

    @property
    def first_id(self) -> int:
        return self.items[0]["id"]


def group_notifications(batch: list[dict]) -> list[NotificationGroup]:
    """Group by (kind, rule, cycle), in outbox order.

    Alertmanager groups by labels over a wait; our cycle already is that wait:
    every group that crosses a rule in one evaluation has the same
    created_ms. Order is kept (by first outbox id) so a resolve is never
    delivered before the alert it resolves.
    """
    groups: dict[tuple, NotificationGroup] = {}
    for n in sorted(batch, key=lambda n: n["id"]):
        key = (n["kind"], n["rule_id"], n["created_ms"])
        if key not in groups:
            groups[key] = NotificationGroup(n["kind"], n["rule_id"], n["created_ms"], [])
        groups[key].items.append(n)
    return sorted(groups.values(), key=lambda g: g.first_id)


def worst_first_key(p: dict) -> tuple:
    """Sort key of a payload, worst first: highest value for "> x" rules,
    lowest for "< x" rules (ASR, ACD); groups without a value go last."""
    v = p.get("value_raw")
    if v is None:
        return (1, 0.0, str(p.get("group_key", "")))
    lower_is_worse = str(p.get("threshold", "")).lstrip().startswith("<")
    return (0, v if lower_is_worse else -v, str(p.get("group_key", "")))


def worst_first(payloads: list[dict]) -> list[dict]:
    return sorted(payloads, key=worst_first_key)


# == route ======================================================================

def route_channel(settings: SlackSettings, rule_id: str, severity: str | None) -> str:
    """Most specific first: the rule's channel, the severity's, the default."""
    return (settings.channels_by_rule.get(rule_id)
            or settings.channels_by_severity.get(severity or "")
            or settings.default_channel)


# == record =====================================================================

@dataclass
class AlertMessage:
    """One alert message in a channel and what it shows: the groups that
    fired together and which of them have resolved since.

    It is kept in the ledger, so a resolve hours later, after a restart,
    re-renders the same message with that group marked resolved.
    """
    rule_id: str
    created_ms: int
    entries: list[dict]               # {"outbox_id", "grp", "payload", "resolved": None | {...}}
    top_gateways: dict | None = None  # global alerts: {"label", "rows"}
    channel: str = ""                 # Slack's channel id, once posted
    ts: str = ""

    @property
    def severity(self) -> str:
        return self.entries[0]["payload"].get("severity") or "info"

    @property
    def all_resolved(self) -> bool:
        return all(e.get("resolved") for e in self.entries)

    def entry(self, grp: str) -> dict | None:
        return next((e for e in self.entries if e["grp"] == grp), None)

    def resolve(self, grp: str, payload: dict) -> None:
        e = self.entry(grp)
        if e is not None:
            e["resolved"] = {"at_ms": payload.get("resolved_ms") or payload.get("at_ms"),
                             "value": payload.get("value"), "calls": payload.get("calls"),
                             "window": payload.get("window"), "note": payload.get("note"),
                             "value_raw": payload.get("value_raw")}

    def state_json(self) -> str:
        return json.dumps({"entries": self.entries, "top_gateways": self.top_gateways})

    @classmethod
    def from_row(cls, row: dict) -> "AlertMessage":
        state = json.loads(row["state"])
        return cls(row["rule_id"], row["created_ms"], state["entries"],
                   state.get("top_gateways"), row["channel"], row["ts"])


@dataclass
class Post:
    """One outbox notification as it reached Slack."""
    outbox_id: int
    created_ms: int
    rule_id: str
    grp: str
    fired_ms: int | None
    kind: str
    channel: str
    ts: str
    thread_ts: str | None = None


class SlackLedger:
    """What Sentinel posted to Slack, in the store's database.

    - `slack_message`: one row per outbox notification delivered, keyed by
      outbox id (so a retry after a crash is recognised and not re-posted)
      and indexed by (rule_id, grp, fired_ms) (so the resolve, reminders and
      notes of an alert find its message).
    - `slack_alert_message`: one row per alert message, keyed by (channel,
      ts), with what it shows (`AlertMessage`), so it can be re-rendered.

    Both are written in one transaction, right after Slack answers.
    """

    def __init__(self, store: Store):
        self.store = store
        self.db = store.db
        self._create()

    def _create(self) -> None:
        # At start-up, before any delivery: no other writer of these tables yet.
        tables = set(self.db.table_names())
        if "slack_message" not in tables:
            self.db["slack_message"].create({
                "outbox_id": int, "created_ms": int, "kind": str, "rule_id": str, "grp": str,
                "fired_ms": int, "channel": str, "ts": str, "thread_ts": str, "posted_ms": int,
            }, pk="outbox_id")
            self.db["slack_message"].create_index(["rule_id", "grp", "fired_ms"],
                                                  if_not_exists=True)
        if "slack_alert_message" not in tables:
            self.db["slack_alert_message"].create({
                "channel": str, "ts": str, "rule_id": str, "created_ms": int,
                "updated_ms": int, "state": str,
            }, pk=("channel", "ts"))

    def posted(self, batch: list[dict]) -> set[int]:
        """The outbox ids of `batch` already posted. The outbox's ids can be
        reused once its old rows are pruned (SQLite rowids), so a match must
        also be the same notification: same cycle, kind, rule and group."""
        found: set[int] = set()
        for i in range(0, len(batch), 500):
            chunk = {n["id"]: n for n in batch[i:i + 500]}
            for oid, created, kind, rule_id, grp in self.db.conn.execute(
                    f"SELECT outbox_id, created_ms, kind, rule_id, grp FROM slack_message "
                    f"WHERE outbox_id IN ({', '.join('?' * len(chunk))})", list(chunk)):
                n = chunk[oid]
                if (created, kind, rule_id, grp) == (n["created_ms"], n["kind"], n["rule_id"], n["grp"]):
                    found.add(oid)
        return found

    def message_for(self, rule_id: str, grp: str, fired_ms: int | None) -> AlertMessage | None:
        """The alert message of (rule, group): the one of that firing, else the
        latest (a resolve after flapping carries a later fired_ms)."""
        row = self.db.conn.execute(
            "SELECT channel, ts FROM slack_message WHERE kind = 'firing' AND rule_id = ? "
            "AND grp = ? ORDER BY (fired_ms IS ?) DESC, outbox_id DESC LIMIT 1",
            (rule_id, grp, fired_ms)).fetchone()
        return self.load(*row) if row else None

    def load(self, channel: str, ts: str) -> AlertMessage | None:
        cur = self.db.conn.execute(
            "SELECT channel, ts, rule_id, created_ms, state FROM slack_alert_message "
            "WHERE channel = ? AND ts = ?", (channel, ts))
        row = cur.fetchone()
        if row is None:
            return None
        return AlertMessage.from_row(dict(zip(("channel", "ts", "rule_id", "created_ms", "state"), row)))

    def record(self, posts: list[Post], message: AlertMessage | None, now_ms: int) -> None:
        with self.store.transaction() as conn:
            if message is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO slack_alert_message (channel, ts, rule_id, "
                    "created_ms, updated_ms, state) VALUES (?, ?, ?, ?, ?, ?)",
                    (message.channel, message.ts, message.rule_id, message.created_ms,
                     now_ms, message.state_json()))
            for p in posts:
                conn.execute(
                    "INSERT OR REPLACE INTO slack_message (outbox_id, created_ms, kind, rule_id, "
                    "grp, fired_ms, channel, ts, thread_ts, posted_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (p.outbox_id, p.created_ms, p.kind, p.rule_id, p.grp, p.fired_ms,
                     p.channel, p.ts, p.thread_ts, now_ms))

    def prune(self, before_ms: int) -> None:
        """Forget messages older than `before_ms`: the ledger must not grow for
        ever. An alert firing longer than that gets a standalone resolve."""
        with self.store.transaction():
            self.db.conn.execute("DELETE FROM slack_message WHERE posted_ms < ?", (before_ms,))
            self.db.conn.execute("DELETE FROM slack_alert_message WHERE updated_ms < ?",
                                 (before_ms,))


# == render =====================================================================

@dataclass
class SlackMessage:
    """A rendered message: `text` is the notification and screen-reader
    fallback, `blocks` what the channel shows."""
    text: str
    blocks: list[dict]


SEVERITY_MARK = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
KIND_MARK = {"resolved": "✅", "reminder": "⏰", "flapping": "🔁", "stable": "🟰",
             "problem": "⚠️"}
KIND_WORD = {"resolved": "Resolved", "reminder": "Still firing", "flapping": "Flapping",
             "stable": "Stable again", "problem": "Problem"}
MAX_LISTED_GROUPS = 30          # a storm message lists this many; "and N more" after
MAX_GROUP_NAME = 100            # characters of a (hostile, endless) group name shown
MAX_FALLBACK_TEXT = 1000


def _header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _fields(texts: list[str]) -> dict:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": t} for t in texts]}


def _context(texts: list[str]) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in texts]}


def fit_to_limits(blocks: list[dict]) -> list[dict]:
    """Clip every block to Slack's limits and keep at most 50 blocks (the
    last one, the context line, is kept). The renderers aim inside the limits;
    this stage makes sure, whatever the data."""
    out = []
    for b in blocks:
        b = json.loads(json.dumps(b))
        if b["type"] == "header":
            b["text"]["text"] = clip(b["text"]["text"], MAX_HEADER_TEXT)
        elif b["type"] == "section":
            if "text" in b:
                b["text"]["text"] = clip(b["text"]["text"], MAX_SECTION_TEXT)
            if "fields" in b:
                b["fields"] = b["fields"][:10]
                for f in b["fields"]:
                    f["text"] = clip(f["text"], MAX_FIELD_TEXT)
        elif b["type"] == "context":
            b["elements"] = b["elements"][:MAX_CONTEXT_ELEMENTS]
            for e in b["elements"]:
                e["text"] = clip(e["text"], MAX_SECTION_TEXT)
        out.append(b)
    if len(out) > MAX_BLOCKS:
        left_out = len(out) - MAX_BLOCKS + 1
        out = out[:MAX_BLOCKS - 2] + [_section(f"_… {left_out} more blocks left out_")] + out[-1:]
    return out


def chunk_lines(lines: list[str], limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Join lines into texts of at most `limit` characters, one per section."""
    chunks: list[str] = []
    cur = ""
    for line in lines:
        line = clip(line, limit)
        if cur and len(cur) + 1 + len(line) > limit:
            chunks.append(cur)
            cur = line
        else:
            cur = f"{cur}\n{line}" if cur else line
    if cur:
        chunks.append(cur)
    return chunks


def _name(p: dict) -> str:
    """The group's name, escaped and cut: it comes from CDRs."""
    return clip(escape(p.get("group") or p.get("group_key") or "all traffic"), MAX_GROUP_NAME)


def _calls(n) -> str:
    return f"{escape(n)} call" + ("" if n == 1 else "s")


def _plural(label: str) -> str:
    return label + ("es" if label.endswith(("x", "s")) else "s")


def _where(p: dict) -> str:
    if p.get("group_by") == "global" or not p.get("dimension"):
        return _name(p)
    return f"{escape(p['dimension'])} {_name(p)}"


def _since(fired_ms: int | None, until_ms: int | None) -> str:
    if fired_ms is None or until_ms is None:
        return ""
    return fmt_duration(max(0, until_ms - fired_ms))


def _fixes_text(p: dict) -> str | None:
    fixes = p.get("fixes") or []
    return "*What to do*\n" + "\n".join(f"• {escape(f)}" for f in fixes) if fixes else None


def failure_reasons(p: dict) -> list[dict]:
    """The top end reasons of the group, answered calls (2xx) left out: they
    are what works, not what contributes to the alert."""
    return [t for t in p.get("top_reasons") or []
            if not (isinstance(t.get("end_reason"), int) and 200 <= t["end_reason"] <= 299)]


def _top_reasons_text(p: dict) -> str | None:
    tops = failure_reasons(p)
    if not tops:
        return None
    lines = [f"• {escape(t['end_reason'])} {escape(t['name'])}: {_calls(t['calls'])} "
             f"({float(t['share']):.1f}% of all)" for t in tops]
    return "*Top SIP codes and end reasons*\n" + "\n".join(lines)


def _top_gateways_text(top: dict | None) -> str | None:
    if not top or not top.get("rows"):
        return None
    lines = [f"• {clip(escape(r['gateway']), MAX_GROUP_NAME)}: {escape(r['failing'])} of "
             f"{escape(r['calls'])} calls" for r in top["rows"]]
    return f"*Top vendor gateways* ({escape(top['label'])})\n" + "\n".join(lines)


def _context_line(p: dict, rule_id: str) -> dict:
    parts = [f"rule {escape(rule_id)}"]
    if p.get("window"):
        parts.append(f"window {escape(p['window'])}")
    if p.get("severity"):
        parts.append(f"severity {escape(p['severity'])}")
    parts.append("Sentinel")
    return _context([" · ".join(parts)])


def render_alert(msg: AlertMessage, tz: ZoneInfo) -> SlackMessage:
    """The alert message: one group in full, or a storm listing its groups."""
    if len(msg.entries) == 1:
        return _render_single(msg, tz)
    return _render_storm(msg, tz)


def _render_single(msg: AlertMessage, tz: ZoneInfo) -> SlackMessage:
    e = msg.entries[0]
    p, done = e["payload"], e.get("resolved")
    sev = msg.severity
    title = escape(p.get("title") or msg.rule_id)
    mark = "✅ RESOLVED" if done else f"{SEVERITY_MARK.get(sev, '🔵')} {sev.upper()}"
    blocks = [_header(f"{mark} · {title}")]
    if done:
        blocks.append(_section(_resolved_text(p, done, tz)))
    label = "Measured when it fired" if done else "Measured"
    measured = (f"*{label}*\n{escape(p.get('measure', ''))} = *{escape(p.get('value', 'n/a'))}*\n"
                f"fires when {escape(p.get('threshold', '?'))}")
    if p.get("resolve_when"):
        measured += f", resolves when {escape(p['resolve_when'])}"
    when = f"*When*\nfiring since {fmt_time(p.get('fired_ms'), tz)}"
    if done:
        when = (f"*When*\n{fmt_time(p.get('fired_ms'), tz)} to "
                f"{fmt_time(done.get('at_ms'), tz, with_date=False)}")
    fields = [f"*Where*\n{_where(p)}", when, measured]
    if p.get("baseline") not in (None, "", "n/a"):
        fields.append(f"*Baseline*\n{escape(p['baseline'])}")
    fields.append(f"*Calls*\n{escape(p.get('calls', 0))} in the last {escape(p.get('window', '?'))}")
    blocks.append(_fields(fields))
    if p.get("diagnosis"):
        blocks.append(_section(f"*Diagnosis*\n{escape(p['diagnosis'])}"))
    for text in (_fixes_text(p), _top_reasons_text(p), _top_gateways_text(msg.top_gateways)):
        if text:
            blocks.append(_section(text))
    blocks.append(_context_line(p, msg.rule_id))
    if done:
        text = f"✅ RESOLVED after {_since(p.get('fired_ms'), done.get('at_ms'))}: {title}"
    else:
        text = (f"{SEVERITY_MARK.get(sev, '')} {sev.upper()}: {title}: {escape(p.get('measure', ''))} "
                f"{escape(p.get('value', ''))} (fires when {escape(p.get('threshold', '?'))}), "
                f"{escape(p.get('calls', 0))} calls in {escape(p.get('window', '?'))}")
    return SlackMessage(clip(text, MAX_FALLBACK_TEXT), fit_to_limits(blocks))


def _now_text(measure: str, p: dict) -> str:
    """'now share of SIP 503 = 4.1% (212 calls in 5m)', escaped."""
    return (f"now {escape(measure)} = {escape(p.get('value'))} "
            f"({escape(p.get('calls'))} calls in {escape(p.get('window'))})")


def _resolved_text(p: dict, done: dict, tz: ZoneInfo) -> str:
    text = (f"*Resolved* at {fmt_time(done.get('at_ms'), tz)} after "
            f"{_since(p.get('fired_ms'), done.get('at_ms'))}")
    if done.get("value_raw") is not None:
        text += ": " + _now_text(p.get("measure", ""), done)
    if done.get("note"):
        text += f"\n{escape(done['note'])}"
    return text


def _storm_line(e: dict, tz: ZoneInfo) -> str:
    p, done = e["payload"], e.get("resolved")
    if done:
        return (f"• ~{_name(p)}~ resolved {fmt_time(done.get('at_ms'), tz, with_date=False)}, "
                f"after {_since(p.get('fired_ms'), done.get('at_ms'))}")
    tops = failure_reasons(p)
    top = (f" · top {escape(tops[0]['end_reason'])} {escape(tops[0]['name'])} "
           f"({float(tops[0]['share']):.0f}%)") if tops else ""
    return f"• *{_name(p)}*: {escape(p.get('value', 'n/a'))} of {escape(p.get('calls', 0))} calls{top}"


def _render_storm(msg: AlertMessage, tz: ZoneInfo) -> SlackMessage:
    worst = msg.entries[0]["payload"]
    n = len(msg.entries)
    resolved = sum(1 for e in msg.entries if e.get("resolved"))
    sev = msg.severity
    what = (f"{n} {escape(_plural(worst.get('dimension') or 'group'))}: "
            f"{escape(worst.get('measure', ''))} {escape(worst.get('threshold', ''))}")
    mark = "✅ RESOLVED" if msg.all_resolved else f"{SEVERITY_MARK.get(sev, '🔵')} {sev.upper()}"
    blocks = [_header(f"{mark} · {what}")]
    state = (f"all resolved, the last at {fmt_time(max(e['resolved']['at_ms'] or 0 for e in msg.entries), tz)}"
             if msg.all_resolved else
             f"{n - resolved} firing, {resolved} resolved" if resolved else f"{n} firing")
    blocks.append(_section(
        f"*{n} {escape(_plural(worst.get('dimension') or 'group'))}* crossed rule "
        f"*{escape(msg.rule_id)}* together at {fmt_time(msg.created_ms, tz)} ({state}). "
        "Worst first:"))
    lines = [_storm_line(e, tz) for e in msg.entries[:MAX_LISTED_GROUPS]]
    if n > MAX_LISTED_GROUPS:
        lines.append(f"_… and {n - MAX_LISTED_GROUPS} more_")
    blocks += [_section(chunk) for chunk in chunk_lines(lines)]
    measured = f"*Fires when*\n{escape(worst.get('measure', ''))} {escape(worst.get('threshold', '?'))}"
    if worst.get("resolve_when"):
        measured += f"; resolves when {escape(worst['resolve_when'])}"
    blocks.append(_fields([measured, f"*Window*\n{escape(worst.get('window', '?'))}"]))
    if worst.get("diagnosis"):
        blocks.append(_section(f"*Diagnosis* (worst: {_name(worst)})\n{escape(worst['diagnosis'])}"))
    fixes = _fixes_text(worst)
    if fixes:
        blocks.append(_section(fixes))
    blocks.append(_context_line(worst, msg.rule_id))
    names = ", ".join(f"{_name(e['payload'])} {escape(e['payload'].get('value', ''))}"
                      for e in msg.entries[:3])
    more = f" and {n - 3} more" if n > 3 else ""
    text = f"{mark}: {what}: {names}{more}"
    return SlackMessage(clip(text, MAX_FALLBACK_TEXT), fit_to_limits(blocks))


def note_line(kind: str, p: dict, tz: ZoneInfo, fired_ms: int | None = None) -> str:
    """One group's line in a resolve, reminder, flapping or stable note."""
    name = _name(p)
    fired_ms = fired_ms or p.get("fired_ms")
    if kind == "resolved":
        at = p.get("resolved_ms") or p.get("at_ms")
        line = f"{name}: resolved at {fmt_time(at, tz)}"
        if fired_ms:
            line += f" after {_since(fired_ms, at)}"
        if p.get("value_raw") is not None:
            line += "; " + _now_text(p.get("measure", ""), p)
        if p.get("note"):
            line += f". {escape(p['note'])}"
        return line
    if kind == "reminder":
        line = f"{name}: still firing at {fmt_time(p.get('at_ms'), tz)}"
        if fired_ms:
            line += f", for {_since(fired_ms, p.get('at_ms'))}"
        return (line + f": {escape(p.get('measure', ''))} = {escape(p.get('value', 'n/a'))} "
                f"(fires when {escape(p.get('threshold', '?'))})")
    return f"{name}: {escape(p.get('note') or kind)}"


def render_note(kind: str, payloads: list[dict], tz: ZoneInfo, *,
                parent: AlertMessage | None = None) -> SlackMessage:
    """A short note in an alert's thread: resolved, reminder, flapping, stable.

    Without a parent (its alert never reached Slack, or the ledger forgot
    it) the note stands alone in the channel and says which alert it is about.
    """
    mark, word = KIND_MARK.get(kind, "ℹ️"), KIND_WORD.get(kind, kind.capitalize())
    fired = {e["grp"]: e["payload"].get("fired_ms") for e in parent.entries} if parent else {}
    lines = [f"• {note_line(kind, p, tz, fired.get(p.get('group_key')))}"
             for p in worst_first(payloads)[:MAX_LISTED_GROUPS]]
    if len(payloads) > MAX_LISTED_GROUPS:
        lines.append(f"_… and {len(payloads) - MAX_LISTED_GROUPS} more_")
    lead = f"{mark} *{word}*"
    if parent is not None and len(parent.entries) > 1 and kind == "resolved":
        firing = sum(1 for e in parent.entries if not e.get("resolved"))
        lead += f" ({firing} of {len(parent.entries)} still firing)" if firing else " (all resolved)"
    blocks: list[dict] = []
    first = payloads[0]
    if parent is None:
        sev = first.get("severity") or "info"
        title = escape(first.get("title") or first.get("rule_id") or "")
        if len(payloads) > 1:
            title = f"{len(payloads)} alerts of rule {escape(first.get('rule_id', ''))}"
        blocks.append(_header(f"{mark} {word.upper()} · [{sev}] {title}"))
    chunks = chunk_lines([lead] + lines)
    blocks += [_section(c) for c in chunks]
    if parent is None:
        blocks.append(_context_line(first, first.get("rule_id", "")))
    text = f"{mark} {word}: " + "; ".join(note_line(kind, p, tz) for p in payloads[:3])
    if len(payloads) > 3:
        text += f" and {len(payloads) - 3} more"
    return SlackMessage(clip(text, MAX_FALLBACK_TEXT), fit_to_limits(blocks))


def render_problem(payloads: list[dict], tz: ZoneInfo) -> SlackMessage:
    """Rule-file errors: short, to the default channel."""
    first = payloads[0]
    title = escape(first.get("title") or "Problem")
    lines = [f"• {escape(p.get('text', ''))}" for p in payloads]
    blocks = [_header(f"⚠️ {title}")]
    blocks += [_section(c) for c in chunk_lines(lines)]
    blocks.append(_context([f"{fmt_time(first.get('at_ms'), tz)} · Sentinel"]))
    text = f"⚠️ {title}: " + "; ".join(escape(p.get("text", "")) for p in payloads)
    return SlackMessage(clip(text, MAX_FALLBACK_TEXT), fit_to_limits(blocks))


# == top contributors of a global alert ========================================

def top_gateways(store: Store, rule: Rule, end_ms: int, n: int = 5) -> dict:
    """The vendor gateways with most failing calls in the rule's window: for
    an alert on all traffic, where to look first.

    "Failing" follows the rule: the calls it counts when it fires on too many
    (share of SIP 503 > 10%), the calls it does not count when it fires on too
    few (share of SIP 200 < 50%), else unanswered calls (ASR, PDD, ...).
    """
    start, end = window_bounds(end_ms, rule.window_min)
    selector = rule.measure.selector
    own = [c for c in rule.clauses if not c.subject]          # not "and count >= 10"
    too_few = bool(own) and own[0].op in ("<", "<=")
    if selector is None:
        label, failing = "unanswered calls", lambda s: s.calls - s.answered
    elif too_few:
        label = f"calls that did not end {selector.describe()}"
        failing = lambda s: s.calls - s.count_where(selector.matches)  # noqa: E731
    else:
        label = f"calls that ended {selector.describe()}"
        failing = lambda s: s.count_where(selector.matches)  # noqa: E731
    rows = []
    for gw, s in group_stats(store.window_rollups("egress", start, end)).items():
        if failing(s) > 0:
            rows.append({"gateway": gw, "failing": failing(s), "calls": s.calls})
    rows.sort(key=lambda r: (-r["failing"], r["gateway"]))
    return {"label": label, "rows": rows[:n]}


# == pace =======================================================================

class ChannelPacer:
    """About one message a second per channel, as Slack's chat.postMessage
    asks; slack_sdk's retry handlers wait after a 429 but do not pace.

    The clock and the sleep are injectable so tests do not wait.
    """

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self._next: dict[str, float] = {}

    def delay(self, channel: str) -> float:
        """How long `wait(channel)` would sleep now."""
        return max(0.0, self._next.get(channel, -math.inf) - self.clock())

    def wait(self, channel: str) -> float:
        d = self.delay(channel)
        if d > 0:
            self.sleep(d)
        self._next[channel] = self.clock() + self.interval_s
        return d


# == send / retry ===============================================================

# `ok: false` errors no retry can fix: the message is given up and reported.
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "channel_is_archived",
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "no_permission", "missing_scope", "not_allowed_token_type", "restricted_action",
    "team_access_not_granted", "ekm_access_denied", "org_login_required",
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "too_many_attachments",
    "no_text", "invalid_arguments", "invalid_arg_name", "user_not_found",
})
# chat.postMessage refusing our blocks: the text alone still goes out.
BLOCKS_REFUSED = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long"})
# chat.update that can never work (message deleted, too old to edit): the
# resolve is then said in a note alone.
UPDATE_IMPOSSIBLE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


class DeliveryFailed(Exception):
    def __init__(self, outcome: str):
        super().__init__(str(outcome))
        self.outcome = outcome


class OutOfTime(Exception):
    """Pacing would hold this delivery past its budget: the rest waits for the
    next cycle, so delivery never holds up evaluation for long."""


def _slack_error(e: SlackApiError) -> str | None:
    data = getattr(e.response, "data", None)
    return data.get("error") if isinstance(data, dict) else None


def outcome_of(method: str, e: Exception) -> str:
    """What a failed call means for the outbox: `PermanentError` when no retry
    can help, else a string (retried next cycle)."""
    if isinstance(e, SlackApiError):
        error = _slack_error(e)
        text = f"Slack {method}: {error or 'HTTP ' + str(e.response.status_code)}"
        return PermanentError(text) if error in PERMANENT_ERRORS else text
    return f"Slack {method}: {type(e).__name__}: {e}"


class _RateLimitWait(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (it sleeps Retry-After), except when Slack asks
    for more than `max_wait_s`: then the message waits for the next cycle
    rather than holding this one up."""

    def __init__(self, max_retry_count: int, max_wait_s: float):
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_s = max_wait_s

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        for k, v in response.headers.items():
            if k.lower() == "retry-after":
                try:
                    return float(v[0] if isinstance(v, list) else v) <= self.max_wait_s
                except (TypeError, ValueError):
                    return True
        return True


class _ServerErrorRetry(ServerErrorRetryHandler):
    """slack_sdk's handler retries 500 and 503; proxies in front of Slack
    also answer 502 and 504, which are just as passing."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        return response is not None and response.status_code in (500, 502, 503, 504)


class _ProportionalJitter(Jitter):
    """Up to 50% more than the backoff, so a fast backoff stays fast (slack_sdk's
    default jitter adds up to a whole second)."""

    def recalculate(self, duration: float) -> float:
        return duration * (1 + random.random() / 2)


def make_client(settings: SlackSettings, token: str, *, backoff_s: float = 0.5,
                max_retries: int = 2, max_rate_limit_wait_s: float = 30.0,
                timeout_s: int = 15) -> WebClient:
    """A WebClient that waits out 429 and retries 5xx and connection errors,
    each a bounded number of times with exponential backoff."""
    backoff = BackoffRetryIntervalCalculator(backoff_factor=backoff_s, jitter=_ProportionalJitter())
    return WebClient(token=token, base_url=settings.api_url, timeout=timeout_s, retry_handlers=[
        ConnectionErrorRetryHandler(max_retry_count=max_retries, interval_calculator=backoff),
        _RateLimitWait(max_retry_count=max_retries, max_wait_s=max_rate_limit_wait_s),
        _ServerErrorRetry(max_retry_count=max_retries, interval_calculator=backoff),
    ])


# == the thread stage: what each group becomes ==================================

@dataclass
class Job:
    """One piece of Slack work and the outbox notifications it delivers."""
    action: str                       # alert | thread | standalone | problem
    group: NotificationGroup
    items: list[dict]
    channel: str = ""
    parent: AlertMessage | None = None


THREAD_KINDS = ("resolved", "reminder", "flapping", "stable")


def plan_jobs(group: NotificationGroup, ledger: SlackLedger, settings: SlackSettings) -> list[Job]:
    """Firing groups become a message in their channel; what follows an alert
    goes to its message's thread (one note per message); problems go to the
    default channel; anything without a message stands alone."""
    first = group.items[0]["payload"]
    channel = route_channel(settings, group.rule_id, first.get("severity"))
    if group.kind == "firing":
        return [Job("alert", group, group.items, channel)]
    if group.kind == "problem":
        return [Job("problem", group, group.items, settings.default_channel)]
    if group.kind not in THREAD_KINDS:
        return [Job("standalone", group, group.items, channel)]
    by_parent: dict[tuple[str, str], Job] = {}
    alone: list[dict] = []
    for n in group.items:
        parent = ledger.message_for(n["rule_id"], n["grp"], n["payload"].get("fired_ms"))
        if parent is None:
            alone.append(n)
            continue
        job = by_parent.setdefault((parent.channel, parent.ts),
                                   Job("thread", group, [], parent.channel, parent))
        job.items.append(n)
    jobs = list(by_parent.values())
    if alone:
        jobs.append(Job("standalone", group, alone, channel))
    return jobs


# == the notifier ===============================================================

class SlackNotifier:
    """Delivers the outbox to Slack through the stages above.

    `rules_provider` returns the live rules (for charts and the top gateways
    of a global alert); `store` holds the ledger and the rollups charts read.
    """
    name = "slack"

    def __init__(self, settings: SlackSettings, store: Store,
                 rules_provider: Callable[[], dict[str, Rule]] | None, tz: ZoneInfo,
                 client: WebClient | None = None, *, pacer: ChannelPacer | None = None,
                 budget_s: float = 20.0, ledger_days: float = 30.0):
        self.settings = settings
        self.store = store
        self.rules_provider = rules_provider or (lambda: {})
        self.tz = tz
        if client is None:
            token = settings.token()
            if not token:
                raise ConfigError(f"[slack]: the environment variable {settings.token_env} "
                                  "(the bot token, xoxb-...) is not set")
            client = make_client(settings, token)
        self.client = client
        self.pacer = pacer or ChannelPacer(settings.pace_seconds)
        self.ledger = SlackLedger(store)
        self.budget_s = budget_s
        self.ledger_ms = int(ledger_days * 86_400_000)
        self._deadline = math.inf
        self._channel_ids: dict[str, str] = {}     # "#noc" -> "C0123": one pace per channel
        self._last_prune_ms = 0

    # -- the pipeline -------------------------------------------------------
    def deliver(self, batch: list[dict], now_ms: int) -> dict[int, str | None]:
        results: dict[int, str | None] = {}
        already = self.ledger.posted(batch)
        for oid in already:            # posted, then a crash before the outbox was marked
            results[oid] = None
        todo = [n for n in batch if n["id"] not in already]
        self._deadline = self.pacer.clock() + self.budget_s
        held: set[tuple[str, str]] = set()     # alerts whose earlier message failed
        for group in group_notifications(todo):
            # Never tell a resolve before its alert: a group waits behind the
            # failed notifications of the same alerts. (Left unanswered, it
            # stays pending without counting as a failure.)
            group.items = [n for n in group.items if (n["rule_id"], n["grp"]) not in held]
            if not group.items:
                continue
            try:
                jobs = plan_jobs(group, self.ledger, self.settings)
            except Exception as e:
                log.exception("cannot plan Slack delivery of %s", group.kind)
                jobs, outcome = [], f"Slack: {type(e).__name__}: {e}"
                for n in group.items:
                    results[n["id"]] = outcome
            for job in jobs:
                try:
                    self._run(job, now_ms)
                    outcome = None
                except OutOfTime:
                    log.info("Slack delivery budget spent: the rest waits for the next cycle")
                    return results
                except DeliveryFailed as e:
                    outcome = e.outcome
                except Exception as e:          # a bug: the other jobs still go
                    log.exception("Slack delivery of %s %s failed", job.group.kind, job.group.rule_id)
                    outcome = f"Slack: {type(e).__name__}: {e}"
                for n in job.items:
                    results[n["id"]] = outcome
                if outcome is not None and not isinstance(outcome, PermanentError):
                    held.update((n["rule_id"], n["grp"]) for n in job.items)
        self._maybe_prune(now_ms)
        return results

    def _run(self, job: Job, now_ms: int) -> None:
        {"alert": self._post_alert, "thread": self._post_in_thread,
         "standalone": self._post_standalone, "problem": self._post_problem}[job.action](job, now_ms)

    # -- one job each -------------------------------------------------------
    def _post_alert(self, job: Job, now_ms: int) -> None:
        rule = self.rules_provider().get(job.group.rule_id)
        items = sorted(job.items, key=lambda n: worst_first_key(n["payload"]))
        entries = [{"outbox_id": n["id"], "grp": n["grp"], "payload": n["payload"], "resolved": None}
                   for n in items]
        msg = AlertMessage(job.group.rule_id, job.group.created_ms, entries)
        if rule is not None and rule.group_by == "global":
            try:
                msg.top_gateways = top_gateways(self.store, rule,
                                                items[0]["payload"].get("at_ms") or msg.created_ms)
            except Exception:
                log.exception("top gateways of %s not computed", rule.id)
        msg.channel, msg.ts = self._post(job.channel, render_alert(msg, self.tz))
        self.ledger.record([self._post_row(n, msg.channel, msg.ts) for n in job.items], msg, now_ms)
        self._attach_chart(msg, rule)

    def _post_in_thread(self, job: Job, now_ms: int) -> None:
        msg = job.parent
        kind = job.group.kind
        if kind == "resolved":
            for n in job.items:
                msg.resolve(n["grp"], n["payload"])
            try:
                self.client.chat_update(channel=msg.channel, ts=msg.ts,
                                        **_message_args(render_alert(msg, self.tz)))
            except SlackApiError as e:
                if _slack_error(e) not in UPDATE_IMPOSSIBLE:
                    raise DeliveryFailed(outcome_of("chat.update", e)) from e
                log.warning("alert message %s in %s cannot be updated (%s): noting the resolve only",
                            msg.ts, msg.channel, _slack_error(e))
            except (SlackClientError, OSError) as e:
                raise DeliveryFailed(outcome_of("chat.update", e)) from e
        note = render_note(kind, [n["payload"] for n in job.items], self.tz, parent=msg)
        channel, ts = self._post(msg.channel, note, thread_ts=msg.ts)
        self.ledger.record([self._post_row(n, channel, ts, thread_ts=msg.ts) for n in job.items],
                           msg if kind == "resolved" else None, now_ms)

    def _post_standalone(self, job: Job, now_ms: int) -> None:
        note = render_note(job.group.kind, [n["payload"] for n in job.items], self.tz)
        channel, ts = self._post(job.channel, note)
        self.ledger.record([self._post_row(n, channel, ts) for n in job.items], None, now_ms)

    def _post_problem(self, job: Job, now_ms: int) -> None:
        channel, ts = self._post(job.channel, render_problem([n["payload"] for n in job.items], self.tz))
        self.ledger.record([self._post_row(n, channel, ts) for n in job.items], None, now_ms)

    @staticmethod
    def _post_row(n: dict, channel: str, ts: str, thread_ts: str | None = None) -> Post:
        return Post(n["id"], n["created_ms"], n["rule_id"], n["grp"], n["payload"].get("fired_ms"),
                    n["kind"], channel, ts, thread_ts)

    # -- pace, send, retry --------------------------------------------------
    def _pace(self, channel: str) -> None:
        key = self._channel_ids.get(channel, channel)
        if self.pacer.clock() + self.pacer.delay(key) > self._deadline:
            raise OutOfTime(channel)
        self.pacer.wait(key)

    def _call(self, method: str, fn, **kwargs):
        try:
            return fn(**kwargs)
        except (SlackClientError, OSError) as e:
            raise DeliveryFailed(outcome_of(method, e)) from e

    def _post(self, channel: str, message: SlackMessage,
              thread_ts: str | None = None) -> tuple[str, str]:
        """Post (paced); answer Slack's (channel id, ts). Blocks Slack refuses
        are dropped and the text goes alone: an alert is never lost to
        formatting."""
        self._pace(channel)
        args = dict(channel=channel, thread_ts=thread_ts, unfurl_links=False, unfurl_media=False)
        try:
            r = self.client.chat_postMessage(**args, **_message_args(message))
        except SlackApiError as e:
            if _slack_error(e) not in BLOCKS_REFUSED:
                raise DeliveryFailed(outcome_of("chat.postMessage", e)) from e
            log.warning("Slack refused the blocks (%s); sending the text alone", _slack_error(e))
            r = self._call("chat.postMessage", self.client.chat_postMessage, **args,
                           text=message.text)
        except (SlackClientError, OSError) as e:
            raise DeliveryFailed(outcome_of("chat.postMessage", e)) from e
        channel_id = r.get("channel") or channel
        self._channel_ids[channel] = channel_id
        return channel_id, r["ts"]

    # -- charts -------------------------------------------------------------
    def _attach_chart(self, msg: AlertMessage, rule: Rule | None) -> None:
        """The measure over the last hours, in the alert's thread. Best effort:
        the alert is already posted and recorded, and a chart that cannot be
        drawn or uploaded is only logged."""
        if not self.settings.charts or rule is None:
            return
        try:
            from ..charts import alert_chart, chartable, render_png
            if not chartable(rule):
                return
            first = msg.entries[0]["payload"]
            chart = alert_chart(self.store, rule, [e["grp"] for e in msg.entries],
                                end_ms=first.get("at_ms") or msg.created_ms,
                                fired_ms=first.get("fired_ms"), hours=self.settings.chart_hours)
            png = render_png(chart, self.tz)
            self._pace(msg.channel)
            where = _name(first) if len(msg.entries) == 1 else f"{len(msg.entries)} groups"
            title = f"{escape(rule.measure.describe())}, {where}, last {self.settings.chart_hours:g} h"
            self.client.files_upload_v2(
                channel=msg.channel, thread_ts=msg.ts, content=png, title=title,
                filename=_file_name(rule.id, msg.entries[0]["grp"]),
                alt_txt=f"Chart of {title}, with the rule's threshold and the firing period shaded")
        except OutOfTime:
            log.info("no time left for the chart of %s in this cycle; skipped", rule.id)
        except Exception:
            log.exception("chart of %s not posted (the alert was)", rule.id)

    def _maybe_prune(self, now_ms: int) -> None:
        if now_ms - self._last_prune_ms >= 3600_000:
            self._last_prune_ms = now_ms
            self.ledger.prune(now_ms - self.ledger_ms)


def _message_args(m: SlackMessage) -> dict:
    return {"text": m.text, "blocks": m.blocks}


def _file_name(rule_id: str, grp: str) -> str:
    """A safe file name: group names come from CDRs."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{rule_id}-{grp or 'all'}")[:80]
    return f"{safe}.png"
