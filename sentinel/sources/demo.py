"""Built-in demo traffic: realistic VOS3000 CDRs with named incidents.

A wholesale carrier in miniature: 32 customer (ingress) gateways belonging to
40 accounts, 24 vendor (egress) gateways of uneven quality, 15 destination
countries, a healthy code mix (about 62% answered, busy, cancels, a few 404,
408, 503), lognormal talk times and PDD, and a daily rhythm.

Every minute is generated from its own seeded random stream, so any minute can
be produced again on its own (live mode pulls minute by minute; replays and
tests get identical traffic). Incidents are named, scheduled in minutes from
the start of the demo, and change the traffic the way the real fault would.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator

from ..cdr import CDR

VENDORS = [f"VEND-{i:02d}" for i in range(1, 25)]
ACCOUNTS = [f"ACC-{1000 + i}" for i in range(1, 41)]
# Customer gateways: most accounts have one, some two.
CUSTOMER_GWS = {acc: [f"CUST-{acc[4:]}-A"] + ([f"CUST-{acc[4:]}-B"] if i % 5 == 0 else [])
                for i, acc in enumerate(ACCOUNTS)}
# Destination dial codes (4 digits, so each is one "prefix" group) and weights:
# traffic concentrates on a few dozen destinations, as a carrier's does.
DESTINATIONS = [
    ("1212", 5), ("1310", 4), ("1415", 3), ("1646", 3), ("1718", 3), ("1305", 3),
    ("4420", 4), ("4477", 5), ("4478", 3), ("4915", 4), ("4930", 2), ("3361", 3),
    ("3314", 2), ("8613", 5), ("8618", 4), ("8610", 2), ("9198", 5), ("9199", 4),
    ("9181", 3), ("2348", 4), ("2347", 3), ("8801", 8), ("6391", 4), ("6392", 3),
    ("5255", 3), ("5233", 2), ("5511", 3), ("5521", 2), ("7495", 2), ("7916", 2),
    ("6281", 3), ("6221", 2), ("9230", 3), ("9242", 2), ("2010", 2), ("2012", 2),
]

# Healthy final outcomes: end reason -> weight. 200 means answered.
HEALTHY_MIX = [(200, 620), (487, 105), (486, 85), (480, 60), (408, 25), (404, 25),
               (503, 12), (403, 10), (603, 10), (500, 6), (484, 6), (488, 3),
               (502, 3), (8, 2), (18, 1), (19, 1)]

SCANNER_IP = "203.0.113.66"
SCAN_CALLS_PER_MINUTE = 25
# flowno = minute * FLOWNOS_PER_MINUTE + index: unique up to a million calls a minute.
FLOWNOS_PER_MINUTE = 1_000_000


@dataclass(frozen=True)
class Incident:
    name: str
    start_min: int
    end_min: int
    target: str = ""          # the gateway, account or IP it hits
    description: str = ""

    def active(self, minute: int) -> bool:
        return self.start_min <= minute < self.end_min


DEFAULT_INCIDENTS = (
    Incident("vendor-503-storm", 45, 75, "VEND-07",
             "vendor VEND-07 answers 60% of calls with 503 Service Unavailable"),
    Incident("balance-exhausted", 90, 120, "ACC-1017",
             "account ACC-1017 runs out of balance: calls end with reason 8"),
    Incident("codec-mismatch", 135, 165, "VEND-03",
             "vendor VEND-03 drops G.729: 35% of calls end 488 Not Acceptable Here"),
    Incident("asr-collapse", 180, 195, "",
             "an upstream fault: answered calls fall from 62% to about 25% everywhere"),
    Incident("unauthorized-scan", 210, 220, SCANNER_IP,
             "a SIP scanner at 203.0.113.66 sends 25 calls a minute: end reason -9"),
    Incident("source-silent", 240, 255, "",
             "the softswitch stops writing CDRs for 15 minutes"),
)


class DemoTraffic:
    """Generates the CDRs of any minute after `start_ms`."""

    def __init__(self, start_ms: int, *, seed: int = 7, calls_per_minute: int = 250,
                 incidents: tuple[Incident, ...] = DEFAULT_INCIDENTS):
        self.start_ms = start_ms - start_ms % 60000
        self.seed = seed
        self.rate = calls_per_minute
        self.incidents = incidents
        r = random.Random(seed)
        # Three tiers of vendors: 8 big, 8 mid-sized, 8 small routes.
        self.vendor_weights = [2.0 if i < 8 else 1.2 if i < 16 else 0.6
                               for i in range(len(VENDORS))]
        self.vendor_quality = [r.uniform(-0.04, 0.03) for _ in VENDORS]
        self.account_weights = [r.uniform(0.4, 2.0) for _ in ACCOUNTS]
        self.gw_ips = {gw: f"198.51.100.{10 + n}" for n, gw in
                       enumerate(g for gws in CUSTOMER_GWS.values() for g in gws)}
        self._dial_codes = [d for d, _ in DESTINATIONS]
        self._dial_w = [w for _, w in DESTINATIONS]
        self._codes = [c for c, _ in HEALTHY_MIX]
        self._code_w = [w for _, w in HEALTHY_MIX]

    def minute_index(self, epoch_minute: int) -> int:
        return epoch_minute - self.start_ms // 60000

    def active_incidents(self, epoch_minute: int) -> list[Incident]:
        i = self.minute_index(epoch_minute)
        return [x for x in self.incidents if x.active(i)]

    def calls_in_minute(self, epoch_minute: int) -> list[CDR]:
        idx = self.minute_index(epoch_minute)
        if idx < 0:
            return []
        active = {x.name: x for x in self.active_incidents(epoch_minute)}
        if "source-silent" in active:
            return []
        r = random.Random((self.seed << 32) ^ epoch_minute)
        hour = (epoch_minute // 60) % 24
        diurnal = 0.75 + 0.25 * math.sin((hour - 9) / 24 * 2 * math.pi)
        n = max(0, int(r.gauss(self.rate * diurnal, math.sqrt(self.rate))))
        base_ms = epoch_minute * 60000
        out = []
        for k in range(n):
            out.append(self._call(r, epoch_minute, base_ms, k, active))
        scan = active.get("unauthorized-scan")
        if scan:
            for k in range(SCAN_CALLS_PER_MINUTE):
                out.append(self._scanner_call(r, base_ms, n + k, scan.target))
        return out

    def calls_between(self, start_ms: int, end_ms: int) -> Iterator[CDR]:
        """Calls whose stop time falls in [start_ms, end_ms)."""
        for minute in range(start_ms // 60000, (end_ms - 1) // 60000 + 1):
            for c in self.calls_in_minute(minute):
                if start_ms <= c.stop_ms < end_ms:
                    yield c

    def _call(self, r: random.Random, minute: int, base_ms: int, k: int,
              active: dict[str, Incident]) -> CDR:
        a = r.choices(range(len(ACCOUNTS)), self.account_weights)[0]
        account = ACCOUNTS[a]
        ingress = r.choice(CUSTOMER_GWS[account])
        v = r.choices(range(len(VENDORS)), self.vendor_weights)[0]
        vendor = VENDORS[v]
        dial = r.choices(self._dial_codes, self._dial_w)[0]
        callee = f"{dial}{r.randrange(10**7, 10**8)}"
        caller = f"1{r.randrange(10**9, 10**10)}"
        code = r.choices(self._codes, self._code_w)[0]
        if code == 200 and r.random() < -self.vendor_quality[v] * 4:
            code = 480
        elif code != 200 and r.random() < self.vendor_quality[v] * 4:
            code = 200
        storm = active.get("vendor-503-storm")
        if storm and vendor == storm.target and r.random() < 0.60:
            code = 503
        codec = active.get("codec-mismatch")
        if codec and vendor == codec.target and r.random() < 0.35:
            code = 488
        bal = active.get("balance-exhausted")
        if bal and account == bal.target:
            code = 8
        if "asr-collapse" in active and code == 200 and r.random() < 0.6:
            code = r.choice((480, 480, 487, 486))
        answered = code == 200
        if answered:
            talk = int(r.lognormvariate(math.log(55), 1.0))
            talk = max(1, min(talk, 7200))
            pdd = int(r.lognormvariate(math.log(2600), 0.35))
        else:
            talk = 0
            pdd = 32000 if code == 408 else int(r.lognormvariate(math.log(2200), 0.5))
        if code == 8:
            pdd = 0                        # rejected by billing before any routing
            vendor = ""
        stop = base_ms + r.randrange(60000)
        start = stop - talk * 1000 if answered else 0
        return CDR(
            flowno=minute * FLOWNOS_PER_MINUTE + k, start_ms=start, stop_ms=stop, talk_s=talk,
            billed_s=(talk + 59) // 60 * 60 if answered else 0, caller=caller,
            callee=callee, ingress=ingress, egress=vendor, account=account,
            caller_ip=self.gw_ips[ingress], callee_ip=f"192.0.2.{10 + v}" if vendor else "",
            pdd_ms=pdd or None, end_direction=0 if answered else (2 if code == 8 else 1),
            end_reason=code)

    def _scanner_call(self, r: random.Random, base_ms: int, k: int, ip: str) -> CDR:
        callee = "00972" + "".join(str(r.randrange(10)) for _ in range(9))
        return CDR(
            flowno=(base_ms // 60000) * FLOWNOS_PER_MINUTE + k, start_ms=0,
            stop_ms=base_ms + r.randrange(60000), talk_s=0, billed_s=0,
            caller=str(r.randrange(100, 1000)), callee=callee, ingress="", egress="",
            account="", caller_ip=ip, callee_ip="", pdd_ms=None, end_direction=2,
            end_reason=-9)


class DemoSource:
    """The demo traffic as a live source: each pull returns the calls that
    ended since the last one, up to `now`."""

    kind = "demo"
    OPTIONS = {
        "seed": "random seed of the traffic (default 7)",
        "calls_per_minute": "average call attempts a minute (default 250)",
    }

    def __init__(self, name: str, traffic: DemoTraffic):
        self.name = name
        self.traffic = traffic

    @classmethod
    def from_options(cls, name: str, options: dict, base_dir=None) -> "DemoSource":
        import time
        # Live demo traffic starts an hour back so the windows are full at once.
        start = int(time.time() * 1000) - 3600_000
        return cls(name, DemoTraffic(start, seed=options.get("seed", 7),
                                     calls_per_minute=options.get("calls_per_minute", 250)))

    def pull(self, store, now_ms: int):
        from . import Batch
        wm = store.watermark(self.name)
        since = wm["until_ms"] if wm else max(self.traffic.start_ms, now_ms - 3600_000)
        if now_ms <= since:
            return
        cdrs = list(self.traffic.calls_between(since, now_ms))
        yield Batch(cdrs=cdrs, watermark={"until_ms": now_ms})
