"""Local stand-in for the Gemini REST API (generateContent, countTokens), with fault injection.

Stdlib only. Run ``python scripts/fake_gemini.py --port 0 --rpm 60 --error-rate 0.05``, or in a
test ``FakeGemini(FakeConfig(rpm=2)).start()``. Not Google's: GET /_health, GET /_stats, POST /_control.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, dict[str, Any]]
MODEL_PATH = re.compile(r"^/(v1|v1beta)/models/([^/:]+):(generateContent|countTokens)$")
SCHEMA_MARKER = "keys and types:"  # enrichkit's prompt-embedded schema (search stages) follows this
RPC = "type.googleapis.com/google.rpc."
QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
FIRST = ("Alice", "Bruno", "Chiara", "Daniel", "Elena", "Farid", "Greta", "Hiro", "Ingrid", "Jonas",
         "Keiko", "Luca", "Maya", "Nils", "Olivia", "Priya", "Rafael", "Sofia", "Tomas", "Yara")
LAST = ("Andersen", "Bauer", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito",
        "Jensen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Silva")
FIRMS = ("northbridge", "bluepeak", "harborline", "cedarfield", "ironwood", "silverlake", "oakmont",
         "redstone", "brightwater", "stonegate")
SUFFIXES = ("cap", "capital", "partners", "ventures", "equity")
JOB_TITLES = ("Managing Partner", "Partner", "Principal", "Head of Investor Relations", "CFO")
STATUSES = ("fundraising", "investing", "harvesting", "closed")


@dataclasses.dataclass
class FakeConfig:
    """Behaviour of the stand-in; every fault is off by default. Rates are fractions in [0, 1]."""

    host: str = "127.0.0.1"
    port: int = 0
    port_file: str | None = None
    latency: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    rpm: int | None = None
    window: float = 60.0  # the --rpm window in seconds; tests shrink it to make a quota storm quick
    daily_quota: int | None = None
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    malformed_rate: float = 0.0
    rate_limit_rate: float = 0.0
    outage: float = 0.0
    outage_after: int = 0
    fail_matching: list[str] = dataclasses.field(default_factory=list)
    require_key: str | None = None
    deny_key: str | None = None


FLOATS = {"latency", "jitter", "error_rate", "timeout_rate", "hang_seconds", "malformed_rate",
          "rate_limit_rate", "outage", "window"}
RUNTIME_KEYS = {f.name for f in dataclasses.fields(FakeConfig)} - {"host", "port", "port_file"}


def error_body(code: int, status: str, message: str, details: list[Any] | None = None) -> Reply:
    """A reply in Google's error format."""
    return code, {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def quota_error(quota_id: str, limit: int, model: str, delay: float) -> Reply:
    """A 429 as the Gemini API sends it: QuotaFailure, Help and RetryInfo (find them by @type)."""
    docs = "https://ai.google.dev/gemini-api/docs/rate-limits"
    message = (f"You exceeded your current quota, please check your plan and billing details. For more "
               f"information on this error, head to: {docs}.\n* Quota exceeded for metric: {QUOTA_METRIC}, "
               f"limit: {limit}, model: {model}\nPlease retry in {delay:.3f}s.")
    return error_body(429, "RESOURCE_EXHAUSTED", message, [
        {"@type": RPC + "QuotaFailure", "violations": [{
            "quotaMetric": QUOTA_METRIC, "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": model}, "quotaValue": str(limit)}]},
        {"@type": RPC + "Help", "links": [{"description": "Learn more about Gemini API quotas",
                                           "url": docs}]},
        {"@type": RPC + "RetryInfo", "retryDelay": f"{max(1, math.ceil(delay))}s"},
    ])


def digest(text: str) -> int:
    """A stable 64-bit number for a text (lone surrogates and all)."""
    return int.from_bytes(hashlib.sha256(text.encode(errors="replace")).digest()[:8], "big")


