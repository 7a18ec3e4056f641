"""Shared helpers for tests that talk to real VOS3000-shaped parts.

- `mariadb` (session fixture): the MariaDB server at 127.0.0.1:3306 (root,
  empty password; SENTINEL_TEST_MARIADB_HOST / _PORT to change). Unreachable
  -> the test is skipped locally, but fails when CI=true, so CI can never go
  green by skipping. It creates a throwaway
  database `sentinel_test_<pid>` for the session and drops it, and every
  database and user made through it, at the end.
- `vos_db` (function fixture): a fresh database of its own for one test
  (`sentinel_test_<pid>_<n>`), dropped after the test.
- `create_cdr_table` / `make_rows` / `insert_rows`: VOS3000 `e_cdr` tables
  (MyISAM, utf8_bin, flowno primary key, the indexes of a real install) in
  the schema variants seen in the field, and rows to fill them.
- `TcpProxy`: a relay on a free local port to stand in for a MySQL server
  that goes away and comes back (the shared server itself is never stopped).
- `FakeVosApi`: a ThreadingHTTPServer answering as the VOS3000 Web API
  (GetCdr, GetAllCustomers), with the failure modes seen in the field.

Import what you use into the test module: `from tests.vos_fixtures import mariadb, vos_db`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest

from sentinel.cdr import E_CDR_COLUMNS

# Overridable for a server elsewhere (and for testing the skip/fail logic itself).
MARIADB_HOST = os.environ.get("SENTINEL_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("SENTINEL_TEST_MARIADB_PORT", "3306"))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def admin_connect(database: str | None = None, **kw):
    import pymysql
    return pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="",
                           database=database, autocommit=True, connect_timeout=3,
                           charset="utf8mb4", **kw)


class MariaDB:
    """The reachable server; makes throwaway databases and users, drops them at the end."""

    def __init__(self):
        self.prefix = f"sentinel_test_{os.getpid()}"
        self.conn = admin_connect()
        self._n = itertools.count(1)
        self.databases: list[str] = []
        self.users: list[str] = []
        self.database = self.new_database(self.prefix)

    def execute(self, sql: str, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def new_database(self, name: str | None = None) -> str:
        name = name or f"{self.prefix}_{next(self._n)}"
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8 COLLATE utf8_bin")
        self.databases.append(name)
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")
        if name in self.databases:
            self.databases.remove(name)

    def create_read_only_user(self, database: str, password: str = "ro-secret") -> str:
        """A user with SELECT on `database` and nothing else."""
        user = f"sntl_ro_{os.getpid()}_{next(self._n)}"
        self.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        self.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        self.execute(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'")
        self.users.append(user)
        return user

    def close(self) -> None:
        for db in list(self.databases):
            try:
                self.drop_database(db)
            except Exception:
                pass
        for user in self.users:
            try:
                self.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            except Exception:
                pass
        self.conn.close()


@pytest.fixture(scope="session")
def mariadb():
    """The MariaDB server, or skip (locally) / fail (CI=true) when it is unreachable."""
    try:
        server = MariaDB()
    except Exception as e:           # ImportError (no PyMySQL) or a connection error
        msg = f"MariaDB is not reachable at {MARIADB_HOST}:{MARIADB_PORT}: {e}"
        if in_ci():
            pytest.fail(msg + " (CI=true: the MariaDB tests must run, not skip)")
        pytest.skip(msg)
    yield server
    server.close()


@pytest.fixture
def vos_db(mariadb):
    """A fresh database for one test: returns its name."""
    name = mariadb.new_database()
    yield name
    mariadb.drop_database(name)


# -- VOS3000 tables -----------------------------------------------------------

_VARCHAR64 = ("callere164 calleraccesse164 calleee164 calleeaccesse164 callerip callerrtpip "
              "callercodec callergatewayid callerproductid callertogatewaye164 calleeip "
              "calleertpip calleecodec calleegatewayid calleeproductid calleetogatewaye164 "
              "callerareacode calleeareacode softswitchname callercallid calleroriginalcallid "
              "calleecallid").split()
_VARCHAR255 = "customeraccount customername agentaccount agentname calleroriginalinfo".split()
_INT = ("callertype calleetype billingmode calllevel agentfeetime callerpdd calleepdd holdtime "
        "feetime suitefeetime agentsuitefeetime rtpforward enddirection endreason billingtype "
        "cdrlevel agentcdr_id").split()
_BIGINT = "starttime stoptime softswitchcallid recordstarttime flownofirst".split()
_DOUBLE = "fee tax suitefee incomefee incometax agentfee agenttax agentsuitefee".split()

# Column order of a MySQL 8 dump of e_cdr.
_ORDER = E_CDR_COLUMNS

# Schema variants seen in the field.
VARIANTS = {
    # A current install: every column of the reference dump.
    "current": {"drop": (), "add": ()},
    # An older install: no sipreasonheader, no transactionid.
    "old": {"drop": ("sipreasonheader", "transactionid"), "add": ()},
    # An older one still: H.323 gateway ids, a single pdd column, feeprefix...
    "legacy": {"drop": ("sipreasonheader", "transactionid", "callerpdd", "calleepdd",
                        "dynamicValue"),
               "add": ("callergatewayh323id", "calleegatewayh323id", "pdd", "feeprefix",
                       "softswitchdn", "calleebilling", "subcdr_id")},
}
_ADDED_TYPES = {"callergatewayh323id": "varchar(64)", "calleegatewayh323id": "varchar(64)",
                "pdd": "int(11)", "feeprefix": "varchar(64)", "softswitchdn": "varchar(64)",
                "calleebilling": "int(11)", "subcdr_id": "bigint(20)"}


def _column_type(col: str) -> str:
    if col == "id":
        return "int(11) NOT NULL"
    if col == "flowno":
        return "bigint(20) NOT NULL"
    if col in _VARCHAR64 or col in ("sipreasonheader", "transactionid"):
        return "varchar(64) DEFAULT NULL"
    if col in _VARCHAR255:
        return "varchar(255) DEFAULT NULL"
    if col in _INT:
        return "int(11) DEFAULT NULL"
    if col in _BIGINT:
        return "bigint(20) DEFAULT NULL"
    if col in _DOUBLE:
        return "double DEFAULT NULL"
    if col == "additional":
        return "blob"
    if col == "dynamicValue":
        return "longtext DEFAULT NULL"
    return _ADDED_TYPES[col] + " DEFAULT NULL"


def table_columns(variant: str = "current") -> list[str]:
    v = VARIANTS[variant]
    return [c for c in _ORDER if c not in v["drop"]] + list(v["add"])


def create_cdr_table(conn, database: str, table: str, variant: str = "current", *,
                     text_numbers: tuple[str, ...] = ()) -> list[str]:
    """CREATE an e_cdr-shaped table; `text_numbers` makes those numeric columns
    varchar (to store the garbage some broken imports leave). Returns its columns."""
    cols = table_columns(variant)
    defs = []
    for c in cols:
        t = "varchar(64) DEFAULT NULL" if c in text_numbers else _column_type(c)
        defs.append(f"`{c}` {t}")
    idx = [f"KEY `{table}_{c}` (`{c}`)" for c in
           ("callere164", "callergatewayid", "starttime", "stoptime", "customeraccount")]
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{database}`.`{table}`")
        cur.execute(f"CREATE TABLE `{database}`.`{table}` ({', '.join(defs)}, "
                    f"PRIMARY KEY (`flowno`), {', '.join(idx)}) "
                    f"ENGINE=MyISAM DEFAULT CHARSET=utf8 COLLATE=utf8_bin")
    return cols


def day_table(ms: int, tz: str = "UTC") -> str:
    return f"e_cdr_{datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)):%Y%m%d}"


def utc_ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc).timestamp() * 1000)


_CODES = (200, 200, 200, 200, 200, 200, 487, 486, 480, 503, 404, 408, -9, 8)


def make_rows(n: int, *, first_flowno: int, stop_from_ms: int, stop_to_ms: int,
              seed: int = 1) -> list[dict]:
    """`n` plausible VOS3000 rows (e_cdr names), stoptimes spread evenly over
    [stop_from_ms, stop_to_ms), flownos from `first_flowno` up."""
    r = random.Random(seed)
    span = max(1, stop_to_ms - stop_from_ms)
    out = []
    for i in range(n):
        stop = stop_from_ms + (span * i) // max(1, n)
        code = _CODES[r.randrange(len(_CODES))]
        talk = r.randrange(1, 600) if code == 200 else 0
        start = stop - talk * 1000 if talk else stop
        vendor = f"VEND-{r.randrange(1, 25):02d}"
        acc = f"ACC-{1000 + r.randrange(1, 41)}"
        out.append({
            "id": first_flowno + i, "flowno": first_flowno + i,
            "callere164": f"1{r.randrange(10**9, 10**10)}", "calleraccesse164": "",
            "calleee164": f"44{r.randrange(10**9, 10**10)}", "calleeaccesse164": "",
            # callerip: the signalling address of the calling (customer) gateway
            "callerip": f"198.51.100.{int(acc[4:]) - 1000}", "callerrtpip": "",
            "callercodec": "G729", "callergatewayid": f"CUST-{acc[4:]}-A",
            "callerproductid": "", "callertogatewaye164": "", "callertype": 0,
            "calleeip": f"192.0.2.{r.randrange(1, 250)}", "calleertpip": "",
            "calleecodec": "G729", "calleegatewayid": vendor, "calleeproductid": "",
            "calleetogatewaye164": "", "calleetype": 0, "billingmode": 1, "calllevel": 5,
            "agentfeetime": 0, "starttime": start, "stoptime": stop,
            "callerpdd": 0, "calleepdd": r.randrange(800, 6000), "holdtime": talk,
            "callerareacode": "", "feetime": (talk + 59) // 60 * 60, "fee": 0.01 * talk,
            "tax": 0.0, "suitefee": 0.0, "suitefeetime": 0, "incomefee": 0.0,
            "incometax": 0.0, "customeraccount": acc, "customername": acc,
            "calleeareacode": "", "agentfee": 0.0, "agenttax": 0.0, "agentsuitefee": 0.0,
            "agentsuitefeetime": 0, "agentaccount": "", "agentname": "",
            "softswitchname": "vos", "softswitchcallid": first_flowno + i,
            "callercallid": f"{first_flowno + i}@198.51.100.1", "calleroriginalcallid": "",
            "calleecallid": "", "calleroriginalinfo": "", "rtpforward": 1,
            "enddirection": 0 if code == 200 else 1, "endreason": code, "billingtype": 0,
            "cdrlevel": 0, "agentcdr_id": 0,
            "sipreasonheader": "Q.850;cause=17" if code == 486 else "",
            "recordstarttime": start, "transactionid": "", "flownofirst": 0,
            "additional": None, "dynamicValue": None,
        })
    return out


def insert_rows(conn, database: str, table: str, rows: list[dict], *,
                chunk: int = 2000) -> None:
    """Multi-row INSERTs of the columns the table has (rows may carry more)."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s", (database, table))
        have = {r[0] for r in cur.fetchall()}
        cols = [c for c in rows[0] if c in have]
        sql = (f"INSERT INTO `{database}`.`{table}` ({', '.join(f'`{c}`' for c in cols)}) "
               f"VALUES ({', '.join(['%s'] * len(cols))})")
        for i in range(0, len(rows), chunk):
            cur.executemany(sql, [tuple(r.get(c) for c in cols) for r in rows[i:i + chunk]])


