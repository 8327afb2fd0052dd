"""Stages files and prompt templates: literal column names, escaped braces, errors at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from enrichkit.config.stages import Template, load_stages
from enrichkit.errors import ConfigError


def test_placeholders_take_column_names_literally() -> None:
    t = Template.parse("Fund {fund.title} by {poc first name}: {{json}} and }}", "t")
    assert t.placeholders == ["fund.title", "poc first name"]
    assert t.render({"fund.title": "A", "poc first name": "B"}) == "Fund A by B: {json} and }"


@pytest.mark.parametrize("text", ["{unclosed", "{}", "lone } brace", "{a{b}"])
def test_bad_templates_fail(text: str) -> None:
    with pytest.raises(ConfigError):
        Template.parse(text, "t")


def _stages(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_later_stages_see_earlier_fields_and_unknown_ones_fail(tmp_path: Path) -> None:
    cfg = load_stages(_stages(tmp_path, """
[[stages]]
name = "a"
prompt = "{col}"
[stages.fields]
x = "string"
[[stages]]
name = "b"
prompt = "{x} {col}"
[stages.fields]
y = "number"
"""))
    cfg.check_placeholders(["col"])
    with pytest.raises(ConfigError, match=r"\{col\}"):
        cfg.check_placeholders(["other"])
    assert cfg.select(["b"]).output_fields == ["y"]
    with pytest.raises(ConfigError, match=r"\{x\}"):
        cfg.select(["b"]).check_placeholders(["col"])  # b alone cannot see a's field


@pytest.mark.parametrize(("body", "message"), [
    ("", "no \\[\\[stages\\]\\]"),
    ('[[stages]]\nname = "a"\nprompt = "p"\n', "needs \\[stages.fields\\]"),
    ('[[stages]]\nname = "a"\nprompt = "p"\n[stages.fields]\nx = "float"\n', "field types"),
    ('[[stages]]\nname = "a"\ntype = "python"\n', "function"),
    ('[[stages]]\nname = "a"\ntype = "shell"\n', "type must be"),
    ('[[stages]]\nname = "a"\ntype = "python"\nfunction = "nope.nope:f"\n', None),
])
def test_bad_stage_definitions(tmp_path: Path, body: str, message: str | None) -> None:
    with pytest.raises(ConfigError, match=message or "no module named 'nope.nope'"):
        cfg = load_stages(_stages(tmp_path, body))
        for stage in cfg.stages:
            stage.load_function()


def test_fingerprint_changes_with_prompts_not_with_order_of_keys(tmp_path: Path) -> None:
    a = load_stages(_stages(tmp_path, '[[stages]]\nname="a"\nprompt="p {c}"\n[stages.fields]\nx="string"\n'))
    b = load_stages(_stages(tmp_path, '[[stages]]\nprompt="p {c}"\nname="a"\n[stages.fields]\nx="string"\n'))
    c = load_stages(_stages(tmp_path, '[[stages]]\nname="a"\nprompt="q {c}"\n[stages.fields]\nx="string"\n'))
    assert a.fingerprint(None) == b.fingerprint(None) != c.fingerprint(None)
    assert a.fingerprint(["c"]) != a.fingerprint(None)
