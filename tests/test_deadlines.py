"""--timeout is a deadline for a whole request (the Gemini SDK's and an http stage's): an answer dripped a byte at a
time, or one that stalls after its headers, ends at the deadline and is logged as `timeout`; an http stage's answer
may not inflate past its cap (a gzip bomb fails its record with a clear message)."""

from __future__ import annotations

import json
import time
from typing import Any

from conftest import Workspace, make_rows, read_json, write_csv
from hostile import DRIP_SECONDS, hostile_server


def _errors(ws: Workspace) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ws.errors.read_text(encoding="utf-8").splitlines()]


def _run_timed(ws: Workspace, *args: str, timeout: str = "0.25") -> tuple[Any, float]:
    # The deadline: well above a dripped byte's 65 ms (a timeout per read would never fire), far below the drip.
    write_csv(ws.input, make_rows(2))
    began = time.monotonic()
    proc = ws.run("--timeout", timeout, "--max-retries", "0", *args, env=ws.env(ENRICHKIT_BACKOFF_BASE="0.01"))
    return proc, time.monotonic() - began


def test_a_gemini_answer_dripped_a_byte_at_a_time_ends_at_the_deadline(ws: Workspace) -> None:
    with hostile_server("drip") as url:
        proc, took = _run_timed(ws, "--base-url", url)
    assert proc.returncode == 1, proc.stderr
    assert took < DRIP_SECONDS / 2, took  # each record's request ended at its deadline, not after the drip
    assert {e["error_type"] for e in _errors(ws) if e["stage"] == "poc"} == {"timeout"}
    assert read_json(ws.checkpoint)["failed_count"] == 2


def test_a_gemini_answer_that_stalls_after_its_headers_is_a_timeout(ws: Workspace) -> None:
    with hostile_server("stall") as url:
        proc, took = _run_timed(ws, "--base-url", url)
    assert proc.returncode == 1, proc.stderr
    assert took < DRIP_SECONDS / 2, took
    assert {e["error_type"] for e in _errors(ws) if e["stage"] == "poc"} == {"timeout"}


def test_a_model_check_dripped_a_byte_at_a_time_ends_at_the_deadline_and_the_run_goes_on(ws: Workspace) -> None:
    with hostile_server("slow_models") as url:
        proc, took = _run_timed(ws, "--base-url", url, "--stages", "poc", timeout="0.5")  # the answers must come in it
    assert proc.returncode == 0, proc.stderr
    assert took < DRIP_SECONDS / 2, took
    assert "could not check model gemini-2.5-flash" in proc.stderr


def _http_stage(ws: Workspace, url: str) -> None:
    ws.stages.write_text(f'''
[[stages]]
name = "crm"
type = "http"
url = "{url}/lookup?fund={{fund.title}}"
[stages.fields]
value = "v"
''', encoding="utf-8")


def test_an_http_stage_answer_dripped_or_stalled_ends_at_the_deadline_as_a_timeout(ws: Workspace) -> None:
    for mode in ("drip", "stall"):
        with hostile_server(mode) as url:
            _http_stage(ws, url)
            proc, took = _run_timed(ws, "--fresh", "--yes")
        assert proc.returncode == 1, proc.stderr
        assert took < DRIP_SECONDS / 2, (mode, took)
        assert {e["error_type"] for e in _errors(ws)} == {"timeout"}, (mode, _errors(ws))


def test_an_http_stage_gzip_bomb_fails_its_record_with_a_clear_message(ws: Workspace) -> None:
    with hostile_server("bomb") as url:
        _http_stage(ws, url)
        proc, _ = _run_timed(ws, timeout="5")  # time to inflate it to the cap, even on a loaded machine
    assert proc.returncode == 1, proc.stderr
    errors = _errors(ws)
    assert errors and all("inflates to more than 16 MB" in e["message"] for e in errors), errors
    assert read_json(ws.checkpoint)["failed_count"] == 2


def test_a_timeout_too_large_for_the_platform_is_one_line_not_every_record_failed(ws: Workspace) -> None:
    # "No timeout, please": 1e10 s passes time_t in threading's and the socket's waits (OverflowError).
    write_csv(ws.input, make_rows(2))
    proc = ws.run("--timeout", "10000000000")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "--timeout" in proc.stderr.strip().splitlines()[-1]
    ws.stages.write_text(ws.stages.read_text().replace("[defaults]", "[defaults]\ntimeout = 1e10"), encoding="utf-8")
    proc = ws.run()
    assert proc.returncode == 2 and "timeout" in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert not ws.output.exists()
