"""`scripts/jobs.py`: its commands in-process on jobs written here file by file (a finished job, one with
failures, one still running), and through real runs against the stand-in where only a process shows
it (a live run, cancel, kill -9)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import COLUMNS, STAGES, Workspace, expected_ids, make_rows, read_csv, read_json, wait_for, write_csv
from enrichkit.commands import enrich_command
from enrichkit.errors import ConfigError
from enrichkit.jobs.cli import main
from enrichkit.jobs.state import decide_state, duration_text, load_status
from enrichkit.run.counters import Counters, StageTable
from enrichkit.run.notify import build_summary
from enrichkit.store.checkpoint import Checkpoint, CheckpointSummary, read_checkpoint, read_summary, write_checkpoint
from enrichkit.store.jobfiles import Owner, process_alive, remove_stale_temps
from enrichkit.store.output import output_columns
from enrichkit.tables.records import RecordIds

FORMULA = "=SUM(1,2)"  # an input value a spreadsheet would run; exports must keep it as text
FIELDS = ["poc_name", "poc_email", "confidence", "email_domain"]
JOB_ID = "enrich_20261120_100000_abcdef"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def jobs(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `jobs.py` in-process: `jobs("status", path, cwd=...) -> Result`."""

    def run(*args: str, cwd: Path | None = None) -> Result:
        capsys.readouterr()
        with chdir(cwd or Path.cwd()):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: --help, or a usage error
                code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def as_json(result: Result) -> Any:
    assert result.code in (0, 1), result.err
    return json.loads(result.out)


def one_line_error(result: Result) -> str:
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


# --- jobs written file by file -----------------------------------------------------------------------


def write_job(tmp: Path, *, n: int = 40, failed: tuple[int, ...] = (), pending: tuple[int, ...] = (),
              status: str = "completed", shuffle: bool = False, **cp_fields: Any) -> Path:
    """A job as a run leaves it: input, stages file, output rows for the records done (in finishing
    order: shuffled if asked), and the checkpoint. Returns the checkpoint."""
    tmp.mkdir(parents=True, exist_ok=True)
    rows = make_rows(n)
    rows[7]["fund.manager"] = FORMULA
    write_csv(tmp / "input.csv", rows)
    (tmp / "stages.toml").write_text(STAGES, encoding="utf-8")
    out = tmp / "out" / "enriched.csv"
    out.parent.mkdir(exist_ok=True)
    ids = RecordIds(COLUMNS)
    done = [i for i in range(n) if i not in failed and i not in pending]
    if shuffle:
        random.Random(4).shuffle(done)
    lines = [output_columns(COLUMNS, FIELDS)]
    for i in done:
        row = rows[i]
        enriched = [f"Name {i}", f"n{i}@m.example.com", "0.75" if i % 2 else "1", "m.example.com", "0.000125"]
        lines.append([*row.values(), *enriched, ids(row), JOB_ID])
    write_csv_rows(out, lines)
    cp = Checkpoint(job_id=JOB_ID, output=str(out), input={"path": str(tmp / "input.csv")}, stages=["poc", "domain"],
                    config_fingerprint="f", fields=FIELDS, stages_file=str(tmp / "stages.toml"),
                    options={"cwd": str(tmp), "max_workers": 4}, status=status, total_records=n,
                    totals=Counters(requests=n + 3, retries=3, rate_limited=2, cache_hits=1, prompt_tokens=2000,
                                    output_tokens=500, thinking_tokens=100, token_cost_usd=0.004,
                                    grounding_cost_usd=0.035, grounded_prompts=1),
                    elapsed_seconds=60.0, run_started_at="2026-11-20T10:00:00Z", run_done=10, run_seconds=20.0,
                    runs=2, filled={"poc_name": len(done), "poc_email": len(done) - 1, "confidence": len(done),
                                    "email_domain": 0},
                    stage_totals=StageTable.from_json({"poc": {"succeeded": len(done),
                                                               "failed_records": {"client_error": len(failed)},
                                                               "attempt_errors": {"rate_limit": 2}}}),
                    pace={"gemini-2.5-flash": {"rpm": 10, "current_rpm": 7.5, "pauses": 2, "paused_seconds": 34.0,
                                               "decreases": 1}},
                    pid=999_999_999, **cp_fields)
    for i in done:
        cp.mark_completed(ids(rows[i]))
    for i in failed:
        cp.mark_failed(ids(rows[i]))
        cp.errors.append({"record_id": ids(rows[i]), "row": i + 1, "stage": "poc", "error_type": "client_error",
                          "message": "400 INVALID_ARGUMENT", "at": "2026-11-20T10:00:30Z"})
    checkpoint = out.with_name("enriched.progress.json")
    write_checkpoint(checkpoint, cp)
    return checkpoint


