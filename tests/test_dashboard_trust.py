"""The dashboard and the job tools on a shared machine (issue 18): every request authenticated, job files
treated as evidence (a second local user plants them), reads bounded (FIFOs, /dev/zero), one bad checkpoint
never breaking the listing, a listing of many jobs that reads only what changed, valid formula-safe CSV,
and a PID signalled only when it is the job's run (issue 15, class 11)."""

from __future__ import annotations

import csv
import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import JOBS, ROOT
from enrichkit.jobs import catalog as catalog_module
from enrichkit.jobs import launch as launch_module
from enrichkit.jobs.cli import main as jobs_main
from enrichkit.jobs.server import create_app
from enrichkit.store.checkpoint import read_checkpoint, write_checkpoint
from test_dashboard import HOLD_LOCK, ORIGIN, TOKEN, client, keys
from test_jobs import JOB_ID, Result, write_job

POST = {"X-Enrichkit-Token": TOKEN, "Origin": ORIGIN}
NOBODY = 65534


def _sleeper(*, user: int | None = None) -> subprocess.Popen[bytes]:
    """An unrelated process (a `sleep`) whose PID a planted file names."""
    return subprocess.Popen(["sleep", "120"], user=user, group=user)


@pytest.fixture
def jobs(capsys: pytest.CaptureFixture[str]) -> Any:
    """`jobs.py` in-process: `jobs("status", path) -> Result`."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            code = jobs_main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


# --- finding 2: Resume and Retry launch only what the page shows, for files this user owns -----------


def test_resume_runs_exactly_the_command_the_page_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_job(tmp_path / "job", pending=(30, 31), status="interrupted")
    started: list[tuple[list[str], str]] = []

    class Popen:
        pid = 4_000_000

        def __init__(self, argv: list[str], *, cwd: Path, **_: Any) -> None:
            started.append((argv, str(cwd)))

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(launch_module.subprocess, "Popen", Popen)
    api = client(tmp_path)
    shown = api.get(f"/api/jobs/{JOB_ID}").json()["run_commands"]["resume"]
    assert shown["command"] == f"cd {shown['cwd']} && {' '.join(shown['argv'])}"
    assert shown["stages_file"] == str(tmp_path / "job" / "stages.toml")
    assert api.post(f"/api/jobs/{JOB_ID}/resume", headers=POST).status_code == 200
    assert started == [(shown["argv"], shown["cwd"])]


@pytest.mark.parametrize("planted", ["stages file", "working folder", "input", "output"])
def test_resume_refuses_a_job_whose_recorded_files_are_another_users(tmp_path: Path, planted: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint naming another user's stages module ran that code as the server's user; one naming
    another user's folder read the `.env` there. Recorded paths must be the server's user's own."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user (chown)")
    checkpoint = write_job(tmp_path / "job", pending=(30, 31), status="interrupted")
    target = {"stages file": tmp_path / "job" / "stages.toml", "working folder": tmp_path / "job",
              "input": tmp_path / "job" / "input.csv", "output": checkpoint.with_name("enriched.csv")}[planted]
    os.chown(target, NOBODY, NOBODY)
    monkeypatch.setattr(launch_module.subprocess, "Popen", lambda *a, **k: pytest.fail("a run was started"))
    answer = client(tmp_path).post(f"/api/jobs/{JOB_ID}/resume", headers=POST)
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert f"recorded {planted} {target} is owned by nobody (uid {NOBODY})" in error


def test_resume_refuses_a_world_writable_stages_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_job(tmp_path / "job", pending=(30, 31), status="interrupted")
    (tmp_path / "job" / "stages.toml").chmod(0o666)
    monkeypatch.setattr(launch_module.subprocess, "Popen", lambda *a, **k: pytest.fail("a run was started"))
    answer = client(tmp_path).post(f"/api/jobs/{JOB_ID}/retry-failed", headers=POST)
    assert answer.status_code == 403 and "stages file" in answer.json()["error"]
    assert "writable by every user" in answer.json()["error"]


# --- the second local user ---------------------------------------------------------------------------------


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every local user may write (like /tmp), where another user plants files."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child process as a second local user (nobody)")
    try:
        pwd.getpwuid(NOBODY)
    except KeyError:
        pytest.skip("no user `nobody` (uid 65534) on this machine")
    folder = Path(tempfile.mkdtemp(prefix="enrichkit-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(script: str, *args: str, stdin: str = "") -> None:
    done = subprocess.run(["sh", "-c", script, "sh", *args], input=stdin, text=True, user=NOBODY, group=NOBODY,
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e  # starts processes: not in `make unit`
def test_a_second_user_planting_a_job_gets_nothing_run_signalled_or_served(
        shared: Path, tmp_path: Path, jobs: Any, sleepers: list[subprocess.Popen[bytes]]) -> None:
    # The other user's own process, and a job it plants naming that process and its own stages module.
    victim = _sleeper(user=NOBODY)
    sleepers.append(victim)
    model = read_checkpoint(write_job(tmp_path / "model", pending=(30, 31), status="interrupted"))
    marker = shared / "ran-as-the-dashboards-user"
    _as_nobody('cat > "$1"', str(shared / "evil.py"), stdin=f"open({str(marker)!r}, 'w').write('pwned')\n")
    model.status, model.pid, model.host = "running", victim.pid, socket.gethostname()
    model.stages_file = str(shared / "evil.toml")
    model.output = str(shared / "enriched.csv")
    model.options = {"cwd": str(shared)}
    staged = tmp_path / "planted.json"
    write_checkpoint(staged, model)
    _as_nobody('cat > "$1"', str(shared / "enriched.progress.json"), stdin=staged.read_text(encoding="utf-8"))
    _as_nobody('cat > "$1"', str(shared / "enriched.lock.owner"),
               stdin=json.dumps({"pid": victim.pid, "host": socket.gethostname()}))
    _as_nobody('printf "a,_cost_usd,_record_id,_job_id\\nsecret,0,0123456789abcdef,%s\\n" "$2" > "$1"',
               str(shared / "enriched.csv"), JOB_ID)

    api = client(shared)
    listed = api.get("/api/jobs").json()["jobs"]
    assert [j["state"] for j in listed] == ["unreadable"]
    assert f"not trusted: owned by nobody (uid {NOBODY})" in listed[0]["error"]
    key = listed[0]["key"]
    for action in ("cancel", "resume", "retry-failed"):
        answer = api.post(f"/api/jobs/{key}/{action}", headers=POST)
        assert answer.status_code == 409 and "not trusted" in answer.json()["error"]
    assert api.get(f"/api/jobs/{key}/download/csv").status_code == 409
    assert "secret" not in api.get(f"/api/jobs/{key}").text
    # The job tools from a terminal: not running (that PID holds no lock of this job), and nothing signalled.
    status = jobs("status", str(shared / "enriched.progress.json"), "--json")
    assert json.loads(status.out)["state"] == "interrupted"
    cancel = jobs("cancel", str(shared / "enriched.progress.json"), "--timeout", "1")
    assert cancel.code == 1 and "not signalling anything" in cancel.out and "owned by nobody" in cancel.out
    assert victim.poll() is None and not marker.exists()


# --- finding 3 and issue 15 class 11: a PID is signalled only when it is the job's run ---------------------


@pytest.mark.e2e  # starts processes: not in `make unit`
def test_cancel_never_signals_a_pid_that_does_not_hold_the_jobs_lock(
        tmp_path: Path, jobs: Any, sleepers: list[subprocess.Popen[bytes]]) -> None:
    """A checkpoint (or `<stem>.lock.owner`) naming an unrelated `sleep` got it killed. Here the PID is
    this user's own process, started before the checkpoint (as after a reboot, or a clock moved back):
    alive and old enough, but it does not hold the job's lock, so it is not the run."""
    unrelated = _sleeper()
    sleepers.append(unrelated)
    time.sleep(0.05)
    checkpoint = write_job(tmp_path / "job", pending=(30, 31), status="running", host=socket.gethostname())
    cp = read_checkpoint(checkpoint)
    cp.pid = unrelated.pid
    write_checkpoint(checkpoint, cp)
    owner = checkpoint.with_name("enriched.lock.owner")
    owner.write_text(json.dumps({"pid": unrelated.pid, "host": socket.gethostname()}), encoding="utf-8")
    assert json.loads(jobs("status", str(checkpoint), "--json").out)["state"] == "interrupted"
    cancel = jobs("cancel", str(checkpoint), "--timeout", "1")
    assert cancel.code == 1 and "no run is active" in cancel.out
    api = client(tmp_path)
    assert keys(api)[JOB_ID]["state"] == "interrupted"
    assert api.post(f"/api/jobs/{JOB_ID}/cancel", headers=POST).status_code == 409
    assert unrelated.poll() is None  # never signalled
    # The same PID once it does hold the job's lock is the run: status says so, and Cancel reaches it.
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(checkpoint.with_name("enriched.lock"))],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        cp.pid = holder.pid
        write_checkpoint(checkpoint, cp)
        assert json.loads(jobs("status", str(checkpoint), "--json").out)["state"] == "running"
        assert api.post(f"/api/jobs/{JOB_ID}/cancel", headers=POST).status_code == 202
        assert holder.wait(timeout=30) != 0
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


