"""Sentinel's knowledge base: SIP codes, VOS3000 end reasons, Q.850 causes, VQManager states.

The facts live in TOML files next to this module (package data), each with a ``[meta]``
table naming its sources.  ``load_knowledge()`` reads them once (cached) and answers:

    kb = load_knowledge()
    kb.sip(503).phrase                 # "Service Unavailable"
    kb.end_reason(8).name              # "Balance Insufficient" (server end reason)
    kb.end_reason(486).kind            # "sip"  (the endreason field is one mixed integer)
    kb.end_reason(-9).name             # "Call from an unauthorized IP"
    kb.q850(17).sip                    # 486 (RFC 3398 7.2.4.1)
    kb.nearest_sip("48")               # 480..489

Users can extend or override entries with their own TOML files of the same shape
(``[sip.NNN]``, ``[end_reason."N"]``, ``[q850.N]``, ``[vqmanager.N]``), passed as
``load_knowledge(extra_files=[...])``: fields set there replace the built-in ones one by
one, unknown codes are added.  A broken file raises ``KnowledgeError`` naming the file
(and the line, for TOML syntax errors and where the offending table can be found).
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "load_knowledge", "Knowledge", "KnowledgeError",
    "SipCode", "EndReason", "Q850Cause", "VQStatus",
]

BUILTIN_FILES = ("sip_codes.toml", "q850.toml", "end_reasons.toml", "vqmanager.toml")

RESULTS = ("answered", "busy", "rejected", "timeout", "cancelled", "failed", "unavailable",
           "provisional", "redirected")
FAILOVER = ("continue", "stop")
END_REASON_KINDS = ("sip", "server", "internal", "unknown")


class KnowledgeError(Exception):
    """A knowledge file is missing, is not valid TOML, or has entries of the wrong shape."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


# --------------------------------------------------------------------------- records

@dataclass(frozen=True)
class SipCode:
    code: int
    phrase: str
    rfc: str
    registered: bool
    klass: str                    # "4xx"
    result: str                   # answered, busy, rejected, timeout, cancelled, failed,
                                  # unavailable, provisional (1xx), redirected (3xx)
    meaning: str
    fixes: tuple[str, ...]
    asr_success: bool
    ner_effective: bool
    seer_effective: bool
    isa: bool
    failover: str                 # "continue" or "stop"
    q850_out: int | None          # RFC 3398 8.2.6.1
    q850_in: tuple[int, ...]      # Q.850 causes that map to this code (RFC 3398 7.2.4.1)
    failover_note: str = ""
    q850_note: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.code} {self.phrase}"


@dataclass(frozen=True)
class EndReason:
    raw: int
    kind: str                     # "sip", "server", "internal" or "unknown"
    name: str
    category: str                 # server/internal: seed 004 category ("Billing", "Security",
                                  # "Unknown"...); sip: the call result, capitalised ("Busy")
    meaning: str
    fixes: tuple[str, ...]
    billable: bool | None
    sip: SipCode | None
    q850: int | None
    impact: str = ""

    @property
    def label(self) -> str:
        return f"{self.raw} {self.name}"


@dataclass(frozen=True)
class Q850Cause:
    cause: int
    name: str
    meaning: str
    sip: int | None
    effective: bool
    klass: str = ""               # Q.850 cause class ("normal event", ...)
    sip_by_class: bool = False    # True when RFC 3398 does not list the cause (class default)
    sip_note: str = ""


@dataclass(frozen=True)
class VQStatus:
    code: int
    name: str
    description: str
    group: str = ""


# --------------------------------------------------------------------------- schema

