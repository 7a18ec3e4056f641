"""The answers to `/sipcode`, `/endreason`, `/q850` and `/sentinel ...`, as objects
that render both to Slack (Block Kit) and to plain text for the terminal.

An `Answer` holds plain, unescaped strings: what it says, not how. The two
renderers decide the how:

- `Answer.to_slack()` escapes every string (slack_text.escape: `&`, `<`, `>`)
  before it enters mrkdwn or the top-level text, so whatever a user typed or a
  CDR carried (`<!channel>`, `<https://x|click>`) is shown, never acted on;
  and it keeps Slack's limits (50 blocks, 3,000 characters a section, 10
  fields of 2,000, a 150-character plain_text header). The header holds
  knowledge-base text only; user input is echoed in escaped mrkdwn.
- `Answer.to_text()` is the same content for a terminal, control characters
  removed (a gateway name cannot move the cursor).

`lookup(kb, command, text)` turns what a user typed into an answer from the
knowledge base alone (instant: it is what the bot acknowledges with) plus a
`LiveSubject` naming the end reason values whose live figures follow, or None
when there is nothing to count. `live_answer` renders those figures
(sentinel.insights) once the store has been read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping
from zoneinfo import ZoneInfo

from . import slack_text
from .alerts import DIMENSION_LABELS
from .insights import CodeFigures
from .knowledge import EndReason, Knowledge, Q850Cause, SipCode
from .knowledge import q850_class
from .metrics import format_value
from .notifiers.terminal import fmt_time
from .rules import Rule, RuleError, fmt_minutes

ECHO_LIMIT = 60          # characters of user input echoed back
MAX_DIGITS = 6           # longer numbers are not codes of any kind

CLASS_NAMES = {1: "provisional", 2: "success", 3: "redirection", 4: "client error",
               5: "server error", 6: "global failure"}

COMMANDS = ("sipcode", "endreason", "q850")


# --------------------------------------------------------------------------- the model

@dataclass
class Section:
    """A part of an answer: an optional heading, then lines, bullets or fields."""
    heading: str | None = None
    lines: list[str] = field(default_factory=list)
    bullets: bool = False                       # render lines as a bulleted list
    fields: list[tuple[str, str]] = field(default_factory=list)
    mono: bool = False                          # preformatted (status output)


@dataclass
class Answer:
    title: str
    sections: list[Section] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)
    response_type: str = "ephemeral"            # or "in_channel"
    found: bool = True                          # False: input not understood / nothing known

    # ---- Slack
    def to_slack(self) -> dict:
        """`{"response_type", "text", "blocks"}`, every string escaped, within limits."""
        esc = slack_text.escape
        blocks: list[dict] = [{
            "type": "header",
            "text": {"type": "plain_text", "emoji": False,
                     "text": slack_text.clip(_one_line(self.title), slack_text.MAX_HEADER_TEXT)},
        }]
        for s in self.sections:
            blocks.extend(_section_blocks(s))
        if self.footer:
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": slack_text.clip(esc(f), slack_text.MAX_SECTION_TEXT)}
                for f in self.footer[:slack_text.MAX_CONTEXT_ELEMENTS]]})
        if len(blocks) > slack_text.MAX_BLOCKS:
            blocks = blocks[:slack_text.MAX_BLOCKS - 1] + [{
                "type": "context", "elements": [{
                    "type": "mrkdwn", "text": "… cut here: the answer is longer than one "
                                              "Slack message allows"}]}]
        return {"response_type": self.response_type, "text": self.fallback(),
                "blocks": blocks}

    def fallback(self) -> str:
        """The top-level text: the notification and screen-reader version."""
        first = next((ln for s in self.sections for ln in s.lines), "")
        text = _one_line(self.title) + (f": {_one_line(first)}" if first else "")
        return slack_text.clip(slack_text.escape(text), slack_text.MAX_SECTION_TEXT)

    # ---- terminal
    def to_text(self) -> str:
        out = [_plain(self.title), "=" * min(len(self.title), 72)]
        for s in self.sections:
            out.append("")
            if s.heading:
                out.append(_plain(s.heading))
            indent = "  " if s.heading else ""
            for ln in s.lines:
                for part in _plain(ln).split("\n"):
                    out.append(f"{indent}{'- ' if s.bullets else ''}{part}")
            if s.fields:
                width = min(max(len(k) for k, _ in s.fields), 32)
                for k, v in s.fields:
                    out.append(f"{indent}{_plain(k):<{width}}  {_plain(v)}")
        if self.footer:
            out.append("")
            out.extend(_plain(f) for f in self.footer)
        return "\n".join(out)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _plain(text: str) -> str:
    return _CONTROL.sub("?", str(text))


def _section_blocks(s: Section) -> list[dict]:
    esc = slack_text.escape
    blocks: list[dict] = []
    head = f"*{esc(s.heading)}*" if s.heading else ""
    if s.lines:
        if s.mono:
            rendered = [esc(ln) for ln in s.lines]
        else:
            rendered = [("• " if s.bullets else "") + esc(ln) for ln in s.lines]
        wrap = ("```\n", "\n```") if s.mono else ("", "")
        budget = slack_text.MAX_SECTION_TEXT - len(head) - 1 - sum(map(len, wrap))
        chunk: list[str] = []
        size = 0
        chunks: list[list[str]] = []
        for ln in rendered:
            ln = slack_text.clip(ln, budget)
            if chunk and size + len(ln) + 1 > budget:
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(ln)
            size += len(ln) + 1
        if chunk:
            chunks.append(chunk)
        for i, c in enumerate(chunks):
            body = wrap[0] + "\n".join(c) + wrap[1]
            text = (head + "\n" + body) if (head and i == 0) else body
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    elif head and not s.fields:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": head}})
    if s.fields:
        items = [{"type": "mrkdwn",
                  "text": slack_text.clip(f"*{esc(k)}*\n{esc(v)}", slack_text.MAX_FIELD_TEXT)}
                 for k, v in s.fields]
        for i in range(0, len(items), 10):
            block: dict = {"type": "section", "fields": items[i:i + 10]}
            if head and i == 0 and not s.lines:
                block["text"] = {"type": "mrkdwn", "text": head}
            blocks.append(block)
    return blocks


@dataclass(frozen=True)
class LiveSubject:
    """What to count in the store for the live part of an answer."""
    codes: tuple[int, ...]          # end reason values
    label: str                      # "SIP 488 Not Acceptable Here"
    note: str = ""                  # why these codes (Q.850 via its SIP mapping)


# --------------------------------------------------------------------------- input

def clean_input(text: str | None) -> str:
    """Command text as typed: Slack's entities undone (Slack sends `&lt;` for a
    typed `<`; everything is escaped again on the way out), typographic quotes
    and dashes that phones and macOS substitute turned back into ASCII, runs of
    blanks collapsed."""
    t = str(text or "")
    t = t.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    t = (t.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'")
         .replace("\u2019", "'").replace("\u2014", "--").replace("\u2013", "--"))
    return " ".join(t.split())


def echo(text: str, limit: int = ECHO_LIMIT) -> str:
    """User input quoted for an answer: one line, clipped (escaped by the renderer)."""
    t = _one_line(text)
    if len(t) > limit:
        t = t[:limit - 1] + "…"
    return f"“{t}”"


_INT = re.compile(r"^[+-]?\d+$")


def _first_token(text: str) -> str:
    t = text.strip().lstrip("#")
    return t.split(" ", 1)[0] if t else ""


# --------------------------------------------------------------------------- helpers

def class_name(code: int) -> str:
    k = code // 100
    return f"{k}xx {CLASS_NAMES.get(k, '')}".strip()


def _yes(flag: bool, yes: str, no: str) -> str:
    return yes if flag else no


def _q850_label(kb: Knowledge, cause: int) -> str:
    c = kb.q850(cause)
    return f"{cause} {c.name}" if c else f"{cause}"


def _sip_label(kb: Knowledge, code: int) -> str:
    c = kb.sip(code)
    return c.label if c else f"{code}"


def _sip_sections(kb: Knowledge, c: SipCode) -> list[Section]:
    out = [Section(lines=[c.meaning] if c.meaning else [])]
    reg = (f"yes, IANA registry ({c.rfc})" if c.registered
           else f"no, not in the IANA registry{f' ({c.rfc})' if c.rfc else ''}")
    if c.failover_note:
        failover = f"{c.failover}: {c.failover_note}"
    else:
        failover = {"continue": "continue: VOS3000 may try the next gateway",
                    "stop": "stop: VOS3000 does not try another gateway"}.get(c.failover,
                                                                             c.failover)
    out.append(Section(fields=[
        ("Class", class_name(c.code)),
        ("Result category", c.result),
        ("Registered", reg),
        ("ASR", _yes(c.asr_success, "counts as answered", "not answered")),
        ("NER", _yes(c.ner_effective, "effective (answered or a user decision)",
                     "ineffective: counts against NER")),
        ("SEER (RFC 6076)", _yes(c.seer_effective, "effective", "ineffective")),
        ("ISA (RFC 6076)", _yes(c.isa, "an ineffective session attempt", "no")),
        ("Failover", failover),
    ]))
    q = []
    if c.q850_out is not None:
        q.append(f"SIP → Q.850 (RFC 3398 8.2.6.1): {c.code} → cause {_q850_label(kb, c.q850_out)}")
    else:
        q.append(f"SIP → Q.850 (RFC 3398 8.2.6.1): no cause listed for {c.code}")
    if c.q850_note:
        q.append(f"  note: {c.q850_note}")
    if c.q850_in:
        by_class = [x for x in c.q850_in if (kb.q850(x) and kb.q850(x).sip_by_class)]
        listed = ", ".join(_q850_label(kb, x) + (" (by class)" if x in by_class else "")
                           for x in c.q850_in)
        q.append(f"Q.850 → SIP (RFC 3398 7.2.4.1): causes {listed} → {c.code}")
    else:
        q.append(f"Q.850 → SIP (RFC 3398 7.2.4.1): no cause maps to {c.code}")
    out.append(Section("Q.850 mapping (RFC 3398)", q))
    if c.fixes:
        out.append(Section("How to fix it on VOS3000", list(c.fixes), bullets=True))
    if c.aliases:
        out.append(Section(lines=["Also seen as: " + ", ".join(c.aliases)]))
    return out


def _suggest_sip(kb: Knowledge, typed: str, codes: list[SipCode], why: str) -> Section:
    return Section(why, [f"{c.label} ({c.result})" + ("" if c.registered else ", not registered")
                         for c in codes], bullets=True)


# --------------------------------------------------------------------------- /sipcode

def sip_lookup(kb: Knowledge, text: str) -> tuple[Answer, LiveSubject | None]:
    typed = clean_input(text)
    if not typed:
        return usage("sipcode", "Which SIP code? Give a number such as 488, or words such "
                                "as “busy”."), None
    tok = _first_token(typed)
    if _INT.match(tok):
        if tok.startswith(("-", "+")) or len(tok.lstrip("+-")) > MAX_DIGITS:
            return _sip_not_a_code(kb, typed, tok), None
        n = int(tok)
        digits = str(n) if not tok.startswith("0") else tok
        if len(tok) == 3 and 100 <= n <= 699:
            known = kb.sip(n)
            entry = known or kb.sip_or_class(n)
            a = Answer(f"SIP {entry.label}", _sip_sections(kb, entry))
            if known is None:
                near = [c for c in kb.nearest_sip(tok, limit=8) if c.code != n]
                if near:
                    a.sections.append(_suggest_sip(kb, tok, near, "Known codes near it"))
            return a, LiveSubject((n,), f"SIP {entry.label}")
        near = [c for c in kb.nearest_sip(digits, limit=12) if str(c.code)[0] == digits[:1]]
        if len(digits) < 3 and near:
            return Answer(f"SIP codes starting with {digits}", [
                Section(lines=[f"{echo(typed)} is not a full SIP code. Did you mean one of these?"]),
                _suggest_sip(kb, digits, near, None),
                Section(lines=["Ask again with the full code, e.g. `/sipcode "
                               f"{near[0].code}`."])], found=False), None
        return _sip_not_a_code(kb, typed, tok, near), None
    hits = kb.nearest_sip(typed, limit=12)
    if hits:
        return Answer("SIP codes matching your words", [
            Section(lines=[f"Codes whose name contains {echo(typed)}:"]),
            _suggest_sip(kb, typed, hits, None),
            Section(lines=[f"Ask with the number for the full answer, e.g. `/sipcode {hits[0].code}`."]),
        ], found=False), None
    return usage("sipcode", f"I cannot read {echo(typed)} as a SIP response code.",
                 found=False), None


def _sip_not_a_code(kb: Knowledge, typed: str, tok: str,
                    near: list[SipCode] | None = None) -> Answer:
    lines = [f"{echo(typed)} is not a SIP response code: they have three digits, 100 to 699."]
    if _INT.match(tok) and len(tok) <= 4 and (int(tok) < 0 or 1 <= int(tok) <= 25):
        lines.append("Negative values and 1-25 in the endreason field are VOS3000 end "
                     f"reasons: try `/endreason {int(tok)}`.")
    a = Answer("Not a SIP code", [Section(lines=lines)], found=False)
    if near:
        a.sections.append(_suggest_sip(kb, tok, near[:8], "Closest known codes"))
    a.sections.append(_usage_section("sipcode"))
    return a


# --------------------------------------------------------------------------- /endreason

def endreason_lookup(kb: Knowledge, text: str) -> tuple[Answer, LiveSubject | None]:
    typed = clean_input(text)
    if not typed:
        return usage("endreason", "Which end reason? Give the number from the CDR's "
                                  "endreason field, e.g. 8, -9 or 486."), None
    tok = _first_token(typed)
    if not _INT.match(tok):
        return _endreason_words(kb, typed), None
    if len(tok.lstrip("+-")) > MAX_DIGITS:
        return usage("endreason", f"{echo(typed)} is too long to be an end reason.",
                     found=False), None
    r = kb.end_reason(int(tok))
    if r.kind == "sip":
        c = r.sip
        a = Answer(f"End reason {r.raw}: SIP {c.label}", [
            Section(lines=[f"In the endreason field, 100-699 is the SIP final response itself: "
                           f"{r.raw} is SIP {c.label} (same answer as `/sipcode {r.raw}`)."]),
            *_sip_sections(kb, c)])
        return a, LiveSubject((r.raw,), f"end reason {r.raw} (SIP {c.label})")
    return _endreason_answer(kb, r), LiveSubject((r.raw,), f"end reason {r.label}")


def _endreason_answer(kb: Knowledge, r: EndReason) -> Answer:
    form = {"server": "VOS3000 server end reason (1-25)",
            "internal": "VOS3000 internal reason (negative value)",
            "unknown": "not a documented form"}[r.kind]
    sections = [Section(lines=[r.meaning] if r.meaning else [])]
    billable = {True: "yes", False: "no", None: "unknown"}[r.billable]
    fields = [("Form", form), ("Category", r.category)]
    if r.impact:
        fields.append(("Impact", r.impact))
    fields.append(("Billable", billable))
    if r.sip is not None:
        fields.append(("SIP equivalent", f"{r.sip.label} (see `/sipcode {r.sip.code}`)"))
    if r.q850 is not None:
        fields.append(("Q.850 cause", f"{_q850_label(kb, r.q850)} (see `/q850 {r.q850}`)"))
    sections.append(Section(fields=fields))
    if r.fixes:
        sections.append(Section("How to fix it on VOS3000", list(r.fixes), bullets=True))
    if r.kind == "unknown" or r.name.startswith("Unknown"):
        sections.append(Section(lines=[
            "The endreason field holds one of three forms: a SIP response (100-699), a "
            "server end reason (1-25) or a negative VOS internal reason."]))
    return Answer(f"End reason {r.label}", sections)


def _endreason_words(kb: Knowledge, typed: str) -> Answer:
    words = [w for w in re.split(r"[^a-z0-9]+", typed.lower()) if w]
    hits = []
    if words:
        for r in kb.end_reasons():
            hay = f"{r.name} {r.category}".lower()
            if all(w in hay for w in words):
                hits.append(r)
    sip = kb.nearest_sip(typed, limit=6) if words else []
    if not hits and not sip:
        return usage("endreason", f"I cannot read {echo(typed)} as an end reason.",
                     found=False)
    sections = [Section(lines=[f"End reasons whose name contains {echo(typed)}:"])]
    if hits:
        sections.append(Section(lines=[f"{r.label} ({r.category})" for r in hits[:12]],
                                bullets=True))
    if sip:
        sections.append(_suggest_sip(kb, typed, sip, "SIP responses (values 100-699)"))
    sections.append(Section(lines=["Ask with the number for the full answer, e.g. "
                                   f"`/endreason {(hits[0].raw if hits else sip[0].code)}`."]))
    return Answer("End reasons matching your words", sections, found=False)


# --------------------------------------------------------------------------- /q850

def q850_lookup(kb: Knowledge, text: str) -> tuple[Answer, LiveSubject | None]:
    typed = clean_input(text)
    if not typed:
        return usage("q850", "Which Q.850 cause? Give a number from 1 to 127, e.g. 34."), None
    tok = _first_token(typed)
    if not _INT.match(tok):
        words = [w for w in re.split(r"[^a-z0-9]+", typed.lower()) if w]
        hits = [c for c in kb.q850_causes() if words and all(w in c.name.lower() for w in words)]
        if not hits:
            return usage("q850", f"I cannot read {echo(typed)} as a Q.850 cause.",
                         found=False), None
        return Answer("Q.850 causes matching your words", [
            Section(lines=[f"Causes whose name contains {echo(typed)}:"]),
            Section(lines=[f"{c.cause} {c.name}" for c in hits[:12]], bullets=True),
            Section(lines=[f"Ask with the number for the full answer, e.g. `/q850 {hits[0].cause}`."]),
        ], found=False), None
    if len(tok.lstrip("+-")) > MAX_DIGITS or not 0 <= int(tok) <= 127:
        return usage("q850", f"{echo(typed)} is not a Q.850 cause: causes run from 1 to 127.",
                     found=False), None
    n = int(tok)
    c = kb.q850(n)
    if c is None:
        return _q850_unknown(kb, n), None
    return _q850_answer(kb, c)


def _q850_answer(kb: Knowledge, c: Q850Cause) -> tuple[Answer, LiveSubject | None]:
    sections = [Section(lines=[c.meaning] if c.meaning else [])]
    if c.sip is not None:
        to_sip = f"{_sip_label(kb, c.sip)}" + (
            " (by class: RFC 3398 does not list this cause)" if c.sip_by_class else "")
    else:
        to_sip = "no SIP response"
    sections.append(Section(fields=[
        ("Class", c.klass or "unknown"),
        ("Q.850 → SIP (RFC 3398 7.2.4.1)", to_sip),
        ("NER (Q.850 reading)", _yes(c.effective, "effective", "ineffective")),
    ]))
    lines = []
    if c.sip_note:
        lines.append(c.sip_note)
    back = [s for s in kb.sip_codes() if s.q850_out == c.cause]
    if back:
        lines.append("SIP → Q.850 (RFC 3398 8.2.6.1): " + ", ".join(s.label for s in back)
                     + f" → cause {c.cause}")
    else:
        lines.append(f"SIP → Q.850 (RFC 3398 8.2.6.1): no SIP response maps to cause {c.cause}")
    if c.sip is not None:
        s = kb.sip(c.sip)
        siblings = [x for x in (s.q850_in if s else ()) if x != c.cause]
        if siblings:
            lines.append(f"Other causes that map to {c.sip}: "
                         + ", ".join(str(x) for x in siblings))
    sections.append(Section("Both ways (RFC 3398)", lines))
    vos = [r for r in kb.end_reasons() if r.q850 == c.cause]
    if vos:
        sections.append(Section("VOS3000 end reasons quoting this cause",
                                [r.label for r in vos], bullets=True))
    sip = kb.sip(c.sip) if c.sip is not None else None
    if sip is not None and sip.fixes:
        sections.append(Section(f"How to fix it on VOS3000 (from SIP {sip.code})",
                                list(sip.fixes), bullets=True))
    a = Answer(f"Q.850 cause {c.cause}: {c.name}", sections)
    if c.sip is None:
        a.sections.append(Section(lines=[
            f"No live figures: cause {c.cause} maps to no SIP response, and Sentinel counts "
            "calls by their end reason."]))
        return a, None
    note = (f"Sentinel counts calls by end reason, not by Q.850 cause: these are the calls "
            f"that ended with SIP {_sip_label(kb, c.sip)}, which cause {c.cause} maps to "
            "(RFC 3398 7.2.4.1).")
    if sip is not None and len(sip.q850_in) > 1:
        note += f" Causes {', '.join(str(x) for x in sip.q850_in)} all map to {c.sip}."
    return a, LiveSubject((c.sip,), f"SIP {_sip_label(kb, c.sip)} (via Q.850 cause {c.cause})",
                          note)


def _q850_unknown(kb: Knowledge, n: int) -> Answer:
    klass, class_sip = q850_class(n)
    lines = [f"Q.850 cause {n} is not in Sentinel's table."]
    if class_sip is not None:
        lines.append(f"Its class is “{klass}”: RFC 3398 maps causes of that class it does not "
                     f"list to SIP {_sip_label(kb, class_sip)}.")
    near = sorted(kb.q850_causes(), key=lambda c: (abs(c.cause - n), c.cause))[:5]
    a = Answer(f"Q.850 cause {n}: not known", [Section(lines=lines)], found=False)
    if near:
        a.sections.append(Section("Known causes near it",
                                  [f"{c.cause} {c.name}" for c in near], bullets=True))
    return a


def lookup(kb: Knowledge, command: str, text: str) -> tuple[Answer, LiveSubject | None]:
    """The knowledge answer to `/<command> <text>` and what to count live."""
    command = command.lstrip("/")
    if command == "sipcode":
        return sip_lookup(kb, text)
    if command == "endreason":
        return endreason_lookup(kb, text)
    if command == "q850":
        return q850_lookup(kb, text)
    raise ValueError(f"unknown command {command!r}")


# --------------------------------------------------------------------------- usage & help

_USAGE = {
    "sipcode": ("/sipcode <code>", "a SIP response code, e.g. `/sipcode 488`; "
                "a prefix lists codes (`/sipcode 48`); words search names (`/sipcode busy`)"),
    "endreason": ("/endreason <n>", "the CDR endreason value: a SIP code (`/endreason 486`), "
                  "a server reason 1-25 (`/endreason 8`) or a negative internal value "
                  "(`/endreason -9`)"),
    "q850": ("/q850 <cause>", "a Q.850 / ISUP release cause 1-127, e.g. `/q850 34`"),
}


def _usage_section(command: str) -> Section:
    form, what = _USAGE[command]
    return Section(lines=[f"Usage: `{form}`: {what}."])


def usage(command: str, why: str, found: bool = False) -> Answer:
    return Answer({"sipcode": "SIP code lookup", "endreason": "End reason lookup",
                   "q850": "Q.850 cause lookup"}[command],
                  [Section(lines=[why]), _usage_section(command)], found=found)


def help_answer(note: str | None = None) -> Answer:
    sections = []
    if note:
        sections.append(Section(lines=[note]))
    sections.append(Section("Look up a code (with live figures from Sentinel)", [
        "`/sipcode 488`: a SIP response code; `/sipcode 48` lists 480-489; `/sipcode busy` searches",
        "`/endreason 8`: a CDR endreason (SIP 100-699, server reasons 1-25, negative internal values)",
        "`/q850 34`: a Q.850 cause, with its SIP mapping both ways (RFC 3398)",
    ], bullets=True))
    sections.append(Section("Sentinel itself", [
        "`/sentinel status`: sources and their last pull, rules and their errors, alerts firing",
        "`/sentinel rules`: the rules loaded",
        "`/sentinel silences`: the silences in force",
        "`/sentinel mute <rule> [group] <duration> [-- reason]`: silence a rule, e.g. "
        "`/sentinel mute sip-503-share VEND-07 2h -- vendor maintenance`",
        "`/sentinel unmute <silence number | rule> [group]`: end a silence",
        "`/sentinel help`: this list",
    ], bullets=True))
    sections.append(Section(lines=["Durations: 30m, 2h, 1d. Muting is open to the users and "
                                   "user groups listed in Sentinel's [bot] configuration."]))
    return Answer("Sentinel commands", sections)


# --------------------------------------------------------------------------- live figures

def _pct(v: float | None) -> str:
    return format_value(v, "%")


def _n(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() or v >= 10 else f"{v:.1f}"


def trend_text(now_share: float | None, now_n: int, base_share: float | None,
               base_n: float, base_calls: float = 1) -> str:
    """How now compares with a baseline, in words (shares, since volumes differ)."""
    if base_calls == 0:
        return "no calls stored then"
    if base_n == 0 and now_n == 0:
        return "none then, none now"
    if base_n == 0:
        return "new: none then"
    if now_share is None or base_share is None or base_share == 0:
        return ""
    ratio = now_share / base_share
    if 0.8 <= ratio <= 1.25:
        return "about the same share now"
    return f"share now ×{ratio:.1f}" if ratio > 1 else f"share now ÷{1 / ratio:.1f}"


def _span(start_min: int, end_min: int, tz: ZoneInfo) -> str:
    """"07:20-08:20 UTC, 2026-11-21" for a span of whole minutes."""
    a = datetime.fromtimestamp(start_min * 60, timezone.utc).astimezone(tz)
    b = datetime.fromtimestamp(end_min * 60, timezone.utc).astimezone(tz)
    return f"{a:%H:%M}-{b:%H:%M} {b:%Z}, {b:%Y-%m-%d}"


def live_answer(fig: CodeFigures, subject: LiveSubject, tz: ZoneInfo) -> Answer:
    """The live part of a lookup: counts, share, where, trend, alerts."""
    sections: list[Section] = []
    if subject.note:
        sections.append(Section(lines=[subject.note]))
    span = f"Last {fmt_minutes(fig.window_min)} ({_span(fig.start_min, fig.end_min, tz)})"
    if fig.calls == 0:
        head = f"{span}: no calls at all in the store."
    elif fig.matching == 0:
        head = f"{span}: none of the {fig.calls} calls ended with it."
    else:
        head = (f"{span}: {fig.matching} of {fig.calls} calls ended with it "
                f"({_pct(fig.share)} of all calls).")
    lines = [head]
    if fig.latest_ms is None:
        lines.append("The store holds no CDRs yet: is a source configured and pulling? "
                     "(`/sentinel status`)")
    elif fig.stale_min:
        lines.append(f"The newest stored CDR ended at {fmt_time(fig.latest_ms, tz)}, "
                     f"{fig.stale_min} min before now: is the source pulling? (`/sentinel status`)")
    sections.append(Section(lines=lines))

    if fig.baselines:
        trend = []
        for b in fig.baselines:
            cmp = trend_text(fig.share, fig.matching, b.share, b.matching, b.calls)
            trend.append(f"{b.label}: {_n(b.matching)} of {_n(b.calls)} calls per hour "
                         f"({_pct(b.share)})" + (f"; {cmp}" if cmp else ""))
        sections.append(Section("Trend against the baselines", trend, bullets=True))

    def where(dim: str, title: str) -> None:
        rows = fig.top.get(dim) or []
        if rows:
            sections.append(Section(title, [
                f"{r.group}: {r.calls} calls, {_pct(r.share_of_group)} of its "
                f"{r.group_calls} calls" for r in rows], bullets=True))

    if fig.matching:
        where("egress", "Top vendor (egress) gateways")
        where("account", "Top accounts")
        if fig.unrouted:
            sections.append(Section(lines=[f"{fig.unrouted} of these calls never reached a "
                                           "vendor gateway:"]))
            where("ingress", "Top customer (ingress) gateways")
            where("caller_ip", "Top caller IPs")

    alert_lines = []
    for a in fig.alerts:
        since = f", since {fmt_time(a.since_ms, tz)}" if a.since_ms else ""
        muted = (f" (muted until {fmt_time(a.silenced_until_ms, tz)})"
                 if a.silenced_until_ms else "")
        wider = "" if a.exact else f" (the rule measures {a.measure})"
        alert_lines.append(f"{a.state.upper()} [{a.severity}] {a.title}: {a.measure} = "
                           f"{a.value}, fires when {a.threshold}{since}{muted}{wider}")
    if alert_lines:
        sections.append(Section("Alerts on it", alert_lines, bullets=True))
    else:
        watching = [f"`{rid}`: {what}" for rid, what in fig.watching]
        if watching:
            sections.append(Section("Alerts on it", [
                "None firing. Rules that watch it:", *(f"  {w}" for w in watching)]))
        else:
            sections.append(Section("Alerts on it", [
                "None: no rule measures it (`/sentinel rules` lists them)."]))
    title = f"Now: {subject.label}"
    return Answer(title, sections, footer=[
        "Live figures from Sentinel's store. Baselines: same hour yesterday and the "
        "preceding 3 hours."])


def live_unavailable(subject: LiveSubject, why: str) -> Answer:
    return Answer(f"Now: {subject.label}", [Section(lines=[
        f"Live figures are not available right now: {why}"])], found=False)


# --------------------------------------------------------------------------- rules & status

def rule_summary(rule: Rule) -> str:
    dim = DIMENSION_LABELS.get(rule.group_by, rule.group_by)
    per = "over all traffic" if rule.group_by == "global" else f"per {dim}"
    base = f", baseline {rule.baseline.describe()}" if rule.baseline else ""
    return (f"{rule.measure.describe()} {per} over {fmt_minutes(rule.window_min)}, "
            f"fires when {rule.fire_when.strip()}{base}")


def rules_answer(rules: Mapping[str, Rule], errors: Iterable[RuleError],
                 where: str = "") -> Answer:
    errors = list(errors)
    lines = [f"`{r.id}` [{r.severity}]: {rule_summary(r)}"
             for r in sorted(rules.values(), key=lambda r: r.id)]
    head = f"{len(lines)} rules loaded" + (f" from {where}" if where else "")
    sections = [Section(lines=[head + (f", {len(errors)} with errors" if errors else "") + "."])]
    if lines:
        sections.append(Section(lines=lines, bullets=True))
    if errors:
        sections.append(Section("Errors", [str(e) for e in errors], bullets=True))
    sections.append(Section(lines=["Mute one with `/sentinel mute <rule> [group] <duration>`."]))
    return Answer("Sentinel rules", sections)


def status_answer(text: str) -> Answer:
    return Answer("Sentinel status", [Section(lines=text.splitlines(), mono=True)])


def notice(title: str, *lines: str, response_type: str = "ephemeral",
           found: bool = True) -> Answer:
    return Answer(title, [Section(lines=list(lines))], response_type=response_type, found=found)
