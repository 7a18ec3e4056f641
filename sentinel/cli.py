"""`sentinel` command line: a thin layer over the library.

    sentinel run [--once]           the daemon: pull, evaluate, notify every interval
    sentinel check [PATH]           validate the config and the rules (or PATH)
    sentinel replay --from --to     what the rules would have raised over stored CDRs
    sentinel demo                   a few hours of demo traffic with incidents, in seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from . import cli_bot
from .alerts import delivered
from .app import CycleReport, Sentinel
from .config import Config, ConfigError, load_config
from .notifiers import build_notifier
from .notifiers.terminal import fmt_time
from .rules import load_rules
from .sources import SourceError

log = logging.getLogger("sentinel")


def _config(args) -> Config:
    path = args.config
    if path is None and Path("sentinel.toml").exists():
        path = "sentinel.toml"
    return load_config(path)


def _parse_time(text: str, tz) -> int:
    """ISO date-time, in the configured time zone unless it carries its own."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"sentinel: cannot read time {text!r}; write e.g. 2026-11-21T10:00") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return int(t.timestamp() * 1000)


# -- check ------------------------------------------------------------------

def cmd_check(args) -> int:
    ok = True
    if args.path is None:
        try:
            cfg = _config(args)
            _check_sections(cfg)
            print(f"config: {cfg.path or '(defaults)'} ok")
        except ConfigError as e:
            print(f"config: {e}", file=sys.stderr)
            return 1
        target = cfg.rules
    else:
        target = args.path
    loaded = load_rules(target)
    for e in loaded.errors:
        print(f"error: {e}", file=sys.stderr)
        ok = False
    print(f"rules: {len(loaded.rules)} rules in {len(loaded.files)} files, "
          f"{len(loaded.errors)} errors")
    if ok and loaded.rules:
        from .engine import RuleEngine
        RuleEngine(loaded.rules).close()      # compiles: durable_rules accepts them
    return 0 if ok else 1


def _check_sections(cfg: Config) -> None:
    """The [slack] and [bot] tables, and every source's options, as their
    modules read them: a typo fails `sentinel check`, not the daemon later."""
    from .app import build_source
    for sc in cfg.sources:
        build_source(sc)
    where = cfg.path or "config"
    try:
        if cfg.slack:
            from .notifiers.slack import SlackSettings
            SlackSettings.from_config(cfg.slack)
        if cfg.bot:
            from .bot import BotSettings
            BotSettings.from_table(cfg.bot)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


# -- run --------------------------------------------------------------------

def cmd_run(args) -> int:
    cfg = _config(args)
    app = Sentinel(cfg, notifiers=[])
    app.notifiers = [build_notifier(cfg, store=app.store, rules_provider=lambda: app.rulebook.rules)]
    if not args.once:
        cli_bot.start_beside(cfg, app)
    if args.once:
        report = app.cycle(int(time.time() * 1000))
        n = sum(r.new for r in report.ingested.values())
        print(f"one cycle: {n} new CDRs, {len(delivered(report.notifications))} notifications, "
              f"{len(report.problems)} problems", file=sys.stderr)
        return 0

    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    def job():
        try:
            app.prune(int(time.time() * 1000))
            app.cycle(int(time.time() * 1000))
        except Exception:           # one bad cycle must not end the daemon
            log.exception("evaluation cycle failed")

    sched = BlockingScheduler(job_defaults={"coalesce": True, "max_instances": 1,
                                            "misfire_grace_time": cfg.interval_s})
    sched.add_job(job, IntervalTrigger(seconds=cfg.interval_s), next_run_time=datetime.now().astimezone(),
                  id="cycle", name="pull and evaluate")
    log.info("sentinel running: %d sources, rules from %s, every %ss",
             len(app.sources), cfg.rules, cfg.interval_s)

    def stop(signum, frame):
        # systemd and docker stop with SIGTERM: finish the cycle under way
        # (its transaction) and leave, rather than die mid-write.
        log.info("stopping (signal %s)", signum)
        sched.shutdown(wait=True)
    signal.signal(signal.SIGTERM, stop)
    try:
        sched.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    log.info("sentinel stopped")
    return 0


# -- replay -----------------------------------------------------------------

