"""A full disk (or any failed write of the output, checkpoint or error log): stop sending at once, keep what
is on disk, leave no temp file, one line naming the path and --resume, exit 1; after space is freed
--resume completes the job exactly once."""

from __future__ import annotations

import json
import resource

from conftest import Workspace, exactly_once, make_rows, read_json, write_csv


def _limit_file_size(limit: int) -> None:
    # CPython ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG ("File too large"), as a full disk
    # fails with ENOSPC: the same OSError path.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_the_output_cannot_grow_then_resume_completes_exactly_once(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(150))
    import subprocess

    # Room for about 40 of the 150 rows.
    proc = subprocess.run(ws.args("--max-workers", "8", "--checkpoint-interval", "5"), capture_output=True, text=True,
                          env=ws.env(), cwd=ws.tmp, timeout=60, preexec_fn=lambda: _limit_file_size(8_000))
    assert proc.returncode == 1, proc.stderr
    last = next(line for line in reversed(proc.stderr.splitlines()) if line and not line.startswith("  "))  # closing
    assert f"cannot write {ws.output}" in proc.stderr and "--resume" in last, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(ws.tmp.rglob(".*.tmp")), "a temp file was left behind"
    written = len(ws.output_ids()) if ws.output.stat().st_size < 8_000 else None
    paid = ws.fake.stats()["generate"]
    assert paid <= 150 - 50  # it stopped sending: far fewer answers were bought than records exist
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "interrupted"
    assert cp["completed_count"] <= (written or cp["completed_count"])  # never claims a row it could not write

    resumed = ws.run("--resume")  # the space is back
    assert resumed.returncode == 0, resumed.stderr
    exactly_once(ws)


def test_an_error_log_that_cannot_be_written_stops_the_run(ws: Workspace) -> None:
    ws.fake.configure(fail_matching=["Fund 00003 "])
    proc = ws.run("--errors", "/dev/full", "--max-workers", "2")  # every write to /dev/full: ENOSPC
    assert proc.returncode == 1, proc.stderr
    assert "cannot write /dev/full" in proc.stderr and "--resume" in proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "interrupted" and cp["failed_count"] <= 1
    ws.fake.configure(fail_matching=[])
    resumed = ws.run("--resume", "--errors", str(ws.errors))
    failed = read_json(ws.checkpoint)["failed_count"]
    # 1 exactly when Fund 00003 failed for good before the stop (a plain --resume leaves it to --retry-failed).
    assert resumed.returncode == (1 if failed else 0), resumed.stderr
    if failed:
        retried = ws.run("--retry-failed", "--errors", str(ws.errors))
        assert retried.returncode == 0, retried.stderr
    exactly_once(ws)


def test_a_checkpoint_that_cannot_be_written_stops_the_run(fws: Workspace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import enrichkit.store.jobstore as store

    ws = fws  # the fake provider, each answer 0.03 s on the fake clock: checkpoints come due without real waits
    assert ws.provider is not None and ws.clock is not None
    clock = ws.clock
    ws.provider.on_call = lambda request: clock.advance(0.03)

    calls = {"n": 0}
    real = store.write_checkpoint

    def failing(path, cp):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device")
        real(path, cp)

    monkeypatch.setattr(store, "write_checkpoint", failing)
    write_csv(ws.input, make_rows(200))  # a run of some (fake) seconds: checkpoints are written at most once a second
    proc = ws.run("--checkpoint-interval", "1", "--max-workers", "2")
    assert proc.returncode == 1, proc.stderr
    assert f"cannot write {ws.checkpoint}: No space left on device" in proc.stderr
    assert proc.stderr.count("ERROR cannot write") == 1  # said once (the closing line says it again)
    assert read_json(ws.checkpoint)["status"] == "running"  # the last checkpoint that could be written
    assert ws.fake.stats()["generate"] < 200
    report = json.loads(ws.report.read_text())
    assert report["exit_code"] == 1
    monkeypatch.setattr(store, "write_checkpoint", real)
    assert ws.run("--resume").returncode == 0
    exactly_once(ws)


def test_records_handed_to_an_output_that_failed_are_done_again_by_the_next_resume(ws: Workspace) -> None:
    import subprocess

    write_csv(ws.input, make_rows(100))
    assert ws.run("--limit", "30").returncode == 1
    room = ws.output.stat().st_size + 3_000  # the disk fills a few rows into the resumed run
    proc = subprocess.run(ws.args("--resume", "--max-workers", "4"), capture_output=True, text=True, env=ws.env(),
                          cwd=ws.tmp, timeout=60, preexec_fn=lambda: _limit_file_size(room))
    assert proc.returncode == 1, proc.stderr
    resumed = ws.run("--resume")  # space freed
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(ws.checkpoint)["status"] == "completed", resumed.stderr  # not "1 not yet tried", forever
    exactly_once(ws)
