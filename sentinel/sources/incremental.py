"""What the incremental sources (MySQL, Web API) share: durations in their
options, failure bookkeeping with backoff, and watermark helpers."""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger("sentinel.sources")

FUTURE_SLACK_MS = 600_000         # a stoptime further in the future never moves the watermark

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d)\s*$")
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_seconds(value: Any, key: str) -> int:
    """'30s', '5m', '1h', '2d' -> seconds; ValueError naming the option otherwise."""
    m = _DURATION_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"option {key!r}: expected a duration such as \"30s\", \"5m\" "
                         f"or \"1h\", got {value!r}")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def check_zone(value: str, key: str) -> str:
    """A time zone name, or ValueError naming the option."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"option {key!r}: unknown time zone {value!r}") from None
    return value


def iso_ms(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SourceHealth:
    """Failure bookkeeping and backoff for one source, on the clock of `pull`.

    After a failure the source waits `retry_min` seconds, then twice as long
    after each further failure, up to `retry_max`. A success resets it.
    """

    def __init__(self, label: str, retry_min_s: int, retry_max_s: int):
        self.label = label
        self.retry_min_ms = retry_min_s * 1000
        self.retry_max_ms = max(retry_max_s, retry_min_s) * 1000
        self.since_ms: int | None = None
        self.last_success_ms: int | None = None
        self.failures = 0
        self.retry_at_ms: int | None = None
        self.last_error = ""
        self.message = "not pulled yet"

    @property
    def ok(self) -> bool:
        return self.since_ms is None

    def waiting(self, now_ms: int, not_before_ms: int | None = None) -> str | None:
        """The SourceError message while failing and a retry is not due yet
        (the backoff's retry time, or `not_before_ms` if later), else None."""
        if self.since_ms is None or self.retry_at_ms is None:
            return None
        retry_at = max(self.retry_at_ms, not_before_ms or 0)
        if now_ms >= retry_at:
            return None
        return (f"{self.label}: failing since {iso_ms(self.since_ms)} "
                f"({self.failures} failed attempt{'s' if self.failures > 1 else ''}); "
                f"next retry at {iso_ms(retry_at)}; last error: {self.last_error}")

    def failed(self, now_ms: int, error: str, not_before_ms: int | None = None) -> str:
        if self.since_ms is None:
            self.since_ms = now_ms
        self.failures += 1
        delay = min(self.retry_min_ms * 2 ** (self.failures - 1), self.retry_max_ms)
        if not_before_ms is not None:
            delay = max(delay, not_before_ms - now_ms)
        self.retry_at_ms = now_ms + delay
        self.last_error = error
        self.message = (f"{self.label}: {error} (failing since {iso_ms(self.since_ms)}, "
                        f"{self.failures} failed attempt{'s' if self.failures > 1 else ''}; "
                        f"next retry in {delay // 1000}s)")
        return self.message

    def succeeded(self, now_ms: int, message: str) -> None:
        if self.since_ms is not None:
            log.info("%s: recovered after failing since %s", self.label, iso_ms(self.since_ms))
        self.since_ms = None
        self.failures = 0
        self.retry_at_ms = None
        self.last_error = ""
        self.last_success_ms = now_ms
        self.message = message

    def as_dict(self) -> dict:
        return {"ok": self.ok, "since_ms": self.since_ms,
                "last_success_ms": self.last_success_ms, "message": self.message,
                "failures": self.failures, "retry_at_ms": self.retry_at_ms}



def local_date(ms: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(ms / 1000, tz).date()


def saved_stop(wm: Any, now_ms: int, label: str) -> int | None:
    """The stoptime of a saved watermark; None (start afresh with the backfill)
    when there is none or it lies in the future (a clock that jumped back)."""
    if not isinstance(wm, dict) or not isinstance(wm.get("stop_ms"), int):
        return None
    if wm["stop_ms"] > now_ms + FUTURE_SLACK_MS:
        log.warning("%s: saved watermark %s is in the future; reading the backfill period again",
                    label, iso_ms(wm["stop_ms"]))
        return None
    return wm["stop_ms"]
