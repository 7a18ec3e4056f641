"""Rule matching with durable_rules.

Rules that share a fact key (dimension, window, baseline) are compiled into the
same durable_rules ruleset. Each cycle we assert one fact per group carrying
every measure those rules need, collect the rules that fire, and retract the
facts. Facts are asserted (not posted) because a posted event fires only one
rule, while an asserted fact fires every rule it matches.

durable_rules has traps we work around here (see the README):
- one process-wide Host: each Host starts two timer threads that never stop;
- no locking inside: every engine call goes through `_ENGINE_LOCK`;
- at most 64 rules may match one fact: rulesets hold at most 48 rules;
- a ruleset cannot be replaced: each compilation registers new names and
  unregisters the old ones.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import durable_rules_engine
from durable.engine import Host, MessageNotHandledException

from .metrics import Measure
from .rules import Clause, Rule

MAX_RULES_PER_RULESET = 48
_ENGINE_LOCK = threading.Lock()
_generation = itertools.count(1)


class _SentinelHost(Host):
    """Binds every rule's action to one collector: record the match, nothing else.

    Actions run inside the engine and their exceptions are swallowed there, so
    they must be trivial.
    """

    def __init__(self):
        super().__init__()
        self.matches: list[tuple[str, str]] = []
        self._retired: list[tuple[float, object]] = []
        self._inert = None

    def get_action(self, action_name):
        matches = self.matches

        def record(c):
            matches.append((action_name, c.m["gid"]))
        return record

    def unregister(self, name: str) -> None:
        """Forget a ruleset without disturbing the engine's timer threads.

        Those threads walk `_ruleset_list` by index, so the list must never
        shrink: the retired ruleset's slot gets an inert placeholder. Its C
        handle is freed a few seconds later, when no dispatch can still be
        running on it.
        """
        rs = self._ruleset_directory.pop(name, None)
        if rs is None:
            return
        now = time.monotonic()
        for retired_at, old in list(self._retired):
            if now - retired_at > 5:
                durable_rules_engine.delete_ruleset(old._handle)
                self._retired.remove((retired_at, old))
        for i, r in enumerate(self._ruleset_list):
            if r is rs:
                self._ruleset_list[i] = self._placeholder()
        self._retired.append((now, rs))

    def _placeholder(self):
        if self._inert is None:
            self.register_rulesets({"sentinel_inert": {
                "never": {"all": [{"m": {"sentinel_never": 1}}], "run": "never"}}})
            self._inert = self._ruleset_directory["sentinel_inert"]
        return self._inert


_host: _SentinelHost | None = None


def _get_host() -> _SentinelHost:
    global _host
    if _host is None:
        _host = _SentinelHost()
    return _host


def _clause_json(rule: Rule, c: Clause) -> dict:
    field = c.field(rule.measure)
    if c.relative:
        rhs: Any = {"$mul": {"$l": {"$m": "base_" + field}, "$r": c.number}}
    else:
        rhs = c.number
    if c.op == "==":
        return {field: rhs}
    op = {">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte", "!=": "$neq"}[c.op]
    return {op: {field: rhs}}


def candidate_gate(rule: Rule):
    """A cheap test that every fact the rule can match passes: its sample
    minimums, and, when a clause asks a count or share to exceed something
    not below zero, that the group has at least one such call.

    Gates are an index, not the judgement: durable_rules still decides. They
    keep the long tail of groups (an IP with no rejected call, a vendor with
    no 488) out of the engine, which is what makes replays fast.
    """
    needs_some: set[str] = set()
    if rule.measure.selector is not None:
        for c in rule.clauses:
            positive = (c.op == ">" and c.number >= 0) or (c.op == ">=" and c.number > 0)
            if positive and c.subject in ("", "count"):
                needs_some.add(Clause(">", 0, subject="count").field(rule.measure)
                               if rule.measure.op == "share" else rule.measure.field)
    min_calls, min_base = rule.min_calls, rule.min_baseline_calls
    fields = tuple(needs_some)

    def gate(fact: dict) -> bool:
        if fact["calls"] < min_calls or fact.get("base_calls", 0) < min_base:
            return False
        for f in fields:
            if not fact.get(f):
                return False
        return True
    return gate, fields


def rule_condition(rule: Rule) -> dict:
    """The durable_rules JSON condition of a rule (the `m` part)."""
    terms = []
    if rule.min_calls:
        terms.append({"$gte": {"calls": rule.min_calls}})
    if rule.min_baseline_calls:
        terms.append({"$gte": {"base_calls": rule.min_baseline_calls}})
    terms += [_clause_json(rule, c) for c in rule.clauses]
    return terms[0] if len(terms) == 1 else {"$and": terms}


def fields_read(rules: list[Rule]) -> dict[str, Measure]:
    """Field name -> measure, for every field the rules' facts must carry:
    each rule's measure and, for a share, the count behind it (read by
    `count` clauses and by the candidate gates)."""
    out: dict[str, Measure] = {}
    for r in rules:
        out[r.measure.field] = r.measure
        if r.measure.op == "share":
            m = Measure(op="count", selector=r.measure.selector)
            out[m.field] = m
    return out


@dataclass
class CompiledRuleset:
    name: str
    rules: list[Rule]
    gates: list = None                  # one candidate gate per rule

    def candidate(self, fact: dict) -> bool:
        for g in self.gates:
            if g(fact):
                return True
        return False


class RuleEngine:
    """The compiled form of a rule set, ready to judge facts."""

    def __init__(self, rules: list[Rule]):
        self.rules = {r.id: r for r in rules}
        self._by_key: dict[tuple, list[CompiledRuleset]] = {}
        host = _get_host()
        gen = next(_generation)
        definitions: dict[str, dict] = {}
        keys: dict[tuple, list[Rule]] = {}
        for r in rules:
            keys.setdefault(r.fact_key, []).append(r)
        # What each key's facts carry, and what its gates read: fixed once
        # the rules are compiled, so not recomputed every evaluation.
        self._fields = {key: fields_read(krules) for key, krules in keys.items()}
        self._gate_fields = {
            key: [(f, self._fields[key][f]) for f in
                  sorted({f for r in krules for f in candidate_gate(r)[1]})]
            for key, krules in keys.items()}
        for k_index, (key, krules) in enumerate(keys.items()):
            for c_index in range(0, len(krules), MAX_RULES_PER_RULESET):
                chunk = krules[c_index:c_index + MAX_RULES_PER_RULESET]
                name = f"sentinel_{gen}_{k_index}_{c_index}"
                definitions[name] = {
                    r.id: {"all": [{"m": rule_condition(r)}], "run": r.id} for r in chunk
                }
                self._by_key.setdefault(key, []).append(
                    CompiledRuleset(name, chunk, [candidate_gate(r)[0] for r in chunk]))
        with _ENGINE_LOCK:
            # Ruleset.__init__ mutates the definitions it is given.
            host.register_rulesets(copy.deepcopy(definitions))
        self._names = list(definitions)

    @property
    def fact_keys(self) -> list[tuple]:
        return list(self._by_key)

    def fields(self, key: tuple) -> dict[str, Measure]:
        """Field name -> measure, for every field the facts of a key carry."""
        return self._fields[key]

    def gate_fields(self, key: tuple) -> list[tuple[str, Measure]]:
        """(field, measure) the candidate gates of a key read, beyond calls."""
        return self._gate_fields[key]

    def is_candidate(self, key: tuple, probe: dict) -> bool:
        for rs in self._by_key[key]:
            if rs.candidate(probe):
                return True
        return False

    def rules_for(self, key: tuple) -> list[Rule]:
        return [r for rs in self._by_key[key] for r in rs.rules]

    def judge(self, key: tuple, facts: list[dict]) -> list[tuple[str, str]]:
        """Assert the facts of one key; return (rule_id, group) for every match.

        A fact is asserted into a ruleset only when it passes the candidate
        gate of at least one of its rules (`candidate_gate`): the long tail of
        groups that cannot match never reaches the engine.
        """
        host = _get_host()
        out: list[tuple[str, str]] = []
        for rs in self._by_key.get(key, []):
            asserted = []
            with _ENGINE_LOCK:
                host.matches.clear()
                try:
                    for f in facts:
                        if not rs.candidate(f):
                            continue
                        try:
                            host.assert_fact(rs.name, f)
                        except MessageNotHandledException:
                            pass
                        asserted.append(f)
                    out.extend(host.matches)
                finally:
                    host.matches.clear()
                    # Retract one by one: delete_state would be one call, but
                    # it frees memory the engine's own timer threads may be
                    # walking (a segfault, seen in the kill -9 test).
                    for f in asserted:
                        try:
                            host.retract_fact(rs.name, f)
                        except MessageNotHandledException:
                            pass
        return out

    def close(self) -> None:
        host = _get_host()
        with _ENGINE_LOCK:
            for name in self._names:
                host.unregister(name)
        self._names = []
