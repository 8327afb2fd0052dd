"""`scripts/jobs.py` through its CLI, on jobs made by real runs against the stand-in: a finished job,
one with failures, a live one, a killed one, and copies of them with defects planted by hand."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import JOBS, Workspace, expected_ids, make_rows, read_csv, read_json, wait_for, write_csv
from enrichkit.checkpoint import Checkpoint, write_checkpoint
from enrichkit.jobstate import decide_state, process_alive
from fake_gemini import FakeGemini

FORMULA = "=SUM(1,2)"  # an input value a spreadsheet would run; exports must keep it as text


def jobs(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(JOBS), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, stdin=subprocess.DEVNULL)


def jobs_json(*args: str) -> Any:
    proc = jobs(*args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def _rows(ws: Workspace) -> int:
    return ws.output.read_bytes().count(b"\n") - 1 if ws.output.exists() else 0


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- jobs made once per module, copied by the tests that plant defects ------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGemini]:
    with FakeGemini(seed=1) as fake:
        yield fake


def _finished(tmp: Path, server: FakeGemini, fail: list[str]) -> Workspace:
    ws = Workspace(tmp, server)
    rows = make_rows(40)
    rows[7]["fund.manager"] = FORMULA
    write_csv(ws.input, rows)
    server.configure(fail_matching=fail, latency=0)
    proc = ws.run(env=ws.env(ENRICHKIT_BACKOFF_BASE="0.01"))
    assert proc.returncode == (1 if fail else 0), proc.stderr
    return ws


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, server: FakeGemini) -> Workspace:
    """A job that finished: 40 records, all enriched."""
    return _finished(tmp_path_factory.mktemp("done"), server, [])


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory, server: FakeGemini) -> Workspace:
    """A job that finished with one failure (input row 4, a permanent 400)."""
    return _finished(tmp_path_factory.mktemp("failing"), server, ["Fund 00003 "])


def copy_job(ws: Workspace, dest: Path, updated: str | None = None) -> Path:
    """A copy of a job's files under `dest`, its checkpoint pointing at the copies; returns the checkpoint."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ws.input, dest / "input.csv")
    shutil.copytree(ws.output.parent, dest / "out")
    checkpoint = dest / "out" / ws.checkpoint.name
    state = read_json(checkpoint)
    state["input"]["path"] = str(dest / "input.csv")
    state["output"] = str(dest / "out" / ws.output.name)
    if updated:
        state["last_updated"] = updated
    checkpoint.write_text(json.dumps(state), encoding="utf-8")
    return checkpoint


# --- status, list, stats -------------------------------------------------------------------------


def test_status_of_a_finished_job(done: Workspace) -> None:
    state = jobs_json("status", str(done.checkpoint))
    assert state["state"] == "completed" and state["active_pid"] is None
    assert (state["progress_pct"], state["done"], state["failed"], state["pending"]) == (100.0, 40, 0, 0)
    assert state["total_tokens"] > 0 and state["cost_usd"] > 0 and state["records_per_min"] > 0
    assert state["eta_seconds"] == 0 and state["last_error"] is None
    assert state["can_resume"] is False and state["can_retry_failed"] is False
    text = jobs("status", str(done.checkpoint))
    assert text.returncode == 0, text.stderr
    assert state["job_id"] in text.stdout and "completed" in text.stdout and "100.0%" in text.stdout
    assert "nothing left to do" in text.stdout
    # The output CSV names its job too.
    assert jobs_json("status", str(done.output))["job_id"] == state["job_id"]


def test_status_of_a_job_with_failures_points_at_retry_failed(failing: Workspace) -> None:
    state = jobs_json("status", str(failing.checkpoint))
    assert state["state"] == "completed_with_failures"
    assert (state["done"], state["failed"], state["pending"]) == (39, 1, 0)
    assert state["last_error"]["error_type"] == "client_error" and state["last_error"]["row"] == 4
    assert state["can_resume"] is False and state["can_retry_failed"] is True
    text = jobs("status", str(failing.checkpoint)).stdout
    assert "client_error" in text and "--retry-failed" in text


