"""The dashboard (`jobs.py serve`) in-process through FastAPI's test client: the page, every API endpoint,
the downloads, the actions, and what it refuses (a bad token, another origin, another host name, a
path out of its folder, an API key in anything it serves)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import API_KEY, Workspace, expected_ids, make_rows, read_json, rows_written, wait_for, write_csv
from enrichkit.jobs import catalog as catalog_module
from enrichkit.jobs import server as server_module
from enrichkit.jobs.catalog import Secrets
from enrichkit.jobs.launch import log_path, run_command
from enrichkit.jobs.server import create_app
from enrichkit.jobs.state import load_status
from enrichkit.redact import forget_secrets, register_secret
from enrichkit.store.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from enrichkit.store.runlock import RunLock
from test_jobs import JOB_ID, set_updated, write_job

TOKEN = "test-token-0123456789"
# A process standing in for a run: it holds the lock file named by argv[1], as a run does, until killed.
HOLD_LOCK = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
             "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('ready', flush=True)\ntime.sleep(120)")
ORIGIN = "http://127.0.0.1:8765"
POST = {"X-Enrichkit-Token": TOKEN, "Origin": ORIGIN}


def client(root: Path, *, auth: bool = True, **kwargs: Any) -> TestClient:
    """The app, as a script reaches it (the token in a header) or, with `auth=False`, with no credentials."""
    headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
    return TestClient(create_app(root, token=TOKEN, settle=30.0, **kwargs), base_url=ORIGIN, headers=headers)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three jobs (finished, with a failure, interrupted) and a corrupt checkpoint under one folder."""
    set_updated(write_job(tmp_path / "done"), "2026-11-20T10:00:00Z")
    set_updated(write_job(tmp_path / "failing", failed=(3,), status="completed_with_failures"),
                "2026-11-21T10:00:00Z")
    interrupted = write_job(tmp_path / "stopped", pending=(30, 31, 32), status="interrupted")
    cp = read_checkpoint(interrupted)
    cp.job_id = "enrich_20261122_100000_123456"
    write_checkpoint(interrupted, cp)
    out = interrupted.with_name("enriched.csv")  # its rows carry its job ID (the dashboard serves no other)
    out.write_text(out.read_text(encoding="utf-8").replace(JOB_ID, cp.job_id), encoding="utf-8")
    set_updated(interrupted, "2026-11-22T10:00:00Z")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.progress.json").write_text('{"job_id": "enrich_y", "status": ', encoding="utf-8")
    return tmp_path


def keys(api: TestClient) -> dict[str, dict[str, Any]]:
    return {j["key"]: j for j in api.get("/api/jobs").json()["jobs"]}


# --- reading -----------------------------------------------------------------------------------------


def test_jobs_page_loads_without_its_token_in_it_and_a_corrupt_checkpoint_listed(folder: Path) -> None:
    api = client(folder)
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert TOKEN not in page.text  # finding 1: the page handed the token to whoever could load it
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    jobs = api.get("/api/jobs").json()["jobs"]
    assert [j["state"] for j in jobs] == ["interrupted", "completed_with_failures", "completed", "unreadable"]
    broken = jobs[-1]
    assert broken["key"].startswith("unreadable-") and "corrupt checkpoint" in broken["error"]
    assert api.get(f"/api/jobs/{broken['key']}").json()["state"] == "unreadable"
    assert api.get(f"/jobs/{broken['key']}").status_code == 200  # its page loads and says why


def test_api_lists_the_fields_of_status_json_newest_first(folder: Path) -> None:
    api = client(folder)
    jobs = [j for j in api.get("/api/jobs").json()["jobs"] if j["state"] != "unreadable"]
    assert jobs[0]["job_id"] == "enrich_20261122_100000_123456"
    status = load_status(folder / "stopped" / "out" / "enriched.progress.json").to_json()
    first = jobs[0]
    assert set(status) <= set(first) and first["key"] == first["job_id"]
    assert {k: first[k] for k in ("done", "pending", "cost_usd", "pace", "fill_rates", "can_resume")} == \
        {k: status[k] for k in ("done", "pending", "cost_usd", "pace", "fill_rates", "can_resume")}