def table_flownos(conn, database: str, *tables: str) -> set[int]:
    out: set[int] = set()
    with conn.cursor() as cur:
        for t in tables:
            cur.execute(f"SELECT flowno FROM `{database}`.`{t}`")
            out |= {r[0] for r in cur.fetchall()}
    return out


def store_flownos(store, source: str | None = None) -> list[int]:
    sql, args = "SELECT flowno FROM cdr", ()
    if source:
        sql, args = sql + " WHERE source = ?", (source,)
    return [r[0] for r in store.db.conn.execute(sql, args)]


def drain(source, store, now_ms: int):
    """One pull ingested exactly as sentinel/app.py does; returns (received, new, problems)."""
    received = new = 0
    problems: list[str] = []
    for batch in source.pull(store, now_ms):
        res = store.ingest(source.name, batch.cdrs, watermark=batch.watermark,
                           file_mark=batch.file_mark)
        received += res.received
        new += res.new
        problems += batch.problems
    return received, new, problems


# -- a MySQL server that can go away ---------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpProxy:
    """Relays 127.0.0.1:<port> to a target; `stop()` refuses new connections and
    cuts the open ones (as a server restart would), `start()` brings it back on
    the same port, `cut()` cuts the open ones but keeps listening, and
    `cut_after(n)` cuts them once n more bytes went from the server to the
    client: a break in the middle of a result, whatever the socket buffers hold."""

    def __init__(self, target_host: str = MARIADB_HOST, target_port: int = MARIADB_PORT):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.attempts = 0        # connections a client opened to the proxy
        self.accepted = 0        # of those, the ones relayed to the target
        self._budget: int | None = None   # server-to-client bytes left before a cut

    def start(self) -> "TcpProxy":
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        ls.settimeout(0.05)
        self._listener = ls
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept_loop, args=(ls,), daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self, ls: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self.attempts += 1
            try:
                upstream = socket.create_connection(self.target, timeout=3)
                upstream.settimeout(None)
                client.settimeout(None)
            except OSError:
                client.close()
                continue
            self.accepted += 1
            with self._lock:
                self._socks |= {client, upstream}
            for a, b, down in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._relay, args=(a, b, down), daemon=True).start()
        ls.close()

    def _relay(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                exhausted = False
                if downstream:
                    with self._lock:
                        if self._budget is not None:
                            data = data[:self._budget]
                            self._budget -= len(data)
                            exhausted = self._budget == 0
                            if exhausted:
                                self._budget = None
                if data:
                    dst.sendall(data)
                if exhausted:
                    self.cut()
                    break
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def cut_after(self, nbytes: int) -> None:
        with self._lock:
            self._budget = nbytes

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            self._close(s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        self.cut()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the VOS3000 Web API -------------------------------------------------------

class FakeVosApi:
    """Answers POST /external/server/GetCdr and /GetAllCustomers like VOS3000.

    `cdrs` holds infoCdrs items (camelCase); GetCdr returns those of the
    requested accounts whose day (local date of `start`, or of `stop` for an
    unanswered call, as the daily tables go) is within beginTime..endTime.
    `mode` picks the answer: "ok", "wrapped" (the object inside a one-element
    array), "retcode" (non-zero retCode with an exception text), "invalid_json",
    "http500" or "slow" (answers after `slow_s` seconds).
    """

    def __init__(self, tz: str = "UTC"):
        self.tz = ZoneInfo(tz)
        self.cdrs: list[dict] = []
        self.customers: list[str] = []
        self.mode = "ok"
        self.slow_s = 3.0
        self.requests: list[tuple[str, dict]] = []
        self._release = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):       # keep pytest output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                method = self.path.rsplit("/", 1)[-1]
                try:
                    body = json.loads(raw.decode("utf-8") or "{}")
                except ValueError:
                    body = {"_unparsable": raw.decode("utf-8", "replace")}
                api.requests.append((method, body))
                status, payload = api.answer(self.path, body)
                if api.mode == "slow":
                    api._release.wait(api.slow_s)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html;charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:                # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def calls(self, method: str) -> list[dict]:
        return [b for m, b in self.requests if m == method]

    def day_of(self, cdr: dict) -> str:
        ms = cdr.get("start") or cdr.get("stop")
        return datetime.fromtimestamp(ms / 1000, self.tz).strftime("%Y%m%d")

    def answer(self, path: str, body: dict):
        if self.mode == "http500":
            return 500, b"<html><body>500 Internal Server Error</body></html>"
        if self.mode == "invalid_json":
            return 200, b'{"retCode": 0, "infoCdrs": [{"flowNo": 1,'
        if self.mode == "retcode":
            return 200, {"retCode": -10033, "exception": "Date range too large"}
        if path == "/external/server/GetAllCustomers":
            doc = {"retCode": 0, "infoCustomerBriefs": [
                {"account": a, "money": 0.0, "limitMoney": 100.0} for a in self.customers]}
        elif path == "/external/server/GetCdr":
            accounts = body.get("accounts")
            begin, end = body.get("beginTime"), body.get("endTime")
            if not accounts or not isinstance(accounts, list):
                return 200, {"retCode": -10001, "exception": "accounts is required"}
            if not (isinstance(begin, str) and len(begin) == 8 and
                    isinstance(end, str) and len(end) == 8):
                return 200, {"retCode": -10002, "exception": "beginTime/endTime: yyyyMMdd"}
            wanted = set(accounts)
            # Garbage items (not objects) are passed through, as a broken server would.
            out = [c for c in self.cdrs if not isinstance(c, dict)]
            out += [c for c in self.cdrs if isinstance(c, dict) and c.get("account") in wanted
                   and begin <= self.day_of(c) <= end
                   and (not body.get("callerGateway") or c.get("callerGateway") == body["callerGateway"])
                   and (not body.get("calleeGateway") or c.get("calleeGateway") == body["calleeGateway"])]
            doc = {"retCode": 0, "exception": "", "infoCdrs": out}
        else:
            return 404, b"not found"
        return 200, ([doc] if self.mode == "wrapped" else doc)

    def start(self) -> "FakeVosApi":
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeVosApi":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def api_cdr(flowno: int, stop_ms: int, *, account: str = "ACC-1", talk_s: int = 30,
            end_reason: int = 200, **extra) -> dict:
    """One infoCdrs item with the manual's field names."""
    start = stop_ms - talk_s * 1000 if talk_s else 0
    d = {"flowNo": flowno, "account": account, "accountName": f"{account} Ltd",
         "callerE164": "15551230000", "callerAccessE164": "15551230000",
         "callerToGatewayE164": "15551230000", "callerGateway": f"CUST-{account}",
         "callerip": "198.51.100.7", "calleeE164": "4420790000", "calleeAccessE164": "4420790000",
         "calleeToGatewayE164": "4420790000", "calleeGateway": "VEND-01",
         "calleeip": "192.0.2.9", "start": start, "stop": stop_ms, "holdTime": talk_s,
         "feeTime": (talk_s + 59) // 60 * 60, "fee": 0.02, "feePrefix": "44",
         "callLevel": 5, "billingMode": 1, "endDirection": 0 if talk_s else 1,
         "endReason": end_reason, "agentAccount": "", "agentName": "", "agentFee": 0,
         "suiteFee": 0, "suiteFeeTime": 0}
    d.update(extra)
    return d
