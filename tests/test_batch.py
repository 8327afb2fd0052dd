"""Batch mode (--batch) through the real CLI, the real google-genai SDK and the stand-in's Batch and Files APIs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import COLUMNS, Workspace, expected_ids, read_csv, read_json

FAST = ("--batch", "--batch-poll", "0.05")


def batch_env(ws: Workspace, **extra: str) -> dict[str, str]:
    return ws.env(**{"ENRICHKIT_BATCH_SETTLE": "0.5", "ENRICHKIT_BATCH_CHUNK": "15", **extra})


def test_batch_run_enriches_every_record_once_through_google_jobs(ws: Workspace) -> None:
    proc = ws.run(*FAST, env=batch_env(ws))
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(ws.output)
    assert list(rows[0]) == [*COLUMNS, "poc_name", "poc_email", "confidence", "email_domain", "_cost_usd",
                             "_record_id", "_job_id"]
    assert sorted(r["_record_id"] for r in rows) == sorted(expected_ids(ws))
    for row in rows:
        assert row["poc_name"] and row["email_domain"] == row["poc_email"].split("@")[1].lower()
        assert float(row["_cost_usd"]) > 0
    stats = ws.fake.stats()
    assert stats["generate"] == 0  # nothing went the synchronous way
    batch = stats["batch"]
    assert batch["creates"] == 3 and batch["max_creates_per_name"] == 1  # 40 records in chunks of 15
    assert batch["lines_billed"] == 40 and batch["max_billed_per_key"] == 1
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "completed" and cp["batch"]["jobs_in_flight"] == 0
    assert "Done: all 40 records enriched." in proc.stderr


def test_detach_exits_5_while_google_runs_then_resume_collects(ws: Workspace) -> None:
    ws.fake.configure(batch_seconds=30)
    first = ws.run(*FAST, "--batch-detach", env=batch_env(ws))
    assert first.returncode == 5, first.stderr
    assert "Waiting for Google: 3 batch job(s) running with 40 requests" in first.stderr
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "waiting" and cp["batch"]["jobs_in_flight"] == 3 and cp["batch"]["records_in_flight"] == 40
    again = ws.run("--resume", *FAST, "--batch-detach", env=batch_env(ws))  # cron's next tick: still running
    assert again.returncode == 5 and ws.fake.stats()["batch"]["creates"] == 3
    ws.fake.configure(batch_seconds=0.1)
    done = ws.run("--resume", "--batch-detach", env=batch_env(ws))  # --batch and its poll are the job's own
    assert done.returncode == 0, done.stderr
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))
    assert ws.fake.stats()["batch"]["creates"] == 3 and ws.fake.stats()["batch"]["max_billed_per_key"] == 1


def test_line_errors_and_missing_lines_go_again_in_a_later_job(ws: Workspace) -> None:
    ws.fake.configure(batch_line_error_matching=["Fund 00003 "], batch_missing_matching=["Fund 00007 "])
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100"))
    # Fund 00003 fails every time (server_error, retried --max-retries 2 times, then the record fails);
    # Fund 00007's line goes missing twice, then the synchronous path answers it.
    assert proc.returncode == 1, proc.stderr
    batch = ws.fake.stats()["batch"]
    assert batch["max_billed_per_key"] == 1 and batch["max_creates_per_name"] == 1
    assert ws.fake.stats()["generate"] == 1  # the twice-missing line, synchronously
    cp = read_json(ws.checkpoint)
    assert cp["completed_count"] == 39 and cp["failed_count"] == 1
    errors = [json.loads(line) for line in ws.errors.read_text().splitlines()]
    assert [e["error_type"] for e in errors] == ["server_error"] * 3 and {e["attempt"] for e in errors} == {1, 2, 3}


def test_a_dropped_create_is_found_by_display_name_never_created_twice(ws: Workspace) -> None:
    ws.fake.configure(batch_drop_create=1, batch_list_lag=0.3)
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100"))
    assert proc.returncode == 0, proc.stderr
    batch = ws.fake.stats()["batch"]
    assert batch["creates"] == 1 and batch["dropped_creates"] == 1 and batch["max_billed_per_key"] == 1
    assert "found its Google job" in proc.stderr
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))


def test_create_429_waits_then_submits(ws: Workspace) -> None:
    ws.fake.configure(batch_create_429=2)
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100"))
    assert proc.returncode == 0, proc.stderr
    assert ws.fake.stats()["batch"]["create_429"] == 2 and ws.fake.stats()["batch"]["creates"] == 1
    assert "enqueued-token quota is full" in proc.stderr


def test_expired_job_is_submitted_again_in_smaller_jobs(ws: Workspace) -> None:
    ws.fake.configure(batch_expire=1)
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="40"))
    assert proc.returncode == 0, proc.stderr
    batch = ws.fake.stats()["batch"]
    assert batch["creates"] == 3 and batch["max_creates_per_name"] == 1 and batch["lines_billed"] == 40
    assert "expired" in proc.stderr


def test_failed_job_for_a_configuration_reason_stops_with_exit_2(ws: Workspace) -> None:
    ws.fake.configure(batch_fail=1)
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100"))
    assert proc.returncode == 2, proc.stderr
    assert "configuration reason" in proc.stderr and "Traceback" not in proc.stderr
    assert read_json(ws.checkpoint)["status"] == "failed"


def test_cancel_batches_cancels_at_google_and_fresh_refuses_while_jobs_fly(ws: Workspace) -> None:
    ws.fake.configure(batch_seconds=30)
    assert ws.run(*FAST, "--batch-detach", env=batch_env(ws)).returncode == 5
    refused = ws.run("--fresh", "--yes", *FAST, env=batch_env(ws))
    assert refused.returncode == 2 and "--cancel-batches" in refused.stderr
    assert ws.checkpoint.exists()  # nothing touched
    cancelled = ws.run("--resume", "--cancel-batches", env=batch_env(ws))
    assert cancelled.returncode == 1, cancelled.stderr  # records are pending again: not done
    assert "Cancelled 3 Google batch job(s)" in cancelled.stderr
    assert set(ws.fake.stats()["batch"]["jobs"].values()) == {"BATCH_STATE_CANCELLED"}
    ledger = sqlite3.connect(ws.output.with_name("enriched.batch.sqlite"))
    assert ledger.execute("SELECT COUNT(*) FROM chunks WHERE state IN ('submitted', 'creating')").fetchone()[0] == 0
    ledger.close()
    ws.fake.configure(batch_seconds=0.1)
    done = ws.run("--resume", env=batch_env(ws))  # the cancelled jobs' unanswered records go again
    assert done.returncode == 0, done.stderr
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))
    assert ws.fake.stats()["batch"]["max_billed_per_key"] == 1


def test_batch_costs_half_the_token_price(ws: Workspace) -> None:
    assert ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100")).returncode == 0
    batch_cost = read_json(ws.checkpoint)["cost_usd"]
    sync_out = ws.output.with_name("sync.csv")
    assert ws.run("--output", str(sync_out), "--no-cache").returncode == 0
    sync_cost = read_json(sync_out.with_name("sync.progress.json"))["cost_usd"]
    assert abs(batch_cost - sync_cost / 2) <= 2e-6 and batch_cost > 0  # the checkpoint rounds to 6 places
    saving = read_json(ws.report)["batch"]["cost"]
    assert abs(saving["tokens_at_standard_usd"] - sync_cost) <= 2e-6 and saving["grounding_usd"] == 0
    assert abs(saving["saved_usd"] - saving["tokens_usd"]) <= 2e-6


def test_ctrl_c_leaves_google_jobs_running_and_says_so(ws: Workspace) -> None:
    import signal
    import subprocess
    import sys

    from conftest import JOBS, wait_for

    ws.fake.configure(batch_seconds=60)
    proc = ws.start(*FAST, env=batch_env(ws))
    wait_for(lambda: ws.checkpoint.exists() and (read_json(ws.checkpoint).get("batch") or {}).get("jobs_in_flight")
             == 3, what="three Google jobs in flight")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "3 Google batch job(s) keep running (40 requests, billed when they finish)" in stderr
    assert "--cancel-batches" in stderr
    status = subprocess.run([sys.executable, str(JOBS), "status", str(ws.checkpoint), "--json"], capture_output=True,
                            text=True, env=ws.env(), timeout=60)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["state"] == "waiting" and shown["batch"]["jobs_in_flight"] == 3
    assert shown["can_resume"] is True and "--resume" in shown["next_command"]  # the next run collects them
    assert {job["google_state"] for job in shown["batch"]["jobs"]} <= {"PENDING", "RUNNING"}


def test_batch_detach_without_batch_is_a_usage_error(ws: Workspace) -> None:
    proc = ws.run("--batch-detach", env=batch_env(ws))
    assert proc.returncode == 2 and "--batch-detach works with --batch only" in proc.stderr


def test_max_cost_reserves_a_chunk_before_its_create(ws: Workspace) -> None:
    proc = ws.run(*FAST, "--max-cost", "0.0000001", env=batch_env(ws))
    assert proc.returncode == 4, proc.stderr
    assert ws.fake.stats()["batch"]["creates"] == 0  # nothing was created that the budget could not pay
    assert read_json(ws.checkpoint)["status"] == "budget_exhausted"


def test_dry_run_batch_shows_jobs_costs_at_three_prices_and_the_time_bound(ws: Workspace) -> None:
    proc = ws.run("--dry-run", "--batch", env=batch_env(ws))
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("poc (gemini-2.5-flash)"))
    assert "40 requests in 3 batch job(s) of up to 15" in line
    assert "standard $" in line and "flex $" in line and "batch $" in line and "batch saves 50%" in line
    assert "up to 24 h per LLM stage" in proc.stdout
    assert ws.fake.stats()["batch"]["creates"] == 0 and not ws.output.exists()


def test_a_stage_with_batch_false_stays_synchronous(ws: Workspace) -> None:
    ws.stages.write_text(ws.stages.read_text().replace('name = "poc"\n', 'name = "poc"\nbatch = false\n'))
    proc = ws.run(*FAST, env=batch_env(ws))
    assert proc.returncode == 0, proc.stderr
    assert ws.fake.stats()["generate"] == 40 and ws.fake.stats()["batch"]["creates"] == 0
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))


def test_fresh_without_batch_flag_also_refuses_and_fresh_cancel_batches_starts_over(ws: Workspace) -> None:
    ws.fake.configure(batch_seconds=30)
    assert ws.run(*FAST, "--batch-detach", env=batch_env(ws)).returncode == 5
    old_job = read_json(ws.checkpoint)["job_id"]
    refused = ws.run("--fresh", "--yes", env=batch_env(ws))  # no --batch: the ledger is found all the same
    assert refused.returncode == 2 and "still in flight" in refused.stderr
    fresh = ws.run("--fresh", "--yes", "--cancel-batches", *FAST, "--batch-detach", env=batch_env(ws))
    assert fresh.returncode == 5, fresh.stderr
    assert read_json(ws.checkpoint)["job_id"] != old_job
    jobs = ws.fake.stats()["batch"]["jobs"]
    assert sum(state == "BATCH_STATE_CANCELLED" for state in jobs.values()) == 3 and len(jobs) == 6
    ws.fake.configure(batch_seconds=0.1)
    assert ws.run("--resume", env=batch_env(ws)).returncode == 0
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 40


def test_retry_failed_gives_failed_lines_new_tries(ws: Workspace) -> None:
    ws.fake.configure(batch_line_error_matching=["Fund 00003 "])
    assert ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100")).returncode == 1
    ws.fake.configure(batch_line_error_matching=[])
    retried = ws.run("--retry-failed", env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100"))
    assert retried.returncode == 0, retried.stderr
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))
    assert read_json(ws.checkpoint)["failed_count"] == 0 and ws.fake.stats()["batch"]["max_billed_per_key"] == 1


def test_jobs_cancel_says_the_google_jobs_go_on(ws: Workspace) -> None:
    import subprocess
    import sys

    from conftest import JOBS

    ws.fake.configure(batch_seconds=30)
    assert ws.run(*FAST, "--batch-detach", env=batch_env(ws)).returncode == 5
    proc = subprocess.run([sys.executable, str(JOBS), "cancel", str(ws.checkpoint)], capture_output=True, text=True,
                          env=ws.env(), timeout=60)
    assert "3 Google batch job(s) of this job keep running at Google" in proc.stdout, proc.stdout + proc.stderr
    assert "--cancel-batches" in proc.stdout


def test_the_ledger_obeys_the_path_collision_rule(ws: Workspace) -> None:
    taken = ws.output.with_name("enriched.batch.sqlite")
    ws.output.parent.mkdir(parents=True, exist_ok=True)
    proc = ws.run(*FAST, "--report", str(taken), env=batch_env(ws))
    assert proc.returncode == 2 and "the batch ledger" in proc.stderr and not ws.checkpoint.exists()


def test_a_create_refused_429_waits_for_a_job_in_flight_to_end(ws: Workspace) -> None:
    ws.fake.configure(batch_create_429=1, batch_seconds=0.5)
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="20"))
    assert proc.returncode == 0, proc.stderr
    assert ws.fake.stats()["batch"]["create_429"] == 1 and ws.fake.stats()["batch"]["creates"] == 2
    ledger = sqlite3.connect(ws.output.with_name("enriched.batch.sqlite"))
    (first_created,), (second_ended,) = ledger.execute(
        "SELECT submitted_at FROM chunks WHERE id = 1 UNION ALL SELECT changed_at FROM chunks WHERE id = 2").fetchall()
    ledger.close()
    assert first_created >= second_ended  # chunk 1 (refused) was created only once chunk 2's job had ended


PROBE = '''
import threading
import time


def where(record):
    if record["fund.title"] == "Fund 00005":
        raise ValueError("no thread for this one")
    time.sleep(0.05)
    return {"thread": threading.current_thread().name}
'''


def test_local_stages_run_in_the_worker_pool_and_their_failures_reach_the_error_log(ws: Workspace) -> None:
    (ws.tmp / "probe_threads.py").write_text(PROBE, encoding="utf-8")
    ws.stages.write_text(ws.stages.read_text() + '''
[[stages]]
name = "where"
type = "python"
function = "probe_threads:where"
[stages.fields]
thread = "string"
''')
    proc = ws.run(*FAST, "--max-workers", "8", env=batch_env(ws))
    assert proc.returncode == 1, proc.stderr
    threads = {row["thread"] for row in read_csv(ws.output)}
    assert len(read_csv(ws.output)) == 39 and len(threads) > 1 and all(t.startswith("batch") for t in threads)
    errors = [json.loads(line) for line in ws.errors.read_text().splitlines()]
    assert [(e["stage"], e["row"]) for e in errors] == [("where", 6)]


def test_limit_takes_on_at_most_n_records_in_batch_mode(ws: Workspace) -> None:
    proc = ws.run(*FAST, "--limit", "10", env=batch_env(ws))
    assert proc.returncode == 1 and "Stopped after --limit 10" in proc.stderr, proc.stderr  # records are left
    assert len(ws.output_ids()) == 10 and ws.fake.stats()["batch"]["lines_billed"] == 10


def test_the_dashboard_api_and_page_show_the_google_jobs(ws: Workspace) -> None:
    from test_dashboard import client

    ws.fake.configure(batch_seconds=30)
    assert ws.run(*FAST, "--batch-detach", env=batch_env(ws)).returncode == 5
    api = client(ws.tmp)
    job = next(iter(api.get("/api/jobs").json()["jobs"]))
    assert job["state"] == "waiting" and job["batch"]["jobs_in_flight"] == 3
    detail = api.get(f"/api/jobs/{job['key']}").json()
    assert {j["state"] for j in detail["batch"]["jobs"]} == {"submitted"}
    page = api.get("/?token=test-token-0123456789").text
    assert "Google batch jobs" in page


def test_the_cron_line_submits_then_collects_on_each_tick_and_ends_with_0(ws: Workspace) -> None:
    import shutil
    import subprocess
    import sys

    import pytest

    from conftest import ROOT

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    line = ["make", "--no-print-directory", "-s", "-o", ".venv/.installed", "enrich", f"PY={sys.executable}",
            f"INPUT={ws.input}", f"OUTPUT={ws.output}", f"STAGES={ws.stages}", "ARGS=--batch --batch-detach"]
    ws.fake.configure(batch_seconds=30)
    ticks = []
    for _ in range(3):
        tick = subprocess.run(line, capture_output=True, text=True, timeout=90, cwd=ROOT, env=batch_env(ws),
                              stdin=subprocess.DEVNULL)
        # make reports a recipe's exit code N as "Error N" (and exits 2 itself)
        ticks.append(5 if "Error 5" in tick.stderr else tick.returncode)
        if ticks[-1] != 5:
            break
        if len(ticks) == 2:
            ws.fake.configure(batch_seconds=0.05)  # Google is done by the third tick
    assert ticks == [5, 5, 0], tick.stderr
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws)) and ws.fake.stats()["batch"]["creates"] == 3


def test_a_lost_create_listed_after_the_settle_time_is_cancelled_as_a_stray(ws: Workspace) -> None:
    # The create's answer is lost and the list shows the job only after 2 s; the run waits 0.5 s, creates the
    # chunk again (…-t2), then meets the first job (…-t1) in the list and cancels it while it is still PENDING.
    ws.fake.configure(batch_drop_create=1, batch_list_lag=2.0, batch_pending=4.0, batch_seconds=0.1)
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100"))
    assert proc.returncode == 0, proc.stderr
    batch = ws.fake.stats()["batch"]
    names = sorted(batch["creates_by_name"])
    assert [n[-3:] for n in names] == ["-t1", "-t2"] and batch["max_creates_per_name"] == 1
    first = next(name for name, state in batch["jobs"].items() if state == "BATCH_STATE_CANCELLED")
    assert first and "cancelling the stray" in proc.stderr
    assert batch["max_billed_per_key"] == 1 and batch["lines_billed"] == 40
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))


def test_make_demo_batch_runs_the_sample_job_as_cron_would_to_exit_0(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from demo_batch import main

    output = tmp_path / "demo" / "enriched.csv"
    assert main([str(output)]) == 0
    said = capsys.readouterr().out
    assert "exit code 5 (Google jobs still running" in said and "exit code 0;" in said
    assert "(at most 1 per request); 0 synchronous calls" in said
    assert len(read_csv(output)) == 542


def test_a_job_failed_for_an_internal_reason_has_its_requests_go_again(ws: Workspace) -> None:
    ws.fake.configure(batch_fail_internal=1)
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100"))
    assert proc.returncode == 0, proc.stderr
    assert "failed (Batch failed: internal error.): its 40 records go again" in proc.stderr
    batch = ws.fake.stats()["batch"]
    assert batch["creates"] == 2 and batch["max_creates_per_name"] == 1 and batch["lines_billed"] == 40
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))


def test_lines_of_jobs_that_keep_failing_go_the_synchronous_way(ws: Workspace) -> None:
    ws.fake.configure(batch_fail_internal=2)
    proc = ws.run(*FAST, env=batch_env(ws, ENRICHKIT_BATCH_CHUNK="100"))
    assert proc.returncode == 0, proc.stderr
    assert ws.fake.stats()["batch"]["creates"] == 2 and ws.fake.stats()["generate"] == 40
    assert sorted(ws.output_ids()) == sorted(expected_ids(ws))


def test_the_python_api_runs_a_job_in_batch_mode(ws: Workspace) -> None:
    import enrichkit
    from conftest import API_KEY

    result = enrichkit.enrich(str(ws.input), str(ws.output), stages=str(ws.stages), batch=True, batch_poll=0.05,
                              api_key=API_KEY, base_url=ws.fake.url)
    assert result.exit_code == 0 and result.counts["completed"] == 40
    assert ws.fake.stats()["batch"]["creates"] == 1 and ws.fake.stats()["generate"] == 0


def test_max_cost_counts_what_the_job_spent_synchronously_before_batch(ws: Workspace) -> None:
    # 30 records done synchronously spend $C; `--resume --batch --max-cost C` has no room for any batch job.
    assert ws.run("--limit", "30", env=batch_env(ws)).returncode == 1
    spent = float(read_json(ws.checkpoint)["cost_usd"])
    assert spent > 0
    proc = ws.run("--resume", *FAST, "--max-cost", f"{spent * 1.0001:.9f}", env=batch_env(ws))
    assert proc.returncode == 4, proc.stderr
    assert ws.fake.stats()["batch"]["creates"] == 0  # the budget was already spent: nothing created at Google


def test_a_synchronous_resume_refuses_while_google_jobs_hold_the_records(ws: Workspace) -> None:
    import enrichkit
    from conftest import API_KEY

    ws.fake.configure(batch_seconds=30)
    assert ws.run(*FAST, "--batch-detach", env=batch_env(ws)).returncode == 5
    with pytest.raises(enrichkit.UsageError, match="in flight") as refused:
        enrichkit.enrich(str(ws.input), str(ws.output), resume=True, batch=False, api_key=API_KEY,
                         base_url=ws.fake.url)
    assert refused.value.exit_code == 2
    assert ws.fake.stats()["generate"] == 0  # nothing Google holds was asked (and paid) a second time
    ws.fake.configure(batch_seconds=0.1)
    assert ws.run("--resume", env=batch_env(ws)).returncode == 0
    assert ws.fake.stats()["batch"]["max_billed_per_key"] == 1 and ws.fake.stats()["generate"] == 0


def test_a_stage_renamed_while_its_google_jobs_fly_is_collected_without_a_traceback(ws: Workspace) -> None:
    ws.fake.configure(batch_seconds=30)
    assert ws.run(*FAST, "--batch-detach", env=batch_env(ws)).returncode == 5
    ws.stages.write_text(ws.stages.read_text().replace('name = "poc"\n', 'name = "contact"\n'))
    ws.fake.configure(batch_seconds=0.1)
    proc = ws.run("--resume", "--allow-config-change", env=batch_env(ws))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    ids = ws.output_ids()
    assert len(ids) == len(set(ids)) == 40
