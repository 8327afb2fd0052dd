"""Values that would break rows: every value is written as valid, correctly quoted UTF-8, and no single
value can block a job."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import Workspace, make_rows, read_json, rows_written, write_csv


@pytest.fixture
def ws(fws: Workspace) -> Workspace:
    """This file's runs answer from the fake provider on a fake clock (no stand-in; `sws` where the stand-in's
    own counts are the point)."""
    return fws


STAGE = """
[[stages]]
name = "v"
type = "python"
function = "values_stage:values"
[stages.fields]
text = "string"
"""

MODULE = r'''
def values(record):
    n = int(record["fund.title"].split()[-1])
    return {"text": {0: "line one\rline two", 1: "\rstarts with a carriage return", 2: "lone \ud800 surrogate",
                     3: "a\r\nb", 4: "=1+1"}.get(n, "plain")}
'''


def _stage(ws: Workspace) -> None:
    ws.stages.write_text(STAGE, encoding="utf-8")
    (ws.tmp / "values_stage.py").write_text(MODULE, encoding="utf-8")


def test_carriage_returns_and_surrogates_never_split_or_block_a_row(ws: Workspace) -> None:
    _stage(ws)
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    raw = ws.output.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    with open(ws.output, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40  # no row was split by a bare CR
    by_title = {r["fund.title"]: r["text"] for r in rows}
    assert by_title["Fund 00000"] == "line one\rline two"
    assert by_title["Fund 00001"] == "'\rstarts with a carriage return"  # neutralised, and quoted
    assert by_title["Fund 00002"] == "lone ? surrogate"  # replaced, and said so
    assert by_title["Fund 00003"] == "a\r\nb"
    assert by_title["Fund 00004"] == "'=1+1"
    assert "could not be written as UTF-8" in proc.stderr
    assert read_json(ws.checkpoint)["status"] == "completed"


def test_a_resume_after_such_values_finds_every_row(ws: Workspace) -> None:
    _stage(ws)
    assert ws.run("--limit", "5").returncode == 1
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 40


def test_a_python_stage_that_returns_no_dict_fails_the_record_at_once(ws: Workspace) -> None:
    ws.stages.write_text(STAGE.replace("values_stage:values", "bad_stage:f"), encoding="utf-8")
    (ws.tmp / "bad_stage.py").write_text("calls = []\ndef f(record):\n    return ['not', 'a', 'dict']\n",
                                         encoding="utf-8")
    proc = ws.run(env=ws.env(ENRICHKIT_BACKOFF_BASE="5"))  # a retry would take seconds: there is none
    assert proc.returncode == 1, proc.stderr
    errors = [json.loads(line) for line in ws.errors.read_text().splitlines()]
    assert len(errors) == 40 and {e["error_type"] for e in errors} == {"client_error"}
    assert {e["attempt"] for e in errors} == {1}
    assert "returned list, not a dict" in errors[0]["message"]


@pytest.mark.parametrize("raised", ["SystemExit(3)", "KeyboardInterrupt()"])
def test_a_python_stage_that_tries_to_end_the_program_fails_its_records(ws: Workspace, raised: str) -> None:
    ws.stages.write_text(STAGE.replace("values_stage:values", "exiting_stage:f"), encoding="utf-8")
    (ws.tmp / "exiting_stage.py").write_text(f"def f(record):\n    raise {raised}\n", encoding="utf-8")
    proc = ws.run()
    assert proc.returncode == 1, proc.stderr  # never 0: nothing was enriched
    cp = read_json(ws.checkpoint)
    assert cp["failed_count"] == 40 and cp["status"] == "completed_with_failures"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", '"NaN"', '"inf"', "1e999"])
def test_nan_and_infinity_in_a_number_field_are_a_validation_error(sws: Workspace, value: str) -> None:
    """Python's JSON parser takes NaN and Infinity; they are no JSON numbers, and were written as `nan`/`inf`."""
    from hostile import gemini_answer, hostile_server

    write_csv(sws.input, make_rows(1))
    text = '{"poc_name": "A", "poc_email": "a@b.c", "confidence": ' + value + '}'
    with hostile_server("answer", gemini_answer(text)) as url:
        proc = sws.run("--base-url", url, "--max-retries", "1", env=sws.env(ENRICHKIT_BACKOFF_BASE="0.01"))
    assert proc.returncode == 1, proc.stderr
    errors = [json.loads(line) for line in sws.errors.read_text(encoding="utf-8").splitlines()]
    assert [e["error_type"] for e in errors] == ["validation_error"] * 2, errors
    assert "confidence" in errors[0]["message"]
    assert rows_written(sws) == 0