def write_csv_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def set_updated(checkpoint: Path, stamp: str) -> None:
    state = read_json(checkpoint)
    state["last_updated"] = stamp
    checkpoint.write_text(json.dumps(state), encoding="utf-8")


@pytest.fixture
def done(tmp_path: Path) -> Path:
    """A finished job: 40 records, all enriched."""
    return write_job(tmp_path / "done")


@pytest.fixture
def failing(tmp_path: Path) -> Path:
    """A job that finished with one failure (input row 4)."""
    return write_job(tmp_path / "failing", failed=(3,), status="completed_with_failures")


# --- status, list, stats -------------------------------------------------------------------------


def test_status_of_a_finished_job(jobs: Any, done: Path) -> None:
    state = as_json(jobs("status", str(done), "--json"))
    assert state["state"] == "completed" and state["active_pid"] is None
    assert (state["progress_pct"], state["done"], state["failed"], state["pending"]) == (100.0, 40, 0, 0)
    assert state["total_tokens"] == 2500 and state["records_per_min"] == 40.0 and state["rate_window"] == "job"
    assert state["eta_seconds"] == 0 and state["last_error"] is None
    assert state["can_resume"] is False and state["can_retry_failed"] is False and state["resume_command"] is None
    text = jobs("status", str(done))
    assert text.code == 0, text.err
    assert state["job_id"] in text.out and "completed" in text.out and "100.0%" in text.out
    assert "nothing left to do" in text.out
    # The output CSV names its job too.
    assert as_json(jobs("status", str(done.with_name("enriched.csv")), "--json"))["job_id"] == state["job_id"]


def test_status_json_has_pace_cost_split_stage_totals_and_fill_rates(jobs: Any, done: Path) -> None:
    state = as_json(jobs("status", str(done), "--json"))
    assert (state["token_cost_usd"], state["grounding_cost_usd"], state["cost_usd"]) == (0.004, 0.035, 0.039)
    assert state["pace"]["gemini-2.5-flash"] == {"rpm": 10, "current_rpm": 7.5, "pauses": 2, "paused_seconds": 34.0,
                                                 "decreases": 1}
    assert state["stage_totals"]["poc"]["attempt_errors"] == {"rate_limit": 2}
    assert state["fill_rates"] == {"poc_name": 1.0, "poc_email": 0.975, "confidence": 1.0, "email_domain": 0.0}
    text = jobs("status", str(done)).out
    assert "gemini-2.5-flash: 7.5/10 rpm (2 pause(s), 34 s paused, cut 1 time(s))" in text
    assert "$0.0390 ($0.0040 tokens + $0.0350 grounding)" in text
    assert "3 retries, 2 rate-limited, 1 cache hits" in text


def test_rate_and_eta_use_the_run_while_running_and_the_job_average_when_stopped(tmp_path: Path) -> None:
    checkpoint = write_job(tmp_path, pending=tuple(range(20, 40)), status="running", host="here")
    # This run: 10 records in 20 s = 30/min, 20 pending -> 40 s. The job: 20 records in 60 s = 20/min -> 60 s.
    running = load_status(checkpoint, host="here", alive=lambda pid, since: True)
    assert (running.state, running.rate_window, running.records_per_min, running.eta_seconds) == ("running", "run",
                                                                                                  30.0, 40.0)
    stopped = load_status(checkpoint, host="here", alive=lambda pid, since: False)
    assert (stopped.state, stopped.rate_window, stopped.records_per_min, stopped.eta_seconds) == ("interrupted", "job",
                                                                                                  20.0, 60.0)


def test_resume_and_retry_commands_name_only_the_files(jobs: Any, tmp_path: Path) -> None:
    checkpoint = write_job(tmp_path, failed=(3,), pending=(5, 6), status="interrupted")
    state = as_json(jobs("status", str(checkpoint), "--json"))
    out = tmp_path / "out" / "enriched.csv"
    expected = f"{enrich_command()} --input {tmp_path / 'input.csv'} --output {out} --resume"
    assert state["resume_command"] == expected
    assert state["retry_failed_command"].endswith(f"--output {out} --retry-failed")
    moved = checkpoint.rename(tmp_path / "elsewhere.progress.json")  # not beside the output: named
    assert f"--checkpoint {moved} --resume" in as_json(jobs("status", str(moved), "--json"))["resume_command"]