def cmd_replay(args) -> int:
    from .replay import backtest, load_rule_list, print_progress, replay
    from .rules import override
    cfg = _config(args)
    start = _parse_time(args.start, cfg.tz)
    end = _parse_time(args.end, cfg.tz)
    app = Sentinel(cfg, notifiers=[])
    if args.pull:
        report = CycleReport(end)
        app.pull(end, report)
        for problem in report.problems:
            print(f"warning: {problem}", file=sys.stderr)
    step = args.step or cfg.interval_s
    progress = print_progress if sys.stderr.isatty() or args.progress else None
    if not args.set:
        events = replay(app.store, cfg.rules, start, end, step_s=step, progress=progress)
        if progress:
            print(file=sys.stderr)
        if not args.all:
            events = [e for e in events if not e["suppressed"]]
        for e in events:
            if args.json:
                print(json.dumps(e, sort_keys=True))
            else:
                held = f"  (held back: {e['suppressed']})" if e["suppressed"] else ""
                print(f"{fmt_time(e['at_ms'], cfg.tz)}  {e['kind'].upper():8}  {e['rule_id']:28} "
                      f"{e['group'] or '(all)':18} {e.get('value', '')}{held}")
        if not args.json:
            print(f"{len(events)} events", file=sys.stderr)
        return 0

    # Tuning: the same period with the rules as they are and as changed.
    current = load_rule_list(cfg.rules)
    by_id = {r.id: r for r in current}
    changed = dict(by_id)
    for item in args.set:
        try:
            target, value = item.split("=", 1)
            rule_id, key = target.rsplit(".", 1)
            changed[rule_id] = override(changed[rule_id], key, value)
        except KeyError:
            raise SystemExit(f"sentinel: --set {item}: no rule {rule_id!r}") from None
        except ValueError as e:
            raise SystemExit(f"sentinel: --set {item}: {e}") from None
    touched = sorted({item.split("=", 1)[0].rsplit(".", 1)[0] for item in args.set})
    before = backtest(app.store, current, start, end, step, progress)
    after = backtest(app.store, list(changed.values()), start, end, step, progress)
    if progress:
        print(file=sys.stderr)
    report = tuning_report(before, after, touched, start, end, by_id, changed)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_tuning(report, cfg.tz))
    return 0


def tuning_report(before, after, touched, start, end, old_rules, new_rules) -> dict:
    """Per rule: alerts, groups, firing minutes, as the rules are and as
    changed; and the episodes only one side has (caught / kept quiet)."""
    out = {"from_ms": start, "to_ms": end, "changed": touched, "rules": {}}
    for rule_id in sorted(set(before) | set(after)):
        b, a = before.get(rule_id), after.get(rule_id)

        def side(summary, rule):
            eps = summary.episodes if summary else []
            return {"fire_when": rule.fire_when if rule else None, "alerts": len(eps),
                    "groups": sorted({e.group for e in eps}),
                    "firing_minutes": round(summary.firing_minutes(end), 1) if summary else 0,
                    "episodes": [{"group": e.group, "fired_ms": e.fired_ms,
                                  "resolved_ms": e.resolved_ms,
                                  "minutes": round(e.minutes(end), 1)} for e in eps]}
        entry = {"current": side(b, old_rules.get(rule_id)),
                 "changed": side(a, new_rules.get(rule_id))}
        cur = {(e["group"]) for e in entry["current"]["episodes"]}
        new = {(e["group"]) for e in entry["changed"]["episodes"]}
        entry["only_current"] = sorted(cur - new)
        entry["only_changed"] = sorted(new - cur)
        out["rules"][rule_id] = entry
    return out


def format_tuning(report: dict, tz) -> str:
    lines = [f"Backtest {fmt_time(report['from_ms'], tz)} to {fmt_time(report['to_ms'], tz)}; "
             f"changed: {', '.join(report['changed'])}", "",
             f"{'rule':28} {'alerts':>7} {'groups':>7} {'firing min':>11}   "
             f"{'alerts':>7} {'groups':>7} {'firing min':>11}",
             f"{'':28} {'--- as it is ---':>27}   {'--- as changed ---':>27}"]
    for rule_id, e in report["rules"].items():
        c, n = e["current"], e["changed"]
        mark = " *" if rule_id in report["changed"] else ""
        lines.append(f"{rule_id + mark:28} {c['alerts']:7} {len(c['groups']):7} "
                     f"{c['firing_minutes']:11.0f}   {n['alerts']:7} {len(n['groups']):7} "
                     f"{n['firing_minutes']:11.0f}")
    for rule_id in report["changed"]:
        e = report["rules"].get(rule_id)
        if not e:
            continue
        lines += ["", f"{rule_id}: {e['current']['fire_when']}  ->  {e['changed']['fire_when']}"]
        if e["only_current"]:
            lines.append("  would no longer fire for: " + ", ".join(g or "all traffic" for g in e["only_current"]))
        if e["only_changed"]:
            lines.append("  would newly fire for:     " + ", ".join(g or "all traffic" for g in e["only_changed"]))
        for label, side in (("as it is", e["current"]), ("as changed", e["changed"])):
            for ep in side["episodes"][:20]:
                lines.append(f"  {label:10} {ep['group'] or 'all traffic':18} fired "
                             f"{fmt_time(ep['fired_ms'], tz)} for {ep['minutes']:.0f} min")
    return "\n".join(lines)


