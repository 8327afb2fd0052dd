"""The smaller things a newcomer meets: the start line's count is exact when it can be, a --limit stop shows as
`limit_reached` (the checkpoint keeps SPEC's `interrupted`), a JSONL export writes a search stage's sources and
queries as arrays, and a resume stopped by a changed stages file names the stage and key that changed."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import COLUMNS, STAGES, Workspace, make_rows, read_json, write_csv
from enrichkit.jobs.cli import main as jobs_main
from enrichkit.tables import precount
from fakes import run_cli


@pytest.fixture
def ws(fws: Workspace) -> Workspace:
    """This file's runs answer from the fake provider on a fake clock; `sws` (the stand-in) where its answers are
    the point (a search stage's sources, numbers typed as declared)."""
    return fws


def _start_line(said: str) -> str:
    return next(line for line in said.splitlines() if ": new job, " in line or ": resuming, " in line)


def _awkward_input(ws: Workspace) -> None:
    """12 rows as Excel exports them: a cell over three lines and an exact duplicate row: 11 records."""
    rows = make_rows(11)
    rows[2]["fund.manager"] = "Manager\nover three\nlines"
    rows.append(dict(rows[5]))
    write_csv(ws.input, rows)


def test_the_start_line_says_the_exact_count_of_a_small_input(ws: Workspace) -> None:
    _awkward_input(ws)
    proc = ws.run("--limit", "3")
    assert proc.returncode == 1, proc.stderr
    assert ": new job, 3 (--limit) of 11 records to do, " in _start_line(proc.stderr)
    resumed = ws.run("--resume")
    assert ": resuming, 8 records to do, " in _start_line(resumed.stderr)


def test_a_large_input_is_not_walked_twice_and_its_count_says_it_is_an_estimate(ws: Workspace,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _awkward_input(ws)
    monkeypatch.setattr(precount, "DEFAULT_EXACT_BYTES", 10)  # as if the input were above the size walked twice
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert ": new job, about 14 (estimated from the file's lines) records to do, " in _start_line(proc.stderr)


def _jobs(ws: Workspace, *args: str) -> Any:
    result = run_cli(jobs_main, list(args), env=ws.env(), cwd=ws.tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_limit_stop_shows_as_limit_reached(ws: Workspace) -> None:
    assert ws.run("--limit", "5").returncode == 1
    checkpoint = read_json(ws.checkpoint)
    assert (checkpoint["status"], checkpoint["stop_reason"]) == ("interrupted", "limit")  # SPEC's status list
    status = json.loads(_jobs(ws, "status", str(ws.checkpoint), "--json").stdout)
    assert (status["state"], status["recorded_status"], status["can_resume"]) == ("limit_reached", "interrupted",
                                                                                  True)
    assert "limit_reached" in _jobs(ws, "list", str(ws.tmp)).stdout
    assert ws.run("--resume").returncode == 0
    assert json.loads(_jobs(ws, "status", str(ws.checkpoint), "--json").stdout)["state"] == "completed"


def test_an_interrupted_run_after_a_limit_stop_is_interrupted_again(ws: Workspace) -> None:
    assert ws.run("--limit", "5").returncode == 1
    cp = read_json(ws.checkpoint)
    gone = subprocess.Popen(["true"])
    gone.wait()
    cp["status"], cp["pid"] = "running", gone.pid  # as a later run killed by kill -9 leaves it
    ws.checkpoint.write_text(json.dumps(cp), encoding="utf-8")
    assert json.loads(_jobs(ws, "status", str(ws.checkpoint), "--json").stdout)["state"] == "interrupted"


GROUNDED = STAGES.replace('model = "gemini-2.5-flash"', 'model = "gemini-3.5-flash"').replace(
    'name = "poc"\n', 'name = "poc"\nsearch = true\n')


def test_a_jsonl_export_writes_sources_and_queries_as_arrays(sws: Workspace, tmp_path: Path) -> None:
    ws = sws
    ws.stages.write_text(GROUNDED, encoding="utf-8")
    write_csv(ws.input, make_rows(6))
    assert ws.run().returncode == 0
    with ws.output.open(encoding="utf-8", newline="") as f:
        first = next(csv.DictReader(f))
    assert json.loads(first["poc_sources"]) and json.loads(first["poc_queries"])  # JSON text in the CSV
    target = tmp_path / "all.jsonl"
    _jobs(ws, "export", str(ws.checkpoint), "--format", "jsonl", "--output", str(target))
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert isinstance(row["poc_sources"], list) and isinstance(row["poc_queries"], list)
        assert all(isinstance(q, str) for q in row["poc_queries"]) and row["poc_grounded"] in (True, False)
        assert all(isinstance(row[c], str) for c in COLUMNS)  # the input's columns stay text
    book = tmp_path / "all.xlsx"
    _jobs(ws, "export", str(ws.checkpoint), "--format", "xlsx", "--output", str(book))  # a cell holds the text


def test_a_changed_prompt_names_the_stage_and_key_that_changed(ws: Workspace) -> None:
    assert ws.run("--limit", "5").returncode == 1
    ws.stages.write_text(STAGES.replace("Who is the point of contact", "Who is the main contact")
                         .replace("temperature = 0.2", "temperature = 0.7"), encoding="utf-8")
    proc = ws.run("--resume")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "stage 'poc': prompt changed" in line and "[defaults] temperature changed" in line
    assert "--allow-config-change" in line
    ok = ws.run("--resume", "--allow-config-change")
    assert ok.returncode == 0 and "stage 'poc': prompt changed" in ok.stderr


def test_a_key_added_to_a_stage_is_named(ws: Workspace) -> None:
    assert ws.run("--limit", "5").returncode == 1
    ws.stages.write_text(STAGES.replace('name = "poc"\n', 'name = "poc"\nsystem_instruction = "Be brief."\n'),
                         encoding="utf-8")
    proc = ws.run("--resume")
    assert proc.returncode == 2 and "stage 'poc': system_instruction changed" in proc.stderr


def test_a_stage_renamed_under_allow_config_change_is_the_jobs_stage_from_then_on(sws: Workspace,
                                                                                  tmp_path: Path) -> None:
    ws = sws
    assert ws.run("--limit", "5").returncode == 1  # --limit with records left
    ws.stages.write_text(STAGES.replace('name = "poc"', 'name = "contact"'), encoding="utf-8")
    ok = ws.run("--resume", "--allow-config-change")
    assert ok.returncode == 0, ok.stderr
    assert read_json(ws.checkpoint)["stages"] == ["contact", "domain"]
    target = tmp_path / "all.jsonl"
    _jobs(ws, "export", str(ws.checkpoint), "--format", "jsonl", "--output", str(target))
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40 and all(isinstance(row["confidence"], int | float) for row in rows)  # typed as declared