def test_status_without_argument_finds_the_one_job_or_lists_them(done: Workspace, failing: Workspace,
                                                                 tmp_path: Path) -> None:
    one = jobs("status", cwd=done.tmp)
    assert one.returncode == 0 and read_json(done.checkpoint)["job_id"] in one.stdout
    copy_job(done, tmp_path / "a")
    copy_job(failing, tmp_path / "b")
    several = jobs("status", cwd=tmp_path)
    assert several.returncode == 2 and "Traceback" not in several.stderr
    assert "2 jobs under" in several.stderr
    assert "a/out/enriched.progress.json" in several.stderr and "b/out/enriched.progress.json" in several.stderr
    (tmp_path / "empty").mkdir()
    assert "no job under" in _one_line_error(jobs("status", cwd=tmp_path / "empty"))


def test_list_and_stats_across_jobs(done: Workspace, failing: Workspace, tmp_path: Path) -> None:
    copy_job(done, tmp_path / "a", updated="2026-11-20T10:00:00Z")
    copy_job(failing, tmp_path / "b", updated="2026-11-21T10:00:00Z")
    listed = jobs_json("list", str(tmp_path))
    assert [j["state"] for j in listed] == ["completed_with_failures", "completed"]  # newest first
    text = jobs("list", str(tmp_path)).stdout.splitlines()
    assert len(text) == 3 and text[0].startswith("UPDATED") and "completed_with_failures" in text[1]
    stats = jobs_json("stats", str(tmp_path))
    assert stats["jobs"] == 2 and stats["states"] == {"completed": 1, "completed_with_failures": 1}
    assert (stats["records"], stats["done"], stats["failed"], stats["pending"]) == (80, 79, 1, 0)
    assert stats["success_rate"] == round(79 / 80, 4)
    own = [jobs_json("status", str(ws.checkpoint)) for ws in (done, failing)]
    assert stats["total_tokens"] == sum(s["total_tokens"] for s in own)
    assert "98.8% of the records tried" in jobs("stats", str(tmp_path)).stdout


# --- validate ---------------------------------------------------------------------------------------


def test_validate_passes_a_clean_job(done: Workspace, failing: Workspace) -> None:
    for ws, failed in ((done, 0), (failing, 1)):
        proc = jobs("validate", str(ws.checkpoint))
        assert proc.returncode == 0, proc.stdout
        assert proc.stdout.startswith("valid:") and f"{failed} failed" in proc.stdout
    result = jobs_json("validate", str(failing.checkpoint))
    assert result["ok"] is True and result["defects"] == []
    assert (result["input_records"], result["output_rows"], result["failed"]) == (40, 39, 1)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _plant_duplicate(out: Path) -> None:
    lines = _lines(out)
    out.write_bytes(b"".join([*lines, lines[5]]))


def _plant_missing(out: Path) -> str:
    """Delete the 5th row; returns its fund.title (rows are in the order they finished, not input order)."""
    lines = _lines(out)
    out.write_bytes(b"".join(lines[:5] + lines[6:]))
    return lines[5].decode().split(",")[0]


def _plant_torn(out: Path) -> None:
    out.write_bytes(out.read_bytes()[:-1])  # the last row loses its newline, as in a crash mid-write


@pytest.mark.parametrize(("plant", "kind"), [(_plant_duplicate, "duplicate"), (_plant_missing, "lost"),
                                             (_plant_torn, "torn")])
def test_validate_catches_a_planted_defect(done: Workspace, tmp_path: Path, plant: Any, kind: str) -> None:
    checkpoint = copy_job(done, tmp_path)
    assert jobs("validate", str(checkpoint)).returncode == 0
    plant(tmp_path / "out" / "enriched.csv")
    proc = jobs("validate", str(checkpoint))
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.startswith("INVALID:") and f"- {kind}:" in proc.stdout
    result = jobs_json("validate", str(checkpoint))
    assert result["ok"] is False and kind in {d["kind"] for d in result["defects"]}
    if kind == "duplicate":
        assert "2 times (lines 6, 42)" in proc.stdout