@pytest.mark.parametrize(("status", "failed", "pending", "command"), [
    ("budget_exhausted", (3,), (5, 6), "--resume --max-cost USD"),
    ("interrupted", (3,), (5, 6), "--resume"),
    ("completed_with_failures", (3,), (), "--retry-failed"),
    ("completed", (), (), None),
])
def test_status_its_json_and_the_webhook_give_the_same_command_to_continue(
        jobs: Any, tmp_path: Path, status: str, failed: tuple[int, ...], pending: tuple[int, ...],
        command: str | None) -> None:
    checkpoint = write_job(tmp_path, failed=failed, pending=pending, status=status)
    job = load_status(checkpoint)
    state = as_json(jobs("status", str(checkpoint), "--json"))
    text = jobs("status", str(checkpoint)).out
    report = {"status": status, "counts": {"pending": len(pending), "failed": len(failed)}}
    webhook = build_summary(report, job.paths, host="here")["resume_command"]
    assert state["next_command"] == webhook == job.next_command
    if command is None:
        assert webhook is None and "no: nothing left to do" in text
        return
    assert webhook.endswith(f"--output {job.paths.output} {command}")
    assert webhook in text and webhook in (state["resume_command"], state["retry_failed_command"])


def test_status_of_a_job_with_failures_points_at_retry_failed(jobs: Any, failing: Path) -> None:
    state = as_json(jobs("status", str(failing), "--json"))
    assert state["state"] == "completed_with_failures"
    assert (state["done"], state["failed"], state["pending"]) == (39, 1, 0)
    assert state["last_error"]["error_type"] == "client_error" and state["last_error"]["row"] == 4
    assert state["can_resume"] is False and state["can_retry_failed"] is True
    text = jobs("status", str(failing)).out
    assert "client_error" in text and "--retry-failed" in text


def test_status_without_argument_finds_the_one_job_or_lists_them(jobs: Any, tmp_path: Path) -> None:
    write_job(tmp_path / "a")
    one = jobs("status", cwd=tmp_path / "a")
    assert one.code == 0 and JOB_ID in one.out
    write_job(tmp_path / "b", failed=(3,), status="completed_with_failures")
    several = jobs("status", cwd=tmp_path)
    assert several.code == 2 and "Traceback" not in several.err
    assert "2 jobs under" in several.err
    assert "a/out/enriched.progress.json" in several.err and "b/out/enriched.progress.json" in several.err
    (tmp_path / "empty").mkdir()
    assert "no job under" in one_line_error(jobs("status", cwd=tmp_path / "empty"))


def test_list_and_stats_across_jobs(jobs: Any, tmp_path: Path) -> None:
    set_updated(write_job(tmp_path / "a"), "2026-11-20T10:00:00Z")
    set_updated(write_job(tmp_path / "b", failed=(3,), status="completed_with_failures"), "2026-11-21T10:00:00Z")
    (tmp_path / "c.progress.json").write_text("{", encoding="utf-8")
    listed = as_json(jobs("list", str(tmp_path), "--json"))
    assert [j["state"] for j in listed] == ["completed_with_failures", "completed", "unreadable"]  # newest first
    text = jobs("list", str(tmp_path)).out.splitlines()
    assert len(text) == 4 and text[0].startswith("UPDATED") and "completed_with_failures" in text[1]
    assert "unreadable" in text[3] and "corrupt checkpoint" in text[3]
    stats = as_json(jobs("stats", str(tmp_path), "--json"))
    assert stats["jobs"] == 2 and stats["states"] == {"completed": 1, "completed_with_failures": 1}
    assert (stats["records"], stats["done"], stats["failed"], stats["pending"]) == (80, 79, 1, 0)
    assert stats["success_rate"] == round(79 / 80, 4) and stats["total_tokens"] == 5000
    assert stats["grounding_cost_usd"] == 0.07
    assert "98.8% of the records tried" in jobs("stats", str(tmp_path)).out


# --- validate -----------------------------------------------------------------------------------------


def test_validate_passes_a_clean_job(jobs: Any, done: Path, failing: Path) -> None:
    for checkpoint, failed in ((done, 0), (failing, 1)):
        result = jobs("validate", str(checkpoint))
        assert result.code == 0, result.out
        assert result.out.startswith("valid:") and f"{failed} failed" in result.out
    verdict = as_json(jobs("validate", str(failing), "--json"))
    assert verdict["ok"] is True and verdict["defects"] == []
    assert (verdict["input_records"], verdict["output_rows"], verdict["failed"]) == (40, 39, 1)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _plant_duplicate(out: Path) -> None:
    lines = _lines(out)
    out.write_bytes(b"".join([*lines, lines[5]]))


