"""The live rule set: rule files watched for edits, compiled on change.

`refresh()` is called before every evaluation. It re-reads only the files
whose modification time or size changed. A file that now fails to parse keeps
its previous version running and its error is reported once (until the file
changes again); a removed file's rules disappear. Any change recompiles the
engine, which is cheap (milliseconds for the whole pack).
"""

from __future__ import annotations

from pathlib import Path

from .engine import RuleEngine
from .rules import Rule, RuleError, parse_rule_file, rule_files


class RuleBook:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._stamp: dict[str, tuple[int, int]] = {}
        self._rules: dict[str, list[Rule]] = {}     # file -> its last good rules
        self.errors: dict[str, RuleError] = {}       # file -> its current error
        self.engine: RuleEngine | None = None

    @property
    def rules(self) -> dict[str, Rule]:
        return self.engine.rules if self.engine else {}

    def refresh(self) -> list[RuleError]:
        """Reload what changed; return the errors that are new since last time."""
        new_errors: list[RuleError] = []
        if not self.path.exists():
            err = RuleError(str(self.path), "rules folder or file does not exist")
            if str(self.path) not in self.errors:
                new_errors.append(err)
            self.errors = {str(self.path): err}
            if self.engine is None:
                self.engine = RuleEngine([])
            return new_errors
        self.errors.pop(str(self.path), None)
        files = {str(f): f for f in rule_files(self.path)}
        changed = False
        for gone in set(self._rules) - set(files):
            del self._rules[gone]
            self._stamp.pop(gone, None)
            self.errors.pop(gone, None)
            changed = True
        for name, f in files.items():
            try:
                st = f.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            if self._stamp.get(name) == stamp:
                continue
            self._stamp[name] = stamp
            try:
                rules = parse_rule_file(f)
            except RuleError as e:
                if name not in self.errors or str(self.errors[name]) != str(e):
                    new_errors.append(e)
                self.errors[name] = e
                continue
            self.errors.pop(name, None)
            self._rules[name] = rules
            changed = True
        if changed or self.engine is None:
            self._compile(new_errors)
        return new_errors

    def _compile(self, new_errors: list[RuleError]) -> None:
        seen: dict[str, str] = {}
        merged: list[Rule] = []
        for name in sorted(self._rules):
            for r in self._rules[name]:
                if r.id in seen:
                    e = RuleError(name, f"id already used in {seen[r.id]}; this rule is ignored",
                                  line=r.id_line, rule=r.id, field="id")
                    if str(self.errors.get(name)) != str(e):
                        new_errors.append(e)
                    self.errors[name] = e
                    continue
                seen[r.id] = name
                merged.append(r)
        known = {r.id for r in merged}
        for r in merged:
            unknown = [i for i in r.inhibits if i != "*" and i not in known]
            if unknown:
                e = RuleError(r.file, f"inhibits unknown rule {unknown[0]!r}",
                              line=r.line, rule=r.id, field="inhibits")
                if str(self.errors.get(r.file)) != str(e):
                    new_errors.append(e)
                self.errors[r.file] = e
        old = self.engine
        self.engine = RuleEngine(merged)
        if old is not None:
            old.close()
