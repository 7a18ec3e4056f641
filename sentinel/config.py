"""Configuration: one TOML file, every key optional.

With no file at all Sentinel runs its embedded default: a SQLite store in the
working folder, the default rule pack, demo traffic, alerts on the terminal.
`config.example.toml` documents every key; `load_config` rejects unknown keys
so a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .rules import parse_duration
from .sources import SOURCE_KINDS, source_class

PACKAGE_DIR = Path(__file__).resolve().parent


def default_rules_dir() -> Path:
    """The rule pack: `rules/` of a source checkout, else the installed copy."""
    checkout = PACKAGE_DIR.parent / "rules"
    if checkout.is_dir():
        return checkout
    return PACKAGE_DIR / "default_rules"


class ConfigError(Exception):
    pass


@dataclass
class SourceConfig:
    name: str
    kind: str                          # demo | files
    options: dict[str, Any] = field(default_factory=dict)
    base_dir: str | None = None          # relative paths in options start here


@dataclass
class Config:
    path: str | None = None
    store: str = "sentinel.db"
    rules: str = field(default_factory=lambda: str(default_rules_dir()))
    interval_s: int = 60
    retention_days: float = 14.0
    timezone: str = "UTC"
    sources: list[SourceConfig] = field(
        default_factory=lambda: [SourceConfig("demo", "demo", {})])
    knowledge_extra: list[str] = field(default_factory=list)
    slack: dict[str, Any] = field(default_factory=dict)   # validated by notifiers.slack
    bot: dict[str, Any] = field(default_factory=dict)     # validated by bot

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_TOP_KEYS = {"store", "rules", "interval", "retention_days", "timezone", "source",
             "knowledge", "slack", "bot"}
def load_config(path: str | Path | None) -> Config:
    """Read the config file (or return the defaults when `path` is None)."""
    cfg = Config()
    if path is None:
        return cfg
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    cfg.path = str(p)
    base = p.parent

    def where(key: str) -> str:
        return f"{p}: key {key!r}"

    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{where(sorted(unknown)[0])}: unknown key; known keys are "
                          + ", ".join(sorted(_TOP_KEYS)))
    if "store" in data:
        cfg.store = str((base / data["store"]) if data["store"] != ":memory:" else data["store"])
    if "rules" in data:
        cfg.rules = str(base / data["rules"])
    if "interval" in data:
        try:
            cfg.interval_s = parse_duration(data["interval"]) * 60
        except ValueError as e:
            raise ConfigError(f"{where('interval')}: {e}") from None
    if "retention_days" in data:
        v = data["retention_days"]
        if not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{where('retention_days')}: must be a positive number of days")
        cfg.retention_days = float(v)
    if "timezone" in data:
        try:
            ZoneInfo(data["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{where('timezone')}: unknown time zone {data['timezone']!r}") from None
        cfg.timezone = data["timezone"]
    if "source" in data:
        raw_sources = data["source"]
        if not isinstance(raw_sources, list):
            raise ConfigError(f"{where('source')}: write sources as [[source]] tables")
        cfg.sources = []
        names = set()
        for i, s in enumerate(raw_sources):
            kind = s.get("kind")
            if kind not in SOURCE_KINDS:
                raise ConfigError(f"{p}: source #{i + 1}: kind must be one of "
                                  + ", ".join(SOURCE_KINDS))
            name = s.get("name", kind)
            if name in names:
                raise ConfigError(f"{p}: source {name!r}: the name is used twice")
            names.add(name)
            known = set(source_class(kind).OPTIONS)
            bad = set(s) - known - {"name", "kind"}
            if bad:
                raise ConfigError(f"{p}: source {name!r}: unknown key {sorted(bad)[0]!r} for "
                                  f"kind {kind}; known: {', '.join(sorted(known))}")
            opts = {k: v for k, v in s.items() if k not in ("name", "kind")}
            cfg.sources.append(SourceConfig(name, kind, opts, str(base)))
    for section in ("slack", "bot"):
        if section in data:
            if not isinstance(data[section], dict):
                raise ConfigError(f"{where(section)}: write it as a [{section}] table")
            setattr(cfg, section, dict(data[section]))
    if "knowledge" in data:
        extra = data["knowledge"].get("extra", [])
        cfg.knowledge_extra = [str(base / e) for e in extra]
    return cfg
