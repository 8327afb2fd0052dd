"""Whole-file problems stop before any request: exit 2, one line, no traceback. Bad rows never crash a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Workspace, expected_ids, make_rows, read_csv, read_json, write_csv


def _assert_one_line_exit_2(ws: Workspace, proc, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert ws.fake.stats()["generate"] == 0
    assert not ws.checkpoint.exists()


CASES = {
    "missing file": (lambda ws: ws.tmp / "nope.csv", ["no such file"]),
    "empty file": (lambda ws: _write(ws.tmp / "empty.csv", ""), ["empty"]),
    "blank lines only": (lambda ws: _write(ws.tmp / "blank.csv", "\n\n\n"), ["no header"]),
    "duplicate header names": (lambda ws: _write(ws.tmp / "dup.csv", "fund.title,fund.title\na,b\n"),
                               ["duplicate column names", "fund.title"]),
    "empty header name": (lambda ws: _write(ws.tmp / "gap.csv", "fund.title,,x\na,b,c\n"), ["empty column name"]),
    "unsupported type": (lambda ws: _write(ws.tmp / "data.txt", "a\n"), ["unsupported input type"]),
    "not an xlsx": (lambda ws: _write(ws.tmp / "fake.xlsx", "not a workbook"), ["fake.xlsx"]),
    "jsonl first line not an object": (lambda ws: _write(ws.tmp / "x.jsonl", "[1,2]\n"), ["x.jsonl"]),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_unreadable_input_file(ws: Workspace, case: str) -> None:
    make, needles = CASES[case]
    ws.input = make(ws)
    _assert_one_line_exit_2(ws, ws.run(), *needles)


def test_prompt_placeholder_the_header_lacks(ws: Workspace) -> None:
    ws.stages.write_text(ws.stages.read_text().replace("{fund.manager}", "{fund.managr}"), encoding="utf-8")
    _assert_one_line_exit_2(ws, ws.run(), "{fund.managr}", "poc")


def test_unknown_id_column(ws: Workspace) -> None:
    _assert_one_line_exit_2(ws, ws.run("--id-columns", "fund.title,nope"), "--id-columns", "'nope'")


@pytest.mark.parametrize("workers", ["0", "21", "-3"])
def test_max_workers_outside_1_to_20(ws: Workspace, workers: str) -> None:
    _assert_one_line_exit_2(ws, ws.run("--max-workers", workers), "--max-workers")


def test_unknown_stage_and_broken_stages_file(ws: Workspace) -> None:
    _assert_one_line_exit_2(ws, ws.run("--stages", "poc,nope"), "unknown stage", "nope")
    ws.stages.write_text("[[stages]\nname=", encoding="utf-8")
    _assert_one_line_exit_2(ws, ws.run(), "not valid TOML")
    _assert_one_line_exit_2(ws, ws.run("--stages-file", str(ws.tmp / "missing.toml")), "stages file not found")


def test_unknown_flag_and_missing_required_flag(ws: Workspace) -> None:
    _assert_one_line_exit_2(ws, ws.run("--frobnicate"), "unrecognized arguments")
    _assert_one_line_exit_2(ws, ws.run("--output", "x.csv", base=False), "--input")


def test_missing_api_key(ws: Workspace) -> None:
    env = {k: v for k, v in ws.env().items() if k != "GEMINI_API_KEY"}
    _assert_one_line_exit_2(ws, ws.run(env=env), "GEMINI_API_KEY")


def test_dead_api_key_stops_the_run_with_exit_2_and_marks_nothing_failed(ws: Workspace) -> None:
    ws.fake.configure(require_key="the-right-key-000")
    proc = ws.run()
    assert proc.returncode == 2, proc.stderr
    assert "GEMINI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["failed_count"] == 0 and cp["completed_count"] == 0
    assert cp["status"] == "failed"
    # With the key fixed the same job resumes to the end.
    ok = ws.run("--resume", env=ws.env(GEMINI_API_KEY="the-right-key-000"))
    assert ok.returncode == 0, ok.stderr


def test_header_only_file_is_nothing_to_do(ws: Workspace) -> None:
    write_csv(ws.input, [])
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert read_csv(ws.output) == []
    assert ws.fake.stats()["generate"] == 0


def test_bad_rows_are_logged_with_their_row_number_and_the_rest_is_enriched(ws: Workspace) -> None:
    good = make_rows(6)
    write_csv(ws.input, good)
    lines = ws.input.read_bytes().splitlines(keepends=True)
    lines.insert(3, b"only,three,fields\n")  # ragged: data row 3
    lines.insert(5, b"Bad \x00 nul,M,A,B,c@d.com\n")  # NUL: data row 5
    lines.insert(6, b"Bad \xff bytes,M,A,B,c@d.com\n")  # not UTF-8: data row 6
    ws.input.write_bytes(b"".join(lines))
    proc = ws.run()
    assert proc.returncode == 0, proc.stderr
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))
    assert len(ws.output_ids()) == 6
    errors = [__import__("json").loads(x) for x in ws.errors.read_text().splitlines()]
    assert [(e["row"], e["error_type"]) for e in errors] == [(3, "input_error"), (5, "input_error"),
                                                              (6, "input_error")]
    assert read_json(ws.report)["counts"]["input_errors"] == 3


def test_output_that_is_not_ours_is_refused(ws: Workspace) -> None:
    ws.output.parent.mkdir(parents=True)
    ws.output.write_text("name,age\nann,3\n", encoding="utf-8")
    proc = ws.run("--resume")
    _assert_one_line_exit_2(ws, proc, "not an enrichkit output")
    assert ws.output.read_text() == "name,age\nann,3\n"


def test_corrupt_checkpoint_is_one_line(ws: Workspace) -> None:
    ws.checkpoint.parent.mkdir(parents=True)
    ws.checkpoint.write_text("{not json", encoding="utf-8")
    proc = ws.run("--resume")
    assert proc.returncode == 2 and "corrupt checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
