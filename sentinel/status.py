"""What Sentinel sees right now, as text: sources, rules, alerts.

Shared by `sentinel status` and the bot's `/sentinel status`.
"""

from __future__ import annotations

from .alerts import AlertState
from .config import Config
from .notifiers.terminal import fmt_time
from .rulebook import RuleBook
from .store import Store


def status_text(cfg: Config, store: Store, now_ms: int, book: RuleBook | None = None) -> str:
    tz = cfg.tz
    lines = ["Sources:"]
    status = {r["source"]: r for r in store.source_status()}
    names = [s.name for s in cfg.sources] or list(status)
    for name in sorted(set(names) | set(status)):
        r = status.get(name)
        if r is None:
            lines.append(f"  {name}: never pulled")
        elif r["failing_since_ms"] is None:
            lines.append(f"  {name}: ok, last successful pull {fmt_time(r['last_success_ms'], tz)}")
        else:
            lines.append(f"  {name}: FAILING since {fmt_time(r['failing_since_ms'], tz)} "
                         f"(last success {fmt_time(r['last_success_ms'], tz)}): {r['last_error']}")
    if book is None:
        book = RuleBook(cfg.rules)
        book.refresh()
    lines.append(f"Rules: {len(book.rules)} loaded from {cfg.rules}")
    for file, err in sorted(book.errors.items()):
        lines.append(f"  error: {err}")
    alerts = [AlertState.from_row(r) for r in store.alerts()]
    firing = [a for a in alerts if a.state == "firing"]
    pending = [a for a in alerts if a.state == "pending"]
    lines.append(f"Alerts: {len(firing)} firing, {len(pending)} pending")
    for a in sorted(firing, key=lambda a: (a.rule_id, a.group)):
        note = " (not enough data now)" if a.data != "ok" else ""
        note += " (flapping)" if a.flapping else ""
        lines.append(f"  {a.rule_id} on {a.group or 'all traffic'} since "
                     f"{fmt_time(a.fired_ms, tz)}{note}")
    silences = store.silences(active_at_ms=now_ms)
    if silences:
        lines.append(f"Silences: {len(silences)} active")
        for s in silences:
            lines.append(f"  #{s['id']} {s['rule_id']} on {s['grp'] or 'every group'} until "
                         f"{fmt_time(s['ends_ms'], tz)}: {s['reason']}")
    return "\n".join(lines)
