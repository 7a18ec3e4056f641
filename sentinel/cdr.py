"""One normalized call attempt, read from VOS3000 column names.

Every source (demo, files, MySQL, Web API) ends here: `cdr_from_record` turns a
mapping keyed by `e_cdr` column names (or the Web API's camelCase names) into a
`CDR`, or raises `CDRError` naming the field that is wrong. Nothing downstream
ever sees a raw row.

The `endreason` column is one mixed integer (see ../shared/reference/vos3000-cdr.md):
three-digit positive values are SIP final responses, 1-25 are VOS3000 server end
reasons, negative values are VOS internal reasons. We keep the raw value and derive
the SIP code from it; the meaning of every value lives in the knowledge base.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Mapping, NamedTuple, Sequence

# Column order of `e_cdr` in a MySQL 8 dump of VOS3000 (a public mysqldump);
# headerless CSV exports use this order. Rows may stop early: only the columns up
# to `endreason` are needed.
E_CDR_COLUMNS = (
    "id", "callere164", "calleraccesse164", "calleee164", "calleeaccesse164",
    "callerip", "callerrtpip", "callercodec", "callergatewayid", "callerproductid",
    "callertogatewaye164", "callertype", "calleeip", "calleertpip", "calleecodec",
    "calleegatewayid", "calleeproductid", "calleetogatewaye164", "calleetype",
    "billingmode", "calllevel", "agentfeetime", "starttime", "stoptime",
    "callerpdd", "calleepdd", "holdtime", "callerareacode", "feetime", "fee", "tax",
    "suitefee", "suitefeetime", "incomefee", "incometax", "customeraccount",
    "customername", "calleeareacode", "agentfee", "agenttax", "agentsuitefee",
    "agentsuitefeetime", "agentaccount", "agentname", "flowno", "softswitchname",
    "softswitchcallid", "callercallid", "calleroriginalcallid", "calleecallid",
    "calleroriginalinfo", "rtpforward", "enddirection", "endreason", "billingtype",
    "cdrlevel", "agentcdr_id", "sipreasonheader", "recordstarttime", "transactionid",
    "flownofirst", "additional", "dynamicValue",
)

# The Web API (GetCdr infoCdrs) spells the same fields in camelCase.
API_ALIASES = {
    "flowNo": "flowno", "start": "starttime", "stop": "stoptime",
    "holdTime": "holdtime", "feeTime": "feetime", "callerE164": "callere164",
    "calleeE164": "calleee164", "callerGateway": "callergatewayid",
    "calleeGateway": "calleegatewayid", "account": "customeraccount",
    "callerip": "callerip", "calleeip": "calleeip", "endDirection": "enddirection",
    "endReason": "endreason", "callerPdd": "callerpdd", "calleePdd": "calleepdd",
    "accountName": "customername",
}

SHORT_CALL_SECONDS = 6
"""An answered call shorter than this counts as a short call: the usual sign of
false answer supervision or of a route that drops audio (talk-time collapse)."""

PREFIX_DIGITS = 4
"""Destination prefix = the first digits of the callee number, international
prefix ('+', '00') removed. Four digits separate countries and most mobile ranges."""

# How exports and dumps spell a missing value.
_NULL_MARKERS = ("", "NULL", "\\N")

_Q850_IN_REASON = re.compile(r"Q\.850\s*;\s*cause\s*=\s*(\d+)", re.IGNORECASE)


class CDRError(ValueError):
    """A row that cannot become a CDR; `field` names the offending column."""

    def __init__(self, field: str, value: Any, problem: str):
        self.field, self.value, self.problem = field, value, problem
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        super().__init__(f"field {field!r}: {problem} (got {shown})")


class CDR(NamedTuple):
    """One call attempt. A NamedTuple, not a dataclass: a frozen dataclass
    takes 2 us to build, a tuple 0.4 us, and ingest builds one per row."""
    flowno: int
    start_ms: int          # answer time, epoch ms UTC (0 when never answered)
    stop_ms: int           # end of the attempt, epoch ms UTC: windows use this
    talk_s: int            # holdtime
    billed_s: int          # feetime
    caller: str
    callee: str
    ingress: str           # callergatewayid: the customer side
    egress: str            # calleegatewayid: the vendor / termination side
    account: str           # customeraccount
    caller_ip: str
    callee_ip: str
    pdd_ms: int | None
    end_direction: int | None
    end_reason: int        # raw, mixed field
    q850: int | None = None  # from a `Reason: Q.850;cause=N` header when present

    @property
    def sip_code(self) -> int | None:
        return sip_code_of(self.end_reason)

    @property
    def answered(self) -> bool:
        return is_answered(self.talk_s, self.end_reason)

    @property
    def prefix(self) -> str:
        return destination_prefix(self.callee)


def sip_code_of(end_reason: int) -> int | None:
    """The SIP final response an end reason stands for, if it is one."""
    return end_reason if 100 <= end_reason <= 699 else None


def is_answered(talk_s: int, end_reason: int) -> bool:
    """Answered = the call got talk time or a 2xx final response.

    Talk time counts even when the end reason is not 200: a call cut for balance
    (end reason 8) after five minutes was answered.
    """
    return talk_s > 0 or 200 <= end_reason <= 299


def destination_prefix(number: str, digits: int = PREFIX_DIGITS) -> str:
    head = number[:digits]
    if head.isdigit() and not head.startswith("00"):
        return head                     # the usual case, cheaply
    n = number.strip()
    if n.startswith("+"):
        n = n[1:]
    elif n.startswith("00"):
        n = n[2:]
    n = "".join(ch for ch in n if ch.isdigit())
    return n[:digits]


def _text(rec: Mapping[str, Any], col: str) -> str:
    v = rec.get(col)
    if v is None:
        return ""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    v = str(v).strip()
    return "" if v in _NULL_MARKERS else v


def _int(rec: Mapping[str, Any], col: str, *, required: bool = False) -> int | None:
    v = rec.get(col)
    if v is None or (isinstance(v, str) and v.strip() in _NULL_MARKERS):
        if required:
            raise CDRError(col, v, "is missing")
        return None
    if isinstance(v, bool):
        raise CDRError(col, v, "is not a number")
    if isinstance(v, int):
        return v
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    try:
        if not isinstance(v, float):
            return int(v)           # exact, even past 2**53 (flownos are bigint)
    except (TypeError, ValueError):
        pass
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise CDRError(col, v, "is not a number") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise CDRError(col, v, "is not a finite number")
    if not f.is_integer():
        raise CDRError(col, v, "is not a whole number")
    return int(f)


def canonical_keys(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Lower-case `e_cdr` names; Web API camelCase names translated."""
    out: dict[str, Any] = {}
    for k, v in rec.items():
        out[API_ALIASES.get(k, k.lower())] = v
    return out


