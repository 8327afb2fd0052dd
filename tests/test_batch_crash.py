"""Batch mode survives kill -9 at every transition: the process dies at point P (ENRICHKIT_BATCH_CRASH_AT, an
os._exit as abrupt as kill -9), then --resume: one Google job per display name and per chunk, every line billed
once, every record in the output exactly once."""

from __future__ import annotations

import random
import signal
import time

import pytest

from conftest import Workspace, expected_ids, make_rows, read_json, write_csv

FAST = ("--batch", "--batch-poll", "0.05")
POINTS = ["planned", "uploaded", "upload_recorded", "creating", "created", "submitted", "downloaded", "ingested",
          "written"]


def batch_env(ws: Workspace, **extra: str) -> dict[str, str]:
    return ws.env(**{"ENRICHKIT_BATCH_SETTLE": "0.5", "ENRICHKIT_BATCH_CHUNK": "15", **extra})


def assert_never_twice(ws: Workspace, chunks: int, lines: int) -> None:
    batch = ws.fake.stats()["batch"]
    assert batch["max_creates_per_name"] == 1 and batch["creates"] == chunks, batch["creates_by_name"]
    assert batch["max_billed_per_key"] == 1 and batch["lines_billed"] == lines
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(ws)


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_transition_then_resume(ws: Workspace, point: str) -> None:
    crashed = ws.run_process(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CRASH_AT=point))
    assert crashed.returncode == 137, crashed.stderr
    resumed = ws.run("--resume", env=batch_env(ws))
    assert resumed.returncode == 0, resumed.stderr
    assert_never_twice(ws, chunks=3, lines=40)
    assert read_json(ws.checkpoint)["status"] == "completed"


def test_kill_while_cancelling_then_cancel_again(ws: Workspace) -> None:
    ws.fake.configure(batch_seconds=30)
    assert ws.run(*FAST, "--batch-detach", env=batch_env(ws)).returncode == 5
    crashed = ws.run_process("--resume", "--cancel-batches", env=batch_env(ws, ENRICHKIT_BATCH_CRASH_AT="cancelling"))
    assert crashed.returncode == 137
    again = ws.run("--resume", "--cancel-batches", env=batch_env(ws))
    assert again.returncode == 1, again.stderr
    assert set(ws.fake.stats()["batch"]["jobs"].values()) == {"BATCH_STATE_CANCELLED"}
    ws.fake.configure(batch_seconds=0.1)
    assert ws.run("--resume", env=batch_env(ws)).returncode == 0
    batch = ws.fake.stats()["batch"]
    assert batch["max_creates_per_name"] == 1 and batch["max_billed_per_key"] == 1
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 40


TWO_LLM_STAGES = """
[defaults]
model = "gemini-2.5-flash"

[[stages]]
name = "poc"
prompt = "Who is the point of contact of {fund.title} ({fund.manager})?"
[stages.fields]
poc_name = "string"
poc_email = "string"

[[stages]]
name = "domain"
type = "python"
function = "enrichkit.builtin:email_domain"
[stages.fields]
email_domain = "string"

[[stages]]
name = "size"
prompt = "How large is {fund.title}, whose contact is {poc_name} at {email_domain}?"
[stages.fields]
aum_musd = "number"
"""


def test_random_kills_of_a_two_llm_stage_batch_job(ws: Workspace) -> None:
    ws.stages.write_text(TWO_LLM_STAGES, encoding="utf-8")
    write_csv(ws.input, make_rows(120))  # 12 jobs a stage: work enough for the kills to land in
    ws.fake.configure(batch_pending=0.8, batch_seconds=1.6, batch_drop_create=1, batch_list_lag=0.2)
    rng = random.Random(17)
    env = batch_env(ws, ENRICHKIT_BATCH_CHUNK="10")
    kills = 0
    for run in range(8):
        before = ws.fake.stats()["requests"]
        proc = ws.start(*FAST, *(["--resume"] if run else []), env=env)
        # Past the imports (slow on a busy machine) to its first call: the kill lands somewhere in the batch loop.
        while proc.poll() is None and ws.fake.stats()["requests"] == before:
            time.sleep(0.01)
        deadline = time.monotonic() + rng.uniform(0.0, 0.7)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.communicate()[1]
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += 1
        if kills == 5:
            break
    final = ws.run("--resume", *FAST, env=env)
    assert final.returncode == 0, final.stderr
    assert kills >= 3
    batch = ws.fake.stats()["batch"]
    assert batch["max_creates_per_name"] == 1 and batch["max_billed_per_key"] == 1
    assert batch["lines_billed"] == 240  # two LLM stages x 120 records, each line billed once
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(ws)


def test_a_list_that_fails_while_a_create_is_in_doubt_is_asked_again(ws: Workspace,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from enrichkit.batch.google import BatchClient

    crashed = ws.run_process(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CRASH_AT="created"))
    assert crashed.returncode == 137, crashed.stderr
    real = BatchClient.jobs
    calls = {"n": 0}

    def flaky(self: BatchClient, page_size: int = 100):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("the list is down for a moment")
        return real(self, page_size)

    monkeypatch.setattr(BatchClient, "jobs", flaky)
    resumed = ws.run("--resume", env=batch_env(ws))
    assert resumed.returncode == 0, resumed.stderr
    assert calls["n"] > 1
    assert_never_twice(ws, chunks=3, lines=40)


def test_cancel_batches_waits_for_a_lagging_list_before_giving_up_a_create_in_doubt(ws: Workspace) -> None:
    ws.fake.configure(batch_pending=30, batch_list_lag=4.0)  # the job made by the lost create is listed late
    crashed = ws.run_process(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CRASH_AT="created", ENRICHKIT_BATCH_SETTLE="8"))
    assert crashed.returncode == 137, crashed.stderr
    cancel = ws.run("--resume", "--cancel-batches", env=batch_env(ws, ENRICHKIT_BATCH_SETTLE="8"))
    assert cancel.returncode == 1, cancel.stderr
    jobs = ws.fake.stats()["batch"]["jobs"]
    assert jobs and set(jobs.values()) == {"BATCH_STATE_CANCELLED"}, jobs  # none left running (and billed)


def test_fresh_cancel_batches_finds_and_cancels_the_job_of_a_create_in_doubt(ws: Workspace) -> None:
    ws.fake.configure(batch_pending=30, batch_list_lag=2.0)
    crashed = ws.run_process(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CRASH_AT="created", ENRICHKIT_BATCH_SETTLE="5"))
    assert crashed.returncode == 137, crashed.stderr
    old = set(ws.fake.stats()["batch"]["jobs"])
    fresh = ws.run("--fresh", "--yes", "--cancel-batches", *FAST, "--batch-detach",
                   env=batch_env(ws, ENRICHKIT_BATCH_SETTLE="5"))
    assert fresh.returncode == 5, fresh.stderr
    jobs = ws.fake.stats()["batch"]["jobs"]
    assert old and {jobs[name] for name in old} == {"BATCH_STATE_CANCELLED"}, jobs  # the old job's: none left
