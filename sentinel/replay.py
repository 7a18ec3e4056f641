"""Replay: evaluate the rules over stored CDRs as `run` would have, step by step.

The alert state of a replay lives in a scratch in-memory store, so replaying
never touches the live alerts or sends anything. The same `evaluate` and
`AlertManager` as the daemon do the work, so a replay raises what `run` would
have raised over the same CDRs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .alerts import AlertManager
from .evaluate import evaluate
from .rulebook import RuleBook
from .store import Store


def replay_notifications(store: Store, rules: str | Path, start_ms: int, end_ms: int,
                         step_s: int = 60) -> Iterator[dict]:
    """Yield every notification the rules would have produced, in time order,
    those held back included (with `suppressed` saying why)."""
    book = RuleBook(rules)
    book.refresh()
    scratch = Store(":memory:")
    manager = AlertManager(scratch)
    step_ms = step_s * 1000
    t = start_ms
    while t <= end_ms:
        ev = evaluate(store, book.engine, t, open_groups=manager.open_groups())
        for note in manager.apply(ev, book.engine.rules):
            yield note
        t += step_ms
    book.engine.close()


def replay(store: Store, rules: str | Path, start_ms: int, end_ms: int,
           step_s: int = 60) -> list[dict]:
    """Alert events (firing, resolved) as plain dicts, for printing or JSON."""
    return [{
        "at_ms": n["created_ms"], "kind": n["kind"], "rule_id": n["rule_id"],
        "group": n["grp"], "severity": n["payload"].get("severity"),
        "value": n["payload"].get("value"), "title": n["payload"].get("title"),
        "suppressed": n.get("suppressed"),
    } for n in replay_notifications(store, rules, start_ms, end_ms, step_s)]
