"""Sentinel's Slack bot: slash commands answered from the knowledge base and the store.

    /sipcode 488     /endreason 8     /q850 34
    /sentinel status | rules | silences | help
    /sentinel mute <rule> [group] <duration> [-- reason]
    /sentinel unmute <silence number | rule> [group]

`build_app(cfg, store=...)` returns a slack_bolt `App` with every listener
registered; `HttpServer` serves it over HTTP, `socket_mode_handler` over Socket
Mode; `BotRunner` starts either, as `sentinel bot` and `sentinel run` do.

Acknowledging within Slack's 3 seconds
--------------------------------------
Every command is registered as an *ack function* plus a *lazy listener*
(`app.command(name)(ack=..., lazy=[...])`), and the app runs with
`process_before_response=False`:

- the ack function only reads the in-memory knowledge base (microseconds) and
  acknowledges with the complete knowledge answer, so the engineer sees the
  meaning, mappings and fixes at once (`/sentinel help` and `rules` likewise
  answer in the ack, from the rule files). It never touches the store or the
  network, so neither a busy SQLite nor a slow Slack API can push it past 3
  seconds;
- the lazy listener reads the store (live figures, status, silences) and calls
  the Slack API (user group membership for mutes), then answers through the
  command's `response_url` (Bolt's `respond`), which stays valid for 30 minutes.

`process_before_response=False` is right for a long-running process (this
HTTP server, or Socket Mode): Bolt sends the acknowledgement the moment `ack()`
is called and runs the lazy listener on its thread pool. `True` exists for
FaaS hosts that freeze the process after the HTTP response; there, the same
ack/lazy split would still work (Bolt re-invokes the lazy function), which is
why the split is made with lazy listeners rather than by doing the slow work
after `ack()` inside one listener. Bolt runs ack functions and lazy listeners
on one executor; it has `LISTENER_THREADS` threads, far more than a NOC's
concurrent commands, so slow store reads do not queue acknowledgements.

Security
--------
HTTP requests are verified by Bolt's RequestVerification middleware (on by
default and never turned off here): HMAC-SHA256 `v0` signature over
`v0:{timestamp}:{raw body}` with the signing secret, timestamps more than five
minutes away refused, 401 on any failure (missing headers included). The bot
refuses to start in HTTP mode without a signing secret, since an empty secret
would make signatures forgeable. Socket Mode requests arrive over the app's
own WebSocket and carry no signature. Everything echoed back is escaped
(`answers`, `slack_text.escape`); answers are ephemeral except mute and
unmute confirmations, which the channel should see. Muting is limited to the
users and user groups of `[bot] mute_users` / `mute_usergroups`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import socketserver
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from . import answers
from .answers import Answer, Section, notice
from .config import Config, ConfigError
from .health import RULE_ID as HEALTH_RULE_ID
from .insights import code_figures
from .knowledge import Knowledge, load_knowledge
from .notifiers.terminal import fmt_time
from .rulebook import RuleBook
from .rules import Rule, RuleError, fmt_minutes, load_rules, parse_duration
from .status import status_text
from .store import Store

log = logging.getLogger("sentinel.bot")

LOOKUP_COMMANDS = ("/sipcode", "/endreason", "/q850")
SENTINEL_COMMAND = "/sentinel"
LISTENER_THREADS = 16
MAX_BODY_BYTES = 64 * 1024          # Slack's slash command payloads are a few hundred bytes
MAX_REASON = 300
MAX_GROUP = 128
_SLACK_ID = re.compile(r"^[A-Z0-9]{2,32}$")


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class BotSettings:
    """The [bot] table of the configuration. Every key is optional."""
    token_env: str = "SLACK_BOT_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    app_token_env: str = "SLACK_APP_TOKEN"
    mode: str = "auto"                  # auto (socket when the app token is set) | http | socket
    host: str = "0.0.0.0"
    port: int = 3000
    path: str = "/slack/events"
    api_url: str | None = None          # Web API base URL, e.g. for a proxy
    mute_users: tuple[str, ...] = ()
    mute_usergroups: tuple[str, ...] = ()
    max_mute_min: int = 7 * 1440
    with_run: bool = True               # `sentinel run` starts the bot beside the scheduler

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None, where: str = "[bot]") -> "BotSettings":
        """Validate the [bot] table; unknown keys and wrong types are ConfigErrors."""
        t = dict(table or {})
        unknown = set(t) - set(_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; known keys are "
                              + ", ".join(sorted(_KEYS)))
        kw: dict[str, Any] = {}
        for key, value in t.items():
            kw[_KEYS[key][0]] = _KEYS[key][1](value, f"{where} {key}")
        return cls(**kw)

    def credentials(self, env: Mapping[str, str] | None = None) -> "Credentials":
        """Read the tokens from the environment and settle the transport.

        Raises ConfigError naming the missing variable."""
        env = os.environ if env is None else env
        token = (env.get(self.token_env) or "").strip()
        secret = (env.get(self.signing_secret_env) or "").strip()
        app_token = (env.get(self.app_token_env) or "").strip()
        if not token:
            raise ConfigError(f"[bot]: the bot token is not set: export {self.token_env}=xoxb-...")
        mode = self.mode
        if mode == "auto":
            mode = "socket" if app_token else "http"
        if mode == "socket" and not app_token:
            raise ConfigError(f"[bot]: Socket Mode needs an app-level token: export "
                              f"{self.app_token_env}=xapp-...")
        if mode == "http" and not secret:
            raise ConfigError(f"[bot]: HTTP mode needs the signing secret to verify requests: "
                              f"export {self.signing_secret_env}=...")
        return Credentials(token, secret, app_token, mode)


@dataclass(frozen=True)
class Credentials:
    token: str
    signing_secret: str
    app_token: str
    mode: str                           # "http" or "socket"

    def __repr__(self) -> str:          # never print secrets
        return f"Credentials(mode={self.mode!r})"


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{where}: must be non-empty text")
    return v.strip()


def _mode(v: Any, where: str) -> str:
    if v not in ("auto", "http", "socket"):
        raise ConfigError(f"{where}: must be \"auto\", \"http\" or \"socket\"")
    return v


def _port(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 65535:
        raise ConfigError(f"{where}: must be a port number 0-65535")
    return v


def _path(v: Any, where: str) -> str:
    v = _str(v, where)
    if not v.startswith("/"):
        raise ConfigError(f"{where}: must start with /")
    return v


def _url(v: Any, where: str) -> str:
    v = _str(v, where)
    if not v.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: must be an http(s) URL such as https://slack.com/api/")
    return v if v.endswith("/") else v + "/"


def _ids(v: Any, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and _SLACK_ID.match(x) for x in v):
        raise ConfigError(f"{where}: must be a list of Slack IDs such as [\"U0123ABCD\"]")
    return tuple(v)


def _minutes(v: Any, where: str) -> int:
    try:
        return parse_duration(v)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where}: must be true or false")
    return v


_KEYS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "token_env": ("token_env", _str),
    "signing_secret_env": ("signing_secret_env", _str),
    "app_token_env": ("app_token_env", _str),
    "mode": ("mode", _mode),
    "host": ("host", _str),
    "port": ("port", _port),
    "path": ("path", _path),
    "api_url": ("api_url", _url),
    "mute_users": ("mute_users", _ids),
    "mute_usergroups": ("mute_usergroups", _ids),
    "max_mute": ("max_mute_min", _minutes),
    "with_run": ("with_run", _bool),
}


# --------------------------------------------------------------------------- what listeners share

class _RulesView:
    """The two attributes of a RuleBook that status_text reads."""

    def __init__(self, rules: dict[str, Rule], errors: dict[str, RuleError]):
        self.rules, self.errors = rules, errors


@dataclass
class BotDeps:
    cfg: Config
    settings: BotSettings
    store: Store
    kb: Knowledge
    rulebook: RuleBook | None = None            # the running app's, beside `sentinel run`
    clock: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def rules(self) -> tuple[dict[str, Rule], dict[str, RuleError]]:
        """The rules in force: the running app's RuleBook beside `sentinel run`, else
        the rule files as they are now (parsed, not compiled: no engine here)."""
        if self.rulebook is not None:
            return dict(self.rulebook.rules), dict(self.rulebook.errors)
        loaded = load_rules(self.cfg.rules)
        return {r.id: r for r in loaded.rules}, {e.file: e for e in loaded.errors}


# --------------------------------------------------------------------------- the app

class _NoTokenSkippedWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment even when given a client,
    then warns that it ignores it: we always give the client (for api_url)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_bolt_log = logging.getLogger("sentinel.bot.bolt")
_bolt_log.addFilter(_NoTokenSkippedWarning())


def build_app(cfg: Config, *, store: Store, settings: BotSettings | None = None,
              env: Mapping[str, str] | None = None, rulebook: RuleBook | None = None,
              clock: Callable[[], int] | None = None,
              credentials: Credentials | None = None) -> App:
    """The Bolt app with Sentinel's listeners. Calls auth.test (Bolt does, at start-up)."""
    settings = settings or BotSettings.from_table(cfg.bot)
    creds = credentials or settings.credentials(env)
    kb = load_knowledge(tuple(cfg.knowledge_extra)) if cfg.knowledge_extra else load_knowledge()
    deps = BotDeps(cfg, settings, store, kb, rulebook)
    if clock is not None:
        deps.clock = clock
    client = WebClient(token=creds.token, base_url=settings.api_url or WebClient.BASE_URL)
    app = App(
        client=client,
        signing_secret=creds.signing_secret,
        request_verification_enabled=True,      # signatures and timestamps: always on
        process_before_response=False,          # see the module docstring
        listener_executor=ThreadPoolExecutor(LISTENER_THREADS,
                                             thread_name_prefix="sentinel-bot"),
        logger=_bolt_log,
        name="sentinel",
    )
    register_listeners(app, deps)
    return app