def cdr_from_record(rec: Mapping[str, Any]) -> CDR:
    """Build a CDR from a mapping keyed by `e_cdr` column names.

    Raises CDRError for rows that cannot be trusted: no flowno or stoptime,
    text where a number belongs, negative talk time, a stop before the start.
    Optional columns that older installations lack are simply absent.
    """
    flowno = _int(rec, "flowno", required=True)
    stop = _int(rec, "stoptime", required=True)
    if stop <= 0:
        raise CDRError("stoptime", rec.get("stoptime"), "is not a positive epoch-ms time")
    start = _int(rec, "starttime") or 0
    if start < 0:
        raise CDRError("starttime", rec.get("starttime"), "is negative")
    if start and start > stop:
        raise CDRError("stoptime", rec.get("stoptime"), f"is before starttime {start}")
    talk = _int(rec, "holdtime") or 0
    if talk < 0:
        raise CDRError("holdtime", rec.get("holdtime"), "talk time is negative")
    billed = _int(rec, "feetime") or 0
    if billed < 0:
        raise CDRError("feetime", rec.get("feetime"), "billed time is negative")
    end_reason = _int(rec, "endreason", required=True)
    pdd = None
    for col in ("calleepdd", "callerpdd", "pdd"):   # the egress leg's first
        pdd = _int(rec, col)
        if pdd is not None and pdd < 0:
            raise CDRError(col, rec.get(col), "post-dial delay is negative")
        if pdd:
            break
    reason_header = _text(rec, "sipreasonheader")
    m = _Q850_IN_REASON.search(reason_header) if reason_header else None
    return CDR(
        flowno=flowno,
        start_ms=start,
        stop_ms=stop,
        talk_s=talk,
        billed_s=billed,
        caller=_text(rec, "callere164"),
        callee=_text(rec, "calleee164"),
        ingress=_text(rec, "callergatewayid"),
        egress=_text(rec, "calleegatewayid"),
        account=_text(rec, "customeraccount"),
        caller_ip=_text(rec, "callerip"),
        callee_ip=_text(rec, "calleeip"),
        pdd_ms=pdd or None,
        end_direction=_int(rec, "enddirection"),
        end_reason=end_reason,
        q850=int(m.group(1)) if m else None,
    )


