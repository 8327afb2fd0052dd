"""kill -9 at random moments, then --resume: every input record in the output exactly once."""

from __future__ import annotations

import csv
import random
import signal

import pytest

from conftest import Workspace, expected_ids, make_rows, read_json, wait_for, write_csv
from enrichkit.store.readback import recover_output


@pytest.fixture
def ws(fws: Workspace) -> Workspace:
    """This file's in-process runs answer from the fake provider on a fake clock; the kill -9 test, whose runs are
    processes, uses the stand-in (`sws`)."""
    return fws


def _rows_written(ws: Workspace) -> int:
    try:
        return ws.output.read_bytes().count(b"\n") - 1
    except FileNotFoundError:
        return -1


def _assert_exactly_once(ws: Workspace) -> None:
    raw = ws.output.read_bytes()
    assert raw.endswith(b"\n"), "torn last row left in the output"
    with open(ws.output, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert all(len(r) == len(header) for r in body), "ragged row in the output"
    ids = [r[header.index("_record_id")] for r in body]
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert set(ids) == expected_ids(ws), "a record is missing"
    for r in body:
        assert r[header.index("poc_name")], "a row was written before its stages finished"


def test_kill_9_at_random_points_then_resume_gives_each_record_once(sws: Workspace) -> None:
    ws = sws
    write_csv(ws.input, make_rows(150))
    ws.fake.configure(latency=0.05, jitter=0.05)  # ~160 rows a second: a kill lands within a few rows of its aim
    rng = random.Random(20261123)
    kills = 0
    for _ in range(6):  # runs of their own, each cut by kill -9 a random number of rows in, until 3 were cut
        if kills == 3:
            break
        proc = ws.start("--resume", "--max-workers", "12", "--checkpoint-interval", "3")
        target = _rows_written(ws) + rng.randint(5, 40)
        try:
            wait_for(lambda: _rows_written(ws) >= target or proc.poll() is not None, what="progress")  # noqa: B023
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=30)
    assert kills == 3  # the run really was cut several times
    ws.fake.configure(latency=0, jitter=0)
    final = ws.run("--resume", "--max-workers", "12")
    assert final.returncode == 0, final.stderr
    _assert_exactly_once(ws)
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "completed" and cp["completed_count"] == 150
    # Only requests in flight at a kill are paid twice: at most 12 per kill, plus nothing else.
    assert ws.fake.stats()["generate"] <= 150 + 12 * kills


def test_torn_last_row_is_cut_on_resume(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    with open(ws.output, "ab") as f:
        f.write(b"Fund 99999,Manager,First,Last,x@y.com,Somebody,som")  # a crash mid-write
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    assert "torn last row" in proc.stderr
    _assert_exactly_once(ws)


def test_row_written_but_not_checkpointed_is_not_duplicated(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    # The checkpoint is behind the output (as after a kill between a row and the checkpoint write).
    state = read_json(ws.checkpoint)
    assert state["completed_count"] == 10
    state["completed_ids"] = state["completed_ids"][:3]
    state["completed_count"] = 3
    ws.checkpoint.write_text(__import__("json").dumps(state), encoding="utf-8")
    resumed = ws.run("--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_exactly_once(ws)
    assert read_json(ws.checkpoint)["completed_count"] == 40  # the 7 rows it did not list were found
    assert ws.fake.stats()["generate"] == 40


def test_recover_output_cuts_each_kind_of_tear(tmp_path) -> None:  # type: ignore[no-untyped-def]
    columns = ["a", "b", "_record_id", "_job_id"]
    good = "a,b,_record_id,_job_id\n1,x,00000000000000a1,enrich_j\n2,\"multi\nline\",00000000000000a2,enrich_j\n"
    tears = [
        "3,y,00000000000000a3,enr",  # inside the job id, no newline
        "3,\"half a quoted\n",  # inside a quoted field, at a newline
        "3,y,00000000000000a3,enrich_j",  # whole row but for its newline
        "3",
    ]
    for i, tear in enumerate(tears):
        path = tmp_path / f"out{i}.csv"
        path.write_text(good + tear, encoding="utf-8")
        recovered = recover_output(path, columns)
        assert path.read_text(encoding="utf-8") == good, tear
        assert sorted(recovered.ids) == ["00000000000000a1", "00000000000000a2"]
        assert recovered.torn_bytes == len(tear.encode())
    clean = tmp_path / "clean.csv"
    clean.write_text(good, encoding="utf-8")
    assert recover_output(clean, columns).torn_bytes == 0
    assert clean.read_text(encoding="utf-8") == good


def test_stale_checkpoint_is_caught_up_from_the_output_tail(ws: Workspace) -> None:
    """A crash after rows were written but before the checkpoint: the old checkpoint plus the output's tail."""
    assert ws.run("--limit", "5").returncode == 1
    old = ws.checkpoint.read_bytes()
    assert ws.run("--resume", "--limit", "10").returncode == 1
    ws.checkpoint.write_bytes(old)  # as if the last checkpoint writes never happened
    proc = ws.run("--resume")
    assert proc.returncode == 0, proc.stderr
    _assert_exactly_once(ws)
    assert ws.fake.stats()["generate"] == 40  # the 10 rows after the old checkpoint were not paid again


def test_the_cost_of_rows_written_after_the_last_checkpoint_is_counted_on_resume(ws: Workspace) -> None:
    """A crash after rows were written but before the checkpoint: their answers were billed, so the job's cost
    (and what --max-cost counts) takes the `_cost_usd` the rows carry; it is never below what the rows say."""
    assert ws.run("--limit", "5").returncode == 1
    old = ws.checkpoint.read_bytes()
    assert ws.run("--resume", "--limit", "10").returncode == 1
    ws.checkpoint.write_bytes(old)  # as if the last checkpoint writes never happened
    assert ws.run("--resume").returncode == 0
    with ws.output.open(encoding="utf-8", newline="") as f:
        costs = [float(row["_cost_usd"]) for row in csv.DictReader(f)]
    assert sum(costs) > 0
    state = read_json(ws.checkpoint)
    counted = state["token_cost_usd"] + state["grounding_cost_usd"]
    assert sum(costs) - 1e-9 <= counted <= sum(costs) + len(costs) * 1e-6  # the rows' 6 decimals, rounded up


def test_resume_starts_reading_after_the_rows_already_done(ws: Workspace) -> None:
    assert ws.run("--limit", "10").returncode == 1
    mark = read_json(ws.checkpoint)["resume_at"]
    lines = ws.input.read_bytes().splitlines(keepends=True)
    assert mark == {"offset": sum(len(line) for line in lines[:11]), "row": 10}  # header + 10 rows
    assert ws.run("--resume").returncode == 0
    _assert_exactly_once(ws)
    assert read_json(ws.checkpoint)["resume_at"] == {"offset": len(ws.input.read_bytes()), "row": 40}