def _plant_missing(out: Path) -> str:
    """Delete the 5th row; returns its fund.title."""
    lines = _lines(out)
    out.write_bytes(b"".join(lines[:5] + lines[6:]))
    return lines[5].decode().split(",")[0]


def _plant_torn(out: Path) -> None:
    out.write_bytes(out.read_bytes()[:-1])  # the last row loses its newline, as in a crash mid-write


@pytest.mark.parametrize(("plant", "kind"), [(_plant_duplicate, "duplicate"), (_plant_missing, "lost"),
                                             (_plant_torn, "torn")])
def test_validate_catches_a_planted_defect(jobs: Any, done: Path, plant: Any, kind: str) -> None:
    assert jobs("validate", str(done)).code == 0
    plant(done.with_name("enriched.csv"))
    result = jobs("validate", str(done))
    assert result.code == 1, result.out
    assert result.out.startswith("INVALID:") and f"- {kind}:" in result.out
    verdict = as_json(jobs("validate", str(done), "--json"))
    assert verdict["ok"] is False and kind in {d["kind"] for d in verdict["defects"]}
    if kind == "duplicate":
        assert "2 times (lines 6, 42)" in result.out


def test_validate_catches_a_wrong_header_and_an_edited_row(jobs: Any, done: Path) -> None:
    out = done.with_name("enriched.csv")
    original = _lines(out)
    lines = list(original)
    lines[0] = lines[0].replace(b"poc_name", b"contact")
    edited = next(i for i, line in enumerate(lines) if line.startswith(b"Fund 00002,"))
    lines[edited] = lines[edited].replace(b"Fund 00002", b"Fund 0000X")
    out.write_bytes(b"".join(lines))
    kinds = {d["kind"] for d in as_json(jobs("validate", str(done), "--json"))["defects"]}
    assert kinds == {"header"}  # rows are not judged against IDs under a header the job did not write
    lines[0] = original[0]
    out.write_bytes(b"".join(lines))
    defects = as_json(jobs("validate", str(done), "--json"))["defects"]
    assert [d["kind"] for d in defects] == ["mismatch", "lost"]  # the edited row no longer proves Fund 00002


# --- missing ------------------------------------------------------------------------------------------


def test_missing_lists_failed_and_pending_rows_as_csv(jobs: Any, failing: Path, tmp_path: Path) -> None:
    result = jobs("missing", str(failing))
    assert result.code == 0, result.err
    header = ",".join(COLUMNS)
    assert result.out.splitlines() == [header, "Fund 00003,Manager 3,First3,Last3,p3@m3.example.com"]
    assert "1 record(s) not done (0 pending, 1 failed)" in result.err
    only = jobs("missing", str(failing), "--pending-only")
    assert only.code == 0 and len(only.out.splitlines()) == 1  # the header alone

    title = _plant_missing(failing.with_name("enriched.csv"))  # a done record is now to do again
    target = tmp_path / "todo.csv"
    result = jobs("missing", str(failing), "--output", str(target), "--annotate")
    assert result.code == 0, result.err
    expected = sorted([("Fund 00003", "failed", "4"), (title, "pending", str(int(title[-5:]) + 1))],
                      key=lambda r: int(r[2]))
    assert [(r["fund.title"], r["_state"], r["_row"]) for r in read_csv(target)] == expected
    assert "one of the job's own files" in one_line_error(jobs("missing", str(failing), "--output",
                                                               str(failing.with_name("enriched.csv"))))


# --- export -------------------------------------------------------------------------------------------


def test_export_jsonl_types_values_as_the_fields_declare(jobs: Any, done: Path, tmp_path: Path) -> None:
    out = done.with_name("enriched.csv")
    lines = _lines(out)
    lines[1] = lines[1].replace(b",1,m.example.com,", b",high,,")  # a confidence that is no number, an empty field
    out.write_bytes(b"".join(lines))
    target = tmp_path / "all.jsonl"
    result = jobs("export", str(done), "--output", str(target))
    assert result.code == 0, result.err
    assert "exported 40 row(s)" in result.err and "1 value(s) kept as text" in result.err
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert records[0]["confidence"] == "high" and records[0]["email_domain"] is None
    assert records[1]["confidence"] == 0.75 and records[1]["_cost_usd"] == 0.000125
    assert records[2]["confidence"] == 1 and isinstance(records[2]["confidence"], int)
    assert records[1]["poc.first_name"] == "First1" and records[1]["_record_id"] == read_csv(out)[1]["_record_id"]
    assert [r["fund.title"] for r in records] == [r["fund.title"] for r in read_csv(out)]