@pytest.mark.e2e  # starts processes: not in `make unit`
def test_a_world_writable_owner_file_is_not_acted_on(tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    unrelated = _sleeper()
    sleepers.append(unrelated)
    checkpoint = write_job(tmp_path / "job", pending=(30, 31), status="interrupted")
    owner = checkpoint.with_name("enriched.lock.owner")
    owner.write_text(json.dumps({"pid": unrelated.pid, "host": socket.gethostname()}), encoding="utf-8")
    owner.chmod(0o666)
    answer = client(tmp_path).post(f"/api/jobs/{JOB_ID}/cancel", headers=POST)
    assert answer.status_code == 403 and "lock owner file" in answer.json()["error"]
    assert "writable by every user" in answer.json()["error"] and unrelated.poll() is None


# --- finding 4: only the job's own output is served --------------------------------------------------------


def test_a_checkpoint_naming_any_readable_file_as_its_output_gets_nothing_served(tmp_path: Path) -> None:
    secret = tmp_path / "home" / ".git-credentials"
    secret.parent.mkdir()
    secret.write_text("https://me:ghp_SECRETtoken0123@github.com\n", encoding="utf-8")
    served = tmp_path / "served"
    checkpoint = write_job(served / "job", pending=(30,), status="interrupted")
    cp = read_checkpoint(checkpoint)
    cp.output = str(secret)
    write_checkpoint(checkpoint, cp)
    api = client(served)
    detail = api.get(f"/api/jobs/{JOB_ID}").json()
    assert detail["sample"]["rows"] == [] and "not beside the job's checkpoint" in detail["output_problem"]
    for fmt in ("csv", "jsonl", "xlsx"):
        answer = api.get(f"/api/jobs/{JOB_ID}/download/{fmt}")
        assert answer.status_code == 409 and b"SECRETtoken" not in answer.content
    # Beside the checkpoint but not an enrichkit output of this job: not served either.
    cp.output = str(checkpoint.with_name("enriched.csv"))
    write_checkpoint(checkpoint, cp)
    checkpoint.with_name("enriched.csv").write_text("password\nhunter2\n", encoding="utf-8")
    detail = api.get(f"/api/jobs/{JOB_ID}").json()  # one column only: was a 500 (finding 6)
    assert "not an enrichkit output" in detail["output_problem"] and "hunter2" not in json.dumps(detail)
    assert api.get(f"/api/jobs/{JOB_ID}/download/csv").status_code == 409
    other = checkpoint.with_name("enriched.csv")
    other.write_text("a,_cost_usd,_record_id,_job_id\nx,0,0123456789abcdef,enrich_someone_else\n", encoding="utf-8")
    assert "rows of another job" in api.get(f"/api/jobs/{JOB_ID}").json()["output_problem"]
    # A link named as the output is not the job's own file.
    other.unlink()
    other.symlink_to(secret)
    assert "symbolic link" in api.get(f"/api/jobs/{JOB_ID}").json()["output_problem"]


# --- finding 5: bounded reads; SIGTERM always stops the server -----------------------------------------------


def test_a_fifo_checkpoint_and_an_owner_file_linked_to_dev_zero_never_block_or_fill_the_server(
        tmp_path: Path) -> None:
    checkpoint = write_job(tmp_path / "job", pending=(30, 31), status="running", host=socket.gethostname())
    checkpoint.with_name("enriched.lock.owner").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "x.progress.json")
    (tmp_path / "job" / "stages.toml").unlink()
    os.mkfifo(tmp_path / "job" / "stages.toml")  # the types a download reads
    (tmp_path / ".env").unlink(missing_ok=True)
    os.mkfifo(tmp_path / ".env")  # the keys the server masks
    api = client(tmp_path)
    listed = {j["checkpoint"]: j for j in api.get("/api/jobs").json()["jobs"]}
    assert "a FIFO, not a regular file" in listed[str(tmp_path / "x.progress.json")]["error"]
    assert listed[str(checkpoint)]["state"] == "interrupted"
    assert api.get(f"/api/jobs/{JOB_ID}").status_code == 200
    assert api.get(f"/api/jobs/{JOB_ID}/download/jsonl").status_code == 200
    (tmp_path / "job" / "input.csv").unlink()
    os.mkfifo(tmp_path / "job" / "input.csv")  # what a download in input order walks
    answer = api.get(f"/api/jobs/{JOB_ID}/download/jsonl", params={"order": "input"})
    assert answer.status_code == 409 and "a FIFO" in answer.json()["error"]
    answer = api.post(f"/api/jobs/{JOB_ID}/cancel", headers=POST)
    assert answer.status_code == 403 and "a symbolic link" in answer.json()["error"]  # not the job's own file