def test_job_detail_has_errors_latest_rows_and_fields(folder: Path) -> None:
    api = client(folder)
    failing = next(j for j in keys(api).values() if j.get("state") == "completed_with_failures")
    # Two jobs share a job ID (a copied job): each gets a key of its own.
    assert failing["key"].startswith(JOB_ID + "-")
    detail = api.get(f"/api/jobs/{failing['key']}").json()
    assert detail["errors"][0]["error_type"] == "client_error" and detail["errors"][0]["row"] == 4
    assert detail["fields"] == ["poc_name", "poc_email", "confidence", "email_domain"]
    assert detail["sample"]["columns"][-3:] == ["_cost_usd", "_record_id", "_job_id"]
    assert len(detail["sample"]["rows"]) == 10 and detail["sample"]["rows"][0][0] == "Fund 00039"  # newest first
    assert detail["stage_totals"]["poc"]["failed_records"] == {"client_error": 1}
    assert detail["can_retry_failed"] is True and detail["launch"] is None


def test_fifty_jobs_are_listed_in_one_answer(tmp_path: Path) -> None:
    for i in range(50):
        write_job(tmp_path / f"job{i:02d}", n=20)
    api = client(tmp_path)
    jobs = api.get("/api/jobs").json()["jobs"]
    assert len(jobs) == 50 and len({j["key"] for j in jobs}) == 50
    assert api.get(f"/api/jobs/{jobs[17]['key']}").json()["checkpoint"] == jobs[17]["checkpoint"]


# --- downloads ----------------------------------------------------------------------------------------


def test_downloads_are_the_export_as_csv_jsonl_and_xlsx(folder: Path) -> None:
    api = client(folder)
    key = next(k for k, j in keys(api).items() if j["state"] == "interrupted")
    out = folder / "stopped" / "out" / "enriched.csv"
    csv_file = api.get(f"/api/jobs/{key}/download/csv")
    assert csv_file.status_code == 200 and csv_file.text == out.read_text(encoding="utf-8")
    assert 'filename="enriched.csv"' in csv_file.headers["content-disposition"]
    rows = [json.loads(line) for line in api.get(f"/api/jobs/{key}/download/jsonl").text.splitlines()]
    assert len(rows) == 37 and rows[1]["confidence"] == 0.75  # typed as the stages file declares
    xlsx = api.get(f"/api/jobs/{key}/download/xlsx")
    assert xlsx.status_code == 200 and zipfile.is_zipfile(io.BytesIO(xlsx.content))
    ordered = api.get(f"/api/jobs/{key}/download/jsonl", params={"order": "input"}).text.splitlines()
    assert [json.loads(line)["fund.title"] for line in ordered] == [f"Fund {i:05d}" for i in range(30)] + \
        [f"Fund {i:05d}" for i in range(33, 40)]
    assert api.get(f"/api/jobs/{key}/download/pdf").status_code == 404
    assert api.get(f"/api/jobs/{key}/download/csv", params={"order": "random"}).status_code == 404


# --- what it refuses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/api/jobs/nope", "/api/jobs/..", "/api/jobs/%2e%2e", "/api/jobs/..%2f..%2fetc%2fpasswd",
    "/api/jobs/%2Fetc%2Fpasswd", "/api/jobs/done", "/api/jobs/done%2Fout%2Fenriched.progress.json",
    "/api/jobs/../../etc/passwd/download/csv", "/api/jobs/.%2e/download/csv", "/api/nothing"])
def test_unknown_jobs_and_path_escapes_are_404_json(folder: Path, path: str) -> None:
    answer = client(folder).get(path)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] and "Traceback" not in answer.text and "root:" not in answer.text


def test_a_checkpoint_linked_from_outside_the_folder_is_not_served(folder: Path, tmp_path_factory: Any) -> None:
    outside = write_job(tmp_path_factory.mktemp("outside") / "secret")
    (folder / "link.progress.json").symlink_to(outside)
    assert len(client(folder).get("/api/jobs").json()["jobs"]) == 4


