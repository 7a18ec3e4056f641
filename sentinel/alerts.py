"""Alerts: one small state machine per (rule, group), and the stages that decide
what is announced.

Lifecycle (`next_state`, a pure function of state, observation and clock):

    inactive --match--> pending --held `for`--> firing --clear--> resolved
         \\____________ (for = 0) ____________/^    |  ^
                                                   v  | (match again)
                      hysteresis: a firing alert clears only when `resolve_when`
                      holds; `keep_firing_for` keeps it firing a while after.

No data is not recovery: a group with too few calls keeps its state and is
marked "not enough data".

What is announced is reconciled, not event-driven: each cycle, an alert that is
firing but not announced yields a "firing" candidate; one announced but no
longer firing yields "resolved"; one announced and firing past its repeat
interval yields a "reminder". Candidates then pass small stages, Alertmanager
style, each of which may suppress them:

    flapping  -> inhibition -> silence -> (outbox)

Because candidates are recomputed every cycle, an alert hidden by a silence,
an inhibition or flapping is announced when that lifts, with no special case.
A suppressed candidate is recorded (for the record and `sentinel test`) only
in the cycle of the transition behind it, so silence is not noisy either.

`AlertManager.apply` loads the alerts, applies one evaluation and saves state
and notifications in one transaction: kill -9 at any point neither re-sends
nor forgets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Iterable

from .evaluate import GLOBAL_GROUP, Evaluation, Observation
from .knowledge import load_knowledge
from .metrics import format_value
from .rules import Rule, fmt_minutes
from .store import Store

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
NO_DATA = "not enough data"

FLAP_WINDOW_MS = 3600_000       # transitions counted over this long
FLAP_TRANSITIONS = 4            # fire, resolve, fire, resolve within the window

DIMENSION_LABELS = {
    "global": "all traffic", "egress": "vendor gateway", "ingress": "customer gateway",
    "account": "account", "prefix": "destination prefix", "caller_ip": "caller IP",
    "source": "CDR source",
}


@dataclass(frozen=True)
class AlertState:
    rule_id: str
    group: str
    dim: str = ""
    state: str = INACTIVE
    active_since_ms: int | None = None   # when the condition began to hold
    fired_ms: int | None = None
    resolved_ms: int | None = None
    clear_since_ms: int | None = None    # firing, condition cleared (keep_firing_for)
    last_eval_ms: int | None = None
    value: float | None = None
    data: str = "ok"                     # or NO_DATA
    notified: bool = False               # its firing was announced
    last_notified_ms: int | None = None
    flapping: bool = False
    transitions: tuple[int, ...] = ()    # times of firing/resolved changes, recent

    def to_row(self, detail: dict | None = None) -> dict:
        return {"rule_id": self.rule_id, "grp": self.group, "dim": self.dim,
                "state": self.state, "active_since_ms": self.active_since_ms,
                "fired_ms": self.fired_ms, "resolved_ms": self.resolved_ms,
                "clear_since_ms": self.clear_since_ms, "last_eval_ms": self.last_eval_ms,
                "value": self.value, "data": self.data, "notified": int(self.notified),
                "last_notified_ms": self.last_notified_ms, "flapping": int(self.flapping),
                "transitions": json.dumps(list(self.transitions)),
                "detail": json.dumps(detail or {})}

    @classmethod
    def from_row(cls, r: dict) -> "AlertState":
        return cls(r["rule_id"], r["grp"], r["dim"] or "", r["state"], r["active_since_ms"],
                   r["fired_ms"], r["resolved_ms"], r["clear_since_ms"], r["last_eval_ms"],
                   r["value"], r["data"] or "ok", bool(r["notified"]), r["last_notified_ms"],
                   bool(r["flapping"]), tuple(json.loads(r["transitions"] or "[]")))


def next_state(cur: AlertState, obs: Observation | None, rule: Rule,
               now_ms: int) -> tuple[AlertState, str | None]:
    """The new state and the transition it made ("firing", "resolved" or None)."""
    if obs is None or not obs.judged:
        return (replace(cur, data=NO_DATA) if obs is not None else cur), None
    seen = replace(cur, last_eval_ms=now_ms, value=obs.value, data="ok", dim=rule.group_by)
    if cur.state in (INACTIVE, RESOLVED):
        if not obs.matched:
            return seen, None
        if rule.for_min == 0:
            return _fire(seen, now_ms, since=now_ms), "firing"
        return replace(seen, state=PENDING, active_since_ms=now_ms), None
    if cur.state == PENDING:
        if not obs.matched:
            return replace(seen, state=INACTIVE, active_since_ms=None), None
        if now_ms - (cur.active_since_ms or now_ms) >= rule.for_min * 60000:
            return _fire(seen, now_ms, since=cur.active_since_ms), "firing"
        return seen, None
    # firing
    if obs.matched or rule.still_bad(obs.values, obs.base_values):
        return replace(seen, clear_since_ms=None), None
    if rule.keep_firing_min:
        cleared = cur.clear_since_ms or now_ms
        if now_ms - cleared < rule.keep_firing_min * 60000:
            return replace(seen, clear_since_ms=cleared), None
    return _transition(replace(seen, state=RESOLVED, resolved_ms=now_ms, clear_since_ms=None),
                       now_ms), "resolved"


def _fire(st: AlertState, now_ms: int, since: int | None) -> AlertState:
    return _transition(replace(st, state=FIRING, active_since_ms=since, fired_ms=now_ms,
                               resolved_ms=None, clear_since_ms=None), now_ms)


def _transition(st: AlertState, now_ms: int) -> AlertState:
    recent = tuple(t for t in st.transitions if now_ms - t < FLAP_WINDOW_MS) + (now_ms,)
    return replace(st, transitions=recent)


def flapping_now(st: AlertState, now_ms: int) -> bool:
    """Flapping starts at FLAP_TRANSITIONS changes within the window and ends
    when a whole window passes without a change."""
    recent = [t for t in st.transitions if now_ms - t < FLAP_WINDOW_MS]
    if st.flapping:
        return bool(recent)
    return len(recent) >= FLAP_TRANSITIONS


# -- what should be announced --------------------------------------------------

@dataclass
class Candidate:
    kind: str                      # firing, resolved, reminder, flapping, stable
    alert: AlertState
    rule: Rule
    obs: Observation | None
    transition: bool               # caused by a state change in this cycle
    suppressed: str | None = None


def reconcile(st: AlertState, rule: Rule, obs: Observation | None, transition: str | None,
              now_ms: int) -> list[Candidate]:
    """What the alert's announced state should become now."""
    out = []
    if st.state == FIRING and not st.notified:
        out.append(Candidate("firing", st, rule, obs, transition == "firing"))
    elif st.state != FIRING and st.notified:
        out.append(Candidate("resolved", st, rule, obs, transition == "resolved"))
    elif (st.state == FIRING and st.notified and st.last_notified_ms is not None
          and now_ms - st.last_notified_ms >= rule.repeat_min * 60000):
        out.append(Candidate("reminder", st, rule, obs, False))
    return out