def prompt_text(request: dict[str, Any]) -> str:
    """All text parts of the request's contents, joined by newlines."""
    contents = request.get("contents") or []
    texts: list[str] = []
    for content in contents if isinstance(contents, list) else [contents]:
        parts = content.get("parts") or [] if isinstance(content, dict) else [{"text": content}]
        texts += [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(texts)


def requested_schema(request: dict[str, Any], prompt: str) -> dict[str, Any] | None:
    """The response schema from generationConfig, else the one enrichkit embeds in the prompt."""
    config = request.get("generationConfig") or request.get("generation_config") or {}
    for key in ("responseJsonSchema", "response_json_schema", "responseSchema", "response_schema"):
        if isinstance(config.get(key), dict):
            return config[key]
    at = prompt.find(SCHEMA_MARKER)
    try:
        flat = json.JSONDecoder().raw_decode(prompt[at + len(SCHEMA_MARKER):].lstrip())[0] if at >= 0 else 0
    except ValueError:
        return None
    return {"type": "object", "properties": flat} if isinstance(flat, dict) else None


def schema_type(schema: dict[str, Any]) -> str:
    """The JSON type a schema asks for, lower-case; the first non-null one of a list or anyOf."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is None:
        options = [o for o in schema.get("anyOf") or schema.get("oneOf") or [] if isinstance(o, dict)]
        kind = next((schema_type(o) for o in options if schema_type(o) != "null"), None)
        return kind or ("object" if "properties" in schema else "string")
    return str(kind).lower()


def make_value(name: str, schema: Any, prompt: str, seed: int) -> Any:
    """A value of the schema's type, plausible for a field called ``name``, fixed by (seed, prompt, name)."""
    schema = schema if isinstance(schema, dict) else {"type": schema}  # {"poc_name": "string"} style
    kind, lower = schema_type(schema), name.lower()
    h = digest(f"{seed}\x1f{prompt}\x1f{name}")
    if schema.get("enum"):
        return schema["enum"][h % len(schema["enum"])]
    if kind == "object":
        return {k: make_value(k, sub, prompt, seed) for k, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [make_value(name, schema.get("items") or {}, prompt, seed)]
    if kind in ("boolean", "integer", "number", "null"):
        if kind == "integer":
            return 1990 + h % 36 if any(w in lower for w in ("year", "vintage", "founded")) else 1 + h % 500
        if kind == "number":
            scored = any(w in lower for w in ("confidence", "score", "probability"))
            return (h % 101) / 100 if scored else round(20 + (h % 49_800) / 10, 1)
        return bool(h & 1) if kind == "boolean" else None
    # One person and one firm per prompt, so that name, email and domain agree with each other.
    p = digest(f"{seed}\x1f{prompt}")
    first, last = FIRST[p % len(FIRST)], LAST[(p >> 8) % len(LAST)]
    domain = f"{FIRMS[(p >> 16) % len(FIRMS)]}{SUFFIXES[(p >> 24) % len(SUFFIXES)]}.com"
    if "email" in lower:
        return f"{first}.{last}@{domain}".lower()
    if any(w in lower for w in ("domain", "url", "website")):
        return domain
    if "name" in lower:
        return f"{first} {last}"
    if "title" in lower or "role" in lower:
        return JOB_TITLES[h % len(JOB_TITLES)]
    if "status" in lower:
        return STATUSES[h % len(STATUSES)]
    words = re.findall(r"[A-Za-z][A-Za-z'-]{3,}", prompt.split(SCHEMA_MARKER)[0]) or ["unknown"]
    return " ".join(dict.fromkeys(words[(h >> (8 * i)) % len(words)].lower() for i in range(3)))


class FakeGemini:
    """The stand-in server: ``start()`` returns the port, ``stop()`` ends it, ``stats()`` counts."""

    def __init__(self, config: FakeConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or FakeConfig(), **overrides)
        self._lock = threading.Lock()  # guards config, counters, the rpm window and the RNG
        self._rng = random.Random(self.config.seed)
        self._stopping = threading.Event()  # wakes requests sleeping out a latency or a hang
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._window: collections.deque[float] = collections.deque()  # admitted requests, last 60 s
        self._outage_from: float | None = None
        self._outage_base = self._daily_base = 0
        self._stats: dict[str, Any] = {
            "requests": 0, "by_status": collections.Counter(), "generate": 0, "count_tokens": 0,
            "answered": 0, "grounded": 0, "keys_seen": 0, "in_flight": 0, "max_in_flight": 0,
            "faults": collections.Counter(), "by_prompt": collections.Counter(),
            "by_model": collections.Counter()}

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{self.config.host}:{self._server.server_address[1]}"

    def start(self) -> int:
        """Listen and serve in a daemon thread; returns the port."""
        self._server = _Server((self.config.host, self.config.port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving, wake hung requests and close every open keep-alive connection."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeGemini:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def stats(self) -> dict[str, Any]:
        """Counters as plain JSON; API keys are counted, never shown."""
        with self._lock:
            return json.loads(json.dumps(self._stats))

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Apply runtime changes (flag names with underscores); returns the new config, keys masked."""
        if set(changes) - RUNTIME_KEYS:
            raise ValueError(f"unknown config keys: {sorted(set(changes) - RUNTIME_KEYS)}")
        with self._lock:
            for key, value in changes.items():
                if key in FLOATS:
                    value = float(value or 0)
                elif key in ("seed", "outage_after", "rpm", "daily_quota"):
                    value = None if value is None and key in ("rpm", "daily_quota") else int(value)
                elif key == "fail_matching":
                    value = [value] if isinstance(value, str) else [str(v) for v in value or []]
                elif value is not None:
                    value = str(value)
                setattr(self.config, key, value)
            if "seed" in changes:
                self._rng.seed(self.config.seed)
            if {"outage", "outage_after"} & set(changes):  # re-armed: counts requests from now
                self._outage_from, self._outage_base = None, self._stats["generate"]
            if "daily_quota" in changes:  # a new day: the quota counts answers from now
                self._daily_base = self._stats["answered"]
            config = dataclasses.asdict(self.config)
        masked = {k: config[k] and "***" for k in ("require_key", "deny_key")}
        return {**config, **masked}

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> Reply:
        """Answer one HTTP request: (status, JSON body). Never raises."""
        url = urlsplit(raw_path)
        key = headers.get("x-goog-api-key") or (parse_qs(url.query).get("key") or [None])[0]
        with self._lock:
            self._stats["requests"] += 1
            self._stats["keys_seen"] += bool(key)
        try:
            status, payload = self._route(method, url.path, key, body)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # valid JSON, wrong shape
            status, payload = error_body(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc!r}")
        except Exception as exc:  # noqa: BLE001 - whatever else a client sends must not take the server down
            status, payload = error_body(500, "INTERNAL", f"fake_gemini could not handle this: {exc!r}")
        with self._lock:
            self._stats["by_status"][str(status)] += 1
        return status, payload

    def _route(self, method: str, path: str, key: str | None, body: bytes) -> Reply:
        if method == "GET" and path in ("/_health", "/_stats"):
            return 200, {"ok": True} if path == "/_health" else self.stats()
        match = MODEL_PATH.match(path)
        if method != "POST" or (match is None and path != "/_control"):
            return error_body(404, "NOT_FOUND", f"Method not found: {method} {path}")
        try:
            request = json.loads(body or b"{}")
        except ValueError as exc:
            return error_body(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
        if not isinstance(request, dict):
            return error_body(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        if match is None:
            try:
                return 200, self.configure(**request)
            except (TypeError, ValueError) as exc:
                return error_body(400, "INVALID_ARGUMENT", str(exc))
        if match.group(3) == "countTokens":
            with self._lock:
                self._stats["count_tokens"] += 1
            return self._check_key(key) or (200, {"totalTokens": math.ceil(len(prompt_text(request)) / 4)})
        with self._lock:
            self._stats["in_flight"] += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._stats["in_flight"])
        try:
            return self._generate(match.group(2), key, request)
        finally:
            with self._lock:
                self._stats["in_flight"] -= 1

    def _check_key(self, key: str | None) -> Reply | None:
        cfg = self.config
        if cfg.require_key and key != cfg.require_key:
            return error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
                {"@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                 "metadata": {"service": "generativelanguage.googleapis.com"}}])
        if cfg.deny_key and key == cfg.deny_key:
            return error_body(403, "PERMISSION_DENIED", "Permission denied: Consumer has been suspended.", [
                {"@type": RPC + "ErrorInfo", "reason": "CONSUMER_SUSPENDED", "domain": "googleapis.com"}])
        return None

    def _refuse(self, model: str, key: str | None, prompt: str, now: float) -> tuple[str, Reply] | None:
        """Under the lock: bad key, poisoned prompt, outage, daily quota, then the rpm window."""
        cfg = self.config
        refusal = self._check_key(key)
        if refusal:
            return "auth", refusal
        if any(text in prompt for text in cfg.fail_matching):
            invalid = error_body(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
            return "fail_matching", invalid
        if cfg.outage > 0:
            if self._outage_from is None and self._stats["generate"] - self._outage_base > cfg.outage_after:
                self._outage_from = now
            if self._outage_from is not None and now < self._outage_from + cfg.outage:
                return "outage", error_body(503, "UNAVAILABLE", "The service is currently unavailable.")
        if cfg.daily_quota is not None and self._stats["answered"] - self._daily_base >= cfg.daily_quota:
            quota_id = "GenerateRequestsPerDayPerProjectPerModel"
            return "daily_quota", quota_error(quota_id, cfg.daily_quota, model, 3600.0)
        while self._window and self._window[0] <= now - cfg.window:
            self._window.popleft()
        if cfg.rpm and len(self._window) >= cfg.rpm:
            delay = self._window[0] + cfg.window - now  # until the oldest admitted request leaves the window
            return "rpm", quota_error("GenerateRequestsPerMinutePerProjectPerModel", cfg.rpm, model, delay)
        self._window.append(now)
        return None

    def _draw_fault(self) -> str | None:
        """Under the lock: one draw shared by the random faults, so each keeps its own fraction."""
        cfg, draw, edge = self.config, self._rng.random(), 0.0
        for fault, rate in (("error", cfg.error_rate), ("rate_limit", cfg.rate_limit_rate),
                            ("timeout", cfg.timeout_rate), ("malformed", cfg.malformed_rate)):
            edge += rate
            if draw < edge:
                return fault
        return None

    def _generate(self, model: str, key: str | None, request: dict[str, Any]) -> Reply:
        prompt = prompt_text(request)
        tools = json.dumps(request.get("tools") or [])
        with self._lock:
            self._stats["generate"] += 1
            self._stats["by_prompt"][hashlib.sha1(prompt.encode(errors="replace")).hexdigest()[:12]] += 1
            self._stats["by_model"][model] += 1
            refused = self._refuse(model, key, prompt, time.monotonic())
            fault = refused[0] if refused else self._draw_fault()
            self._stats["faults"].update([fault] if fault else [])
            if fault in (None, "timeout", "malformed"):
                self._stats["answered"] += 1  # counted now, so the daily quota holds under concurrency
            cfg = self.config
            jitter = self._rng.uniform(-cfg.jitter, cfg.jitter) if cfg.jitter else 0.0
            wait = cfg.hang_seconds if fault == "timeout" else max(0.0, cfg.latency + jitter)
            server_error, seed, answer_no = self._rng.choice((500, 503)), cfg.seed, self._stats["answered"]
            grounded = "google_search" in tools or "googleSearch" in tools
            self._stats["grounded"] += grounded and not refused
        if refused:
            return refused[1]
        if fault == "error" and server_error == 500:
            return error_body(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                              "https://developers.generativeai.google/guide/troubleshooting")
        if fault == "error":
            return error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if fault == "rate_limit":
            return error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                              [{"@type": RPC + "RetryInfo", "retryDelay": "1s"}])
        if wait > 0 and self._stopping.wait(wait):
            return error_body(503, "UNAVAILABLE", "The service is shutting down.")
        schema = requested_schema(request, prompt) or {"type": "object", "properties": {"answer": "string"}}
        text = json.dumps(make_value("answer", schema, prompt, seed), ensure_ascii=False)
        if fault == "malformed":
            text = text[: max(1, len(text) // 2)]  # any strict prefix of a JSON object fails to parse
        p_tokens, c_tokens = math.ceil(len(prompt) / 4), math.ceil(len(text) / 4)
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]},
                                     "finishReason": "STOP", "index": 0}
        if grounded:
            candidate["groundingMetadata"] = {"webSearchQueries": [prompt.strip().split("\n")[0][:80]]}
        return 200, {"candidates": [candidate], "modelVersion": model,
                     "usageMetadata": {"promptTokenCount": p_tokens, "candidatesTokenCount": c_tokens,
                                       "totalTokenCount": p_tokens + c_tokens},
                     "responseId": f"{digest(f'{seed}:{answer_no}:{prompt}'):016x}"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeGemini) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is not worth a traceback
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries its Content-Length
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle meets delayed ACK: +40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake.track(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: callers read stdout
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method), in Google's format."""
        self.close_connection = True
        status = {404: "NOT_FOUND", 501: "UNIMPLEMENTED"}.get(code, "INVALID_ARGUMENT")
        self._send(*error_body(code, status, message or explain or "Bad request."))

    def _answer(self, method: str) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # cannot tell where this body ends: answer, then hang up
            self._send(*error_body(400, "INVALID_ARGUMENT", "A Content-Length body is required."))
        else:
            body = self.rfile.read(int(length))
            self._send(*self.server.fake.handle(method, self.path, self.headers, body))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (its timeout fired): nobody left to answer
            self.close_connection = True


def parse_args(argv: list[str] | None) -> FakeConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0, help="0 picks a free port")
    add("--port-file", help="also write the port number here (atomically)")
    add("--latency", type=float, default=0.0, help="seconds added to each generateContent")
    add("--jitter", type=float, default=0.0, help="uniform +/- seconds added to the latency")
    add("--seed", type=int, default=0, help="seed for answers and random faults")
    add("--rpm", type=int, help="requests per sliding minute; beyond: 429 with RetryInfo")
    add("--window", type=float, default=60.0, help="length of the --rpm window in seconds (default 60)")
    add("--daily-quota", type=int, help="after N answers, every request gets a per-day 429")
    add("--error-rate", type=float, default=0.0, help="fraction answered 500 INTERNAL / 503 UNAVAILABLE")
    add("--timeout-rate", type=float, default=0.0, help="fraction that hang for --hang-seconds")
    add("--hang-seconds", type=float, default=30.0)
    add("--malformed-rate", type=float, default=0.0, help="fraction answered with truncated JSON")
    add("--rate-limit-rate", type=float, default=0.0, help="fraction answered 429, retryDelay 1s")
    add("--outage", type=float, default=0.0, help="seconds of 503 UNAVAILABLE for every request ...")
    add("--outage-after", type=int, default=0, help="... once this many generateContent were received")
    add("--fail-matching", action="append", default=[], help="a prompt with TEXT gets 400 (repeatable)")
    add("--require-key", help="any other API key gets 400 API_KEY_INVALID")
    add("--deny-key", help="this API key gets 403 PERMISSION_DENIED")
    return FakeConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    fake = FakeGemini(parse_args(argv))
    port = fake.start()
    print(f"fake_gemini listening on http://{fake.config.host}:{port}", flush=True)
    if fake.config.port_file:
        target = Path(fake.config.port_file)
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_text(f"{port}\n")
        temp.replace(target)  # readers never see a half-written port
    done = threading.Event()
    # Both set explicitly: a shell starts background jobs with SIGINT ignored, and `kill` sends TERM.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
