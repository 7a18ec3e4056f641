"""Command-line entry points of the bot (`sentinel bot`, `sentinel sipcode`...).

`register(subparsers)` adds them to the `sentinel` command; `start_beside(cfg,
app)` is called by `sentinel run` to start the bot next to the scheduler when
the configuration asks for it.

    sentinel bot [--port N] [--mode http|socket]   the Slack bot alone
    sentinel sipcode 488                            the /sipcode answer, in the terminal
    sentinel endreason -9                           the /endreason answer
    sentinel q850 34                                the /q850 answer
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("sentinel.bot")


def register(subparsers) -> None:
    """Add the bot's subcommands to the `sentinel` parser."""
    b = subparsers.add_parser(
        "bot", help="run the Slack bot (HTTP, or Socket Mode when an app token is set)")
    b.add_argument("--port", type=int, help="HTTP port (default: [bot] port, 3000)")
    b.add_argument("--mode", choices=("http", "socket"),
                   help="transport (default: [bot] mode; auto picks Socket Mode when the "
                        "app token is set)")
    b.set_defaults(func=cmd_bot)
    for name, what, example in (
            ("sipcode", "a SIP response code", "488"),
            ("endreason", "a VOS3000 endreason value (SIP, 1-25, or negative)", "8"),
            ("q850", "a Q.850 cause", "34")):
        p = subparsers.add_parser(name, help=f"explain {what}, with live figures from the store")
        p.add_argument("code", nargs="*", help=f"e.g. {example}")
        p.add_argument("--no-live", action="store_true",
                       help="the knowledge answer only, without reading the store")
        p.set_defaults(func=cmd_lookup, lookup=name)


# -- lookups ----------------------------------------------------------------

def cmd_lookup(args) -> int:
    from . import answers
    from .cli import _config
    from .knowledge import load_knowledge
    cfg = _config(args)
    kb = load_knowledge(tuple(cfg.knowledge_extra)) if cfg.knowledge_extra else load_knowledge()
    answer, subject = answers.lookup(kb, args.lookup, " ".join(args.code))
    print(answer.to_text())
    if subject is not None and not args.no_live:
        print()
        print(_live_text(cfg, subject))
    return 0 if answer.found else 1


def _live_text(cfg, subject) -> str:
    from . import answers
    from .insights import code_figures
    from .rules import load_rules
    from .store import Store
    if cfg.store != ":memory:" and not Path(cfg.store).exists():
        return answers.live_unavailable(
            subject, f"there is no store at {cfg.store} yet (`sentinel run` creates it)").to_text()
    store = Store(cfg.store)
    try:
        rules = {r.id: r for r in load_rules(cfg.rules).rules}
        fig = code_figures(store, subject.codes, int(time.time() * 1000), rules)
        return answers.live_answer(fig, subject, cfg.tz).to_text()
    finally:
        store.close()


# -- the bot ------------------------------------------------------------------

def cmd_bot(args) -> int:
    from .bot import BotRunner
    from .cli import _config
    from .config import ConfigError
    from .store import Store
    cfg = _config(args)
    store = Store(cfg.store)
    try:
        runner = BotRunner(cfg, store, port=args.port, mode=args.mode)
    except ConfigError as e:
        print(f"sentinel: {e}", file=sys.stderr)
        return 2
    except Exception as e:          # auth.test refused, Slack unreachable, port in use
        print(f"sentinel: the bot could not start: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    log.info("sentinel bot: %s", runner.describe())
    try:
        runner.run()
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
    return 0


class BesideBot:
    """The bot started by `sentinel run`: `ready` is set once it serves (or failed,
    then `error` says why); `stop()` ends it."""

    def __init__(self):
        self.ready = threading.Event()
        self.runner = None
        self.error: str | None = None
        self.thread: threading.Thread | None = None

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()


def start_beside(cfg, app) -> BesideBot | None:
    """Start the bot in the background of `sentinel run`, if configured.

    Starts when the config has a [bot] table (with_run not false) and the bot
    token (and, for HTTP, the signing secret) are in the environment; otherwise
    logs why not and returns None. A broken [bot] table is a ConfigError, as
    for any other section. The bot reads the store through its own connection
    (WAL: consistent snapshots while the scheduler writes) and shows the rules
    the running app has loaded. Failures after that (auth.test refused, port
    in use) are logged: the scheduler goes on without the bot.
    """
    from .bot import BotRunner, BotSettings
    from .config import ConfigError
    from .store import Store
    if not cfg.bot:
        return None
    settings = BotSettings.from_table(cfg.bot)
    if not settings.with_run:
        log.info("bot: [bot] with_run = false; start it with `sentinel bot`")
        return None
    try:
        settings.credentials()
    except ConfigError as e:
        log.warning("bot not started: %s", e)
        return None
    handle = BesideBot()

    def run():
        store = None
        try:
            store = app.store if cfg.store == ":memory:" else Store(cfg.store)
            handle.runner = BotRunner(cfg, store, settings=settings,
                                      rulebook=getattr(app, "rulebook", None))
            handle.runner.start()
            log.info("sentinel bot: %s", handle.runner.describe())
        except Exception as e:                       # never take the scheduler down
            handle.error = f"{type(e).__name__}: {e}"
            log.error("bot could not start: %s", handle.error)
        finally:
            handle.ready.set()

    handle.thread = threading.Thread(target=run, name="sentinel-bot", daemon=True)
    handle.thread.start()
    return handle