def test_every_request_needs_the_token_or_a_session_and_the_cookie_is_not_the_token(folder: Path) -> None:
    """Finding 1: on loopback no request needed the token. Now the page, the API and the downloads all do;
    the `?token=` link opens a session whose cookie holds a random ID, never the token (finding 11)."""
    api = client(folder, auth=False)
    key = next(iter(keys(client(folder))))
    for path in ("/", f"/jobs/{key}", "/api/jobs", f"/api/jobs/{key}", f"/api/jobs/{key}/download/csv"):
        answer = api.get(path)
        assert answer.status_code == 401 and "token" in answer.json()["error"] and TOKEN not in answer.text, path
        assert api.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 403
        assert api.get(path, headers={"X-Enrichkit-Token": TOKEN}).status_code == 200
    for action in ("cancel", "resume", "retry-failed"):
        answer = api.post(f"/api/jobs/{key}/{action}", headers={"Origin": ORIGIN})
        assert answer.status_code == 401
        assert api.post(f"/api/jobs/{key}/{action}", headers={"Origin": ORIGIN, "X-Enrichkit-Token": "wrong"}
                        ).status_code == 403
    assert api.get("/?token=wrong").status_code == 403
    link = api.get(f"/jobs/{key}?token={TOKEN}", follow_redirects=False)
    assert link.status_code == 303 and link.headers["location"] == f"/jobs/{key}"
    cookie = link.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and TOKEN not in cookie
    assert api.get("/api/jobs").status_code == 200  # the session cookie now stands for the token
    # The page's POSTs carry the cookie, and must be same-origin: the browser sends Origin.
    assert api.post(f"/api/jobs/{key}/cancel").status_code == 403
    answer = api.post(f"/api/jobs/{key}/cancel", headers={"Origin": ORIGIN})
    assert answer.status_code == 409 and "no run is active" in answer.json()["error"]
    # A session is this server's: another server (a restart) does not know it.
    other = client(folder, auth=False)
    other.cookies.set(server_module.COOKIE, api.cookies[server_module.COOKIE])
    assert other.get("/api/jobs").status_code == 401


def test_cross_origin_and_cross_site_posts_are_refused(folder: Path) -> None:
    api = client(folder)
    key = next(iter(keys(api)))
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "http://127.0.0.1:9999"},
                    {"Sec-Fetch-Site": "cross-site"}):
        answer = api.post(f"/api/jobs/{key}/cancel", headers={"X-Enrichkit-Token": TOKEN, **headers})
        assert answer.status_code == 403 and "refused" in answer.json()["error"]
    # A script (no Origin, no Sec-Fetch-Site) with the token is heard.
    assert api.post(f"/api/jobs/{key}/cancel", headers={"X-Enrichkit-Token": TOKEN}).status_code == 409


def test_another_host_name_is_refused_so_dns_rebinding_gets_nothing(folder: Path) -> None:
    api = TestClient(create_app(folder, token=TOKEN), base_url="http://rebound.example:8765")
    for path in ("/", "/api/jobs"):
        answer = api.get(path)
        assert answer.status_code == 403 and TOKEN not in answer.text
    assert client(folder).get("/", headers={"Host": "localhost:8765"}).status_code == 200


def test_a_non_loopback_server_needs_the_token_for_every_request(folder: Path) -> None:
    api = TestClient(create_app(folder, token=TOKEN, host="0.0.0.0"), base_url="http://10.1.2.3:8765")
    for path in ("/", "/api/jobs", "/jobs/x"):
        assert api.get(path).status_code == 401
    assert api.get("/api/jobs", headers={"X-Enrichkit-Token": TOKEN}).status_code == 200
    link = api.get(f"/?token={TOKEN}", follow_redirects=False)
    assert link.status_code == 303 and link.headers["location"] == "/"
    assert "samesite=strict" in link.headers["set-cookie"].lower() and "httponly" in link.headers["set-cookie"].lower()
    assert api.get("/api/jobs").status_code == 200  # the cookie now carries the session


