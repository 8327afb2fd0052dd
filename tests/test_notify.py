"""`--notify-url` (the library side, `enrichkit.run.notify`) against a local receiver on 127.0.0.1: the body, the
tries on a dead or failing receiver (waits recorded, never slept), the stop that never waits, redaction."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import API_KEY
from enrichkit.commands import enrich_command
from enrichkit.redact import forget_secrets, register_secret
from enrichkit.run import notify as notify_module
from enrichkit.run.notify import build_summary, notify_run_end, send_summary
from enrichkit.store.jobfiles import JobPaths

WEBHOOK_PATH = "/services/T0000/B0000/s3cretWebhookToken"


class Receiver:
    """A webhook on 127.0.0.1 answering each POST with the next status of `statuses` (the last one
    repeats); "hang" holds the request until `release` is set."""

    def __init__(self, *statuses: int | str) -> None:
        self.statuses = list(statuses) or [200]
        self.posts: list[dict[str, Any]] = []
        self.got = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.posts.append({"path": self.path, "type": self.headers.get("content-type"),
                                       "body": body.decode("utf-8")})
                status = receiver.statuses[min(len(receiver.posts), len(receiver.statuses)) - 1]
                receiver.got.set()
                if status == "hang":
                    receiver.release.wait(30)
                    status = 200
                self.send_response(int(status))
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{WEBHOOK_PATH}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Waits:
    """The waits between tries, recorded from the naps they are slept in (never slept): the naps taken
    after the same number of tries are one wait."""

    def __init__(self, tries: Callable[[], int]) -> None:
        self.tries = tries
        self._by_try: dict[int, float] = {}

    def nap(self, seconds: float) -> None:
        done = self.tries()
        self._by_try[done] = self._by_try.get(done, 0.0) + seconds

    @property
    def between_tries(self) -> list[float]:
        return list(self._by_try.values())


def counted(post: Any, calls: list[str]) -> Any:
    def counting(url: str, **kwargs: Any) -> Any:
        calls.append(url)
        return post(url, **kwargs)

    return counting


@pytest.fixture
def paths(tmp_path: Path) -> JobPaths:
    return JobPaths.for_output(tmp_path / "out" / "funds.csv", input=tmp_path / "funds.csv")


@pytest.fixture
def secrets() -> Iterator[None]:
    register_secret(API_KEY)
    yield
    forget_secrets()


def report(status: str = "interrupted", exit_code: int = 130, **changes: Any) -> dict[str, Any]:
    """A run's report, shaped as `enrichkit.run.report.build_report` writes it."""
    data: dict[str, Any] = {
        "job_id": "enrich_20261124_100000_abcdef", "status": status, "exit_code": exit_code,
        "message": "Interrupted: 57 done, 487 left. Run with --resume to continue.",
        "started_at": "2026-11-24T10:00:00Z", "finished_at": "2026-11-24T10:00:09Z", "wall_seconds": 8.5,
        "records_per_minute": 403.9,
        "counts": {"total": 544, "completed": 57, "failed": 0, "pending": 487, "skipped_duplicates": 0,
                   "input_errors": 0, "empty_rows": 0, "completed_this_run": 57, "failed_this_run": 0},
        "tokens": {"prompt": 10610, "output": 3362, "thinking": 0, "cached": 0, "total": 13972},
        "cost_usd": 0.0116, "cost": {"tokens_usd": 0.0116, "grounding_usd": 0.0, "grounded_prompts": 0,
                                     "search_queries": 0},
    }
    data.update(changes)
    return data


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_one_post_with_the_run_summary_and_a_paragraph_for_slack(paths: JobPaths) -> None:
    with Receiver(200) as hook:
        assert notify_run_end(hook.url, report(), paths) is None
    assert len(hook.posts) == 1
    post = hook.posts[0]
    assert post["path"] == WEBHOOK_PATH and post["type"] == "application/json"
    body = json.loads(post["body"])
    assert (body["job_id"], body["status"], body["exit_code"]) == ("enrich_20261124_100000_abcdef", "interrupted", 130)
    assert body["counts"]["completed"] == 57 and body["counts"]["pending"] == 487
    assert (body["cost_usd"], body["wall_seconds"], body["records_per_minute"]) == (0.0116, 8.5, 403.9)
    assert body["files"] == {"input": str(paths.input), "output": str(paths.output),
                             "checkpoint": str(paths.checkpoint), "report": str(paths.report),
                             "errors": str(paths.errors)}
    assert body["resume_command"] == f"{enrich_command()} --input {paths.input} --output {paths.output} --resume"
    text = body["text"]
    assert "\n" not in text and body["content"] == text  # one paragraph; Discord reads `content`
    assert text.startswith("enrichkit job enrich_20261124_100000_abcdef on ") and "interrupted (exit 130)" in text
    assert "57 of 544 records done, 0 failed, 487 pending; cost $0.0116" in text
    assert "403.9 records/min" in text and body["resume_command"] in text


