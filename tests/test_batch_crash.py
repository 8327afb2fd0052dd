"""Batch mode survives kill -9 at every transition: the process dies at point P (ENRICHKIT_BATCH_CRASH_AT, an
os._exit as abrupt as kill -9), or is killed (SIGKILL) at random, then --resume: one Google job per display name
and per chunk, every line billed once, every record in the output exactly once. A create in doubt (its job made,
the answer lost) is also left by a detached run whose create answer the stand-in drops: the tests of what a
resume, --cancel-batches and --fresh do with one run in-process."""

from __future__ import annotations

import random
import signal
import time

import pytest

from conftest import ExThread, Workspace, exactly_once, make_rows, read_json, wait_for, write_csv

FAST = ("--batch", "--batch-poll", "0.05")
# `make test` kills at three transitions, each of its own kind: before the create is sent (the create in doubt
# is created again after the settle time), after Google made the job but before its name is recorded (found by
# display name, never created twice), after records were written but before the checkpoint (the output is the
# truth). `make slow` kills at the six others too.
QUICK_POINTS = ["creating", "created", "written"]
POINTS = [pytest.param(point, marks=() if point in QUICK_POINTS else pytest.mark.slow)
          for point in ["planned", "uploaded", "upload_recorded", "creating", "created", "submitted", "downloaded",
                        "ingested", "written"]]


@pytest.fixture
def ws(ws: Workspace) -> Workspace:
    """The workspace; its stand-in's batch jobs end 0.05 s after their create (a test slows them where it needs)."""
    ws.fake.configure(batch_pending=0.0, batch_seconds=0.05)
    return ws


def batch_env(ws: Workspace, **extra: str) -> dict[str, str]:
    return ws.env(**{"ENRICHKIT_BATCH_SETTLE": "0.5", "ENRICHKIT_BATCH_CHUNK": "15", **extra})


def assert_never_twice(ws: Workspace, chunks: int, lines: int) -> None:
    batch = ws.fake.stats()["batch"]
    assert batch["max_creates_per_name"] == 1 and batch["creates"] == chunks, batch["creates_by_name"]
    assert batch["max_billed_per_key"] == 1 and batch["lines_billed"] == lines
    exactly_once(ws)  # row by row: whole rows, none twice, every record, its LLM answer in it


def create_in_doubt(ws: Workspace) -> None:
    """A detached batch run whose first create made its Google job, but the answer was lost (the job is not listed
    yet): that chunk is left `creating`, in doubt, as a kill just after the create leaves it."""
    ws.fake.configure(batch_drop_create=1, batch_list_lag=3600, batch_pending=30)
    first = ws.run(*FAST, "--batch-detach", env=batch_env(ws))
    assert first.returncode == 5, first.stderr
    assert ws.fake.stats()["batch"]["dropped_creates"] == 1


def list_catches_up_once_asked(ws: Workspace) -> ExThread:
    """Google's list lags: it shows the lost create's job only after the run has asked it once (and not found it)."""
    asked = ws.fake.stats()["batch"]["lists"]

    def lag() -> None:
        try:
            wait_for(lambda: ws.fake.stats()["batch"]["lists"] > asked, what="the run to ask the list")
        finally:
            ws.fake.configure(batch_list_lag=0)

    thread = ExThread(lag, "lagging list")
    thread.start()
    return thread


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


# `make test`: a run killed, then its resume killed too; `make slow`: five kills in a row on a job twice the size.
@pytest.mark.parametrize(("records", "kills"), [pytest.param(60, 2, id="2 kills"),
                                                 pytest.param(120, 5, id="5 kills", marks=pytest.mark.slow)])
def test_random_kills_of_a_two_llm_stage_batch_job(ws: Workspace, records: int, kills: int) -> None:
    ws.stages.write_text(TWO_LLM_STAGES, encoding="utf-8")
    write_csv(ws.input, make_rows(records))  # 6 (12) jobs a stage: work enough for the kills to land in
    ws.fake.configure(batch_pending=0.1, batch_seconds=0.2, batch_drop_create=1, batch_list_lag=0.2)
    rng = random.Random(17)
    env = batch_env(ws, ENRICHKIT_BATCH_CHUNK="10")
    for run in range(kills):
        before = ws.fake.stats()["requests"]
        proc = ws.start(*FAST, *(["--resume"] if run else []), env=env)
        # Killed after a random number of its calls to Google (1 to 20: an upload, a create, a poll, a download...),
        # whatever the machine's load; the whole job takes more calls than the kills allow, so each run is killed.
        calls = rng.randint(1, 20)
        while proc.poll() is None and ws.fake.stats()["requests"] < before + calls:
            time.sleep(0.005)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
    final = ws.run("--resume", *FAST, env=env)
    assert final.returncode == 0, final.stderr
    batch = ws.fake.stats()["batch"]
    assert batch["max_creates_per_name"] == 1 and batch["max_billed_per_key"] == 1
    assert batch["lines_billed"] == 2 * records  # two LLM stages, each line billed once
    exactly_once(ws)


def test_a_list_that_fails_while_a_create_is_in_doubt_is_asked_again(ws: Workspace,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from enrichkit.batch.google import BatchClient

    create_in_doubt(ws)
    ws.fake.configure(batch_list_lag=0, batch_pending=0)  # the job is listed now (and every job ends at once)
    real = BatchClient.jobs
    calls = {"n": 0}

    def flaky(self: BatchClient, page_size: int = 100):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("the list is down for a moment")
        return real(self, page_size)

    monkeypatch.setattr(BatchClient, "jobs", flaky)
    # Past its settle time: a failed list taken as "not listed" would create the chunk again (a second job)
    resumed = ws.run("--resume", env=batch_env(ws, ENRICHKIT_BATCH_SETTLE="0"))
    assert resumed.returncode == 0, resumed.stderr
    assert calls["n"] > 1 and "found its Google job" in resumed.stderr
    assert_never_twice(ws, chunks=3, lines=40)


def test_cancel_batches_waits_for_a_lagging_list_before_giving_up_a_create_in_doubt(ws: Workspace) -> None:
    create_in_doubt(ws)
    lagging = list_catches_up_once_asked(ws)
    cancel = ws.run("--resume", "--cancel-batches", env=batch_env(ws, ENRICHKIT_BATCH_SETTLE="30"))
    lagging.join()
    assert cancel.returncode == 1, cancel.stderr
    jobs = ws.fake.stats()["batch"]["jobs"]
    assert len(jobs) == 3 and set(jobs.values()) == {"BATCH_STATE_CANCELLED"}, jobs  # none left running (and billed)


def test_fresh_cancel_batches_finds_and_cancels_the_job_of_a_create_in_doubt(ws: Workspace) -> None:
    create_in_doubt(ws)
    old = set(ws.fake.stats()["batch"]["jobs"])
    lagging = list_catches_up_once_asked(ws)
    fresh = ws.run("--fresh", "--yes", "--cancel-batches", *FAST, "--batch-detach",
                   env=batch_env(ws, ENRICHKIT_BATCH_SETTLE="30"))
    lagging.join()
    assert fresh.returncode == 5, fresh.stderr
    jobs = ws.fake.stats()["batch"]["jobs"]
    assert len(old) == 3 and {jobs[name] for name in old} == {"BATCH_STATE_CANCELLED"}, jobs  # the old job's: none left
