"""--notify-url through the CLI: one POST per run whatever the exit, with the right body; a dead receiver costs
at most its tries and changes nothing else."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import API_KEY, Workspace, make_rows, rows_written, wait_for, write_csv


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body it gets (and answers `status`)."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _fast(ws: Workspace) -> dict[str, str]:
    return ws.env(ENRICHKIT_BACKOFF_BASE="0.01")


def test_a_finished_run_posts_one_summary(fws: Workspace, receiver: Receiver) -> None:
    proc = fws.run("--notify-url", receiver.url)
    assert proc.returncode == 0, proc.stderr
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["exit_code"] == 0 and body["status"] == "completed"
    assert "40" in body["text"] and API_KEY not in json.dumps(body)
    assert body["job_id"].startswith("enrich_")


def test_failures_and_a_budget_are_posted_with_their_exit_codes(ws: Workspace, receiver: Receiver) -> None:
    ws.fake.configure(fail_matching=["Fund 00003 "])
    assert ws.run("--notify-url", receiver.url, env=_fast(ws)).returncode == 1
    assert receiver.bodies[-1]["exit_code"] == 1 and receiver.bodies[-1]["status"] == "completed_with_failures"
    write_csv(ws.input, make_rows(80))
    budget = ws.run("--resume", "--max-cost", "0.01", "--notify-url", receiver.url, env=_fast(ws))
    assert budget.returncode == 4, budget.stderr
    assert receiver.bodies[-1]["exit_code"] == 4 and receiver.bodies[-1]["status"] == "budget_exhausted"
    assert len(receiver.bodies) == 2


def test_the_stages_file_can_name_the_url(fws: Workspace, receiver: Receiver) -> None:
    fws.stages.write_text(fws.stages.read_text().replace("[defaults]", f'[defaults]\nnotify_url = "{receiver.url}"'),
                          encoding="utf-8")
    assert fws.run().returncode == 0
    assert len(receiver.bodies) == 1


def test_an_interrupted_run_posts_too(ws: Workspace, receiver: Receiver) -> None:
    write_csv(ws.input, make_rows(200))
    ws.fake.configure(latency=0.05)
    proc = ws.start("--max-workers", "2", "--notify-url", receiver.url)
    wait_for(lambda: rows_written(ws) >= 3, what="rows")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert [b["exit_code"] for b in receiver.bodies] == [130]
    assert "--resume" in receiver.bodies[0]["text"]


@pytest.mark.e2e  # a receiver on 127.0.0.1: not in `make unit`
def test_a_dead_receiver_changes_nothing_but_a_warning(fws: Workspace) -> None:
    """On the fake provider and the fake clock: the waits between the tries (1 s, 2 s) pass on that clock."""
    dead = Receiver(status=500)
    try:
        proc = fws.run("--notify-url", dead.url)
    finally:
        dead.close()
    assert proc.returncode == 0, proc.stderr
    assert len(dead.bodies) == 3  # the tries, no more
    assert "notification to" in proc.stderr and "the run's result is unchanged" in proc.stderr
    assert len(fws.output_ids()) == 40


def test_the_webhook_is_sent_after_the_lock_is_released_so_a_cron_tick_runs(ws: Workspace) -> None:
    """Issue 18, finding 9: a slow receiver held the run with its lock, so the next `--resume` (a cron tick)
    exited 3. The receiver here starts that next run while it holds the POST: it must not be locked out."""
    ticks: list[int] = []

    class Hook(Receiver):
        def __init__(self) -> None:
            super().__init__()
            handler = self.server.RequestHandlerClass
            receiver = self

            class Slow(handler):  # type: ignore[valid-type,misc]
                def do_POST(self) -> None:
                    if not ticks:  # the first run's notification: a cron tick comes while it is being sent
                        ticks.append(ws.run_process("--resume", "--quiet").returncode)
                    super().do_POST()

            receiver.server.RequestHandlerClass = Slow

    hook = Hook()
    try:
        first = ws.run("--notify-url", hook.url)
    finally:
        hook.close()
    assert first.returncode == 0, first.stderr
    assert ticks == [0]  # not 3: the lock was free while the webhook was sent
    assert hook.bodies[0]["status"] == "completed"