def test_export_in_input_order_puts_strays_last(jobs: Any, tmp_path: Path) -> None:
    checkpoint = write_job(tmp_path, shuffle=True, failed=(3,), status="completed_with_failures")
    out = checkpoint.with_name("enriched.csv")
    gone = make_rows(1, start=99)[0]  # a row of no input record (the input changed since it was written)
    with open(out, "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow([*gone.values(), "n", "e", "1", "d", "0", RecordIds(COLUMNS)(gone),
                                                      JOB_ID])
    as_written = [r["fund.title"] for r in read_csv(out)]
    assert as_written[:-1] != sorted(as_written[:-1])
    result = jobs("export", str(checkpoint), "--order", "input", "--format", "jsonl", "--output", "-")
    assert result.code == 0, result.err
    titles = [json.loads(line)["fund.title"] for line in result.out.splitlines()]
    assert titles == [f"Fund {i:05d}" for i in range(40) if i != 3] + ["Fund 00099"]
    assert "in input order" in result.err and "1 row(s) of no current input record at the end" in result.err
    csv_out = jobs("export", str(checkpoint), "--order", "input", "--format", "csv", "--output", "-")
    assert [line.split(",")[0] for line in csv_out.out.splitlines()] == ["fund.title", *titles]


def test_export_xlsx_keeps_text_as_text_and_numbers_as_numbers(jobs: Any, done: Path, tmp_path: Path) -> None:
    import openpyxl

    xlsx = tmp_path / "all.xlsx"
    assert jobs("export", str(done), "--output", str(xlsx)).code == 0  # the format from the name
    rows = list(openpyxl.load_workbook(xlsx).active.iter_rows())
    expected = read_csv(done.with_name("enriched.csv"))
    assert [c.value for c in rows[0]] == list(expected[0])
    assert [str(c.value) for c in rows[1]][:5] == list(expected[0].values())[:5]
    confidence = next(c for c in rows[2] if c.column == 8)
    assert confidence.value == 0.75 and confidence.data_type == "n"
    formula = next(c for row in rows for c in row if c.value == FORMULA)
    assert formula.data_type == "s"  # text, not a formula


def test_export_takes_only_whole_rows_of_a_file_being_written(jobs: Any, done: Path) -> None:
    out = done.with_name("enriched.csv")
    whole = out.read_bytes()
    expected = as_json_lines(jobs("export", str(done), "--output", "-"))
    # What a reader may meet while the writer is mid-row: a partial row, or one cut inside a quoted field
    # right after a newline (the last line then ends with a newline but the row is not over).
    for tail in (b"Fund 99999,Manager,First,Last,x@y.com,Some", b'Fund 99999,Manager,First,Last,x@y.com,"two\n',
                 b'Fund 99999,Manager,First,Last,x@y.com,"two\nlines",a@b.c,0.5,b.c,0.1,0123456789abcdef,enr'):
        out.write_bytes(whole + tail)
        result = jobs("export", str(done), "--output", "-")
        assert result.code == 0, result.err
        assert as_json_lines(result) == expected, tail


def as_json_lines(result: Result) -> list[Any]:
    return [json.loads(line) for line in result.out.splitlines()]


# --- bad arguments -------------------------------------------------------------------------------------


def test_bad_arguments_are_one_line_and_exit_2(jobs: Any, tmp_path: Path) -> None:
    assert "no such checkpoint" in one_line_error(jobs("status", str(tmp_path / "nope.progress.json")))
    corrupt = tmp_path / "corrupt.progress.json"
    corrupt.write_text('{"job_id": "enrich_x", "status": ', encoding="utf-8")
    for command in ("status", "validate", "missing", "cancel"):
        assert "corrupt checkpoint" in one_line_error(jobs(command, str(corrupt)))
    (tmp_path / "other.progress.json").write_text('{"hello": 1}', encoding="utf-8")
    assert "not an enrichkit checkpoint" in one_line_error(jobs("status", str(tmp_path / "other.progress.json")))
    assert "no such folder" in one_line_error(jobs("list", str(tmp_path / "nowhere")))
    one_line_error(jobs("frobnicate"))
    one_line_error(jobs("validate"))
    one_line_error(jobs("export", str(corrupt)))  # --output is required
    one_line_error(jobs("cancel", str(corrupt), "--timeout", "soon"))
    serve = one_line_error(jobs("serve", str(tmp_path), "--host", "0.0.0.0"))
    assert "set ENRICHKIT_DASHBOARD_TOKEN in the environment" in serve