def test_validate_catches_a_wrong_header_and_an_edited_row(done: Workspace, tmp_path: Path) -> None:
    checkpoint = copy_job(done, tmp_path)
    out = tmp_path / "out" / "enriched.csv"
    lines = _lines(out)
    lines[0] = lines[0].replace(b"poc_name", b"contact")
    edited = next(i for i, line in enumerate(lines) if line.startswith(b"Fund 00002,"))
    lines[edited] = lines[edited].replace(b"Fund 00002", b"Fund 0000X")
    out.write_bytes(b"".join(lines))
    kinds = {d["kind"] for d in jobs_json("validate", str(checkpoint))["defects"]}
    assert kinds == {"header"}  # rows are not judged against IDs under a header the job did not write
    lines[0] = _lines(done.output)[0]
    out.write_bytes(b"".join(lines))
    defects = jobs_json("validate", str(checkpoint))["defects"]
    assert [d["kind"] for d in defects] == ["mismatch", "lost"]  # the edited row no longer proves Fund 00002


# --- missing ----------------------------------------------------------------------------------------


def test_missing_lists_failed_and_pending_rows_as_csv(failing: Workspace, tmp_path: Path) -> None:
    proc = jobs("missing", str(failing.checkpoint))
    assert proc.returncode == 0, proc.stderr
    header = ",".join(read_csv(failing.input)[0])
    assert proc.stdout.splitlines() == [header, "Fund 00003,Manager 3,First3,Last3,p3@m3.example.com"]
    assert "1 record(s) not done (0 pending, 1 failed)" in proc.stderr
    only = jobs("missing", str(failing.checkpoint), "--pending-only")
    assert only.returncode == 0 and len(only.stdout.splitlines()) == 1  # the header alone

    checkpoint = copy_job(failing, tmp_path)
    title = _plant_missing(tmp_path / "out" / "enriched.csv")  # a done record is now to do again
    target = tmp_path / "todo.csv"
    proc = jobs("missing", str(checkpoint), "--output", str(target), "--annotate")
    assert proc.returncode == 0, proc.stderr
    expected = sorted([("Fund 00003", "failed", "4"), (title, "pending", str(int(title[-5:]) + 1))],
                      key=lambda r: int(r[2]))
    assert [(r["fund.title"], r["_state"], r["_row"]) for r in read_csv(target)] == expected


# --- export -----------------------------------------------------------------------------------------


def test_export_jsonl_and_xlsx_of_a_finished_job(done: Workspace, tmp_path: Path) -> None:
    import openpyxl

    jsonl = tmp_path / "all.jsonl"
    proc = jobs("export", str(done.checkpoint), "--format", "jsonl", "--output", str(jsonl))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert records == read_csv(done.output)
    xlsx = tmp_path / "all.xlsx"
    assert jobs("export", str(done.checkpoint), "--output", str(xlsx)).returncode == 0  # format from the name
    wb = openpyxl.load_workbook(xlsx)
    rows = list(wb.active.iter_rows())
    assert [c.value for c in rows[0]] == list(records[0])
    assert [[c.value or "" for c in row] for row in rows[1:]] == [list(r.values()) for r in records]
    formula = next(c for row in rows for c in row if c.value == FORMULA)
    assert formula.data_type == "s"  # text, not a formula


