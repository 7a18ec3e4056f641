"""The pipeline, wired: sources -> store -> metrics -> rules -> alerts -> notifiers.

`Sentinel.cycle(now_ms)` is one turn of it and takes the clock as a
parameter, so the daemon (`run`), `replay`, `demo` and the tests all drive
the same code. A failing source, a broken rule file or a notifier that cannot
deliver is reported and the cycle goes on: nothing here may kill the daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from .alerts import AlertManager
from .config import Config, ConfigError, SourceConfig
from .evaluate import Evaluation, evaluate
from .health import DEFAULT_ALERT_AFTER_S, RULE_ID as HEALTH_RULE_ID, failing_sources, health_observations
from .knowledge import load_knowledge
from .notifiers import PermanentError
from .rulebook import RuleBook
from .sources import SourceError, source_class
from .store import IngestResult, Store

log = logging.getLogger("sentinel")


def build_source(sc: SourceConfig):
    try:
        return source_class(sc.kind).from_options(sc.name, sc.options, sc.base_dir)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"source {sc.name!r}: {e}") from None


@dataclass
class CycleReport:
    now_ms: int
    ingested: dict[str, IngestResult] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notifications: list[dict] = field(default_factory=list)
    evaluation: Evaluation | None = None


class Sentinel:
    def __init__(self, config: Config, *, store: Store | None = None, sources=None,
                 notifiers=None, on_problem: Callable[[str], None] | None = None):
        self.config = config
        self.store = store or Store(config.store)
        self.sources = sources if sources is not None else [build_source(s) for s in config.sources]
        self.rulebook = RuleBook(config.rules)
        self.alerts = AlertManager(self.store)
        self.notifiers = notifiers if notifiers is not None else []
        self.on_problem = on_problem or (lambda msg: log.warning("%s", msg))
        if config.knowledge_extra:
            load_knowledge(tuple(config.knowledge_extra))
        self._last_prune_ms = 0

    # -- the steps ----------------------------------------------------------
    def reload_rules(self) -> list[str]:
        return [str(e) for e in self.rulebook.refresh()]

    def pull(self, now_ms: int, report: CycleReport) -> None:
        for src in self.sources:
            total = IngestResult()
            error = None
            try:
                for batch in src.pull(self.store, now_ms):
                    res = self.store.ingest(src.name, batch.cdrs, watermark=batch.watermark,
                                            file_mark=batch.file_mark)
                    total.received += res.received
                    total.new += res.new
                    total.duplicates += res.duplicates
                    for p in batch.problems:
                        report.problems.append(p)
                        self.store.record_source_event(src.name, "warning", p)
            except SourceError as e:
                error = str(e)
            except Exception as e:            # a source bug must not stop the others
                log.exception("source %s failed", src.name)
                error = f"source {src.name!r} failed: {type(e).__name__}: {e}"
            if error:
                report.problems.append(error)
                self.store.record_source_event(src.name, "error", error)
            self.store.record_pull(src.name, now_ms, error,
                                   getattr(src, "alert_after_s", DEFAULT_ALERT_AFTER_S))
            report.ingested[src.name] = total

    def evaluate(self, now_ms: int) -> tuple[Evaluation, list[dict]]:
        engine = self.rulebook.engine
        ev = evaluate(self.store, engine, now_ms, open_groups=self.alerts.open_groups())
        status = self.store.source_status()
        down = failing_sources(status)
        hold = f"source {', '.join(down)} is not delivering" if down else None
        extra = {HEALTH_RULE_ID: health_observations(status, now_ms)} if status else None
        notes = self.alerts.apply(ev, engine.rules, hold=hold, extra=extra)
        return ev, notes

    def report_problems(self, problems: list[str], now_ms: int) -> None:
        """Rule-file errors go through the outbox: the terminal, the log and
        the default Slack channel all hear of them, once each."""
        if problems:
            self.store.save_alert_changes([], [{
                "created_ms": now_ms, "kind": "problem", "rule_id": "", "grp": "",
                "payload": {"kind": "problem", "title": "Rule file error", "text": p,
                            "severity": "warning", "at_ms": now_ms}} for p in problems])

    def deliver(self, now_ms: int) -> int:
        """Hand what waits in the outbox to the notifiers.

        A notifier's `deliver(batch, now_ms)` returns, per outbox id, None
        (sent), an error to retry next cycle, or a `PermanentError` (no retry
        can fix it: the message is given up and the problem reported). What a
        notifier does not answer for stays pending. Delivery never blocks
        evaluation: it runs after it, and failures only wait.
        """
        batch = self.store.pending_notifications()
        if not batch or not self.notifiers:
            return 0
        outcome: dict[int, object] = {n["id"]: None for n in batch}
        for notifier in self.notifiers:
            try:
                result = notifier.deliver(batch, now_ms)
            except Exception as e:                      # a notifier bug: retry later
                log.exception("notifier %s failed", getattr(notifier, "name", notifier))
                result = {n["id"]: f"{type(e).__name__}: {e}" for n in batch}
            for oid in outcome:
                err = result.get(oid, "not attempted")
                if err is not None and outcome[oid] is None:
                    outcome[oid] = err
        sent = 0
        for oid, err in outcome.items():
            if err is None:
                self.store.mark_delivered(oid, now_ms)
                sent += 1
            elif isinstance(err, PermanentError):
                self.store.mark_failed(oid, str(err), give_up_at_ms=now_ms)
                self.on_problem(f"notification {oid} cannot be delivered: {err}")
            elif err != "not attempted":
                self.store.mark_failed(oid, str(err))
                self.on_problem(f"notification {oid} not delivered yet: {err}")
        return sent

    def prune(self, now_ms: int) -> None:
        if now_ms - self._last_prune_ms >= 3600_000:
            self._last_prune_ms = now_ms
            self.store.prune(self.config.retention_days, now_ms)

    def cycle(self, now_ms: int, *, pull: bool = True) -> CycleReport:
        report = CycleReport(now_ms)
        rule_errors = self.reload_rules()
        report.problems += rule_errors
        self.report_problems(rule_errors, now_ms)
        if pull:
            self.pull(now_ms, report)
        report.evaluation, report.notifications = self.evaluate(now_ms)
        self.deliver(now_ms)
        for p in report.problems:
            self.on_problem(p)
        return report
