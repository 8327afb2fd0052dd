"""The run options that shape a job: --max-cost, --no-cache, --model, --delay, --stages, http stages."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import Workspace, exactly_once, make_rows, read_csv, read_json, write_csv
from fakes import FakeClock, FakeProvider, run_library


@pytest.fixture
def ws(fws: Workspace) -> Workspace:
    """This file's runs answer from the fake provider on a fake clock (no stand-in; `sws` where the stand-in's
    own counts are the point)."""
    return fws


def test_max_cost_stops_before_the_budget_then_resume_with_more(ws: Workspace) -> None:
    ws.stages.write_text(ws.stages.read_text().replace("[defaults]", "[defaults]\nmax_output_tokens = 400"),
                         encoding="utf-8")  # a call's worst case ~$0.0011 (400 output tokens at $2.50/M, the input)
    proc = ws.run("--max-cost", "0.002", "--max-workers", "2")
    assert proc.returncode == 4, proc.stderr
    assert "Budget reached" in proc.stderr and "--resume" in proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "budget_exhausted"
    assert 0 < cp["completed_count"] < 40
    assert cp["cost_usd"] <= 0.002
    more = ws.run("--resume", "--max-cost", "1")
    assert more.returncode == 0, more.stderr
    exactly_once(ws, filled=None)


def test_no_cache_writes_no_cache_and_pays_again(sws: Workspace) -> None:
    sws.stages.write_text(sws.stages.read_text() + '''
[[stages]]
name = "fund"
prompt = "How large is {fund.title}?"
[stages.fields]
fund_size = "number"
''', encoding="utf-8")
    sws.fake.configure(fail_matching=["How large is Fund 00002?"])
    assert sws.run("--no-cache", env=sws.env(ENRICHKIT_BACKOFF_BASE="0.01")).returncode == 1
    assert not list(sws.output.parent.glob("*.cache.sqlite*"))
    sws.fake.configure(fail_matching=[])
    assert sws.run("--retry-failed", "--no-cache").returncode == 0
    assert sws.fake.stats()["generate"] == 80 + 2  # stage 1 was asked again: no cache to answer it
    exactly_once(sws, filled=None)


def test_model_flag_overrides_the_stages_file(sws: Workspace) -> None:
    assert sws.run("--model", "gemini-2.5-pro", "--limit", "3").returncode == 1
    assert sws.fake.stats()["by_model"] == {"gemini-2.5-pro": 3}


def test_stages_selects_the_stages_to_run(ws: Workspace) -> None:
    proc = ws.run("--stages", "poc", "--limit", "5")
    assert proc.returncode == 1, proc.stderr
    rows = read_csv(ws.output)
    assert "email_domain" not in rows[0] and rows[0]["poc_name"]


def test_delay_pauses_between_a_records_stages_and_only_there(tmp_path: Path) -> None:
    input_path = write_csv(tmp_path / "in.csv", make_rows(5))
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stages]]\nname = "a"\nprompt = "{fund.title}"\n[stages.fields]\nx = "string"\n'
                      '[[stages]]\nname = "b"\nprompt = "{x}"\n[stages.fields]\ny = "string"\n', encoding="utf-8")
    clock = FakeClock()
    run = run_library(input_path, tmp_path / "out.csv", stages, {"llm": FakeProvider()}, clock=clock,
                      sleep=clock.sleep, delay=0.5, max_workers=1)
    assert run.result.verdict.exit_code == 0
    assert sum(clock.sleeps) == pytest.approx(5 * 0.5)  # one pause per record, between its two stages


def test_http_stage_takes_fields_from_the_json_answer(sws: Workspace) -> None:
    sws.stages.write_text(f'''
[[stages]]
name = "health"
type = "http"
url = "{sws.fake.url}/_health?fund={{fund.title}}"
method = "GET"
[stages.fields]
healthy = "ok"
missing = "no.such.path"
''', encoding="utf-8")
    proc = sws.run("--limit", "4")
    assert proc.returncode == 1, proc.stderr
    rows = read_csv(sws.output)
    assert [(r["healthy"], r["missing"]) for r in rows] == [("true", "")] * 4
    assert read_json(sws.checkpoint)["requests"] == 4


def test_http_stage_posts_a_json_body_per_record_and_caches_by_body(ws: Workspace) -> None:
    def echo(path: str, body: dict[str, Any] | None, headers: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"data": {"echo": (body or {}).get("fund"), "auth": headers.get("X-Token")}}

    with json_server(echo) as port:
        ws.stages.write_text(f'''
[[stages]]
name = "echo"
type = "http"
url = "http://127.0.0.1:{port}/lookup"
method = "POST"
headers = {{ X-Token = "t-{{poc.last_name}}" }}
json = {{ fund = "{{fund.title}}" }}
[stages.fields]
echoed = "data.echo"
token = "data.auth"
''', encoding="utf-8")
        proc = ws.run("--limit", "5")
    assert proc.returncode == 1, proc.stderr
    rows = read_csv(ws.output)
    assert all(r["echoed"] == r["fund.title"] and r["token"] == f"t-{r['poc.last_name']}" for r in rows)
    assert len({r["echoed"] for r in rows}) == 5  # one answer per body, not one cached for the URL


def test_an_http_stages_401_fails_that_stage_and_never_blames_the_gemini_key(ws: Workspace) -> None:
    def locked(path: str, body: dict[str, Any] | None, headers: Any) -> tuple[int, dict[str, Any]]:
        return (401, {"error": "unauthorized"}) if "00002" in path or "00005" in path else (200, {"v": "fine"})

    with json_server(locked) as port:
        ws.stages.write_text(f'''
[[stages]]
name = "crm"
type = "http"
url = "http://127.0.0.1:{port}/lookup?fund={{fund.title}}"
[stages.fields]
value = "v"
''', encoding="utf-8")
        proc = ws.run("--limit", "8")
    assert proc.returncode == 1, proc.stderr
    assert "GEMINI_API_KEY" not in proc.stderr
    cp = read_json(ws.checkpoint)
    assert cp["failed_count"] == 2 and cp["completed_count"] == 6
    errors = [json.loads(line) for line in ws.errors.read_text().splitlines()]
    assert {(e["stage"], e["error_type"]) for e in errors} == {("crm", "client_error")}


def test_an_address_where_nothing_listens_stops_within_seconds(sws: Workspace) -> None:
    import socket
    import time

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    begun = time.monotonic()
    proc = sws.run("--base-url", f"http://127.0.0.1:{port}", "--max-workers", "4",
                  env=sws.env(ENRICHKIT_BACKOFF_BASE="0.01"))
    assert time.monotonic() - begun < 15  # not --max-outage (600 s)
    assert proc.returncode in (1, 2), proc.stderr
    assert "--base-url" in proc.stderr
    assert read_json(sws.checkpoint)["failed_count"] == 0 if sws.checkpoint.exists() else True


def test_a_budget_that_covers_the_job_ends_done_not_budget_reached(tmp_path: Path) -> None:
    input_path = write_csv(tmp_path / "in.csv", make_rows(5))
    stages = tmp_path / "stages.toml"
    stages.write_text('[[stages]]\nname = "a"\nprompt = "{fund.title}"\n[stages.fields]\nx = "string"\n',
                      encoding="utf-8")
    run = run_library(input_path, tmp_path / "out.csv", stages, {"llm": FakeProvider()}, max_cost=0.0055,
                      max_workers=1)  # each record costs 0.001: the job's 0.005 is within the budget
    assert (run.result.verdict.exit_code, run.result.verdict.status) == (0, "completed"), run.result.verdict.message


@contextlib.contextmanager
def json_server(answer: Callable[[str, dict[str, Any] | None, Any], tuple[int, dict[str, Any]]]) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 answering JSON: `answer(path, body, headers) -> (status, json)`; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, data = answer(self.path, body, self.headers)
            reply = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = _reply

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