def test_export_takes_only_whole_rows_of_a_file_being_written(done: Workspace, tmp_path: Path) -> None:
    checkpoint = copy_job(done, tmp_path)
    out = tmp_path / "out" / "enriched.csv"
    whole = out.read_bytes()
    # What a reader may meet while the writer is mid-row: a partial row, or one cut inside a quoted field
    # right after a newline (the last line then ends with a newline but the row is not over).
    for tail in (b"Fund 99999,Manager,First,Last,x@y.com,Some", b'Fund 99999,Manager,First,Last,x@y.com,"two\n',
                 b'Fund 99999,Manager,First,Last,x@y.com,"two\nlines",a@b.c,0.5,b.c,0123456789abcdef,enr'):
        out.write_bytes(whole + tail)
        proc = jobs("export", str(checkpoint), "--output", "-")
        assert proc.returncode == 0, proc.stderr
        assert [json.loads(line) for line in proc.stdout.splitlines()] == read_csv(done.output), tail


def test_export_during_a_live_run_yields_only_whole_rows(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(400))
    ws.fake.configure(latency=0.05)
    proc = ws.start("--max-workers", "4")
    try:
        wait_for(lambda: _rows(ws) >= 3, what="first rows")
        seen = 0
        for i in range(4):
            target = ws.tmp / f"so_far{i}.jsonl"
            result = jobs("export", str(ws.checkpoint), "--output", str(target))
            assert result.returncode == 0, result.stderr
            rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
            assert len(rows) >= seen and all(len(r["_record_id"]) == 16 and r["_job_id"] for r in rows)
            assert all(r["poc_name"] for r in rows)
            seen = len(rows)
        assert proc.poll() is None  # every export above read a file that was being written
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert seen >= 3


# --- live, cancelled and killed runs ----------------------------------------------------------------


def test_live_run_shows_running_and_cancel_stops_it(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(300))
    ws.fake.configure(latency=0.05)
    proc = ws.start("--max-workers", "2")
    try:
        wait_for(lambda: _rows(ws) >= 3 and read_json(ws.checkpoint)["completed_count"] > 0, what="a checkpoint")
        state = jobs_json("status", str(ws.checkpoint))
        assert state["state"] == "running" and state["active_pid"] == proc.pid
        assert state["can_resume"] is False and 0 < state["progress_pct"] < 100
        assert "jobs.py cancel" in jobs("status", str(ws.checkpoint)).stdout
        cancel = jobs("cancel", str(ws.checkpoint), "--timeout", "30")
        assert cancel.returncode == 0, (cancel.stdout, cancel.stderr)
        assert "stopped:" in cancel.stdout and "is interrupted" in cancel.stdout and "--resume" in cancel.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Interrupted:" in err
    state = jobs_json("status", str(ws.checkpoint))
    assert state["state"] == "interrupted" and state["can_resume"] is True and state["pending"] > 0
    again = jobs("cancel", str(ws.checkpoint))
    assert again.returncode == 1 and again.stdout.startswith(f"no run is active for {state['job_id']}")


def test_killed_run_shows_interrupted_and_its_missing_rows(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(300))
    ws.fake.configure(latency=0.05)
    proc = ws.start("--max-workers", "2")
    wait_for(lambda: _rows(ws) >= 5 and read_json(ws.checkpoint)["status"] == "running", what="a running job")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert read_json(ws.checkpoint)["status"] == "running"  # what the dead run left behind
    state = jobs_json("status", str(ws.checkpoint))
    assert state["state"] == "interrupted" and state["recorded_status"] == "running"
    assert state["active_pid"] is None and state["can_resume"] is True
    assert "is gone" in jobs("status", str(ws.checkpoint)).stdout
    missing = jobs("missing", str(ws.checkpoint))
    assert missing.returncode == 0, missing.stderr
    done = len(read_csv(ws.output))
    assert len(missing.stdout.splitlines()) - 1 == 300 - done
    verdict = jobs_json("validate", str(ws.checkpoint))
    assert [d["kind"] for d in verdict["defects"]] == ["not_done"]
    assert jobs("cancel", str(ws.checkpoint)).returncode == 1
    ws.fake.configure(latency=0)
    assert ws.run("--resume").returncode == 0
    assert jobs("validate", str(ws.checkpoint)).returncode == 0
    assert set(ws.output_ids()) == expected_ids(ws)