@pytest.mark.parametrize(("status", "code", "counts", "command"), [
    ("completed", 0, {"completed": 544, "failed": 0, "pending": 0}, None),
    ("completed_with_failures", 1, {"completed": 540, "failed": 4, "pending": 0}, "--retry-failed"),
    ("budget_exhausted", 4, {"completed": 100, "failed": 0, "pending": 444}, "--resume --max-cost USD"),
    ("interrupted", 130, {"completed": 57, "failed": 1, "pending": 486}, "--resume"),
])
def test_the_command_to_continue_fits_how_the_run_ended(paths: JobPaths, status: str, code: int,
                                                        counts: dict[str, int], command: str | None) -> None:
    summary = build_summary(report(status, code, counts={"total": 544, **counts}), paths, host="box")
    if command is None:
        assert summary["resume_command"] is None and "Continue with" not in summary["text"]
    else:
        assert summary["resume_command"].endswith(f"--output {paths.output} {command}")
        assert f"Continue with: {summary['resume_command']}" in summary["text"]
    assert f"{status} (exit {code})" in summary["text"]


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_a_failing_receiver_is_tried_three_times_with_backoff(paths: JobPaths) -> None:
    with Receiver(500) as hook:
        waits = Waits(lambda: len(hook.posts))
        warning = notify_run_end(hook.url, report(), paths, sleep=waits.nap)
    assert len(hook.posts) == 3 and waits.between_tries == [1, 2]
    assert warning is not None and "failed after 3 tries: HTTP 500" in warning and "result is unchanged" in warning
    assert "s3cretWebhookToken" not in warning  # a webhook's path is its secret


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_a_receiver_that_recovers_gets_the_summary_once(paths: JobPaths) -> None:
    with Receiver(503, 200) as hook:
        waits = Waits(lambda: len(hook.posts))
        assert notify_run_end(hook.url, report(), paths, sleep=waits.nap) is None
    assert len(hook.posts) == 2 and waits.between_tries == [1]
    assert hook.posts[0]["body"] == hook.posts[1]["body"]


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_a_dead_receiver_costs_only_the_tries(paths: JobPaths) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    calls: list[str] = []
    waits = Waits(lambda: len(calls))
    warning = notify_run_end(f"http://127.0.0.1:{port}/hook", report(), paths, sleep=waits.nap,
                             post=counted(requests.post, calls))
    assert waits.between_tries == [1, 2]
    assert warning == (f"notification to http://127.0.0.1:{port} failed after 3 tries: cannot connect; the run's "
                       "result is unchanged")


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_a_wrong_url_is_not_tried_again(paths: JobPaths) -> None:
    with Receiver(404) as hook:
        waits = Waits(lambda: len(hook.posts))
        warning = notify_run_end(hook.url, report(), paths, sleep=waits.nap)
    assert len(hook.posts) == 1 and waits.between_tries == []
    assert warning is not None and "failed: HTTP 404" in warning


