"""Alerts: one small state machine per (rule, group), driven by evaluations.

    inactive --match--> pending --held for `for`--> firing --no match--> resolved
                 \\______________ (for = 0) ______/^

`next_state` is a pure function of the current state, what the rule saw and the
time; `AlertManager` only loads state, applies it and persists the result with
the notifications it causes in one transaction (the outbox). That is what makes
a restart, even kill -9 mid-cycle, neither re-send nor forget a firing alert.

No data is not recovery: a group with too few calls to judge keeps its state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from .evaluate import GLOBAL_GROUP, Evaluation, Observation
from .knowledge import load_knowledge
from .metrics import format_value
from .rules import Rule, fmt_minutes
from .store import Store

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"

DIMENSION_LABELS = {
    "global": "all traffic", "egress": "vendor gateway", "ingress": "customer gateway",
    "account": "account", "prefix": "destination prefix", "caller_ip": "caller IP",
}


@dataclass(frozen=True)
class AlertState:
    rule_id: str
    group: str
    state: str = INACTIVE
    active_since_ms: int | None = None   # when the condition started to hold
    fired_ms: int | None = None
    resolved_ms: int | None = None
    last_eval_ms: int | None = None
    value: float | None = None


def next_state(cur: AlertState, obs: Observation | None, rule: Rule,
               now_ms: int) -> tuple[AlertState, str | None]:
    """Return the new state and the notification it calls for ("firing",
    "resolved" or None)."""
    if obs is None or not obs.judged:
        return cur, None                       # not enough data: hold
    seen = replace(cur, last_eval_ms=now_ms, value=obs.value)
    if obs.matched:
        if cur.state in (INACTIVE, RESOLVED):
            if rule.for_min == 0:
                return replace(seen, state=FIRING, active_since_ms=now_ms, fired_ms=now_ms,
                               resolved_ms=None), "firing"
            return replace(seen, state=PENDING, active_since_ms=now_ms, resolved_ms=None), None
        if cur.state == PENDING:
            if now_ms - (cur.active_since_ms or now_ms) >= rule.for_min * 60000:
                return replace(seen, state=FIRING, fired_ms=now_ms), "firing"
            return seen, None
        return seen, None                      # firing stays firing
    if cur.state == PENDING:
        return replace(seen, state=INACTIVE, active_since_ms=None), None
    if cur.state == FIRING:
        return replace(seen, state=RESOLVED, resolved_ms=now_ms), "resolved"
    return seen, None


def group_label(rule: Rule, group: str) -> str:
    if rule.group_by == "global" or group == GLOBAL_GROUP:
        return "all traffic"
    return group


def render(rule: Rule, obs: Observation | None, group: str, value: float | None) -> dict:
    """Title, diagnosis and fixes with the measured figures filled in."""
    unit = rule.measure.unit
    fields = {
        "group": group_label(rule, group),
        "dimension": DIMENSION_LABELS[rule.group_by],
        "value": format_value(value, unit),
        "threshold": rule.threshold_text,
        "baseline": format_value(obs.baseline if obs else None, unit),
        "calls": str(obs.calls if obs else 0),
        "window": fmt_minutes(rule.window_min),
        "rule": rule.id,
        "measure": rule.measure.describe(),
    }
    return {
        "title": rule.title.format_map(fields),
        "diagnosis": rule.diagnosis.format_map(fields),
        "fixes": [f.format_map(fields) for f in rule.fixes],
        **fields,
    }


def top_reasons(obs: Observation, n: int = 5) -> list[dict]:
    kb = load_knowledge()
    calls = obs.stats.calls or 1
    return [{"end_reason": raw, "name": kb.end_reason(raw).name, "calls": c,
             "share": round(100.0 * c / calls, 1)} for raw, c in obs.stats.top_reasons(n)]


def _payload(rule: Rule, st: AlertState, obs: Observation | None, kind: str,
             note: str | None = None) -> dict:
    p = {
        **render(rule, obs, st.group, st.value),   # title, diagnosis, fixes, value text...
        "kind": kind, "rule_id": rule.id, "severity": rule.severity,
        "group_by": rule.group_by, "group_key": st.group,
        "fired_ms": st.fired_ms, "resolved_ms": st.resolved_ms,
        "value_raw": st.value, "unit": rule.measure.unit,
        "top_reasons": top_reasons(obs) if obs else [],
    }
    if note:
        p["note"] = note
    return p


def _to_row(st: AlertState, detail: dict) -> dict:
    return {"rule_id": st.rule_id, "grp": st.group, "state": st.state,
            "active_since_ms": st.active_since_ms, "fired_ms": st.fired_ms,
            "resolved_ms": st.resolved_ms, "last_eval_ms": st.last_eval_ms,
            "value": st.value, "detail": json.dumps(detail)}


def _from_row(row: dict) -> AlertState:
    return AlertState(row["rule_id"], row["grp"], row["state"], row["active_since_ms"],
                      row["fired_ms"], row["resolved_ms"], row["last_eval_ms"], row["value"])


class AlertManager:
    """Applies evaluations to the persisted alerts and fills the outbox."""

    def __init__(self, store: Store):
        self.store = store

    def current(self) -> dict[tuple[str, str], AlertState]:
        return {(r["rule_id"], r["grp"]): _from_row(r) for r in self.store.alerts()}

    def apply(self, ev: Evaluation, rules: dict[str, Rule]) -> list[dict]:
        """Advance every alert; return the notifications written to the outbox."""
        current = self.current()
        changed: list[dict] = []
        notes: list[dict] = []
        keys = set(current)
        for rule_id, by_group in ev.observations.items():
            for g, obs in by_group.items():
                if obs.matched:
                    keys.add((rule_id, g))
        for rule_id, g in sorted(keys):
            cur = current.get((rule_id, g), AlertState(rule_id, g))
            rule = rules.get(rule_id)
            if rule is None:
                if cur.state in (FIRING, PENDING):
                    # The rule left the files: close its alerts with a note.
                    new = replace(cur, state=RESOLVED if cur.state == FIRING else INACTIVE,
                                  resolved_ms=ev.now_ms, last_eval_ms=ev.now_ms)
                    changed.append(_to_row(new, {}))
                    if cur.state == FIRING:
                        notes.append(self._removed_note(new, ev.now_ms))
                continue
            obs = ev.observations.get(rule_id, {}).get(g)
            new, kind = next_state(cur, obs, rule, ev.now_ms)
            if new != cur:
                changed.append(_to_row(new, {"calls": obs.calls} if obs else {}))
            if kind:
                notes.append({"created_ms": ev.now_ms, "kind": kind, "rule_id": rule_id,
                              "grp": g, "payload": _payload(rule, new, obs, kind)})
        if changed or notes:
            self.store.save_alert_changes(changed, notes)
        return notes

    def _removed_note(self, st: AlertState, now_ms: int) -> dict:
        return {"created_ms": now_ms, "kind": "resolved", "rule_id": st.rule_id,
                "grp": st.group, "payload": {
                    "kind": "resolved", "rule_id": st.rule_id, "group": st.group,
                    "title": f"{st.rule_id} on {st.group or 'all traffic'}",
                    "fired_ms": st.fired_ms, "resolved_ms": now_ms, "severity": "info",
                    "note": "the rule was removed from the rule files"}}

    def firing(self) -> list[AlertState]:
        return [a for a in self.current().values() if a.state == FIRING]
