"""--timeout is a deadline for a whole request (the Gemini SDK's and an http stage's): an answer dripped a byte at a
time, or one that stalls after its headers, ends at the deadline and is logged as `timeout`; an http stage's answer
may not inflate past its cap (a gzip bomb fails its record with a clear message)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from conftest import Workspace, make_rows, read_json, write_csv

DRIP_SECONDS = 20.0  # how long a dripped answer would take in full
ANSWER = json.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": json.dumps(
    {"poc_name": "A", "poc_email": "a@b.c", "confidence": 0.5})}]}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
    "modelVersion": "gemini-2.5-flash"}).encode()


def _bomb() -> bytes:
    """gzip of 64 MB of zeros: about 64 KB on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"0" * (1 << 20)
    return b"".join([*(packer.compress(zeros) for _ in range(64)), packer.flush()])


@contextlib.contextmanager
def hostile_server(mode: str) -> Iterator[str]:
    """127.0.0.1: models.get answers at once; every other request gets `mode`: "drip" (the answer a byte at a time
    over DRIP_SECONDS), "stall" (the headers, then nothing), "bomb" (a gzip bomb). Yields its base URL."""
    stopping = threading.Event()
    bomb = _bomb() if mode == "bomb" else b""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if "/models/" in self.path and ":" not in self.path.rsplit("/", 1)[-1]:
                self._send(json.dumps({"name": "models/gemini-2.5-flash",
                                       "supportedActions": ["generateContent"]}).encode())
                return
            self._hostile()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._hostile()

        def _send(self, body: bytes, **headers: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _hostile(self) -> None:
            if mode == "bomb":
                self._send(bomb, Content_Encoding="gzip")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.flush()
            with contextlib.suppress(OSError):
                if mode == "stall":
                    stopping.wait(DRIP_SECONDS)
                    return
                for i in range(len(ANSWER)):
                    if stopping.wait(DRIP_SECONDS / len(ANSWER)):
                        return
                    self.wfile.write(ANSWER[i:i + 1])
                    self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        stopping.set()  # every dripping handler ends, and the requests given up on with it
        server.shutdown()
        server.server_close()


def _errors(ws: Workspace) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ws.errors.read_text(encoding="utf-8").splitlines()]


def _run_timed(ws: Workspace, *args: str) -> tuple[Any, float]:
    write_csv(ws.input, make_rows(2))
    began = time.monotonic()
    proc = ws.run("--timeout", "1", "--max-retries", "0", *args, env=ws.env(ENRICHKIT_BACKOFF_BASE="0.01"))
    return proc, time.monotonic() - began


def test_a_gemini_answer_dripped_a_byte_at_a_time_ends_at_the_deadline(ws: Workspace) -> None:
    with hostile_server("drip") as url:
        proc, took = _run_timed(ws, "--base-url", url)
    assert proc.returncode == 1, proc.stderr
    assert took < DRIP_SECONDS / 2, took  # each record's request ended at its 1 s deadline, not after the drip
    assert {e["error_type"] for e in _errors(ws) if e["stage"] == "poc"} == {"timeout"}
    assert read_json(ws.checkpoint)["failed_count"] == 2


def test_a_gemini_answer_that_stalls_after_its_headers_is_a_timeout(ws: Workspace) -> None:
    with hostile_server("stall") as url:
        proc, took = _run_timed(ws, "--base-url", url)
    assert proc.returncode == 1, proc.stderr
    assert took < DRIP_SECONDS / 2, took
    assert {e["error_type"] for e in _errors(ws) if e["stage"] == "poc"} == {"timeout"}


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
        proc, _ = _run_timed(ws)
    assert proc.returncode == 1, proc.stderr
    errors = _errors(ws)
    assert errors and all("inflates to more than 16 MB" in e["message"] for e in errors), errors
    assert read_json(ws.checkpoint)["failed_count"] == 2
