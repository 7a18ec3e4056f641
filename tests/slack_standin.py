"""A local stand-in of the Slack Web API, for tests of the real slack_sdk and
slack_bolt code (Slack itself cannot be reached from here).

A ThreadingHTTPServer on a free port of 127.0.0.1 that answers the Web API
methods Sentinel uses, records every request, and can be told to answer the
next calls of a method with a 429 (Retry-After), a 500, or `ok: false`, the
way the official SDK and Bolt repositories test themselves.

    with SlackStandIn() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.api_url)
        client.chat_postMessage(channel="C1", text="hi")
        slack.calls("chat.postMessage")[0].body["text"] == "hi"
        slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "1"})
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs


@dataclass
class Call:
    method: str                 # "chat.postMessage", or "upload" / "response" for raw posts
    path: str
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]


@dataclass
class _Forced:
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class SlackStandIn:
    """Start with `with`, or `start()` / `stop()`."""
    team_id: str = "T0STANDIN"
    bot_user_id: str = "U0SENTINEL"
    calls_log: list[Call] = field(default_factory=list)
    handlers: dict[str, Callable[[Call], dict]] = field(default_factory=dict)

    def __post_init__(self):
        self._forced: dict[str, list[_Forced]] = {}
        self._ts = itertools.count(1)
        self._files = itertools.count(1)
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # -- control ------------------------------------------------------------
    def start(self) -> "SlackStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                standin._handle(self)

            def do_GET(self):
                standin._handle(self)

            def log_message(self, *args):       # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> "SlackStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.url}/response/{name}"

    def fail_next(self, method: str, *, status: int = 200, times: int = 1,
                  headers: dict[str, str] | None = None, error: str | None = None) -> None:
        """The next `times` calls of `method` answer `status`; with `error`,
        an HTTP 200 `{"ok": false, "error": error}`."""
        body = {"ok": False, "error": error} if error else (
            {"ok": False, "error": "ratelimited"} if status == 429 else None)
        with self._lock:
            self._forced.setdefault(method, []).extend(
                _Forced(status, headers or {}, body) for _ in range(times))

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls_log if method is None or c.method == method]

    def reset(self) -> None:
        with self._lock:
            self.calls_log.clear()
            self._forced.clear()

    # -- serving ------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = h.path.split("?")[0]
        if path.startswith("/api/"):
            method = path[len("/api/"):]
        else:
            method = path.strip("/").split("/")[0]          # "upload", "response"
        call = Call(method, h.path, {k: v for k, v in h.headers.items()}, raw, _parse(h, raw))
        with self._lock:
            self.calls_log.append(call)
            forced = self._forced.get(method)
            f = forced.pop(0) if forced else None
        if f is not None:
            self._send(h, f.status, f.body if f.body is not None else {"ok": False, "error": "fatal"},
                       f.headers)
            return
        if method in self.handlers:
            self._send(h, 200, self.handlers[method](call))
            return
        self._send(h, 200, self._default(call))

    def _default(self, call: Call) -> dict:
        b = call.body
        m = call.method
        if m == "auth.test":
            return {"ok": True, "url": "https://standin.slack.com/", "team": "Stand-in",
                    "user": "sentinel", "team_id": self.team_id, "user_id": self.bot_user_id,
                    "bot_id": "B0SENTINEL"}
        if m in ("chat.postMessage", "chat.update"):
            ts = b.get("ts") if m == "chat.update" else f"1700000000.{next(self._ts):06d}"
            return {"ok": True, "channel": b.get("channel"), "ts": ts,
                    "message": {"text": b.get("text", ""), "ts": ts}}
        if m == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1700000000.{next(self._ts):06d}"}
        if m == "files.getUploadURLExternal":
            fid = f"F{next(self._files):07d}"
            return {"ok": True, "upload_url": f"{self.url}/upload/{fid}", "file_id": fid}
        if m == "files.completeUploadExternal":
            files = json.loads(b.get("files", "[]"))
            return {"ok": True, "files": [{"id": f["id"], "title": f.get("title", "")}
                                          for f in files]}
        if m in ("upload", "response"):
            return {"ok": True}
        if m == "usergroups.users.list":
            return {"ok": True, "users": []}
        if m == "conversations.info":
            return {"ok": True, "channel": {"id": b.get("channel"), "name": "standin"}}
        return {"ok": True}

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: dict,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)


def _parse(h: BaseHTTPRequestHandler, raw: bytes) -> dict[str, Any]:
    ctype = h.headers.get("Content-Type", "")
    if not raw:
        return {}
    if "json" in ctype:
        try:
            return json.loads(raw)
        except ValueError:
            return {}
    if "x-www-form-urlencoded" in ctype:
        try:
            text = raw.decode()
        except UnicodeDecodeError:          # a file's bytes, not a form
            return {}
        return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(text).items()}
    return {}
