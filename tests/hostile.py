"""Servers that misbehave, on 127.0.0.1: an answer dripped a byte at a time, a stall after the headers, a gzip
bomb, or any answer text a model could give."""

from __future__ import annotations

import contextlib
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DRIP_SECONDS = 20.0  # how long a dripped answer would take in full


def gemini_answer(text: str) -> bytes:
    """A generateContent reply whose answer text is `text`."""
    return json.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                       "finishReason": "STOP", "index": 0}],
                       "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
                       "modelVersion": "gemini-2.5-flash"}).encode()


ANSWER = gemini_answer(json.dumps({"poc_name": "A", "poc_email": "a@b.c", "confidence": 0.5}))


def _bomb() -> bytes:
    """gzip of 64 MB of zeros: about 64 KB on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"0" * (1 << 20)
    return b"".join([*(packer.compress(zeros) for _ in range(64)), packer.flush()])


@contextlib.contextmanager
def hostile_server(mode: str, answer: bytes = ANSWER) -> Iterator[str]:
    """127.0.0.1: models.get answers at once; every other request gets `mode`: "drip" (`answer` a byte at a time
    over DRIP_SECONDS), "stall" (the headers, then nothing), "bomb" (a gzip bomb), "answer" (`answer` at once),
    "slow_models" (models.get dripped, `answer` at once). Yields its base URL."""
    stopping = threading.Event()
    bomb = _bomb() if mode == "bomb" else b""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if "/models/" in self.path and ":" not in self.path.rsplit("/", 1)[-1]:
                model = json.dumps({"name": "models/gemini-2.5-flash", "supportedActions": ["generateContent"]})
                if mode == "slow_models":
                    self._drip(model.encode())
                else:
                    self._send(model.encode())
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
            if mode in ("answer", "slow_models"):
                self._send(answer)
                return
            self._drip(answer)

        def _drip(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            with contextlib.suppress(OSError):
                if mode == "stall":
                    stopping.wait(DRIP_SECONDS)
                    return
                for i in range(len(body)):
                    if stopping.wait(DRIP_SECONDS / len(body)):
                        return
                    self.wfile.write(body[i:i + 1])
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