def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _one_of(*allowed: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in allowed


def _int_in(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and lo <= v <= hi


# field -> (check, description of the expected type)
_SCHEMA: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "sip": {
        "phrase": (_is_str, "a string"),
        "rfc": (_is_str, "a string"),
        "registered": (_is_bool, "true or false"),
        "result": (_one_of(*RESULTS), "one of " + ", ".join(RESULTS)),
        "meaning": (_is_str, "a string"),
        "fixes": (_is_str_list, "a list of strings"),
        "asr_success": (_is_bool, "true or false"),
        "ner_effective": (_is_bool, "true or false"),
        "seer_effective": (_is_bool, "true or false"),
        "isa": (_is_bool, "true or false"),
        "failover": (_one_of(*FAILOVER), '"continue" or "stop"'),
        "failover_note": (_is_str, "a string"),
        "q850_out": (_int_in(0, 127), "a Q.850 cause 0..127"),
        "q850_note": (_is_str, "a string"),
        "aliases": (_is_str_list, "a list of strings"),
    },
    "q850": {
        "name": (_is_str, "a string"),
        "class": (_is_str, "a string"),
        "meaning": (_is_str, "a string"),
        "sip": (_int_in(100, 699), "a SIP code 100..699"),
        "sip_by_class": (_is_bool, "true or false"),
        "sip_note": (_is_str, "a string"),
        "effective": (_is_bool, "true or false"),
    },
    "end_reason": {
        "name": (_is_str, "a string"),
        "category": (_is_str, "a string"),
        "impact": (_is_str, "a string"),
        "meaning": (_is_str, "a string"),
        "fixes": (_is_str_list, "a list of strings"),
        "billable": (_is_bool, "true or false"),
        "sip": (_int_in(100, 699), "a SIP code 100..699"),
        "q850": (_int_in(0, 127), "a Q.850 cause 0..127"),
    },
    "vqmanager": {
        "name": (_is_str, "a string"),
        "group": (_is_str, "a string"),
        "description": (_is_str, "a string"),
    },
}

# Fields every built-in entry must carry (a missing one is a bug in the shipped data).
_BUILTIN_REQUIRED = {
    "sip": ("phrase", "rfc", "registered", "result", "meaning", "fixes", "asr_success",
            "ner_effective", "seer_effective", "isa", "failover"),
    "q850": ("name", "class", "meaning", "sip_by_class", "effective"),
    "end_reason": ("name", "category", "impact", "meaning", "fixes"),
    "vqmanager": ("name", "description"),
}
# Fields a user file must give when it adds a new entry (the rest gets defaults).
_NEW_REQUIRED = {"sip": ("phrase",), "q850": ("name",), "end_reason": ("name",),
                 "vqmanager": ("name",)}

_KEY_RANGE = {"sip": (100, 699), "q850": (0, 127), "vqmanager": (0, 10**9)}

# Q.850 cause classes and the RFC 3398 class defaults used for unlisted causes.
_Q850_CLASSES = (
    (0, 31, "normal event", 480),
    (32, 47, "resource unavailable", 503),
    (48, 63, "service or option not available", 488),
    (64, 79, "service or option not implemented", 501),
    (80, 95, "invalid message", 400),
    (96, 111, "protocol error", 400),
    (112, 127, "interworking", 500),
)

_SEER = frozenset({200, 480, 486, 600, 603})
_ISA = frozenset({408, 500, 503, 504})
_SEED001_RESULT = {200: "answered", 486: "busy", 600: "busy", 403: "rejected", 603: "rejected",
                   408: "timeout", 487: "cancelled", 480: "unavailable", 503: "unavailable"}


def q850_class(cause: int) -> tuple[str, int | None]:
    """(Q.850 class name, RFC 3398 class-default SIP code) of a cause value."""
    for lo, hi, name, sip in _Q850_CLASSES:
        if lo <= cause <= hi:
            return name, sip
    return "unknown", None


def _sip_class_defaults(code: int) -> dict[str, Any]:
    """Field values a SIP code gets when nothing more specific is known (new codes in user
    files, codes never seen before).  RFC 3261 8.1.3.2: an unknown code is treated like
    the x00 code of its class."""
    k = code // 100
    if k == 1:
        result = "provisional"
    elif k == 2:
        result = "answered"
    elif k == 3:
        result = "redirected"
    else:
        result = _SEED001_RESULT.get(code, "failed")
    return {
        "rfc": "", "registered": False, "result": result, "meaning": "", "fixes": [],
        "asr_success": k == 2, "ner_effective": k == 2 or code in _SEER,
        "seer_effective": code in _SEER, "isa": code in _ISA,
        "failover": "stop" if k in (2, 6) else "continue",
        "failover_note": "", "q850_note": "", "aliases": [],
    }


# --------------------------------------------------------------------------- loading

_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def _parse(text: str, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.search(msg)
        line = int(m.group(1)) if m else None
        where = f" at line {m.group(1)}, column {m.group(2)}" if m else ""
        reason = _TOML_POS.sub("", msg).strip()
        raise KnowledgeError(f"{name}: TOML syntax error{where}: {reason}",
                             path=name, line=line) from exc


def _header_line(text: str, section: str, key: str) -> int | None:
    """Best-effort line number of the table header ``[section.key]`` in ``text``."""
    sec, k = re.escape(section), re.escape(key)
    patterns = [rf"^[ \t]*\[[ \t]*{sec}[ \t]*\]", rf"^[ \t]*\[[ \t]*{sec}\b"]
    if key:
        patterns.insert(
            0, rf"^[ \t]*\[[ \t]*{sec}[ \t]*\.[ \t]*(?:\"{k}\"|'{k}'|{k})[ \t]*\]")
    for pat in patterns:
        m = re.search(pat, text, re.M)
        if m:
            return text.count("\n", 0, m.start()) + 1
    return None


class _Source:
    def __init__(self, name: str, text: str, builtin: bool):
        self.name = name
        self.text = text
        self.builtin = builtin

    def fail(self, msg: str, section: str | None = None, key: str | None = None) -> None:
        line = _header_line(self.text, section, key) if section and key is not None else None
        where = f" (line {line})" if line else ""
        raise KnowledgeError(f"{self.name}{where}: {msg}", path=self.name, line=line)


def _merge(src: _Source, doc: dict[str, Any], tables: dict[str, dict[int, dict[str, Any]]],
           origin: dict[tuple[str, int], str]) -> None:
    for section, entries in doc.items():
        if section == "meta":
            if not isinstance(entries, dict):
                src.fail("[meta] must be a table")
            continue
        if section not in _SCHEMA:
            src.fail(f"unknown table [{section}]; expected sip, q850, end_reason, vqmanager or meta",
                     section, "")
        if not isinstance(entries, dict):
            src.fail(f"[{section}] must hold tables such as [{section}.N]")
        schema = _SCHEMA[section]
        for key, fields in entries.items():
            label = f'[{section}."{key}"]' if section == "end_reason" else f"[{section}.{key}]"
            try:
                num = int(key.strip())
            except ValueError:
                src.fail(f"{label}: the key must be an integer code", section, key)
            if section in _KEY_RANGE:
                lo, hi = _KEY_RANGE[section]
                if not lo <= num <= hi:
                    src.fail(f"{label}: code out of range {lo}..{hi}", section, key)
            if section == "end_reason" and 100 <= num <= 699:
                src.fail(f"{label}: 100..699 are SIP codes in the endreason field; "
                         f"describe them as [sip.{num}] instead", section, key)
            if not isinstance(fields, dict):
                src.fail(f"{label} must be a table of fields", section, key)
            for fname, value in fields.items():
                if fname not in schema:
                    src.fail(f"{label}: unknown field {fname!r}; known fields: "
                             + ", ".join(schema), section, key)
                check, expected = schema[fname]
                if not check(value):
                    src.fail(f"{label}: field {fname!r} must be {expected}, got {value!r}",
                             section, key)
            current = tables[section].get(num)
            if current is None:
                needed = _BUILTIN_REQUIRED[section] if src.builtin else _NEW_REQUIRED[section]
                missing = [f for f in needed if f not in fields]
                if missing:
                    what = "built-in entry" if src.builtin else "new entry"
                    src.fail(f"{label}: {what} lacks {', '.join(missing)}", section, key)
                tables[section][num] = dict(fields)
                origin[(section, num)] = src.name
            else:
                current.update(fields)          # field by field override


@dataclass(frozen=True)
class _Loaded:
    tables: dict[str, dict[int, dict[str, Any]]]
    sources: dict[str, str]


def _read_all(extra_files: Iterable[str | PathLike[str]]) -> _Loaded:
    tables: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in _SCHEMA}
    origin: dict[tuple[str, int], str] = {}
    sources: dict[str, str] = {}
    pkg = resources.files(__name__)
    for fname in BUILTIN_FILES:
        try:
            text = pkg.joinpath(fname).read_text(encoding="utf-8")
        except OSError as exc:
            raise KnowledgeError(f"{fname}: cannot read built-in knowledge file: {exc}",
                                 path=fname) from exc
        doc = _parse(text, fname)
        _merge(_Source(fname, text, builtin=True), doc, tables, origin)
        sources[fname] = str(doc.get("meta", {}).get("sources", "")).strip()
    for path in extra_files:
        p = Path(path)
        name = str(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KnowledgeError(f"{name}: cannot read knowledge file: {exc}", path=name) from exc
        doc = _parse(text, name)
        _merge(_Source(name, text, builtin=False), doc, tables, origin)
        meta = doc.get("meta", {})
        sources[name] = str(meta.get("sources", "")).strip() if isinstance(meta, dict) else ""
    return _Loaded(tables, sources)


# --------------------------------------------------------------------------- the API

class Knowledge:
    """Read-only view over the merged knowledge files.  Build it with ``load_knowledge()``."""

    def __init__(self, loaded: _Loaded):
        t = loaded.tables
        self.sources: dict[str, str] = dict(loaded.sources)

        self._q850: dict[int, Q850Cause] = {}
        for cause, f in sorted(t["q850"].items()):
            klass, class_sip = q850_class(cause)
            sip = f.get("sip")
            # a user-added cause without a mapping gets its class default
            by_class = bool(f.get("sip_by_class", "sip" not in f))
            if sip is None and by_class and class_sip is not None:
                sip = class_sip
            self._q850[cause] = Q850Cause(
                cause=cause, name=f["name"], meaning=f.get("meaning", ""), sip=sip,
                effective=bool(f.get("effective", False)), klass=f.get("class", klass),
                sip_by_class=by_class, sip_note=f.get("sip_note", ""))

        q850_in: dict[int, list[int]] = {}
        for c in self._q850.values():
            if c.sip is not None:
                q850_in.setdefault(c.sip, []).append(c.cause)

        self._sip: dict[int, SipCode] = {}
        for code, f in sorted(t["sip"].items()):
            self._sip[code] = self._make_sip(code, {**_sip_class_defaults(code), **f},
                                             tuple(sorted(q850_in.get(code, ()))))

        self._end: dict[int, EndReason] = {}
        for raw, f in sorted(t["end_reason"].items()):
            sip_code = f.get("sip")
            self._end[raw] = EndReason(
                raw=raw, kind="server" if raw > 0 else ("internal" if raw < 0 else "unknown"),
                name=f["name"], category=f.get("category", "Unknown"),
                meaning=f.get("meaning", ""), fixes=tuple(f.get("fixes", ())),
                billable=f.get("billable"),
                sip=self.sip_or_class(sip_code) if sip_code is not None else None,
                q850=f.get("q850"), impact=f.get("impact", ""))

        self._vq: dict[int, VQStatus] = {
            code: VQStatus(code=code, name=f["name"], description=f.get("description", ""),
                           group=f.get("group", ""))
            for code, f in sorted(t["vqmanager"].items())}

    @staticmethod
    def _make_sip(code: int, f: dict[str, Any], q850_in: tuple[int, ...]) -> SipCode:
        return SipCode(
            code=code, phrase=f["phrase"], rfc=f["rfc"], registered=f["registered"],
            klass=f"{code // 100}xx", result=f["result"], meaning=f["meaning"],
            fixes=tuple(f["fixes"]), asr_success=f["asr_success"],
            ner_effective=f["ner_effective"], seer_effective=f["seer_effective"],
            isa=f["isa"], failover=f["failover"], q850_out=f.get("q850_out"),
            q850_in=q850_in, failover_note=f.get("failover_note", ""),
            q850_note=f.get("q850_note", ""), aliases=tuple(f.get("aliases", ())))

    # ---- SIP
    def sip(self, code: int) -> SipCode | None:
        """The SIP code, or None when it is not in the knowledge base."""
        try:
            return self._sip.get(int(code))
        except (TypeError, ValueError):
            return None

    def sip_codes(self) -> list[SipCode]:
        """Every known code (registered and not), sorted by code."""
        return list(self._sip.values())

    def sip_or_class(self, code: int) -> SipCode:
        """The SIP code if known, else a stand-in built from its class (RFC 3261 8.1.3.2:
        an unrecognised response is handled like the x00 of its class).  100..699 only."""
        code = int(code)
        known = self._sip.get(code)
        if known is not None:
            return known
        if not 100 <= code <= 699:
            raise ValueError(f"{code} is not a SIP response code (100..699)")
        base = self._sip.get(code // 100 * 100)
        f = _sip_class_defaults(code)
        f["phrase"] = f"Unknown {code // 100}xx response"
        f["meaning"] = (f"{code} is not a known SIP response code; SIP handles an unknown "
                        f"code like {code // 100}00"
                        + (f" {base.phrase}." if base else "."))
        f["fixes"] = ["Find which gateway sends this code (callee gateway of the CDRs) "
                      "and ask its operator what it means"]
        f["rfc"] = "RFC 3261 section 8.1.3.2 (unknown codes)"
        return self._make_sip(code, f, ())

    def nearest_sip(self, text: str, limit: int = 12) -> list[SipCode]:
        """Codes close to what the user typed, for "did you mean" answers.

        Digits: the codes sharing the longest prefix with the text ("48" -> 480..489,
        "4" -> the 4xx), registered ones first; when the text is not itself a prefix of
        some code ("4888", "499") the closest codes one level up follow, nearest first.
        Words: codes whose phrase or aliases contain every word ("busy" -> 486, 600).
        """
        if limit <= 0:
            return []
        t = str(text).strip().lower()
        digits = t.rstrip("x")
        if digits.isdigit():
            return self._nearest_digits(digits, limit)
        words = [w for w in re.split(r"[^a-z0-9]+", t) if w]
        if not words:
            return []
        hits = []
        for c in self._sip.values():
            hay = " ".join((c.phrase, *c.aliases)).lower()
            if all(w in hay for w in words):
                hits.append(c)
        hits.sort(key=lambda c: (not c.registered, c.code))
        return hits[:limit]

    def _nearest_digits(self, digits: str, limit: int) -> list[SipCode]:
        def common(code: int) -> int:
            s, n = str(code), 0
            for a, b in zip(s, digits):
                if a != b:
                    break
                n += 1
            return n

        target = int((digits + "00")[:3]) if len(digits) < 3 else int(digits[:3])
        codes = list(self._sip.values())
        best = max((common(c.code) for c in codes), default=0)

        def order(c: SipCode) -> tuple:
            if len(digits) < 3:      # a prefix: list in code order
                return (not c.registered, c.code)
            return (not c.registered, abs(c.code - target), c.code)

        level = sorted((c for c in codes if common(c.code) == best), key=order)
        if best == len(digits) or len(level) >= limit:
            return level[:limit]
        # the text is not a prefix of any code: add the closest ones a level up
        up = sorted((c for c in codes if common(c.code) == best - 1), key=order) if best else \
            sorted(codes, key=lambda c: (not c.registered, abs(c.code - target), c.code))
        return (level + up)[:limit]

    # ---- end reasons
    def end_reason(self, raw: int | str | None) -> EndReason:
        """Decode the VOS3000 ``endreason`` field.  Never returns None.

        100..699 -> kind "sip"; a value listed in end_reasons.toml (1..25, negatives, user
        additions) -> "server" (positive) or "internal" (negative); other negatives ->
        "internal" "Unknown VOS internal reason N"; 0, None, "" and the rest -> "unknown".
        Numeric strings are accepted; anything else that int() refuses raises ValueError.
        """
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            value = 0
        else:
            value = int(raw)
        if 100 <= value <= 699:
            return self._sip_end_reason(value)
        known = self._end.get(value)
        if known is not None:
            return known
        if value < 0:
            return EndReason(
                raw=value, kind="internal", name=f"Unknown VOS internal reason {value}",
                category="Unknown",
                meaning=f"Negative endreason {value} is a VOS3000 internal reason that "
                        "Sentinel has no description for.",
                fixes=("Correlate with the VOS3000 logs and the other CDR fields, then "
                       "describe it in an extra knowledge file ([end_reason.\"N\"])",),
                billable=None, sip=None, q850=None, impact="Unknown")
        if value == 0:
            return EndReason(
                raw=0, kind="unknown", name="No end reason recorded", category="Unknown",
                meaning="endreason 0: the CDR carries no end reason.",
                fixes=(), billable=None, sip=None, q850=None, impact="Unknown")
        return EndReason(
            raw=value, kind="unknown", name=f"Unknown end reason {value}", category="Unknown",
            meaning=f"endreason {value} is neither a SIP code, a documented server end reason "
                    "nor a negative internal reason.",
            fixes=("Describe it in an extra knowledge file ([end_reason.\"N\"]) once its "
                   "meaning is known",),
            billable=None, sip=None, q850=None, impact="Unknown")

    def _sip_end_reason(self, code: int) -> EndReason:
        sc = self.sip_or_class(code)
        k = code // 100
        billable = True if k == 2 else (False if k >= 4 else None)   # seed 002 class table
        return EndReason(
            raw=code, kind="sip", name=sc.phrase, category=sc.result.capitalize(),
            meaning=sc.meaning, fixes=sc.fixes, billable=billable, sip=sc, q850=sc.q850_out,
            impact="")

    def end_reasons(self) -> list[EndReason]:
        """The server and internal end reasons described in the files, sorted by value."""
        return list(self._end.values())

    # ---- Q.850
    def q850(self, cause: int) -> Q850Cause | None:
        try:
            return self._q850.get(int(cause))
        except (TypeError, ValueError):
            return None

    def q850_causes(self) -> list[Q850Cause]:
        return list(self._q850.values())

    # ---- VQManager
    def vqmanager(self, code: int) -> VQStatus | None:
        try:
            return self._vq.get(int(code))
        except (TypeError, ValueError):
            return None

    def vqmanager_codes(self) -> list[VQStatus]:
        return list(self._vq.values())


@functools.lru_cache(maxsize=1)
def _default_knowledge() -> Knowledge:
    return Knowledge(_read_all(()))


def load_knowledge(extra_files: Iterable[str | PathLike[str]] = ()) -> Knowledge:
    """Load the built-in knowledge, plus user files that override or extend it.

    The call without extra files is cached: every caller shares one ``Knowledge``.
    ``extra_files`` are read in order, later files winning; each may hold ``[sip.NNN]``,
    ``[end_reason."N"]``, ``[q850.N]`` and ``[vqmanager.N]`` tables.  Raises
    ``KnowledgeError`` (with ``.path`` and ``.line``) for an unreadable or broken file.
    """
    extra = tuple(extra_files or ())
    if not extra:
        return _default_knowledge()
    return Knowledge(_read_all(extra))