def test_every_subcommand_has_help_with_an_example(jobs: Any) -> None:
    top = jobs("--help")
    assert top.code == 0 and "examples:" in top.out
    for command in ("status", "list", "stats", "validate", "missing", "export", "cancel", "serve"):
        result = jobs(command, "--help")
        assert result.code == 0, result.err
        assert "example:" in result.out and f"jobs.py {command}" in result.out
    status_help = " ".join(jobs("status", "--help").out.split())
    assert "while a run is working, that run's own figures" in status_help and "the job's average" in status_help


# --- reading only a checkpoint's summary --------------------------------------------------------------


def test_status_reads_the_counts_the_checkpoint_recorded_without_its_id_lists(failing: Path) -> None:
    full = read_checkpoint(failing)
    summary = read_summary(failing)
    assert isinstance(summary, CheckpointSummary)
    assert summary.summary() == full.summary()  # every field and count, as the full read has them
    assert (summary.completed_count, summary.failed_count) == (39, 1)
    # The ID lists are never parsed: hex that is no ID past the summary goes unnoticed here ...
    raw = failing.read_bytes()
    first = raw.index(b'"completed_ids": ["') + len(b'"completed_ids": ["')
    failing.write_bytes(raw[:first] + b"zz" + raw[first + 2:])
    assert read_summary(failing).completed_count == 39
    with pytest.raises(ConfigError, match="not an ID"):  # ... and is refused by the full read
        read_checkpoint(failing)


def test_validate_and_missing_still_read_the_id_lists(failing: Path) -> None:
    job = load_status(failing)
    assert isinstance(job.cp, CheckpointSummary) and not job.cp.completed_ids
    ids = job.with_ids()
    assert (len(ids.completed_ids), len(ids.failed_ids)) == (39, 1)


@pytest.mark.parametrize("shape", ["no counts", "ids first", "cut short"])
def test_a_checkpoint_not_shaped_as_written_is_read_in_full(tmp_path: Path, done: Path, shape: str) -> None:
    full = read_checkpoint(done)
    data = json.loads(done.read_text(encoding="utf-8"))
    path = tmp_path / "odd.progress.json"
    if shape == "no counts":  # an older writer's: the counts come from the lists
        del data["completed_count"], data["failed_count"]
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    elif shape == "ids first":  # re-saved by an editor that sorted the keys
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    else:  # a copy that stopped part way: refused, as the full read refuses it
        raw = done.read_bytes()
        path.write_bytes(raw[: len(raw) - 30])
        with pytest.raises(ConfigError, match="corrupt checkpoint"):
            read_summary(path)
        return
    assert read_summary(path).completed_count == full.completed_count == 40
    assert load_status(path).done == 40


# --- the state rules, without processes --------------------------------------------------------------


def _cp(status: str, pid: int = 100, host: str = "here") -> Checkpoint:
    return Checkpoint(job_id="enrich_x", output="/o.csv", input={}, stages=[], config_fingerprint="",
                      status=status, pid=pid, host=host)


def test_state_is_running_only_with_a_live_pid_on_this_host() -> None:
    live = {100, 200}

    def alive(pid: int, _since: float | None) -> bool:
        return pid in live

    assert decide_state(_cp("running"), None, "here", alive) == ("running", 100)
    assert decide_state(_cp("running", pid=300), None, "here", alive) == ("interrupted", None)
    assert decide_state(_cp("running", host="there"), None, "here", alive) == ("unknown", None)
    assert decide_state(_cp("completed"), None, "here", alive) == ("completed", None)
    # A run still setting up holds the lock before it writes the checkpoint.
    assert decide_state(_cp("interrupted", pid=300), Owner(200, "here", 0.0), "here", alive) == ("starting", 200)
    assert decide_state(_cp("interrupted", pid=300), Owner(300, "here", 0.0), "here", alive) == ("interrupted", None)
    # A run that wrote its last checkpoint still holds the lock for a moment while it exits.
    assert decide_state(_cp("completed", pid=200), Owner(200, "here", 0.0), "here", alive) == ("completed", None)


@pytest.mark.e2e  # starts a process: not in `make unit`
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times and zombies are read from /proc")
def test_process_alive_rejects_the_dead_the_unreaped_and_a_reused_pid() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(os.getpid(), started_by=0.0)  # "recorded in 1970": this process came later
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: not process_alive(child.pid), what="the child to exit")  # a zombie until reaped
    child.wait()
    assert not process_alive(child.pid)