def register_listeners(app: App, deps: BotDeps) -> None:
    for name in LOOKUP_COMMANDS:
        app.command(name)(ack=lambda ack, command: ack_lookup(deps, ack, command),
                          lazy=[_named(f"live_{name[1:]}",
                                       lambda respond, command: live_lookup(deps, respond,
                                                                            command))])
    app.command(SENTINEL_COMMAND)(
        ack=lambda ack, command: ack_sentinel(deps, ack, command),
        lazy=[_named("run_sentinel", lambda respond, command, client:
                     run_sentinel(deps, respond, command, client))])

    @app.error
    def on_error(error, body, logger):          # noqa: ARG001 - Bolt passes by name
        log.error("bot listener failed: %s", error, exc_info=error)


def drain(app: App, wait: bool = True) -> None:
    """Stop taking listener work and (by default) wait for what runs: call before
    closing the store the listeners read."""
    app.listener_runner.listener_executor.shutdown(wait=wait)


def _named(name: str, fn: Callable) -> Callable:
    fn.__name__ = fn.__qualname__ = name      # Bolt finds lazy functions by name
    return fn


def _send(fn: Callable, answer: Answer, **extra: Any) -> Any:
    """ack() or respond() with an answer; unfurling off, so nothing echoed becomes a preview."""
    return fn(**{**answer.to_slack(), "unfurl_links": False, "unfurl_media": False, **extra})


