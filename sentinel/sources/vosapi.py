"""VOS3000 CDRs fetched from its Web API (`POST /external/server/GetCdr`).

For installations whose database Sentinel may not reach. The API has no
incremental query: GetCdr returns whole days (`beginTime`/`endTime` as
yyyyMMdd) for a list of accounts, and the manual warns against calling it
often. So this source:
- calls GetCdr no more often than `min_interval` (default 5m), counting
  failed attempts too, and across restarts (the time of the last pull is
  saved with the watermark);
- asks for the days from the one holding the watermark (minus `overlap`, and
  minus three hours, so calls that started before midnight and ended after
  it are covered) up to today, in the VOS server's time zone;
- keeps only what is new, with a compact watermark: the highest stop time
  seen, plus the flowNos stopping within `overlap` of it. A row stopping
  before that window was already taken or is too late; a row inside it is new
  unless its flowNo is listed. The store de-duplicates on flowno as well;
- gets the accounts from the config, or lists them with GetAllCustomers on
  each pull, `accounts_per_request` at a time; one Batch per request, the
  watermark saved with the last one.

Failures (timeout, HTTP error, invalid JSON, non-zero retCode with its
exception text, unreachable host) raise SourceError with a clear message and
back off exactly as the MySQL source does; `health()` reports them.

Responses come in two shapes: the object, or the object inside a one-element
array. infoCdrs items use camelCase names; `cdr.canonical_keys` translates
most, and EXTRA_ALIASES below the rest.

Only the standard library is used (urllib, json, ssl).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from ..cdr import CDR, CDRError, canonical_keys, cdr_from_record
from . import Batch, SourceError, reject_unknown_options
from .incremental import (FUTURE_SLACK_MS, SourceHealth, check_zone, iso_ms, local_date,
                          parse_seconds, saved_stop)

log = logging.getLogger("sentinel.sources.vosapi")

MAX_PROBLEMS_LISTED = 20
LONG_CALL_MS = 3 * 3600_000       # ask for yesterday too until 03:00 (calls crossing midnight)
MAX_RESPONSE_BYTES = 512 * 2**20  # refuse a runaway answer rather than exhaust memory

# infoCdrs names that neither cdr.API_ALIASES nor lower-casing turn into the
# e_cdr name (suggested for API_ALIASES in cdr.py; harmless once it has them).
# The other manual fields lower-case to their column: callerAccessE164 ->
# calleraccesse164, feePrefix -> feeprefix, callLevel -> calllevel...
EXTRA_ALIASES = {
    "accountName": "customername",
}


class _ApiError(Exception):
    """Internal: the API could not be read; message already explained."""


def api_record(item: dict) -> dict:
    """An infoCdrs item keyed by e_cdr column names."""
    return canonical_keys({EXTRA_ALIASES.get(k, k): v for k, v in item.items()})


class VosApiSource:
    kind = "vosapi"
    OPTIONS = {
        "url": "address of the VOS3000 Web API, e.g. \"http://10.0.0.5:8080\" (required)",
        "accounts": "accounts whose CDRs to fetch (default: all, listed with GetAllCustomers)",
        "caller_gateway": "only CDRs from this caller (ingress) gateway",
        "callee_gateway": "only CDRs to this callee (egress) gateway",
        "server_timezone": "time zone of the VOS3000 server's days (default UTC)",
        "min_interval": "call GetCdr no more often than this (default \"5m\")",
        "overlap": "window behind the newest stop time kept for de-duplication (default \"2m\")",
        "backfill": "how far back the first pull keeps CDRs (default \"1h\")",
        "accounts_per_request": "accounts per GetCdr request (default 100)",
        "timeout": "give up on an answer after this long (default \"60s\")",
        "ssl_ca": "CA certificate file to verify an https server",
        "tls_verify": "verify the https server's certificate (default true)",
        "retry_min": "wait this long before the first retry after a failure (default \"30s\")",
        "retry_max": "longest wait between retries; the wait doubles up to it (default \"10m\")",
        "alert_after": "raise a source-health alert after failing this long (default \"5m\")",
    }

    def __init__(self, name: str, url: str, *, accounts: list[str] | None = None,
                 caller_gateway: str | None = None, callee_gateway: str | None = None,
                 server_timezone: str = "UTC", min_interval_s: float = 300,
                 overlap_s: float = 120, backfill_s: float = 3600,
                 accounts_per_request: int = 100, timeout_s: float = 60,
                 ssl_context: ssl.SSLContext | None = None, retry_min_s: int = 30,
                 retry_max_s: int = 600, alert_after_s: int = 300):
        self.name = name
        self.base = url.rstrip("/")
        if self.base.endswith("/external/server"):
            self.base = self.base[: -len("/external/server")]
        self.accounts = list(accounts) if accounts else None
        self.caller_gateway = caller_gateway
        self.callee_gateway = callee_gateway
        self.tz = ZoneInfo(server_timezone)
        self.min_interval_ms = int(min_interval_s * 1000)
        self.overlap_ms = int(overlap_s * 1000)
        self.backfill_ms = int(backfill_s * 1000)
        self.accounts_per_request = accounts_per_request
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self.alert_after_s = alert_after_s
        self.label = f"vosapi source {name!r} ({self.base})"
        self._health = SourceHealth(self.label, retry_min_s, retry_max_s)
        self._last_attempt_ms: int | None = None
        self._reported_bad: set = set()
        self._reported_days: tuple[str, str] | None = None

    # -- config --------------------------------------------------------------
    @classmethod
    def from_options(cls, name: str, options: dict, base_dir=None) -> "VosApiSource":
        o = dict(options)
        reject_unknown_options(o, cls.OPTIONS)
        url = o.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("option 'url' is required: the Web API address, "
                             "e.g. \"http://10.0.0.5:8080\"")
        kw: dict[str, Any] = {}
        if "accounts" in o:
            acc = o["accounts"]
            if (not isinstance(acc, list) or not acc
                    or not all(isinstance(a, str) and a for a in acc)):
                raise ValueError("option 'accounts': expected a non-empty list of account "
                                 "names (leave it out to fetch every account)")
            kw["accounts"] = acc
        for key in ("caller_gateway", "callee_gateway", "server_timezone"):
            if key in o:
                if not isinstance(o[key], str) or not o[key]:
                    raise ValueError(f"option {key!r}: expected a non-empty string")
                kw[key] = o[key]
        if "server_timezone" in kw:
            check_zone(kw["server_timezone"], "server_timezone")
        if "accounts_per_request" in o:
            n = o["accounts_per_request"]
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10000:
                raise ValueError(f"option 'accounts_per_request': expected 1 to 10000, got {n!r}")
            kw["accounts_per_request"] = n
        for key, default in (("min_interval", "5m"), ("overlap", "2m"), ("backfill", "1h"),
                             ("timeout", "60s"), ("retry_min", "30s"), ("retry_max", "10m"),
                             ("alert_after", "5m")):
            kw[f"{key}_s"] = parse_seconds(o.get(key, default), key)
        if kw["timeout_s"] < 1:
            raise ValueError("option 'timeout': must be at least 1s")
        verify = o.get("tls_verify", True)
        if not isinstance(verify, bool):
            raise ValueError(f"option 'tls_verify': expected true or false, got {verify!r}")
        ctx = None
        if url.startswith("https://"):
            cafile = None
            if "ssl_ca" in o:
                p = Path(str(o["ssl_ca"]))
                if base_dir is not None and not p.is_absolute():
                    p = Path(base_dir) / p
                if not p.is_file():
                    raise ValueError(f"option 'ssl_ca': file {p} does not exist")
                cafile = str(p)
            ctx = ssl.create_default_context(cafile=cafile)
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        elif "ssl_ca" in o:
            raise ValueError("option 'ssl_ca' needs an https:// url")
        return cls(name, url, ssl_context=ctx, **kw)

    # -- health ------------------------------------------------------------------
    def health(self) -> dict:
        return self._health.as_dict()

    # -- the API ------------------------------------------------------------------
    def call(self, method: str, body: dict) -> dict:
        """POST one request; the answer object, or _ApiError with a clear message."""
        url = f"{self.base}/external/server/{method}"
        req = urllib.request.Request(
            url, data=json.dumps(body).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json;charset=UTF-8",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s,
                                        context=self.ssl_context) as resp:
                raw = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            try:
                excerpt = e.read(200).decode("utf-8", "replace").strip()
            except Exception:
                excerpt = ""
            raise _ApiError(f"{method}: HTTP {e.code} {e.reason}"
                            + (f": {excerpt!r}" if excerpt else "")) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise _ApiError(f"{method}: no answer within {self.timeout_s:g}s") from None
            raise _ApiError(f"{method}: cannot reach {url}: {e.reason}") from None
        except (TimeoutError, socket.timeout):
            raise _ApiError(f"{method}: no answer within {self.timeout_s:g}s") from None
        except (OSError, http.client.HTTPException) as e:
            raise _ApiError(f"{method}: connection failed: {type(e).__name__}: {e}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise _ApiError(f"{method}: answer larger than {MAX_RESPONSE_BYTES >> 20} MB; "
                            f"list fewer accounts per request (accounts_per_request)")
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as e:
            excerpt = raw[:80].decode("utf-8", "replace")
            raise _ApiError(f"{method}: invalid JSON ({e}); the answer began {excerpt!r}") from None
        # Some deployments wrap the object in a one-element array.
        if isinstance(doc, list) and len(doc) == 1 and isinstance(doc[0], dict):
            doc = doc[0]
        if not isinstance(doc, dict):
            raise _ApiError(f"{method}: unexpected answer: expected an object with retCode, "
                            f"got {type(doc).__name__}")
        code = doc.get("retCode")
        try:
            code = int(code)
        except (TypeError, ValueError):
            raise _ApiError(f"{method}: answer without a valid retCode ({code!r})") from None
        if code != 0:
            raise _ApiError(f"{method} failed: retCode {code}: "
                            f"{doc.get('exception') or 'no exception text'}")
        return doc

    def list_accounts(self) -> list[str]:
        # Public clients send {"type": 1}; the answer lists infoCustomerBriefs
        # (some versions: infoCustomers) items carrying "account".
        doc = self.call("GetAllCustomers", {"type": 1})
        items = doc.get("infoCustomerBriefs", doc.get("infoCustomers", []))
        if not isinstance(items, list):
            raise _ApiError("GetAllCustomers: infoCustomerBriefs is not a list")
        out = []
        for it in items:
            acc = it.get("account") if isinstance(it, dict) else None
            if isinstance(acc, str) and acc and acc not in out:
                out.append(acc)
        return out

    def get_cdrs(self, accounts: list[str], begin: str, end: str) -> list:
        body: dict[str, Any] = {"accounts": accounts, "beginTime": begin, "endTime": end}
        if self.caller_gateway:
            body["callerGateway"] = self.caller_gateway
        if self.callee_gateway:
            body["calleeGateway"] = self.callee_gateway
        doc = self.call("GetCdr", body)
        items = doc.get("infoCdrs")
        if items is None:
            return []
        if not isinstance(items, list):
            raise _ApiError(f"GetCdr: infoCdrs is {type(items).__name__}, not a list")
        return items

    # -- pull ------------------------------------------------------------------
    def pull(self, store, now_ms: int) -> Iterator[Batch]:
        wm = store.watermark(self.name)
        last = self._last_attempt_ms
        if last is None and isinstance(wm, dict) and isinstance(wm.get("pulled_ms"), int):
            last = wm["pulled_ms"]
        # The manual: do not call GetCdr often. Failed attempts count too.
        not_before = last + self.min_interval_ms if last is not None and last <= now_ms else None
        waiting = self._health.waiting(now_ms, not_before)
        if waiting:
            raise SourceError(waiting)          # still down: say so every cycle
        if not_before is not None and now_ms < not_before:
            return
        self._last_attempt_ms = now_ms

        high = saved_stop(wm, now_ms, self.label)
        if high is None:
            floor, recent = now_ms - self.backfill_ms, {}
        else:
            floor = high - self.overlap_ms
            recent = {int(f): int(s) for f, s in wm.get("recent", [])}
        begin = local_date(floor - LONG_CALL_MS, self.tz).strftime("%Y%m%d")
        end = local_date(now_ms, self.tz).strftime("%Y%m%d")
        if self._reported_days is None or self._reported_days[0] != begin:
            self._reported_bad = set()         # bad rows of days no longer asked for
        self._reported_days = (begin, end)
        limit = now_ms + FUTURE_SLACK_MS
        taken = received = bad_total = 0
        try:
            accounts = self.accounts or self.list_accounts()
            chunks = [accounts[i:i + self.accounts_per_request]
                      for i in range(0, len(accounts), self.accounts_per_request)] or [[]]
            for n, chunk in enumerate(chunks):
                items = self.get_cdrs(chunk, begin, end) if chunk else []
                received += len(items)
                cdrs, problems, bad = self._new_cdrs(items, chunk, floor, recent)
                bad_total += bad
                taken += len(cdrs)
                for c in cdrs:
                    recent[c.flowno] = c.stop_ms
                    if c.stop_ms <= limit and (high is None or c.stop_ms > high):
                        high = c.stop_ms
                watermark = None
                if n == len(chunks) - 1:
                    # Every account is done: save where we are. Until then the
                    # store keeps the previous watermark, so a crash re-reads.
                    keep = (high if high is not None else floor) - self.overlap_ms
                    watermark = {
                        "stop_ms": high if high is not None else floor,
                        "recent": sorted([f, s] for f, s in recent.items() if s >= keep),
                        "pulled_ms": now_ms,
                    }
                label = (f"GetCdr {begin}..{end} accounts {chunk[0]}..{chunk[-1]}: "
                         if chunk else "GetCdr: no accounts: ")
                yield Batch(cdrs=cdrs, watermark=watermark, problems=problems,
                            label=label + f"{len(items)} rows, {len(cdrs)} new, {bad} bad")
        except _ApiError as e:
            msg = self._health.failed(now_ms, str(e), now_ms + self.min_interval_ms)
            log.warning("%s", msg)
            raise SourceError(msg) from None
        except GeneratorExit:
            raise
        except BaseException as e:
            self._health.failed(now_ms, f"{type(e).__name__}: {e}")
            raise
        self._health.succeeded(now_ms, f"ok: GetCdr {begin}..{end} at {iso_ms(now_ms)}: "
                                       f"{received} rows, {taken} new, {bad_total} bad")

    def _new_cdrs(self, items: list, accounts: list[str], floor: int,
                  recent: dict[int, int]) -> tuple[list[CDR], list[str], int]:
        cdrs: list[CDR] = []
        problems: list[str] = []
        bad = 0
        seen: set[int] = set()
        where = (f"GetCdr account {accounts[0]}" if len(accounts) == 1
                 else f"GetCdr accounts {accounts[0]}..{accounts[-1]}")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                err, key = f"is {type(item).__name__}, not an object", ("item", repr(item)[:60])
            else:
                try:
                    c = cdr_from_record(api_record(item))
                except CDRError as e:
                    err, key = str(e), ("flowNo", repr(item.get("flowNo")), str(e))
                else:
                    if c.stop_ms < floor or c.flowno in recent or c.flowno in seen:
                        continue                # already taken, or older than the window
                    seen.add(c.flowno)
                    cdrs.append(c)
                    continue
            # A bad row comes back with every whole-day answer: report it once.
            if key in self._reported_bad:
                continue
            self._reported_bad.add(key)
            bad += 1
            if len(problems) < MAX_PROBLEMS_LISTED:
                what = f"flowNo {item.get('flowNo')}" if isinstance(item, dict) else f"item {i}"
                problems.append(f"{self.name}: {where} {what}: {err}")
        if bad > len(problems):
            problems.append(f"{self.name}: {where}: ... and {bad - len(problems)} more bad rows")
        return cdrs, problems, bad