@pytest.mark.e2e  # starts processes: not in `make unit`
def test_sigterm_stops_the_server_with_a_request_in_flight(tmp_path: Path) -> None:
    write_job(tmp_path / "job")
    os.mkfifo(tmp_path / "x.progress.json")
    env = {**os.environ, "ENRICHKIT_DASHBOARD_TOKEN": TOKEN, "PYTHONPATH": str(ROOT / "lib")}
    proc = subprocess.Popen([sys.executable, str(JOBS), "serve", str(tmp_path), "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", proc.stdout.readline())
        assert match and match.group(2) == TOKEN
        port = int(match.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(f"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                         "Connection: close\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"a FIFO" in answer  # the FIFO listed, never opened
        stuck = socket.create_connection(("127.0.0.1", port), timeout=30)
        stuck.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a request that never ends
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        stuck.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn ends by re-raising the signal it handled


# --- finding 6: one malformed checkpoint is a broken entry, never a 500 -----------------------------------------


def test_a_malformed_checkpoint_is_one_broken_entry_and_every_other_job_is_listed(tmp_path: Path) -> None:
    write_job(tmp_path / "good")
    bad = write_job(tmp_path / "bad", status="running", host=socket.gethostname())
    data = json.loads(bad.read_text(encoding="utf-8"))
    data.update({"errors": ["x"], "pid": 10**20, "job_id": "enrich_a"})
    bad.write_text(json.dumps(data), encoding="utf-8")
    slash = write_job(tmp_path / "slash")
    data = json.loads(slash.read_text(encoding="utf-8"))
    data["job_id"] = "enrich/../x"
    slash.write_text(json.dumps(data), encoding="utf-8")
    api = client(tmp_path)
    answer = api.get("/api/jobs")
    assert answer.status_code == 200
    by_path = {j["checkpoint"]: j for j in answer.json()["jobs"]}
    assert len(by_path) == 3 and by_path[str(tmp_path / "good" / "out" / "enriched.progress.json")]["job_id"] == JOB_ID
    for job in by_path.values():
        assert "/" not in job["key"]
        page = api.get(f"/api/jobs/{job['key']}")
        assert page.status_code == 200, page.text
    assert api.get(f"/api/jobs/{by_path[str(bad)]['key']}").json()["state"] in ("interrupted", "unreadable")


# --- finding 7: many jobs, a poll reads only what changed -----------------------------------------------------


def test_a_warm_listing_reads_no_unchanged_checkpoint_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(8):  # any number shows it: an unchanged one is never read again
        write_job(tmp_path / f"job{i:02d}", n=10)
    reads: list[Path] = []
    real = catalog_module.read_job_summary
    monkeypatch.setattr(catalog_module, "read_job_summary", lambda path: reads.append(path) or real(path))
    api = client(tmp_path)
    first = api.get("/api/jobs").json()["jobs"]
    assert len(first) == 8 and len(reads) == 8
    assert api.get("/api/jobs").json() == {"dir": str(tmp_path), "jobs": first}
    assert len(reads) == 8  # nothing changed: nothing read
    changed = tmp_path / "job07" / "out" / "enriched.progress.json"
    cp = read_checkpoint(changed)
    cp.status = "interrupted"
    write_checkpoint(changed, cp)
    states = {j["checkpoint"]: j["state"] for j in api.get("/api/jobs").json()["jobs"]}
    assert reads[8:] == [changed] and states[str(changed)] == "interrupted"


# --- finding 8: CSV downloads and `jobs.py export --format csv` quote a bare CR ----------------------------------


def test_a_bare_cr_is_quoted_in_the_csv_download_and_export(tmp_path: Path, jobs: Any) -> None:
    checkpoint = write_job(tmp_path / "job")
    out = checkpoint.with_name("enriched.csv")
    payload = "Name 3\r=cmd|' /C calc'!A0"
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    rows[4][5] = payload  # poc_name, as the run wrote it (quoted: the output writer quotes a CR)
    rows[5][5] = "=HYPERLINK(\"http://x\")"  # an edited file: an enriched formula the run would have guarded
    with open(out, "w", encoding="utf-8", newline="") as f:
        for row in rows:
            text = io.StringIO()
            csv.writer(text, lineterminator="\r\n").writerow(row)
            f.write(text.getvalue()[:-2] + "\n")
    download = client(tmp_path).get(f"/api/jobs/{JOB_ID}/download/csv").content.decode("utf-8")
    assert jobs("export", str(checkpoint), "--format", "csv", "--output", str(tmp_path / "x.csv")).code == 0
    with open(tmp_path / "x.csv", encoding="utf-8", newline="") as f:
        exported = f.read()
    for text in (download, exported):
        parsed = list(csv.reader(io.StringIO(text, newline="")))
        assert len(parsed) == len(rows) and parsed[4][5] == payload
        assert parsed[5][5] == "'=HYPERLINK(\"http://x\")"
        assert '"Name 3\r=cmd' in text and not any(row[0].startswith("=") for row in parsed)
        assert all(len(row) == len(rows[0]) for row in parsed)


def test_export_of_an_output_that_is_a_fifo_is_one_line_not_a_hang(tmp_path: Path, jobs: Any) -> None:
    checkpoint = write_job(tmp_path / "job")
    checkpoint.with_name("enriched.csv").unlink()
    os.mkfifo(checkpoint.with_name("enriched.csv"))
    result = jobs("export", str(checkpoint), "--format", "csv", "--output", "-")
    assert result.code == 2 and "a FIFO, not a regular file" in result.err


# --- finding 11: the token never on the command line, long enough, and never in the cookie -------------------------


def test_token_on_the_command_line_is_refused_naming_the_variable(jobs: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    refused = jobs("serve", str(tmp_path), "--token", "x" * 40)
    assert refused.code == 2 and "ENRICHKIT_DASHBOARD_TOKEN" in refused.err and "ps" in refused.err
    monkeypatch.setenv("ENRICHKIT_DASHBOARD_TOKEN", "x")
    short = jobs("serve", str(tmp_path), "--port", "0")
    assert short.code == 2 and "at least 16 characters" in short.err and "Traceback" not in short.err
    with pytest.raises(Exception, match="at least 16"):
        create_app(tmp_path, token="short")


def test_the_cookie_opens_a_session_and_is_never_the_token(tmp_path: Path) -> None:
    write_job(tmp_path / "job")
    api = TestClient(create_app(tmp_path, token=TOKEN), base_url=ORIGIN)
    link = api.get(f"/?token={TOKEN}", follow_redirects=False)
    value = api.cookies["enrichkit_session"]
    assert value and TOKEN not in value and len(value) >= 32
    assert "HttpOnly" in link.headers["set-cookie"] and "SameSite=strict" in link.headers["set-cookie"]
    assert api.get("/api/jobs").status_code == 200
    assert api.post(f"/api/jobs/{JOB_ID}/resume?token={TOKEN}", headers={"Origin": ORIGIN}).status_code == 403
    script = TestClient(create_app(tmp_path, token=TOKEN), base_url=ORIGIN)
    answer = script.get(f"/api/jobs?token={TOKEN}", follow_redirects=False)  # a script's GET: no session needed
    assert answer.status_code == 200 and "set-cookie" not in answer.headers
    assert script.get("/api/jobs").status_code == 401


def test_an_unchanged_listing_is_a_304_for_its_etag(tmp_path: Path) -> None:
    write_job(tmp_path / "job")
    api = client(tmp_path)
    first = api.get("/api/jobs")
    etag = first.headers["etag"]
    again = api.get("/api/jobs", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    checkpoint = tmp_path / "job" / "out" / "enriched.progress.json"
    cp = read_checkpoint(checkpoint)
    cp.status = "interrupted"
    write_checkpoint(checkpoint, cp)
    changed = api.get("/api/jobs", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["jobs"][0]["state"] == "interrupted"


def test_group_write_is_trusted_only_for_the_owners_private_group(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another group (chown)")
    import grp

    me = pwd.getpwuid(os.geteuid())
    try:
        shared_group = next(g for g in grp.getgrall() if g.gr_gid != me.pw_gid)
    except StopIteration:
        pytest.skip("no second group on this machine")
    checkpoint = write_job(tmp_path / "job")
    checkpoint.chmod(0o664)
    private = client(tmp_path).get("/api/jobs").json()["jobs"][0]
    if grp.getgrgid(me.pw_gid).gr_name == me.pw_name:
        assert private["state"] == "completed"  # group-write for the user's own private group is fine
    os.chown(checkpoint, -1, shared_group.gr_gid)
    listed = client(tmp_path).get("/api/jobs").json()["jobs"][0]
    assert listed["state"] == "unreadable"
    assert f"not trusted: writable by group {shared_group.gr_name}" in listed["error"]