# --------------------------------------------------------------------------- lookups

def ack_lookup(deps: BotDeps, ack: Callable, command: dict) -> None:
    """/sipcode, /endreason, /q850: the knowledge answer, at once."""
    answer, subject = answers.lookup(deps.kb, command.get("command", ""),
                                     command.get("text", ""))
    if subject is not None:
        answer.footer.append("Live figures from Sentinel's store follow in a moment.")
    _send(ack, answer)


def live_lookup(deps: BotDeps, respond: Callable, command: dict) -> None:
    """The live figures of a lookup, through response_url."""
    _, subject = answers.lookup(deps.kb, command.get("command", ""), command.get("text", ""))
    if subject is None:
        return
    try:
        rules, _ = deps.rules()
        fig = code_figures(deps.store, subject.codes, deps.clock(), rules)
        live = answers.live_answer(fig, subject, deps.cfg.tz)
    except Exception:
        log.exception("live figures for %s failed", subject.codes)
        live = answers.live_unavailable(subject, "the store could not be read; the "
                                                 "error is in Sentinel's log.")
    _send(respond, live, replace_original=False)


# --------------------------------------------------------------------------- /sentinel

SUBCOMMANDS = ("status", "rules", "silences", "mute", "unmute", "help")


def _split(command: dict) -> tuple[str, str]:
    text = answers.clean_input(command.get("text", ""))
    sub, _, rest = text.partition(" ")
    return sub.lower(), rest.strip()