def _fake_run(tmp_path: Path, handler: str) -> tuple[subprocess.Popen[str], Path]:
    """A process standing in for a run (SIGINT `handler` installed), and a checkpoint naming it as running."""
    code = f"import signal, time\nsignal.signal(signal.SIGINT, {handler})\nprint('ready', flush=True)\ntime.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    checkpoint = tmp_path / "job.progress.json"
    write_checkpoint(checkpoint, Checkpoint(job_id="enrich_fake", output=str(tmp_path / "job.csv"),
                                            input={"path": str(tmp_path / "in.csv")}, stages=["poc"],
                                            config_fingerprint="", status="running", pid=proc.pid))
    return proc, checkpoint


def test_cancel_gives_up_after_its_timeout_on_a_run_that_does_not_stop(tmp_path: Path) -> None:
    proc, checkpoint = _fake_run(tmp_path, "lambda *_: None")
    try:
        assert jobs_json("status", str(checkpoint))["state"] == "running"
        cancel = jobs("cancel", str(checkpoint), "--timeout", "0.5")
        assert cancel.returncode == 1 and "still running after 0.5 s" in cancel.stdout
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()
    assert jobs_json("status", str(checkpoint))["state"] == "interrupted"


def test_cancel_sends_sigterm_to_a_run_that_ignores_sigint(tmp_path: Path) -> None:
    # A run started in the background by a script ignores SIGINT until the runner installs its handler.
    proc, checkpoint = _fake_run(tmp_path, "signal.SIG_IGN")
    try:
        cancel = jobs("cancel", str(checkpoint), "--timeout", "30")
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        assert "stopped: enrich_fake is interrupted" in cancel.stdout
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGTERM


# --- bad arguments ----------------------------------------------------------------------------------


def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    assert "no such checkpoint" in _one_line_error(jobs("status", str(tmp_path / "nope.progress.json")))
    corrupt = tmp_path / "corrupt.progress.json"
    corrupt.write_text('{"job_id": "enrich_x", "status": ', encoding="utf-8")
    for command in ("status", "validate", "missing", "cancel"):
        assert "corrupt checkpoint" in _one_line_error(jobs(command, str(corrupt)))
    (tmp_path / "other.progress.json").write_text('{"hello": 1}', encoding="utf-8")
    assert "not an enrichkit checkpoint" in _one_line_error(jobs("status", str(tmp_path / "other.progress.json")))
    assert "no such folder" in _one_line_error(jobs("list", str(tmp_path / "nowhere")))
    _one_line_error(jobs("frobnicate"))
    _one_line_error(jobs("validate"))
    _one_line_error(jobs("export", str(corrupt)))  # --output is required
    _one_line_error(jobs("cancel", str(corrupt), "--timeout", "soon"))


def test_every_subcommand_has_help_with_an_example() -> None:
    top = jobs("--help")
    assert top.returncode == 0 and "examples:" in top.stdout
    for command in ("status", "list", "stats", "validate", "missing", "export", "cancel"):
        proc = jobs(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "example:" in proc.stdout and f"jobs.py {command}" in proc.stdout


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
    assert decide_state(_cp("interrupted", pid=300), (200, "here", 0.0), "here", alive) == ("starting", 200)
    assert decide_state(_cp("interrupted", pid=300), (300, "here", 0.0), "here", alive) == ("interrupted", None)
    # A run that wrote its last checkpoint still holds the lock for a moment while it exits.
    assert decide_state(_cp("completed", pid=200), (200, "here", 0.0), "here", alive) == ("completed", None)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times and zombies are read from /proc")
def test_process_alive_rejects_the_dead_the_unreaped_and_a_reused_pid() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(os.getpid(), started_by=0.0)  # "recorded in 1970": this process came later
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: not process_alive(child.pid), what="the child to exit")  # a zombie until reaped
    child.wait()
    assert not process_alive(child.pid)