def record_from_cdr(c: CDR) -> dict[str, Any]:
    """The inverse, in `e_cdr` names: used to write demo traffic as VOS exports."""
    return {
        "flowno": c.flowno, "starttime": c.start_ms, "stoptime": c.stop_ms,
        "holdtime": c.talk_s, "feetime": c.billed_s, "callere164": c.caller,
        "calleee164": c.callee, "callergatewayid": c.ingress,
        "calleegatewayid": c.egress, "customeraccount": c.account,
        "callerip": c.caller_ip, "calleeip": c.callee_ip,
        "calleepdd": c.pdd_ms or 0, "enddirection": c.end_direction,
        "endreason": c.end_reason,
        "sipreasonheader": f"Q.850;cause={c.q850}" if c.q850 else "",
    }


class RowParser:
    """Turns positional rows (CSV lines, database tuples) into CDRs, fast.

    The common row takes a flat path with no per-field dict lookups. Anything
    unusual (an empty number, a float, bytes, a failed check) falls back to
    `cdr_from_record`, which gives the same result or the precise CDRError.
    """

    def __init__(self, columns: Sequence[str]):
        self.columns = [API_ALIASES.get(c, c.lower()) for c in columns]
        idx = {}
        for i, c in enumerate(self.columns):
            idx.setdefault(c, i)
        self._ix = tuple(idx.get(c) for c in (
            "flowno", "stoptime", "starttime", "holdtime", "feetime", "endreason",
            "calleepdd", "callerpdd", "enddirection", "callere164", "calleee164",
            "callergatewayid", "calleegatewayid", "customeraccount", "callerip",
            "calleeip", "sipreasonheader"))
        present = [i for i in self._ix if i is not None]
        self.width = max(present) + 1 if present else 0
        # One C call picks every field a CDR needs; a layout missing any of
        # them (old exports, partial headers) always takes the slow path.
        self._pick = operator.itemgetter(*self._ix) if None not in self._ix else None

    def record(self, row: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(self.columns, row))

    def __call__(self, row: Sequence[Any]) -> CDR:
        try:
            c = self._fast(row)
        except (ValueError, TypeError, IndexError, AttributeError):
            c = None
        return c if c is not None else cdr_from_record(self.record(row))

    def _fast(self, row: Sequence[Any]) -> CDR | None:
        if self._pick is None or len(row) < self.width:
            return None                 # short rows and odd layouts: slow path
        (flowno, stop, start, talk, billed, reason, cpdd, rpdd, direction, caller,
         callee, ingress, egress, account, cip, eip, header) = self._pick(row)
        start = int(start) if start else 0
        talk = int(talk) if talk else 0
        billed = int(billed) if billed else 0
        stop = int(stop)
        pdd = int(cpdd) if cpdd else 0
        if not pdd and rpdd:
            pdd = int(rpdd)
        if stop <= 0 or start < 0 or (start and start > stop) or talk < 0 or billed < 0 or pdd < 0:
            return None
        if header and "850" in header:
            return None                 # rare: let the slow path parse the cause
        s = str
        if (type(caller) is not s or type(callee) is not s or type(ingress) is not s
                or type(egress) is not s or type(account) is not s or type(cip) is not s
                or type(eip) is not s):
            return None                 # bytes or NULLs from a driver: slow path
        texts = (caller.strip(), callee.strip(), ingress.strip(), egress.strip(),
                 account.strip(), cip.strip(), eip.strip())
        if "NULL" in texts or "\\N" in texts:
            return None                 # NULL markers: slow path
        return CDR(int(flowno), start, stop, talk, billed, *texts, pdd or None,
                   None if direction in (None, "") else int(direction), int(reason), None)