def ack_sentinel(deps: BotDeps, ack: Callable, command: dict) -> None:
    """/sentinel: help and rules at once; what reads the store or asks Slack follows."""
    sub, _ = _split(command)
    if sub in ("", "help"):
        _send(ack, answers.help_answer())
    elif sub not in SUBCOMMANDS:
        _send(ack, answers.help_answer(f"I do not know {answers.echo(sub)}. "
                                       "Here is what I can do:"))
    elif sub == "rules":
        rules, errors = deps.rules()
        _send(ack, answers.rules_answer(rules, errors.values(), deps.cfg.rules))
    else:
        ack()                               # status, silences, mute, unmute: respond() follows


def run_sentinel(deps: BotDeps, respond: Callable, command: dict, client: WebClient) -> None:
    sub, rest = _split(command)
    try:
        if sub == "status":
            _send(respond, status(deps))
        elif sub == "silences":
            _send(respond, silences_answer(deps))
        elif sub == "mute":
            _send(respond, mute(deps, client, command, rest))
        elif sub == "unmute":
            _send(respond, unmute(deps, client, command, rest))
    except Exception:
        log.exception("/sentinel %s failed", sub)
        _send(respond, notice("Something went wrong",
                              f"/sentinel {sub} failed; the error is in Sentinel's log."))


def status(deps: BotDeps) -> Answer:
    now = deps.clock()
    if deps.rulebook is not None:
        book = deps.rulebook
    else:
        rules, errors = deps.rules()
        book = _RulesView(rules, errors)
    return answers.status_answer(status_text(deps.cfg, deps.store, now, book))


def silences_answer(deps: BotDeps) -> Answer:
    now = deps.clock()
    tz = deps.cfg.tz
    rows = deps.store.silences(active_at_ms=now)
    if not rows:
        return notice("Silences", "No silence in force.")
    return Answer("Silences", [Section(lines=[
        f"#{s['id']} {s['rule_id']} on {s['grp'] or 'every group'} until "
        f"{fmt_time(s['ends_ms'], tz)}, by {s['created_by']}: {s['reason']}" for s in rows],
        bullets=True), Section(lines=["End one with `/sentinel unmute <number>`."])])


# ---- permissions

def may_mute(settings: BotSettings, client: WebClient, user_id: str) -> tuple[bool, list[str]]:
    """Is the user allowed to mute? Listed users are; members of listed user
    groups are (usergroups.users.list, scope usergroups:read). Returns the
    verdict and the problems met while checking groups."""
    problems: list[str] = []
    if not user_id:
        return False, problems
    if user_id in settings.mute_users:
        return True, problems
    for group in settings.mute_usergroups:
        try:
            resp = client.usergroups_users_list(usergroup=group)
        except SlackApiError as e:
            err = e.response.get("error", "error") if e.response is not None else "error"
            log.warning("cannot list members of user group %s: %s", group, err)
            problems.append(f"{group}: {err}")
            continue
        except Exception as e:                   # network: refuse, do not crash
            log.warning("cannot list members of user group %s: %s", group, e)
            problems.append(f"{group}: {type(e).__name__}")
            continue
        if user_id in (resp.get("users") or []):
            return True, problems
    return False, problems


def _refusal(settings: BotSettings, problems: list[str], what: str) -> Answer:
    lines = [f"Sorry, {what} is limited to the people Sentinel's configuration names, and "
             "you are not one of them yet."]
    if not settings.mute_users and not settings.mute_usergroups:
        lines.append("Nobody may do it from Slack yet: an administrator can add Slack user IDs "
                     "to `mute_users` or user group IDs to `mute_usergroups` in the [bot] "
                     "section.")
    else:
        lines.append("Ask someone on the NOC rota, or an administrator to add you.")
    if problems:
        lines.append("(Some user groups could not be checked: " + "; ".join(problems) + ".)")
    return notice("Not allowed", *lines, found=False)


def _who(command: dict) -> tuple[str, str]:
    uid = str(command.get("user_id") or "")
    name = str(command.get("user_name") or "")
    created_by = f"slack:{uid}" + (f" ({name})" if name else "")
    return uid, created_by


# ---- mute

@dataclass(frozen=True)
class MuteRequest:
    rule_id: str
    group: str | None
    minutes: int
    reason: str


MUTE_USAGE = ("Usage: `/sentinel mute <rule> [group] <duration> [-- reason]`, e.g. "
              "`/sentinel mute sip-503-share VEND-07 2h -- vendor maintenance`. "
              "Durations: 30m, 2h, 1d.")


def _is_duration(tok: str) -> bool:
    try:
        parse_duration(tok)
        return True
    except ValueError:
        return False


