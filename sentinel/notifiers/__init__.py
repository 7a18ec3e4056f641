"""Where alerts go: the terminal (no Slack configured) and Slack.

A notifier has `name` and `deliver(batch, now_ms) -> {outbox_id: None | error}`:
it receives every pending notification of the outbox at once (so it can group
an alert storm into one message) and answers for each: None when delivered,
an error string to retry at the next cycle, or a `PermanentError` when no
retry can help.
"""

from __future__ import annotations

import logging
from typing import TextIO

log = logging.getLogger("sentinel")


class PermanentError(str):
    """An error no retry can fix (Slack's channel_not_found, invalid_auth...)."""


def build_notifier(cfg, out: TextIO | None = None, store=None, rules_provider=None):
    """The notifier the configuration asks for: Slack when the config has a
    [slack] table and its token variable is set, else the terminal.

    `store` (the app's Store) keeps which Slack message each alert is, so
    resolves and thread notes find it after a restart, and feeds the charts;
    `rules_provider` (e.g. `lambda: app.rulebook.rules`) gives the live rules
    for charts. A bad [slack] table raises ConfigError naming the key.
    """
    from .terminal import TerminalNotifier
    if cfg.slack:
        from ..config import ConfigError
        from .slack import SlackNotifier, SlackSettings
        try:
            settings = SlackSettings.from_config(cfg.slack)
        except ConfigError as e:
            raise ConfigError(f"{cfg.path}: {e}" if cfg.path else str(e)) from None
        if settings.token():
            if store is None:
                from ..store import Store
                log.warning("Slack notifier built without the app's store: which message is "
                            "which is kept in memory only, and charts are off")
                store, rules_provider = Store(":memory:"), None
            return SlackNotifier(settings, store, rules_provider, cfg.tz)
        log.warning("[slack] is configured but the environment variable %s is not set: "
                    "alerts go to the terminal", settings.token_env)
    return TerminalNotifier(cfg.tz, out)