def flap_stage(cands: list[Candidate], st: AlertState, rule: Rule,
               was_flapping: bool) -> list[Candidate]:
    """While flapping: one "flapping" notice, then quiet until stable; when it
    settles, the reconciled state is announced (or a "stable" note if that
    is already what was last said)."""
    if st.flapping:
        for c in cands:
            c.suppressed = c.suppressed or "flapping"
        if not was_flapping:
            cands.append(Candidate("flapping", st, rule, None, True))
    elif was_flapping and not cands:
        cands.append(Candidate("stable", st, rule, None, True))
    return cands


def inhibit_stage(cands: list[Candidate], sources: dict[tuple[str, str], AlertState],
                  rules: dict[str, Rule], now_ms: int) -> list[Candidate]:
    """Suppress what an alert of an inhibiting rule explains: a global source
    inhibits every group; a source on the same dimension, the same group.

    A source inhibits while firing, and for the target rule's window after it
    resolved: until then the target's window still holds the explained
    incident, and announcing it would only echo what was already said.
    """
    for c in cands:
        if c.suppressed or c.kind == "stable":
            continue
        linger_ms = c.rule.window_min * 60000
        for (src_id, src_group), src in sources.items():
            src_rule = rules.get(src_id)
            if src_rule is None or not src_rule.inhibits_rule(c.rule):
                continue
            if src.state != FIRING and not (src.state == RESOLVED and src.resolved_ms is not None
                                            and now_ms - src.resolved_ms < linger_ms):
                continue
            if src_rule.group_by in ("global", "source") or (
                    src_rule.group_by == c.rule.group_by and src_group == c.alert.group):
                where = f" on {src_group}" if src_group else ""
                c.suppressed = f"inhibited by {src_id}{where}"
                break
    return cands


