"""Playing cron: the same `enrich.py ... --resume` line started again and again, killed with SIGKILL at
random moments, sometimes while another instance runs (that one exits 3), until a run reports completion.
Then `jobs.py validate` passes and every input record is in the output exactly once."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys

import pytest

import zygote
from conftest import JOBS, ROOT, Workspace, expected_ids, make_rows, read_json, wait_for, write_csv

RECORDS = 80
KILLED = 4  # the first ticks' runs are cut by kill -9 (the seed below also has cron fire twice at once in two)
# The flags that make the stand-in fast and the kills frequent; the line is otherwise the crontab's.
CRON_FLAGS = ("--resume", "--max-workers", "6", "--checkpoint-interval", "3")


def _rows(ws: Workspace) -> int:
    try:
        return ws.output.read_bytes().count(b"\n") - 1
    except FileNotFoundError:
        return -1


def _lock_owner(ws: Workspace) -> int | None:
    try:
        return int(json.loads(ws.output.with_name("enriched.lock.owner").read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _plain(text: str) -> bool:
    """Off a TTY: log lines only, no progress bar redraws, no colour."""
    return "\r" not in text and "\x1b[" not in text


def test_cron_starts_the_same_line_until_done_and_the_job_is_exactly_once(ws: Workspace) -> None:
    write_csv(ws.input, make_rows(RECORDS))
    ws.fake.configure(latency=0.05, jitter=0.01)  # ~100 rows a second: a kill lands within a few rows of its aim
    rng = random.Random(20261128)
    kills = refused = 0
    finished = None
    for tick in range(25):
        proc = ws.start(*CRON_FLAGS)
        try:
            if tick < KILLED and rng.random() < 0.5:
                # Cron fires again while this run still works: the newcomer must leave at once, touching nothing.
                wait_for(lambda: _lock_owner(ws) == proc.pid or proc.poll() is not None,  # noqa: B023
                         what="the run to take its lock")
                if proc.poll() is None:
                    second = ws.run(*CRON_FLAGS)
                    assert second.returncode == 3, second.stderr
                    assert f"PID {proc.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
                    refused += 1
            if tick < KILLED:
                # kill -9 at a random moment: during start-up (0), or after some more rows are written.
                target = _rows(ws) + rng.choice((0, 1, 4, 10, 20))
                wait_for(lambda: _rows(ws) >= target or proc.poll() is not None, what="progress")  # noqa: B023
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert "Traceback" not in err
        if proc.returncode == 0:
            assert _plain(err), err
            if f"Done: all {RECORDS} records enriched." in err:
                finished = tick
                break
        else:
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, err)
    assert finished is not None, "no run reported completion"
    assert kills >= 3 and refused >= 1  # the job really was cut, and really was started twice at once
    ws.fake.configure(latency=0, jitter=0)

    validate = zygote.run([sys.executable, str(JOBS), "validate", str(ws.checkpoint)], capture_output=True,
                          text=True, timeout=60)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == RECORDS and set(ids) == expected_ids(ws)
    assert read_json(ws.checkpoint)["status"] == "completed"

    # Cron keeps firing after the end: each start exits 0 at once and asks nothing.
    requests = ws.fake.stats()["generate"]
    again = ws.run(*CRON_FLAGS)
    assert again.returncode == 0, again.stderr
    assert ws.fake.stats()["generate"] == requests and ws.output_ids() == ids


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_make_enrich_line_of_the_crontab_starts_and_finishes_a_job(ws: Workspace) -> None:
    # The crontab's make line, run with this test's interpreter (PY=...) and `-o .venv/.installed` (not rebuilt):
    # it needs no .venv, so it works from any checkout, and tests the recipe itself.
    line = ["make", "--no-print-directory", "-s", "-o", ".venv/.installed", "enrich", f"PY={sys.executable}",
            f"INPUT={ws.input}", f"OUTPUT={ws.output}", f"STAGES={ws.stages}"]
    first = subprocess.run(line, capture_output=True, text=True, timeout=90, cwd=ROOT, env=ws.env(),
                           stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    assert _plain(first.stderr) and "Done: all 40 records enriched." in first.stderr
    requests = ws.fake.stats()["generate"]
    second = subprocess.run(line, capture_output=True, text=True, timeout=90, cwd=ROOT, env=ws.env(),
                            stdin=subprocess.DEVNULL)
    assert second.returncode == 0, second.stderr
    assert ws.fake.stats()["generate"] == requests
    status = subprocess.run(["make", "-s", "-o", ".venv/.installed", "status", f"PY={sys.executable}",
                             f"OUTPUT={ws.output}"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert status.returncode == 0, status.stderr
    assert "completed" in status.stdout and "100.0%" in status.stdout


def test_cron_completes_a_job_whose_input_has_a_duplicate_row(ws: Workspace) -> None:
    rows = make_rows(60)
    rows.insert(30, dict(rows[10]))  # the same record twice: processed once, counted as a duplicate
    write_csv(ws.input, rows)
    ws.fake.configure(latency=0.05)
    first = ws.start(*CRON_FLAGS)
    wait_for(lambda: _rows(ws) >= 4 or first.poll() is not None, what="first rows")
    first.send_signal(signal.SIGKILL)  # long before the run's pass has read the whole input
    first.communicate(timeout=30)
    ws.fake.configure(latency=0)
    for _ in range(2):
        proc = ws.run(*CRON_FLAGS)
        assert proc.returncode == 0, proc.stderr
    assert "Done: all 60 records enriched." in proc.stderr
    assert read_json(ws.checkpoint)["status"] == "completed"