def parse_mute(text: str) -> MuteRequest:
    """`<rule> [group] <duration> [-- reason | "reason"]` -> MuteRequest; ValueError
    with a message for the user otherwise."""
    text = answers.clean_input(text)
    head, sep, reason = text.partition(" --")
    if not sep and text.startswith("--"):
        head, reason = "", text[2:]
    try:
        tokens = shlex.split(head)
    except ValueError:
        raise ValueError("I could not read that: a quote is not closed.") from None
    if len(tokens) >= 3 and _is_duration(tokens[2]):
        rule_id, group, duration, extra = tokens[0], tokens[1], tokens[2], tokens[3:]
    elif len(tokens) >= 2 and _is_duration(tokens[1]):
        rule_id, group, duration, extra = tokens[0], None, tokens[1], tokens[2:]
    else:
        raise ValueError("I need a rule, an optional group and a duration.")
    reason = " ".join([*extra, reason.strip()]).strip()
    if group is not None and len(group) > MAX_GROUP:
        raise ValueError(f"That group name is longer than {MAX_GROUP} characters.")
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON - 1] + "…"
    return MuteRequest(rule_id, group, parse_duration(duration), reason)


def _group_seen(deps: BotDeps, rule: Rule | None, group: str, now_ms: int) -> bool:
    if rule is None:
        return True
    if any(a["grp"] == group for a in deps.store.alerts(rule.id)):
        return True
    if rule.group_by == "global":
        return False
    end = now_ms // 60000
    return any(r.group == group for r in deps.store.window_rollups(rule.group_by, end - 1440, end))


def mute(deps: BotDeps, client: WebClient, command: dict, text: str) -> Answer:
    uid, created_by = _who(command)
    try:
        req = parse_mute(text)
    except ValueError as e:
        return notice("Mute: not understood", str(e), MUTE_USAGE, found=False)
    allowed, problems = may_mute(deps.settings, client, uid)
    if not allowed:
        return _refusal(deps.settings, problems, "muting alerts")
    rules, _ = deps.rules()
    known = set(rules) | {HEALTH_RULE_ID, "*"}
    if req.rule_id not in known:
        return notice("Mute: no such rule",
                      f"There is no rule {answers.echo(req.rule_id)}. `/sentinel rules` lists "
                      "them; `*` mutes every rule.", MUTE_USAGE, found=False)
    if req.minutes > deps.settings.max_mute_min:
        return notice("Mute: too long",
                      f"{fmt_minutes(req.minutes)} is longer than the "
                      f"{fmt_minutes(deps.settings.max_mute_min)} Sentinel allows from Slack "
                      "([bot] max_mute).", found=False)
    now = deps.clock()
    ends = now + req.minutes * 60000
    reason = req.reason or "muted from Slack"
    sid = deps.store.add_silence(req.rule_id, req.group, now, ends, reason, created_by)
    what = "every rule" if req.rule_id == "*" else req.rule_id
    lines = [f"Silence #{sid}: {what} on {req.group or 'every group'} is muted for "
             f"{fmt_minutes(req.minutes)}, until {fmt_time(ends, deps.cfg.tz)}.",
             f"By {command.get('user_name') or uid}. Reason: {reason}",
             f"End it early with `/sentinel unmute {sid}`."]
    if req.group and not _group_seen(deps, rules.get(req.rule_id), req.group, now):
        lines.append(f"Note: Sentinel has seen no traffic or alert for "
                     f"{answers.echo(req.group)} under this rule in the last 24 h: check the "
                     "spelling (the silence is in place anyway).")
    log.info("silence #%s: %s on %s for %s min by %s", sid, req.rule_id, req.group,
             req.minutes, created_by)
    return notice(f"Muted: silence #{sid}", *lines, response_type="in_channel")