def silence_stage(cands: list[Candidate], silences: Iterable[dict]) -> list[Candidate]:
    active = list(silences)
    for c in cands:
        if c.suppressed:
            continue
        for s in active:
            if s["rule_id"] in (c.alert.rule_id, "*") and s["grp"] in (None, c.alert.group):
                c.suppressed = f"silenced #{s['id']} by {s['created_by']}: {s['reason']}"
                break
    return cands


def announce(st: AlertState, delivered: list[Candidate], now_ms: int) -> AlertState:
    """The alert after its delivered candidates: what it has announced."""
    for c in delivered:
        if c.kind == "firing":
            st = replace(st, notified=True, last_notified_ms=now_ms)
        elif c.kind == "reminder":
            st = replace(st, last_notified_ms=now_ms)
        elif c.kind == "resolved":
            st = replace(st, notified=False, last_notified_ms=now_ms)
    return st


# -- rendering -------------------------------------------------------------------

def group_label(rule: Rule, group: str) -> str:
    if rule.group_by == "global" or group == GLOBAL_GROUP:
        return "all traffic"
    return group


def render(rule: Rule, obs: Observation | None, group: str, value: float | None) -> dict:
    """Title, diagnosis and fixes with the measured figures filled in."""
    unit = rule.measure.unit
    fields = {
        "group": group_label(rule, group),
        "dimension": DIMENSION_LABELS.get(rule.group_by, rule.group_by),
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


def payload(c: Candidate, now_ms: int, note: str | None = None) -> dict:
    st, rule, obs = c.alert, c.rule, c.obs
    p = {
        **render(rule, obs, st.group, st.value),
        "kind": c.kind, "rule_id": st.rule_id, "severity": rule.severity,
        "group_by": rule.group_by, "group_key": st.group,
        "fired_ms": st.fired_ms, "resolved_ms": st.resolved_ms, "at_ms": now_ms,
        "value_raw": st.value, "unit": rule.measure.unit,
        "resolve_when": rule.resolve_when,
        "top_reasons": top_reasons(obs) if obs else [],
    }
    if note:
        p["note"] = note
    if c.kind == "flapping":
        p["note"] = (f"changed state {len(st.transitions)} times in the last hour: "
                     "further changes are held back until it is stable for an hour")
    elif c.kind == "stable":
        p["note"] = f"stable again; now {st.state}"
    return p


# -- the manager -----------------------------------------------------------------

def delivered(notes: Iterable[dict]) -> list[dict]:
    """The notifications that were not held back."""
    return [n for n in notes if not n.get("suppressed")]


class AlertManager:
    """Applies evaluations to the persisted alerts and fills the outbox."""

    def __init__(self, store: Store):
        self.store = store
        self._current: dict[tuple[str, str], AlertState] | None = None

    def current(self) -> dict[tuple[str, str], AlertState]:
        """The alerts as stored. The manager is their only writer, so it
        reads them once and keeps its copy in step with what it saves."""
        if self._current is None:
            self._current = {(r["rule_id"], r["grp"]): AlertState.from_row(r)
                             for r in self.store.alerts()}
        return dict(self._current)

    def apply(self, ev: Evaluation, rules: dict[str, Rule], *, hold: str | None = None,
              extra: dict[str, dict[str, Observation]] | None = None) -> list[dict]:
        """Advance every alert; return the notifications it recorded: those to
        deliver, and those held back (`suppressed` says why).

        `hold`: a reason to keep every rule alert as it is (a source is down:
        no data is not recovery). `extra`: observations of built-in alerts
        (source health), which are never held.
        """
        now = ev.now_ms
        current = self.current()
        observations = dict(ev.observations)
        all_rules = dict(rules)
        for rule_id, by_group in (extra or {}).items():
            observations[rule_id] = by_group
            all_rules[rule_id] = next(iter(by_group.values())).rule if by_group else None
        keys = set(current)
        for rule_id, by_group in observations.items():
            keys.update((rule_id, g) for g, o in by_group.items() if o.matched)

        # Pass 1: lifecycle.
        stepped: dict[tuple[str, str], tuple] = {}   # key -> (cur, new, transition, obs, was_flapping)
        gone: list[tuple[AlertState, str]] = []
        for key in sorted(keys):
            rule_id, g = key
            cur = current.get(key, AlertState(rule_id, g))
            rule = all_rules.get(rule_id)
            if rule is None or (cur.dim and rule.group_by != cur.dim and cur.state != INACTIVE):
                if cur.state in (FIRING, PENDING) or cur.notified:
                    why = ("the rule was removed from the rule files" if rule is None else
                           f"the rule now groups by {rule.group_by}, not {cur.dim}")
                    gone.append((cur, why))
                continue
            obs = observations.get(rule_id, {}).get(g)
            if hold and rule_id not in (extra or {}):
                new, transition = cur, None
            else:
                new, transition = next_state(cur, obs, rule, now)
            was_flapping = new.flapping
            new = replace(new, flapping=flapping_now(new, now))
            stepped[key] = (cur, new, transition, obs, was_flapping)

        # Alerts that may inhibit others: firing, or resolved a short while ago.
        inhibitors = {k: v[1] for k, v in stepped.items() if v[1].state in (FIRING, RESOLVED)}

        # Pass 2: what to announce, through the stages.
        silences = self.store.silences(active_at_ms=now)
        rows, notes = [], []
        for key, (cur, new, transition, obs, was_flapping) in stepped.items():
            rule = all_rules[key[0]]
            cands = reconcile(new, rule, obs, transition, now)
            cands = flap_stage(cands, new, rule, was_flapping)
            cands = inhibit_stage(cands, inhibitors, all_rules, now)
            cands = silence_stage(cands, silences)
            delivered = [c for c in cands if not c.suppressed]
            new = announce(new, delivered, now)
            for c in cands:
                c.alert = new if not c.suppressed else c.alert
                if c.suppressed and not c.transition:
                    continue                       # hidden, and nothing new to record
                notes.append({"created_ms": now, "kind": c.kind, "rule_id": key[0],
                              "grp": key[1], "suppressed": c.suppressed,
                              "payload": payload(c, now)})
            if new != cur:
                rows.append(new.to_row({"calls": obs.calls} if obs else {}))
        for cur, why in gone:
            closed = replace(cur, state=RESOLVED if cur.state == FIRING else INACTIVE,
                             resolved_ms=now, last_eval_ms=now, notified=False)
            rows.append(closed.to_row())
            if cur.notified:
                notes.append(self._gone_note(closed, now, why))
        if rows or notes:
            self.store.save_alert_changes(rows, notes)
            for row in rows:
                self._current[(row["rule_id"], row["grp"])] = AlertState.from_row(row)
        return notes

    def _gone_note(self, st: AlertState, now_ms: int, why: str) -> dict:
        return {"created_ms": now_ms, "kind": "resolved", "rule_id": st.rule_id,
                "grp": st.group, "payload": {
                    "kind": "resolved", "rule_id": st.rule_id, "group": st.group or "all traffic",
                    "group_key": st.group, "title": f"{st.rule_id} on {st.group or 'all traffic'}",
                    "fired_ms": st.fired_ms, "resolved_ms": now_ms, "at_ms": now_ms,
                    "severity": "info", "note": why}}

    def open_groups(self) -> dict[str, set[str]]:
        """Rule id -> groups whose alert is pending or firing."""
        out: dict[str, set[str]] = {}
        for (rule_id, g), st in self.current().items():
            if st.state in (PENDING, FIRING):
                out.setdefault(rule_id, set()).add(g)
        return out

    def firing(self) -> list[AlertState]:
        return [a for a in self.current().values() if a.state == FIRING]