def test_a_job_page_poll_reads_its_own_checkpoint_without_walking_the_folder(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[Path] = []
    real = catalog_module.FolderWalk.walk
    monkeypatch.setattr(catalog_module.FolderWalk, "walk", lambda self: walks.append(self.root) or real(self))
    api = client(folder)
    found = keys(api)  # the jobs page: one walk
    assert len(walks) == 1
    stopped = next(k for k, j in found.items() if j["state"] == "interrupted")
    for _ in range(3):
        assert api.get(f"/api/jobs/{stopped}").json()["pending"] == 3
    broken = next(k for k, j in found.items() if j["state"] == "unreadable")
    assert api.get(f"/api/jobs/{broken}").json()["state"] == "unreadable"
    assert len(walks) == 1
    assert api.get("/api/jobs/enrich_nothing").status_code == 404  # a key it does not know: walked again
    assert len(walks) == 2
    (folder / "stopped" / "out" / "enriched.progress.json").unlink()  # gone since: walked again, and not found
    assert api.get(f"/api/jobs/{stopped}").status_code == 404 and len(walks) == 3


def test_the_api_key_never_appears_in_anything_served(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv_key = "AIzaSyDOTENVkey0123456789abcdef"
    job = folder / "stopped" / "out" / "enriched.progress.json"
    (folder / "stopped" / ".env").write_text(f"GEMINI_API_KEY={dotenv_key}\n", encoding="utf-8")
    cp = read_checkpoint(job)
    cp.errors.append({"row": 31, "stage": "poc", "error_type": "auth_error", "at": "2026-11-21T10:00:00Z",
                      "message": f"403 for key {API_KEY} and {dotenv_key}"})
    write_checkpoint(job, cp)
    out = job.with_name("enriched.csv")
    out.write_text(out.read_text(encoding="utf-8").replace("Name 5,", f"{API_KEY},", 1), encoding="utf-8")
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    api = client(folder)
    key = next(k for k, j in keys(api).items() if j["state"] == "interrupted")
    served = [api.get("/"), api.get(f"/jobs/{key}"), api.get("/api/jobs"), api.get(f"/api/jobs/{key}")]
    served += [api.get(f"/api/jobs/{key}/download/{fmt}") for fmt in ("csv", "jsonl")]
    texts = [answer.text for answer in served]
    with zipfile.ZipFile(io.BytesIO(api.get(f"/api/jobs/{key}/download/xlsx").content)) as book:
        texts += [book.read(name).decode("utf-8", "replace") for name in book.namelist()]
    assert "403 for key *** and ***" in served[3].text
    assert "***" in served[4].text  # the output row that held it
    for text in texts:
        assert API_KEY not in text and dotenv_key not in text


def test_the_dashboard_masks_its_keys_and_this_process_registered_ones_in_every_form(tmp_path: Path) -> None:
    secrets = Secrets({"GOOGLE_API_KEY": "dash/key+0123456789", "OTHER_TOKEN": "not-a-gemini-secret"})
    register_secret("process-key-0123456789")
    try:
        tree = {"k dash/key+0123456789": ["dash%2Fkey%2B0123456789", ("process-key-0123456789", 3)],
                "kept": "not-a-gemini-secret dash%2Fkey+0123456789"}
        assert secrets.redactor.redact_tree(tree) == {"k ***": ["***", ["***", 3]],
                                                      "kept": "not-a-gemini-secret dash%2Fkey+0123456789"}
    finally:
        forget_secrets()
    assert secrets.redactor.redact("process-key-0123456789") == "process-key-0123456789"  # forgotten


def test_an_internal_error_is_json_without_a_traceback(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom at /secret/place")

    monkeypatch.setattr(server_module, "job_detail", broken)
    api = TestClient(create_app(folder, token=TOKEN), base_url=ORIGIN, raise_server_exceptions=False,
                     headers={"Authorization": f"Bearer {TOKEN}"})
    key = next(k for k, j in keys(api).items() if j["state"] == "completed")
    answer = api.get(f"/api/jobs/{key}")
    assert answer.status_code == 500 and answer.json()["error"].startswith("internal error (RuntimeError)")
    assert "Traceback" not in answer.text and "/secret/place" not in answer.text


# --- actions --------------------------------------------------------------------------------------------


def test_resume_and_retry_run_python_m_enrichkit_with_the_job_files_only(folder: Path) -> None:
    job = load_status(folder / "failing" / "out" / "enriched.progress.json")
    out = folder / "failing" / "out" / "enriched.csv"
    assert run_command(job, "retry-failed") == [sys.executable, "-m", "enrichkit", "--input",
                                                str(folder / "failing" / "input.csv"), "--output", str(out),
                                                "--retry-failed"]
    assert log_path(job) == out.with_name("enriched.run.log")
    api = client(folder)
    done = next(k for k, j in keys(api).items() if j["state"] == "completed")
    answer = api.post(f"/api/jobs/{done}/resume", headers=POST)
    assert answer.status_code == 409 and "nothing to resume" in answer.json()["error"]
    assert api.post(f"/api/jobs/{done}/retry-failed", headers=POST).status_code == 409


def test_resume_of_a_job_that_spent_its_budget_needs_a_higher_one(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = write_job(tmp_path / "spent", pending=(30, 31), status="budget_exhausted")
    started: list[list[str]] = []

    def start_run(job: Any, action: str, *, max_cost: float | None = None, **_: Any) -> Any:
        started.append(run_command(job, action, max_cost))
        raise server_module.Refused(418, "not started in this test")

    monkeypatch.setattr(server_module, "start_run", start_run)
    api = client(tmp_path)
    job = keys(api)[JOB_ID]
    assert job["can_resume"] is True and job["resume_command"].endswith("--resume --max-cost USD")
    assert job["next_command"] == job["resume_command"] == load_status(checkpoint).next_command
    # A plain resume would stop again at once: refused, with the command that needs the new budget.
    answer = api.post(f"/api/jobs/{JOB_ID}/resume", headers=POST)
    assert answer.status_code == 409 and job["resume_command"] in answer.json()["error"]
    spent = job["cost_usd"]
    assert api.post(f"/api/jobs/{JOB_ID}/resume?max_cost={spent}", headers=POST).status_code == 422
    assert started == []
    assert api.post(f"/api/jobs/{JOB_ID}/resume?max_cost=2.5", headers=POST).status_code == 418
    assert started == [[sys.executable, "-m", "enrichkit", "--input", str(tmp_path / "spent" / "input.csv"),
                        "--output", str(tmp_path / "spent" / "out" / "enriched.csv"), "--resume",
                        "--max-cost", "2.5"]]


@pytest.fixture
def stand_in_run(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process standing in for a live run: it holds the job's lock, its checkpoint names it, SIGINT ends it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "job.lock")], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    write_checkpoint(tmp_path / "job.progress.json",
                     Checkpoint(job_id="enrich_live", output=str(tmp_path / "job.csv"),
                                input={"path": str(tmp_path / "in.csv")}, stages=["poc"], config_fingerprint="",
                                status="running", pid=proc.pid))
    yield proc
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_cancel_signals_the_live_run(tmp_path: Path, stand_in_run: subprocess.Popen[str]) -> None:
    api = client(tmp_path)
    assert keys(api)["enrich_live"]["state"] == "running"
    answer = api.post("/api/jobs/enrich_live/cancel", headers=POST)
    assert answer.status_code == 202 and answer.json()["pid"] == stand_in_run.pid
    assert stand_in_run.wait(timeout=30) != 0  # SIGINT: KeyboardInterrupt in the stand-in
    assert stand_in_run.returncode in (1, -signal.SIGINT)
    assert keys(api)["enrich_live"]["state"] == "interrupted"
    assert api.post("/api/jobs/enrich_live/resume", headers=POST).status_code == 409  # nothing pending


def test_cancel_stops_a_live_run_and_resume_finishes_it_and_a_second_start_is_reported_as_locked(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's flow (test_browser.py clicks it in Chromium, in `make slow`) through the API the page calls: a
    real run against the stand-in listed as running, cancelled (exit 130, interrupted, records left), resumed
    (refused while another run holds the lock), and finished, every record once."""
    write_csv(ws.input, make_rows(60))
    ws.fake.configure(latency=0.05)  # one worker: 3 s of run to cancel
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)  # what the server's environment gives the runs it starts
    monkeypatch.setenv("GEMINI_BASE_URL", ws.fake.url)
    api = client(ws.tmp)
    run = ws.start("--max-workers", "1")
    try:
        wait_for(lambda: ws.checkpoint.exists() and rows_written(ws) > 0, what="the first rows")
        job_id = read_json(ws.checkpoint)["job_id"]
        live = keys(api)[job_id]
        assert live["state"] == "running" and live["can_resume"] is False
        answer = api.post(f"/api/jobs/{job_id}/cancel", headers=POST)
        assert answer.status_code == 202 and answer.json()["pid"] == run.pid
        assert run.wait(timeout=30) == 130
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=30)
    stopped = keys(api)[job_id]
    assert stopped["state"] == "interrupted" and stopped["can_resume"] is True and 0 < stopped["done"] < 60
    assert api.post(f"/api/jobs/{job_id}/cancel", headers=POST).status_code == 409  # no run is active now
    ws.fake.configure(latency=0)
    # Another run holds the lock (and has not named itself yet): the started run exits 3, and the page says so.
    lock = RunLock(ws.output.with_name("enriched.lock"), ws.output)
    lock.acquire()
    ws.output.with_name("enriched.lock.owner").unlink()
    try:
        answer = api.post(f"/api/jobs/{job_id}/resume", headers=POST)
    finally:
        lock.release()
    assert answer.status_code == 409 and "another run holds this job's lock (exit 3)" in answer.json()["error"]
    launch = api.get(f"/api/jobs/{job_id}").json()["launch"]
    assert launch["exit_code"] == 3 and launch["locked"] is True and "another run" in launch["message"]
    # Free again: it starts, detached, and finishes the job with its recorded options.
    answer = api.post(f"/api/jobs/{job_id}/resume", headers=POST)
    assert answer.status_code in (200, 202), answer.text
    wait_for(lambda: keys(api)[job_id]["state"] == "completed", what="the resumed job to complete")
    assert set(ws.output_ids()) == expected_ids(ws)
    log = ws.output.with_name("enriched.run.log").read_text(encoding="utf-8")
    assert log.count("jobs.py serve: resume: -m enrichkit --input") == 2 and API_KEY not in log
