"""Alerts printed to a terminal: what Sentinel does when no Slack is configured.

Readable at a glance: a coloured state word, the title, the figures it rests
on, then the diagnosis and the fixes. Times in the operator's time zone.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import TextIO
from zoneinfo import ZoneInfo

_COLOURS = {"firing": "\033[1;31m", "resolved": "\033[1;32m", "reminder": "\033[1;33m",
            "flapping": "\033[1;35m", "problem": "\033[1;33m", "reset": "\033[0m"}


def fmt_time(ms: int | None, tz: ZoneInfo, with_date: bool = True) -> str:
    if ms is None:
        return "?"
    t = datetime.fromtimestamp(ms / 1000, timezone.utc).astimezone(tz)
    return t.strftime("%Y-%m-%d %H:%M %Z" if with_date else "%H:%M")


def fmt_duration(ms: int) -> str:
    minutes = round(ms / 60000)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def format_notification(p: dict, tz: ZoneInfo, colour: bool = False) -> str:
    kind = p["kind"]
    word = kind.upper()
    if colour:
        word = _COLOURS.get(kind, "") + word + _COLOURS["reset"]
    sev = p.get("severity", "")
    at = fmt_time(p.get("at_ms"), tz)
    if kind == "problem":
        return f"{word} {p['title']} at {at}\n  {p['text']}"
    if kind == "resolved":
        dur = ""
        if p.get("fired_ms") and p.get("resolved_ms"):
            dur = f", fired for {fmt_duration(p['resolved_ms'] - p['fired_ms'])}"
        lines = [f"{word} [{sev}] {p['title']}  at {fmt_time(p.get('resolved_ms'), tz)}{dur}"]
        if p.get("note"):
            lines.append(f"  {p['note']}")
        elif p.get("value_raw") is not None:
            lines.append(f"  now {p['measure']} = {p['value']} ({p['calls']} calls in {p['window']})")
        return "\n".join(lines)
    if kind in ("reminder", "flapping", "stable"):
        since = f", firing since {fmt_time(p.get('fired_ms'), tz)}" if p.get("fired_ms") else ""
        lines = [f"{word} [{sev}] {p['title']}  at {at}{since}"]
        if kind == "reminder":
            lines.append(f"  still {p['measure']} = {p['value']} (fires when {p['threshold']})")
        if p.get("note"):
            lines.append(f"  {p['note']}")
        return "\n".join(lines)
    lines = [f"{word} [{sev}] {p['title']}  at {fmt_time(p.get('fired_ms'), tz)}"]
    where = p["group"] if p.get("group_by") == "global" else f"{p['dimension']} {p['group']}"
    baseline = "" if p.get("baseline") in (None, "n/a") else f"; baseline {p['baseline']}"
    resolve = f"; resolves when {p['resolve_when']}" if p.get("resolve_when") else ""
    lines.append(f"  {where}  |  {p['measure']} = {p['value']} (fires when {p['threshold']}"
                 f"{resolve}{baseline})  |  {p['calls']} calls in {p['window']}")
    lines.append(f"  Diagnosis: {p['diagnosis']}")
    if p.get("fixes"):
        lines.append("  What to do:")
        lines += [f"    - {f}" for f in p["fixes"]]
    if p.get("top_reasons"):
        tops = ", ".join(f"{t['end_reason']} {t['name']} {t['share']:.0f}%" for t in p["top_reasons"])
        lines.append(f"  Top end reasons: {tops}")
    lines.append(f"  rule {p['rule_id']}")
    return "\n".join(lines)


class TerminalNotifier:
    name = "terminal"

    def __init__(self, tz: ZoneInfo, stream: TextIO | None = None):
        self.tz = tz
        self.stream = stream or sys.stdout
        self.colour = hasattr(self.stream, "isatty") and self.stream.isatty()

    def deliver(self, batch: list[dict], now_ms: int) -> dict[int, str | None]:
        for n in batch:
            print(format_notification(n["payload"], self.tz, self.colour),
                  file=self.stream, flush=True)
            print(file=self.stream)
        return {n["id"]: None for n in batch}