# -- bulk import --------------------------------------------------------------

def cmd_import(args) -> int:
    from .bulk import import_files
    cfg = _config(args)
    if not Path(args.folder).is_dir():
        print(f"sentinel: {args.folder} is not a folder", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    report = import_files(cfg.store, args.folder, source_name=args.source,
                          workers=args.workers, settle_seconds=args.settle)
    _print_load(f"imported {report.files} files", report, time.perf_counter() - t0)
    return 0


def _print_load(what: str, report, secs: float) -> None:
    """The summary of a bulk load, its bad rows on stderr."""
    for p in report.problems:
        print(f"warning: {p}", file=sys.stderr)
    rate = f", {report.new / secs:,.0f} CDRs/s" if secs and report.new else ""
    print(f"{what}: {report.new} new CDRs, {report.duplicates} already stored, "
          f"{report.bad_rows} bad rows, in {secs:.1f} s{rate}")


def cmd_backfill(args) -> int:
    from .bulk import backfill
    cfg = _config(args)
    sc = next((s for s in cfg.sources if s.name == args.source), None)
    if sc is None:
        print(f"sentinel: no source named {args.source!r} in the config", file=sys.stderr)
        return 2
    start = _parse_time(args.start, cfg.tz)
    end = _parse_time(args.end, cfg.tz)
    t0 = time.perf_counter()
    try:
        report = backfill(cfg.store, sc, start, end, workers=args.workers)
    except (ValueError, SourceError) as e:
        print(f"sentinel: {e}", file=sys.stderr)
        return 1
    _print_load(f"backfilled {sc.name}", report, time.perf_counter() - t0)
    return 0


# -- rule tests ---------------------------------------------------------------

def cmd_test(args) -> int:
    from .ruletest import format_report, junit_xml, run_tests
    cfg = _config(args)
    path = args.path or cfg.rules
    report = run_tests(path, rules_path=args.rules, pattern=args.run, tz=cfg.tz)
    print(format_report(report))
    if args.junit:
        Path(args.junit).write_text(junit_xml(report), encoding="utf-8")
    if not report.results and not report.errors:
        print(f"sentinel: no *.test.toml under {path}", file=sys.stderr)
        return 1
    return 0 if report.ok else 1


# -- demo -------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import run_demo
    cfg = _config(args)
    summary = run_demo(cfg, hours=args.hours, out=sys.stdout, store_path=args.store)
    return 0 if summary.all_caught else 1


# -- silences and status ----------------------------------------------------

def _store(args):
    from .store import Store
    cfg = _config(args)
    return cfg, Store(cfg.store)


def cmd_mute(args) -> int:
    from .rules import parse_duration
    cfg, store = _store(args)
    *target, duration = args.target
    if not 1 <= len(target) <= 2:
        raise SystemExit("sentinel: usage: sentinel mute RULE [GROUP] DURATION, e.g. "
                         "sentinel mute sip-503-share VEND-07 2h")
    try:
        minutes = parse_duration(duration)
    except ValueError as e:
        raise SystemExit(f"sentinel: duration: {e}") from None
    rule_id, group = target[0], (target[1] if len(target) == 2 else None)
    known = load_rules(cfg.rules).rules
    if rule_id != "*" and rule_id not in {r.id for r in known} | {"source-health"}:
        raise SystemExit(f"sentinel: no rule {rule_id!r}; `sentinel rules` lists them")
    now = int(time.time() * 1000)
    sid = store.add_silence(rule_id, group, now, now + minutes * 60000,
                            args.reason or "muted from the command line", args.user)
    print(f"silence #{sid}: {rule_id} on {group or 'every group'} until "
          f"{fmt_time(now + minutes * 60000, cfg.tz)}")
    return 0


def cmd_unmute(args) -> int:
    cfg, store = _store(args)
    now = int(time.time() * 1000)
    removed = []
    for s in store.silences(active_at_ms=now):
        if str(s["id"]) == args.what or (s["rule_id"] == args.what and args.group in (None, s["grp"])):
            store.remove_silence(s["id"], now)
            removed.append(s["id"])
    if not removed:
        print(f"sentinel: no active silence matches {args.what!r}", file=sys.stderr)
        return 1
    print("removed silence " + ", ".join(f"#{i}" for i in removed))
    return 0


def cmd_silences(args) -> int:
    cfg, store = _store(args)
    now = int(time.time() * 1000)
    rows = store.silences(active_at_ms=now)
    for s in rows:
        print(f"#{s['id']}  {s['rule_id']:28} {s['grp'] or '(every group)':18} until "
              f"{fmt_time(s['ends_ms'], cfg.tz)}  by {s['created_by']}: {s['reason']}")
    if not rows:
        print("no active silences")
    return 0


def cmd_status(args) -> int:
    from .status import status_text
    cfg, store = _store(args)
    print(status_text(cfg, store, int(time.time() * 1000)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="config file (default: ./sentinel.toml if present)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="pull CDRs, evaluate the rules, notify, every interval")
    r.add_argument("--once", action="store_true", help="one cycle, then exit")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate the config and the rules")
    c.add_argument("path", nargs="?", help="a rule file or folder (default: the configured rules)")
    c.set_defaults(func=cmd_check)

    rp = sub.add_parser("replay", help="evaluate the rules over stored CDRs as they would have run")
    rp.add_argument("--from", dest="start", required=True, help="start, e.g. 2026-11-21T08:00")
    rp.add_argument("--to", dest="end", required=True, help="end, e.g. 2026-11-21T12:00")
    rp.add_argument("--step", type=int, help="seconds between evaluations (default: the interval)")
    rp.add_argument("--pull", action="store_true", help="pull the sources first")
    rp.add_argument("--json", action="store_true", help="one JSON alert event per line")
    rp.add_argument("--all", action="store_true",
                    help="also list what silences, inhibitions and flapping held back")
    rp.add_argument("--set", action="append", metavar="RULE.FIELD=VALUE",
                    help="backtest with a rule changed, side by side with the rules as they "
                         "are: e.g. --set sip-503-share.threshold=15%% (repeatable)")
    rp.add_argument("--progress", action="store_true", help="show progress even when piped")
    rp.set_defaults(func=cmd_replay)

    m = sub.add_parser("mute", help="silence a rule (optionally one group) for a while")
    m.add_argument("target", nargs="+", metavar="RULE [GROUP] DURATION")
    m.add_argument("--reason", help="why (shown with the silence)")
    m.add_argument("--user", default=os.environ.get("USER", "cli"), help="who mutes")
    m.set_defaults(func=cmd_mute)

    u = sub.add_parser("unmute", help="remove a silence: by its number, or by rule [group]")
    u.add_argument("what", help="silence number or rule id")
    u.add_argument("group", nargs="?")
    u.set_defaults(func=cmd_unmute)

    sl = sub.add_parser("silences", help="list the active silences")
    sl.set_defaults(func=cmd_silences)

    st = sub.add_parser("status", help="sources, rules and alerts as the store sees them")
    st.set_defaults(func=cmd_status)

    im = sub.add_parser("import", help="bulk-load a folder of VOS3000 export files, on every core")
    im.add_argument("folder")
    im.add_argument("--source", default="files",
                    help="the files source whose record of read files to use (default: files)")
    im.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    im.add_argument("--settle", type=float, default=5.0,
                    help="skip files modified less than this many seconds ago")
    im.set_defaults(func=cmd_import)

    bf = sub.add_parser("backfill", help="load a period from a database source, on every core")
    bf.add_argument("source", help="the name of a [[source]] (kind mysql)")
    bf.add_argument("--from", dest="start", required=True, help="start, e.g. 2026-11-20T00:00")
    bf.add_argument("--to", dest="end", required=True, help="end, e.g. 2026-11-21T00:00")
    bf.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    bf.set_defaults(func=cmd_backfill)

    t = sub.add_parser("test", help="run the rule tests (*.test.toml) against the rules")
    t.add_argument("path", nargs="?", help="a test file or folder (default: the rules folder)")
    t.add_argument("--rules", help="the rule files to test (default: the tests' folder)")
    t.add_argument("--run", metavar="PATTERN", help="only tests whose name matches this regex")
    t.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    t.set_defaults(func=cmd_test)

    cli_bot.register(sub)

    d = sub.add_parser("demo", help="replay a few hours of demo traffic with incidents")
    d.add_argument("--hours", type=float, default=5.0)
    d.add_argument("--store", help="keep the demo store in this file (default: in memory)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"sentinel: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