@pytest.mark.e2e  # starts a process: not in `make unit`
def test_a_temp_file_is_stale_once_its_writer_is_gone_or_its_pid_is_another_process(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: not process_alive(child.pid), what="the child to exit")  # a zombie: no writer any more
    zombie = tmp_path / f".out.csv.{child.pid}.tmp"
    reused = tmp_path / f".out.csv.{os.getpid()}.tmp"  # this process's PID, on a file written before it started
    live = tmp_path / f".out.csv.{os.getppid()}.tmp"  # a live writer, which started before it wrote
    for tmp in (zombie, reused, live):
        tmp.write_text("half a row", encoding="utf-8")
    os.utime(reused, (0, 0))
    remove_stale_temps(out)
    child.wait()
    assert [p.name for p in tmp_path.iterdir()] == [live.name]


def test_durations_read_as_people_say_them() -> None:
    assert [duration_text(s) for s in (0.25, 8.5, 12, 59.4, 187, 7500)] == ["0.25 s", "8.5 s", "12 s", "59.4 s",
                                                                            "3m07s", "2h05m"]


# --- cancel, on processes standing in for a run ------------------------------------------------------


@pytest.fixture
def fake_run(tmp_path: Path) -> Iterator[Any]:
    """A process standing in for a run (its SIGINT handler given) that holds the job's lock, as a run does,
    and a checkpoint naming it as running."""
    procs: list[subprocess.Popen[str]] = []

    def start(handler: str) -> tuple[subprocess.Popen[str], Path]:
        code = (f"import fcntl, os, signal, sys, time\nsignal.signal(signal.SIGINT, {handler})\n"
                "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                "print('ready', flush=True)\ntime.sleep(120)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "job.lock")], stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        checkpoint = tmp_path / "job.progress.json"
        write_checkpoint(checkpoint, Checkpoint(job_id="enrich_fake", output=str(tmp_path / "job.csv"),
                                                input={"path": str(tmp_path / "in.csv")}, stages=["poc"],
                                                config_fingerprint="", status="running", pid=proc.pid))
        return proc, checkpoint

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_cancel_gives_up_after_its_timeout_on_a_run_that_does_not_stop(jobs: Any, fake_run: Any) -> None:
    proc, checkpoint = fake_run("lambda *_: None")
    assert as_json(jobs("status", str(checkpoint), "--json"))["state"] == "running"
    cancel = jobs("cancel", str(checkpoint), "--timeout", "0.5")
    assert cancel.code == 1 and "still running after 0.5 s" in cancel.out
    assert proc.poll() is None
    proc.kill()
    proc.wait()
    assert as_json(jobs("status", str(checkpoint), "--json"))["state"] == "interrupted"


def test_cancel_sends_sigterm_to_a_run_that_ignores_sigint(jobs: Any, fake_run: Any) -> None:
    # A run started in the background by a script ignores SIGINT until the CLI installs its handler.
    proc, checkpoint = fake_run("signal.SIG_IGN")
    cancel = jobs("cancel", str(checkpoint), "--timeout", "30")
    assert cancel.code == 0, cancel.out + cancel.err
    assert "stopped: enrich_fake is interrupted" in cancel.out
    proc.wait()
    assert proc.returncode == -signal.SIGTERM


# --- real runs against the stand-in --------------------------------------------------------------------


def _rows(ws: Workspace) -> int:
    return ws.output.read_bytes().count(b"\n") - 1 if ws.output.exists() else 0


def test_live_run_shows_running_and_cancel_stops_it(jobs: Any, ws: Workspace) -> None:
    write_csv(ws.input, make_rows(300))
    ws.fake.configure(latency=0.05)
    proc = ws.start("--max-workers", "2")
    try:
        wait_for(lambda: _rows(ws) >= 3 and read_json(ws.checkpoint)["completed_count"] > 0, what="a checkpoint")
        state = as_json(jobs("status", str(ws.checkpoint), "--json"))
        assert state["state"] == "running" and state["active_pid"] == proc.pid and state["rate_window"] == "run"
        assert state["can_resume"] is False and 0 < state["progress_pct"] < 100
        assert "jobs.py cancel" in jobs("status", str(ws.checkpoint)).out
        # Export while the run appends: whole rows only, never fewer than before.
        seen = 0
        for _ in range(3):
            rows = as_json_lines(jobs("export", str(ws.checkpoint), "--output", "-"))
            assert len(rows) >= seen and all(len(r["_record_id"]) == 16 and r["poc_name"] for r in rows)
            seen = len(rows)
        cancel = jobs("cancel", str(ws.checkpoint), "--timeout", "30")
        assert cancel.code == 0, (cancel.out, cancel.err)
        assert "stopped:" in cancel.out and "is interrupted" in cancel.out and "--resume" in cancel.out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    state = as_json(jobs("status", str(ws.checkpoint), "--json"))
    assert state["state"] == "interrupted" and state["can_resume"] is True and state["pending"] > 0
    again = jobs("cancel", str(ws.checkpoint))
    assert again.code == 1 and again.out.startswith(f"no run is active for {state['job_id']}")


