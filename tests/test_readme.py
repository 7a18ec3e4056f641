"""The README's examples work: its commands exist, its rule examples parse,
its error example is what `sentinel check` prints."""

from __future__ import annotations

import re
from pathlib import Path

from sentinel.cli import build_parser
from sentinel.config import load_config
from sentinel.rules import parse_rule_file

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_opens_with_the_install_and_test_commands():
    first, second = blocks("sh")[:2]
    assert first.strip() == "pip install -e . && sentinel demo"
    assert second.strip() == "pip install -e '.[test]' && python -m pytest"
    assert second.strip() in (ROOT / ".ci" / "run").read_text()


def test_rule_examples_parse(tmp_path):
    examples = [b for b in blocks("toml") if "[[rule]]" in b]
    assert len(examples) >= 2
    for i, text in enumerate(examples):
        f = tmp_path / f"example{i}.toml"
        f.write_text(text)
        assert parse_rule_file(f), text


def test_commands_in_the_table_exist():
    sub = build_parser()._subparsers._group_actions[0].choices
    for cmd in re.findall(r"^\| `sentinel (\w+)", README, re.M):
        assert cmd in sub


def test_example_config_is_valid(tmp_path):
    cfg = load_config(ROOT / "config.example.toml")
    assert cfg.interval_s == 60 and cfg.retention_days == 14
    assert [s.kind for s in cfg.sources] == ["demo"]


def test_rule_test_example_passes_against_the_default_pack(tmp_path):
    import tomllib

    from sentinel.config import default_rules_dir
    from sentinel.replay import load_rule_list
    from sentinel.ruletest import run_test
    from datetime import timezone
    example = next(b for b in blocks("toml") if "[[test]]" in b)
    test = tomllib.loads(example)["test"][0]
    result = run_test(test, load_rule_list(default_rules_dir()), "README.md", tmp_path,
                      timezone.utc)
    assert result.ok, result.failures
