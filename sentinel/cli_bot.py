"""Command-line entry points of the bot (`sentinel bot`, `sentinel sipcode`...).

`register(subparsers)` adds them to the `sentinel` command; `start_beside(cfg,
app)` is called by `sentinel run` to start the bot next to the scheduler when
the configuration asks for it.
"""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the bot's subcommands to the `sentinel` parser."""


def start_beside(cfg, app) -> None:
    """Start the bot in the background of `sentinel run`, if configured."""
