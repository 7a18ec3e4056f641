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


def rule_condition(rule: Rule) -> dict:
    """The durable_rules JSON condition of a rule (the `m` part)."""
    terms = []
    if rule.min_calls:
        terms.append({"$gte": {"calls": rule.min_calls}})
    if rule.min_baseline_calls:
        terms.append({"$gte": {"base_calls": rule.min_baseline_calls}})
    terms += [_clause_json(rule, c) for c in rule.clauses]
    return terms[0] if len(terms) == 1 else {"$and": terms}


@dataclass
class CompiledRuleset:
    name: str
    rules: list[Rule]


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
        for k_index, (key, krules) in enumerate(keys.items()):
            for c_index in range(0, len(krules), MAX_RULES_PER_RULESET):
                chunk = krules[c_index:c_index + MAX_RULES_PER_RULESET]
                name = f"sentinel_{gen}_{k_index}_{c_index}"
                definitions[name] = {
                    r.id: {"all": [{"m": rule_condition(r)}], "run": r.id} for r in chunk
                }
                self._by_key.setdefault(key, []).append(CompiledRuleset(name, chunk))
        with _ENGINE_LOCK:
            # Ruleset.__init__ mutates the definitions it is given.
            host.register_rulesets(copy.deepcopy(definitions))
        self._names = list(definitions)

    @property
    def fact_keys(self) -> list[tuple]:
        return list(self._by_key)

    def rules_for(self, key: tuple) -> list[Rule]:
        return [r for rs in self._by_key[key] for r in rs.rules]

    def judge(self, key: tuple, facts: list[dict]) -> list[tuple[str, str]]:
        """Assert the facts of one key; return (rule_id, group) for every match.

        A fact is asserted into a ruleset only when it passes at least one of
        its rules' sample gates (min_calls, min_baseline_calls): the long tail
        of tiny groups never reaches the engine. The rule conditions repeat
        the gates, so the result is the same either way.
        """
        host = _get_host()
        out: list[tuple[str, str]] = []
        for rs in self._by_key.get(key, []):
            gate_calls = min(r.min_calls for r in rs.rules)
            gate_base = min(r.min_baseline_calls for r in rs.rules)
            asserted = []
            with _ENGINE_LOCK:
                host.matches.clear()
                try:
                    for f in facts:
                        if f["calls"] < gate_calls or f.get("base_calls", 0) < gate_base:
                            continue
                        try:
                            host.assert_fact(rs.name, f)
                        except MessageNotHandledException:
                            pass
                        asserted.append(f)
                    out.extend(host.matches)
                finally:
                    host.matches.clear()
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