def test_killed_run_shows_interrupted_and_its_missing_rows(jobs: Any, ws: Workspace) -> None:
    write_csv(ws.input, make_rows(120))  # 3 s of run at this latency; killed after 5 rows, the resume does the rest
    ws.fake.configure(latency=0.05)
    proc = ws.start("--max-workers", "2")
    wait_for(lambda: _rows(ws) >= 5 and read_json(ws.checkpoint)["status"] == "running", what="a running job")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert read_json(ws.checkpoint)["status"] == "running"  # what the dead run left behind
    state = as_json(jobs("status", str(ws.checkpoint), "--json"))
    assert state["state"] == "interrupted" and state["recorded_status"] == "running"
    assert state["active_pid"] is None and state["can_resume"] is True
    assert "is gone" in jobs("status", str(ws.checkpoint)).out
    missing = jobs("missing", str(ws.checkpoint))
    assert missing.code == 0, missing.err
    assert len(missing.out.splitlines()) - 1 == 120 - len(read_csv(ws.output))
    verdict = as_json(jobs("validate", str(ws.checkpoint), "--json"))
    assert [d["kind"] for d in verdict["defects"]] == ["not_done"]
    ws.fake.configure(latency=0)
    assert ws.run("--resume").returncode == 0
    assert jobs("validate", str(ws.checkpoint)).code == 0
    assert set(ws.output_ids()) == expected_ids(ws)


def test_validate_reports_an_output_re_saved_in_another_encoding(jobs: Any, done: Path) -> None:
    output = done.with_name("enriched.csv")
    text = output.read_text(encoding="utf-8").replace("Manager 1,", "Manager é,", 1)
    output.write_bytes(text.encode("cp1252"))
    result = jobs("validate", str(done))
    assert result.code == 1, result.err
    assert "encoding: " in result.out and "is not UTF-8" in result.out


def test_validate_of_a_copied_job_folder_says_which_output_it_checked(jobs: Any, done: Path) -> None:
    import shutil

    copy = done.parent.parent / "copy"
    shutil.copytree(done.parent.parent, copy)
    result = jobs("validate", str(copy / "out" / "enriched.progress.json"))
    assert "a copied job folder?" in result.out and str(done.with_name("enriched.csv")) in result.out


@pytest.mark.e2e  # starts processes: not in `make unit`
def test_a_reader_that_goes_away_does_not_change_the_exit_code(done: Path) -> None:
    import subprocess
    import sys

    import zygote
    from conftest import JOBS

    for args in (["validate", str(done)], ["list", str(done.parent.parent)], ["missing", str(done)],
                 ["export", str(done), "--format", "jsonl", "--output", "-"]):
        proc = zygote.popen([sys.executable, str(JOBS), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()
        assert proc.wait(timeout=60) == 0, args


@pytest.mark.e2e  # starts processes: not in `make unit`
def test_serve_from_a_python_lacking_only_the_dashboards_packages_runs_with_the_venv(tmp_path: Path) -> None:
    # A system python with every other dependency (here: the venv's packages but fastapi and uvicorn).
    import shutil
    import sysconfig

    from conftest import JOBS, ROOT

    python = shutil.which("python3", path="/usr/bin:/bin")
    same_version = f"import sys; assert sys.version_info[:2] == {tuple(sys.version_info[:2])}"
    if (python is None or Path(sys.prefix).resolve() != (ROOT / ".venv").resolve()
            or subprocess.run([python, "-c", same_version], capture_output=True).returncode):
        pytest.skip("needs this test run in .venv and a system python3 of the same version")
    site = tmp_path / "site"
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("fastapi", "uvicorn")):
            (site / entry.name).symlink_to(entry)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(site)}
    # Found, not imported (importing google.genai alone takes a second): every module but fastapi's is there.
    probe = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('google.genai', 'filelock', "
                            "'dotenv', 'tqdm', 'tenacity', 'openpyxl', 'fastapi') if u.find_spec(m) is None])"],
                           env=env, capture_output=True, text=True)
    if probe.stdout.strip() != "['fastapi']":
        pytest.skip(f"could not make a python that lacks only fastapi: {probe.stdout[-300:]}{probe.stderr[-300:]}")
    proc = subprocess.run([python, str(JOBS), "serve", str(tmp_path), "--host", "10.1.2.3"], env=env,
                          capture_output=True, text=True, timeout=60)
    # the dashboard's own check
    assert proc.returncode == 2 and "set ENRICHKIT_DASHBOARD_TOKEN" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