def test_each_try_has_a_ten_second_timeout(paths: JobPaths) -> None:
    calls: list[dict[str, Any]] = []

    class Answer:
        status_code = 204

        def close(self) -> None:
            pass

    def post(url: str, **kwargs: Any) -> Answer:
        calls.append({"url": url, **kwargs})
        return Answer()

    assert notify_run_end("https://hooks.example/x", report(), paths, post=post) is None
    assert [c["timeout"] for c in calls] == [10.0] and calls[0]["json"]["job_id"] == "enrich_20261124_100000_abcdef"


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_a_stop_never_waits_for_an_unanswered_request(paths: JobPaths) -> None:
    with Receiver("hang") as hook:  # held longer than the receiver would hold it (30 s): only the stop can end it
        warning = send_summary(hook.url, build_summary(report(), paths), should_stop=hook.got.is_set, timeout=60)
        still_held = not hook.release.is_set()
    assert warning is not None and "abandoned (stop requested)" in warning
    assert still_held and len(hook.posts) == 1  # it returned while the receiver still held the request


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_a_stop_between_tries_ends_them(paths: JobPaths) -> None:
    with Receiver(500) as hook:
        waits = Waits(lambda: len(hook.posts))
        warning = notify_run_end(hook.url, report(), paths, sleep=waits.nap, should_stop=lambda: bool(hook.posts))
    assert len(hook.posts) == 1 and waits.between_tries == [] and warning is not None and "abandoned" in warning


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_ctrl_c_during_a_notification_is_a_warning_not_an_exception(paths: JobPaths) -> None:
    def interrupted() -> bool:
        raise KeyboardInterrupt

    with Receiver("hang") as hook:
        warning = send_summary(hook.url, {"text": "x"}, should_stop=interrupted)
    assert warning is not None and "abandoned (interrupted)" in warning


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_the_api_key_never_leaves_in_a_notification(paths: JobPaths, secrets: None) -> None:
    leaky = report(message=f"stopped: 401 for key {API_KEY}")
    with Receiver(200) as hook:
        assert notify_run_end(hook.url, leaky, paths) is None
    body = hook.posts[0]["body"]
    assert API_KEY not in body and "401 for key ***" in json.loads(body)["text"]


# --- a webhook that never holds the job (issue 18: findings 9 and 10) ------------------------------------


class Dribbler:
    """A receiver that answers one byte at a time, never finishing: no per-read timeout ever trips."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.stop = threading.Event()
        self.posts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.posts += 1
            threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000:
                if self.stop.wait(0.02):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{WEBHOOK_PATH}"

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.e2e  # a receiver on a socket: not in `make unit`
def test_a_dribbling_receiver_gets_no_more_than_the_notifications_deadline(paths: JobPaths,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 9: a receiver sending a byte every few seconds kept the run (and its lock) alive past 150 s:
    the per-read timeout is no deadline. The clock here runs 1 s per look; every try and wait ends by 30 s.
    The wait for the answer looks every 5 ms (not 0.1 s): the same 30 looks, in a fraction of a second."""
    monkeypatch.setattr(notify_module, "_POLL", 0.005)
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    naps: list[float] = []
    hook = Dribbler()
    try:
        warning = notify_run_end(hook.url, report(), paths, clock=clock, sleep=naps.append)
    finally:
        hook.close()
    assert warning is not None and "in time" in warning and "unchanged" in warning
    assert now[0] <= 31.0 and hook.posts == 1  # the deadline is for all tries together


def test_each_try_and_wait_fits_in_what_is_left_of_the_thirty_seconds(paths: JobPaths) -> None:
    now = [0.0]
    timeouts: list[float] = []

    class Answer:
        status_code = 503

        def close(self) -> None:
            pass

    def post(url: str, **kwargs: Any) -> Answer:
        timeouts.append(kwargs["timeout"])
        now[0] += kwargs["timeout"]  # the receiver took its whole timeout, then answered 503
        return Answer()

    def nap(seconds: float) -> None:
        now[0] += seconds

    warning = notify_run_end("https://hooks.example/x", report(), paths, post=post, sleep=nap, clock=lambda: now[0])
    assert warning is not None and "HTTP 503" in warning
    assert timeouts == [10.0, 10.0, 10.0 - 3.0]  # 10 + 1 s wait + 10 + 2 s wait: 7 s left for the third
    assert now[0] <= 30.0


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_a_redirect_is_reported_and_not_followed(paths: JobPaths) -> None:
    """Finding 10: a 3xx sent the summary (paths, host name, the resume command) to a second host."""
    with Receiver(200) as elsewhere:
        class Redirect(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(307)
                self.send_header("location", elsewhere.url)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            waits = Waits(lambda: 0)
            warning = notify_run_end(f"http://127.0.0.1:{server.server_address[1]}/hook", report(), paths,
                                     sleep=waits.nap)
        finally:
            server.shutdown()
            server.server_close()
    assert elsewhere.posts == [] and waits.between_tries == []  # not followed, not tried again
    assert warning is not None and "HTTP 307" in warning and "not followed" in warning
    assert "to http://127.0.0.1" in warning and WEBHOOK_PATH not in warning  # where it pointed, not its path
