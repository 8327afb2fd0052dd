"""A stage field that is also an input column (the README's `skip_if_filled` use: fill `email_domain` only where the
input lacks it) is that column, filled in place: the output has it once, where the input has it; the input's values
stay; `jobs.py validate` agrees with the output. Any other field that names an input column is refused at start."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import read_csv
from enrichkit.cli import main
from enrichkit.jobs.cli import main as jobs_main
from fakes import run_cli

STAGES = """
[[stages]]
name = "domain"
type = "python"
function = "enrichkit.builtin:email_domain"
skip_if_filled = ["email_domain"]
[stages.fields]
email_domain = "string"
"""


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "email", "email_domain", "city"])
        for i in range(10):
            writer.writerow([f"Lead {i}", f"p{i}@Corp{i}.example", "known.example" if i % 2 else "", f"City {i}"])
    return path


def test_a_stage_fills_an_input_column_in_place_and_validate_agrees(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    stages = tmp_path / "stages.toml"
    stages.write_text(STAGES, encoding="utf-8")
    source = _input(tmp_path)
    out = tmp_path / "out" / "leads.csv"
    proc = run_cli(main, ["--input", str(source), "--output", str(out), "--stages-file", str(stages)],
                   env={}, cwd=tmp_path)
    assert proc.returncode == 0 and "Done: all 10 records" in proc.stderr, proc.stderr
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["name", "email", "email_domain", "city", "_cost_usd", "_record_id", "_job_id"]
    rows = read_csv(out)
    by_name = {r["name"]: r["email_domain"] for r in rows}
    assert by_name == {f"Lead {i}": "known.example" if i % 2 else f"corp{i}.example" for i in range(10)}
    capsys.readouterr()
    code = jobs_main(["validate", str(out.with_name("leads.progress.json"))])
    assert code == 0, capsys.readouterr()
    resumed = run_cli(main, ["--input", str(source), "--output", str(out), "--resume"], env={}, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


def test_a_field_that_would_overwrite_an_input_column_is_refused_at_start(tmp_path: Path) -> None:
    stages = tmp_path / "stages.toml"
    stages.write_text(STAGES.replace('skip_if_filled = ["email_domain"]\n', ""), encoding="utf-8")
    proc = run_cli(main, ["--input", str(_input(tmp_path)), "--output", str(tmp_path / "out.csv"),
                          "--stages-file", str(stages)], env={}, cwd=tmp_path)
    assert proc.returncode == 2
    assert "email_domain" in proc.stderr and "skip_if_filled" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.csv").exists()