def unmute(deps: BotDeps, client: WebClient, command: dict, text: str) -> Answer:
    uid, created_by = _who(command)
    try:
        tokens = shlex.split(answers.clean_input(text))
    except ValueError:
        tokens = []
    if not 1 <= len(tokens) <= 2:
        return notice("Unmute: not understood",
                      "Usage: `/sentinel unmute <silence number | rule> [group]`, e.g. "
                      "`/sentinel unmute 12`. `/sentinel silences` lists them.", found=False)
    allowed, problems = may_mute(deps.settings, client, uid)
    if not allowed:
        return _refusal(deps.settings, problems, "unmuting alerts")
    what = tokens[0].lstrip("#")
    group = tokens[1] if len(tokens) == 2 else None
    now = deps.clock()
    removed = []
    for s in deps.store.silences(active_at_ms=now):
        if str(s["id"]) == what or (s["rule_id"] == what and group in (None, s["grp"])):
            if deps.store.remove_silence(s["id"], now):
                removed.append(s)
    if not removed:
        return notice("Unmute: nothing to end",
                      f"No silence in force matches {answers.echo(' '.join(tokens))}. "
                      "`/sentinel silences` lists them.", found=False)
    log.info("silences %s removed by %s", [s["id"] for s in removed], created_by)
    by = command.get("user_name") or uid
    return notice("Unmuted", *[f"Silence #{s['id']} ended: {s['rule_id']} on "
                               f"{s['grp'] or 'every group'} alerts again." for s in removed],
                  f"By {by}.", response_type="in_channel")


# --------------------------------------------------------------------------- transports

class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    timeout = 15                                # a client that stalls is dropped

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)


class HttpServer:
    """The app over HTTP: slack_bolt's WSGI adapter under a threading wsgiref server.

    POST `path` (default /slack/events) for Slack's requests, GET /healthz for a
    load balancer. Bodies over MAX_BODY_BYTES are refused (413) before anything
    is read. Put a TLS reverse proxy in front: Slack only calls https URLs.
    """

    def __init__(self, app: App, host: str = "0.0.0.0", port: int = 3000,
                 path: str = "/slack/events"):
        self.path = path
        bolt = SlackRequestHandler(app, path=path)

        def wsgi(environ, start_response):
            method = environ.get("REQUEST_METHOD", "GET")
            if method == "GET" and environ.get("PATH_INFO") == "/healthz":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                start_response("413 Payload Too Large", [("Content-Type", "text/plain")])
                return [b"too large\n"]
            try:
                return bolt(environ, start_response)
            except UnicodeDecodeError:
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [b"bad request\n"]

        self.httpd = make_server(host, port, wsgi, server_class=_ThreadingWSGIServer,
                                 handler_class=_QuietHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{self.port}{self.path}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> "HttpServer":
        self._thread = threading.Thread(target=self.serve_forever, name="sentinel-bot-http",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def socket_mode_handler(app: App, app_token: str):
    """slack_bolt's Socket Mode adapter over slack_sdk's built-in WebSocket client
    (no extra package). It opens the connection through the app's WebClient, so
    [bot] api_url applies to apps.connections.open too."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    return SocketModeHandler(app, app_token)


class BotRunner:
    """A bot with its transport: `start()` in the background, `run()` in the
    foreground, `stop()`."""

    def __init__(self, cfg: Config, store: Store, *, settings: BotSettings | None = None,
                 env: Mapping[str, str] | None = None, rulebook: RuleBook | None = None,
                 port: int | None = None, mode: str | None = None,
                 clock: Callable[[], int] | None = None):
        self.settings = settings or BotSettings.from_table(cfg.bot)
        if mode is not None:
            self.settings = _replace(self.settings, mode=_mode(mode, "--mode"))
        if port is not None:
            self.settings = _replace(self.settings, port=_port(port, "--port"))
        self.creds = self.settings.credentials(env)
        self.app = build_app(cfg, store=store, settings=self.settings, rulebook=rulebook,
                             clock=clock, credentials=self.creds)
        self.http: HttpServer | None = None
        self.socket = None
        if self.creds.mode == "http":
            s = self.settings
            self.http = HttpServer(self.app, s.host, s.port, s.path)
        else:
            self.socket = socket_mode_handler(self.app, self.creds.app_token)

    @property
    def mode(self) -> str:
        return self.creds.mode

    def describe(self) -> str:
        if self.http is not None:
            return f"HTTP on {self.http.httpd.server_address[0]}:{self.http.port}{self.http.path}"
        return "Socket Mode"

    def start(self) -> "BotRunner":
        if self.http is not None:
            self.http.start()
        else:
            self.socket.connect()               # returns; the client's threads carry on
        return self

    def run(self) -> None:
        if self.http is not None:
            self.http.serve_forever()
        else:
            self.socket.start()                 # blocks

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
        elif self.socket is not None:
            self.socket.close()
        drain(self.app)


def _replace(s: BotSettings, **kw: Any) -> BotSettings:
    from dataclasses import replace
    return replace(s, **kw)
