"""The stand-in server: FakeGemini (routes, quotas, faults, counters, /_stats and /_control) over http.server."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import email.utils
import hashlib
import json
import math
import random
import re
import socket
import sys
import threading
import weakref
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeGuard
from urllib.parse import parse_qs, urlsplit

from .answers import answer
from .batches import DROP, BatchService
from .catalogue import CATALOGUE, RETIRED, ModelInfo, model_info, model_page, not_found, request_error, resource
from .clock import ScaledClock
from .config import RUNTIME_KEYS, FakeConfig, coerce
from .faults import ANSWER_FAULTS, ERROR_FAULTS, draw_fault, error_fault, key_refusal, quota_error
from .grounding import redirect_reply, token_of
from .quota import QuotaWindow, retry_delay
from .wire import RPC, Raw, Reply, error_body, pick, prompt_text, texts_of

NEW_USERS_CLOSED = ("gemini-2.5-flash", "gemini-2.5-pro")  # listed by models.get, refused to new projects
MODEL_PATH = re.compile(r"^/(v1|v1beta)/models/([^/:]+):(generateContent|countTokens)$")
MODELS_PATH = re.compile(r"^/(v1|v1beta)/models(?:/([^/:]+))?$")
REDIRECT_PATH = re.compile(r"^/grounding-api-redirect/([A-Za-z0-9_-]+)$")
UPLOAD_PATH = re.compile(r"^/upload/(v1|v1beta)/files$")
FILE_PATH = re.compile(r"^/(?:v1|v1beta)/(files/[^/:]+)(:download)?$")
BATCH_CREATE_PATH = re.compile(r"^/(?:v1|v1beta)/models/([^/:]+):batchGenerateContent$")
BATCH_PATH = re.compile(r"^/(?:v1|v1beta)/(batches/[^/:]+)(:cancel)?$")
BATCHES_PATH = re.compile(r"^/(?:v1|v1beta)/batches$")


class FakeGemini:
    """The stand-in server: ``start()`` returns the port, ``stop()`` ends it, ``stats()`` counts.

    `clock` (`ScaledClock`, by default the real one) is the time its quota windows, outages and latencies
    count in; give the same one to a CLI run in this process to run both faster than real time."""

    def __init__(self, config: FakeConfig | None = None, *, clock: ScaledClock | None = None,
                 **overrides: Any) -> None:
        self.config = dataclasses.replace(config or FakeConfig(), **overrides)
        self.clock = clock or ScaledClock()
        self._lock = threading.Lock()  # guards config, counters, the quota windows and the RNG
        self._rng = random.Random(self.config.seed)
        self._stopping = threading.Event()  # wakes requests sleeping out a latency or a hang
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._requests, self._tokens = QuotaWindow(), QuotaWindow()
        self.origin = self.clock()  # fixed windows are aligned to multiples of `window` from here
        self._outage_from: float | None = None
        self._outage_base = self._daily_base = 0
        self._stats: dict[str, Any] = {
            "requests": 0, "by_status": collections.Counter(), "generate": 0, "count_tokens": 0,
            "answered": 0, "grounded": 0, "keys_seen": 0, "in_flight": 0, "max_in_flight": 0,
            "faults": collections.Counter(), "by_prompt": collections.Counter(),
            "by_model": collections.Counter(), "served_by": collections.Counter(), "search_queries": 0,
            "redirects": 0, "model_lookups": 0, "flex": 0,
            "tokens": {"prompt": 0, "candidates": 0, "thoughts": 0, "tool_use": 0, "cached": 0}}
        self.batches = BatchService(self.config, lambda: self.url, self.redirect_url)

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{self.config.host}:{self._server.server_address[1]}"

    def start(self) -> int:
        """Listen and serve in a daemon thread; returns the port."""
        self._server = _Server((self.config.host, self.config.port), self)
        self.origin = self.clock()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.005,), daemon=True)
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
            counters: dict[str, Any] = json.loads(json.dumps(self._stats))
        counters["batch"] = self.batches.snapshot()
        return counters

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Apply runtime changes (flag names with underscores); returns the new config, keys masked."""
        if set(changes) - RUNTIME_KEYS:
            raise ValueError(f"unknown config keys: {sorted(set(changes) - RUNTIME_KEYS)}")
        values = {key: coerce(key, value) for key, value in changes.items()}  # all checked before any is set
        with self._lock:
            for key, value in values.items():
                setattr(self.config, key, value)
            if "seed" in changes:
                self._rng.seed(self.config.seed)
            if {"outage", "outage_after"} & set(changes):  # re-armed: counts requests from now
                self._outage_from, self._outage_base = None, self._stats["generate"]
            if "daily_quota" in changes:  # a new day: the quota counts answers from now
                self._daily_base = self._stats["answered"]
            if {"window", "window_mode"} & set(changes):
                self._requests, self._tokens, self.origin = QuotaWindow(), QuotaWindow(), self.clock()
            config = dataclasses.asdict(self.config)
        masked = {k: config[k] and "***" for k in ("require_key", "deny_key")}
        return {**config, **masked}

    def redirect_url(self, target: str) -> str:
        return f"{self.url}/grounding-api-redirect/{token_of(target)}"

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> Reply:
        """Answer one HTTP request: (status, JSON body or Raw). Never raises."""
        url = urlsplit(raw_path)
        query = parse_qs(url.query)
        key = headers.get("x-goog-api-key") or (query.get("key") or [""])[0] or None
        with self._lock:
            self._stats["requests"] += 1
            self._stats["keys_seen"] += bool(key)
        try:
            status, payload = self._route(method, url.path, query, key, body, headers)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # valid JSON, wrong shape
            status, payload = error_body(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc!r}")
        except Exception as exc:  # noqa: BLE001 - whatever else a client sends must not take the server down
            status, payload = error_body(500, "INTERNAL", f"fake_gemini could not handle this: {exc!r}")
        with self._lock:
            self._stats["by_status"][str(status)] += 1
        return status, payload

    def _route(self, method: str, path: str, query: dict[str, list[str]], key: str | None, body: bytes,
               headers: Any) -> Reply:
        if method == "GET" and path in ("/_health", "/_stats"):
            return 200, {"ok": True} if path == "/_health" else self.stats()
        if method in ("GET", "HEAD") and (redirect := REDIRECT_PATH.match(path)):
            with self._lock:
                self._stats["redirects"] += 1
            return redirect_reply(redirect.group(1))
        if method == "GET" and (listing := MODELS_PATH.match(path)):
            return self._models(listing.group(1), listing.group(2), query, key)
        batch_reply = self._batch_route(method, path, query, key, body, headers)
        if batch_reply is not None:
            return batch_reply
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
        version, model = match.group(1), match.group(2)
        if match.group(3) == "countTokens":
            with self._lock:
                self._stats["count_tokens"] += 1
                refused = self._check_key(key) or self._check_model(model, version, "countTokens", self._info(model))
            tokens = math.ceil(len(prompt_text(request)) / 4)
            return refused or (200, {"totalTokens": tokens,
                                     "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]})
        with self._lock:
            self._stats["in_flight"] += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._stats["in_flight"])
        try:
            return self._generate(version, model, key, request, headers)
        finally:
            with self._lock:
                self._stats["in_flight"] -= 1

    def _batch_route(self, method: str, path: str, query: dict[str, list[str]], key: str | None, body: bytes,
                     headers: Any) -> Reply | None:
        """The Files and Batch APIs (`batches.BatchService`); None for any other path."""
        service = self.batches
        matched: Callable[[], Reply] | None = None
        if method == "POST" and UPLOAD_PATH.match(path):
            matched = lambda: service.upload(query, headers, body)  # noqa: E731
        elif method in ("GET", "DELETE") and (file := FILE_PATH.match(path)):
            matched = lambda: service.file(method, file.group(1), bool(file.group(2)))  # noqa: E731
        elif method == "POST" and (create := BATCH_CREATE_PATH.match(path)):
            matched = lambda: service.create(create.group(1), body)  # noqa: E731
        elif method == "GET" and BATCHES_PATH.match(path):
            matched = lambda: service.list(query)  # noqa: E731
        elif (job := BATCH_PATH.match(path)) and (method, bool(job.group(2))) in (
                ("GET", False), ("DELETE", False), ("POST", True)):
            name = job.group(1)
            matched = {"GET": lambda: service.get(name), "DELETE": lambda: service.delete(name),
                       "POST": lambda: service.cancel(name)}[method]
        if matched is None:
            return None
        with self._lock:
            refused = self._check_key(key)
        return refused or matched()

    def _info(self, model: str) -> ModelInfo | None:
        return model_info(model, self.config.extra_models)

    def _check_key(self, key: str | None) -> Reply | None:
        return key_refusal(key, self.config.require_key, self.config.deny_key)

    def _check_model(self, model: str, version: str, method: str, info: ModelInfo | None) -> Reply | None:
        return None if _serves(info, method) else not_found(model, version, method)

    def _models(self, version: str, model: str | None, query: dict[str, list[str]], key: str | None) -> Reply:
        """models.get and models.list."""
        with self._lock:
            self._stats["model_lookups"] += 1
            refused = self._check_key(key)
            names = [*CATALOGUE, *(m for m in self.config.extra_models if m not in CATALOGUE)]
            infos = [info for info in map(self._info, names) if info is not None]
        if refused:
            return refused
        if model is not None:
            info = self._info(model)
            return (200, resource(info)) if info else not_found(model, version, "get")
        return 200, model_page(infos, query)

    def _refuse(self, version: str, model: str, info: ModelInfo | None, key: str | None, request: dict[str, Any],
                prompt: str, tokens: int, grounded: bool, now: float) -> tuple[str, Reply] | None:
        """Under the lock: key, model, configuration, poisoned prompt, outage, daily quota, then the windows."""
        cfg = self.config
        refusal = self._check_key(key)
        if refusal:
            return "auth", refusal
        if not _serves(info, "generateContent"):
            kind = "retired_model" if model in RETIRED else "unknown_model"
            return kind, not_found(model, version, "generateContent")
        if cfg.new_project and model in NEW_USERS_CLOSED:
            return "new_user_404", error_body(404, "NOT_FOUND", f"This model models/{model} is no longer available "
                                              "to new users. Please update your code to use a newer model for the "
                                              "latest features and improvements.")
        config_error = request_error(info, request, grounded)
        if config_error:
            return config_error
        if any(text in prompt for text in cfg.fail_matching):
            return "fail_matching", error_body(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        if cfg.outage > 0:
            if self._outage_from is None and self._stats["generate"] - self._outage_base > cfg.outage_after:
                self._outage_from = now
            if self._outage_from is not None and now < self._outage_from + cfg.outage:
                return "outage", error_body(503, "UNAVAILABLE", "The service is currently unavailable.")
        if cfg.daily_quota is not None and self._stats["answered"] - self._daily_base >= cfg.daily_quota:
            return "daily_quota", quota_error(model, [("day", cfg.daily_quota)], 3600.0, "3600s", cfg.free_tier)
        quotas = [(kind, window, amount, limit) for kind, window, amount, limit in
                  (("rpm", self._requests, 1, cfg.rpm), ("tpm", self._tokens, tokens, cfg.tpm)) if limit]
        for kind, window, amount, limit in quotas:
            wait = window.wait(now, amount, limit, cfg.window, cfg.window_mode, self.origin)
            if wait is not None:
                wait, delay = retry_delay(cfg.rpm_delay, wait, cfg.window, self._rng)
                violation = ("minute" if kind == "rpm" else "tokens", limit)
                return kind, quota_error(model, [violation], wait, delay, cfg.free_tier, cfg.quota_429)
        for _, window, amount, _ in quotas:  # admitted by every quota: only now does it count
            window.record(now, amount, cfg.window_mode)
        return None

    def _generate(self, version: str, model: str, key: str | None, request: dict[str, Any], headers: Any) -> Reply:
        prompt = prompt_text(request)
        system = "\n".join(texts_of(pick(request, "systemInstruction", "system_instruction") or []))
        tools = json.dumps(request.get("tools") or [])
        grounded = "google_search" in tools or "googleSearch" in tools
        p_tokens = math.ceil(len(prompt + system) / 4)
        flex = str(pick(request, "serviceTier", "service_tier") or "").lower() == "flex"
        server_timeout = _seconds(headers.get("X-Server-Timeout"))
        with self._lock:
            self._stats["generate"] += 1
            self._stats["by_prompt"][hashlib.sha1(prompt.encode(errors="replace")).hexdigest()[:12]] += 1
            self._stats["by_model"][model] += 1
            info = self._info(model)
            refused = self._refuse(version, model, info, key, request, prompt, p_tokens, grounded, self.clock())
            fault = refused[0] if refused else draw_fault(self.config, prompt, self._rng, model)
            cfg = self.config
            jitter = self._rng.uniform(-cfg.jitter, cfg.jitter) if cfg.jitter else 0.0
            # Real seconds: a hang (for the client's timeout), the latency on the stand-in's clock, a flex queue's.
            latency = self.clock.real(max(0.0, cfg.latency + jitter))
            wait = cfg.hang_seconds if fault == "timeout" else latency + flex * cfg.flex_latency
            if (not refused and cfg.honor_server_timeout and server_timeout is not None and wait > server_timeout
                    and fault not in (*ERROR_FAULTS, "error", "rate_limit", "timeout")):  # a hang stays a hang
                fault, wait = "deadline_504", server_timeout  # the server gives up at the caller's deadline
            if flex and fault != "timeout":  # a flex queue runs on its own (scaled) clock
                wait *= cfg.flex_scale
            self._stats["faults"].update([fault] if fault else [])
            if fault is None or fault in ("timeout", "malformed", *ANSWER_FAULTS):
                self._stats["answered"] += 1  # counted now, so the daily quota holds under concurrency
            draw, server_error, answer_no = self._rng.random(), self._rng.choice((500, 503)), self._stats["answered"]
            self._stats["grounded"] += grounded and not refused
            self._stats["flex"] += flex and not refused
        if refused:
            return refused[1]
        assert info is not None  # `_refuse` refuses a model with no info
        if fault == "error":
            return error_fault("internal_500" if server_error == 500 else "overloaded_503", model, 60, 0, False)
        if fault == "rate_limit":
            return error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                              [{"@type": RPC + "RetryInfo", "retryDelay": "1s"}])
        if fault in ERROR_FAULTS and fault != "deadline_504":
            return error_fault(fault, model, cfg.window, draw, cfg.free_tier, key)
        if wait > 0 and self._stopping.wait(wait):
            return error_body(503, "UNAVAILABLE", "The service is shutting down.")
        if fault == "deadline_504":
            return error_fault(fault, model, cfg.window, draw, cfg.free_tier)
        reply, served, tokens, queries = answer(cfg, info, model, request, prompt, p_tokens, fault, grounded,
                                                answer_no, self.redirect_url)
        with self._lock:
            counts = self._stats["tokens"]
            for name, count in tokens.items():
                counts[name] += count
            self._stats["served_by"][served] += 1
            self._stats["search_queries"] += queries
        return 200, reply


def _serves(info: ModelInfo | None, method: str) -> TypeGuard[ModelInfo]:
    """Is there such a model, and does it answer `method` (an embedding model generates nothing)?"""
    return info is not None and not (method == "generateContent" and info.kind == "embedding")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


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

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header: the stand-in's configured day (prices change on dates), else the real clock."""
        day = self.server.fake.config.date
        if day and timestamp is None:
            when = datetime.datetime.fromisoformat(day)
            when = when if when.tzinfo else when.replace(tzinfo=datetime.UTC)
            return email.utils.format_datetime(when.astimezone(datetime.UTC), usegmt=True)
        return super().date_time_string(timestamp)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

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
            self._send(*self.server.fake.handle(method, self.path, self.headers, body), head=method == "HEAD")

    def _send(self, status: int, payload: dict[str, Any] | Raw, head: bool = False) -> None:
        if payload is DROP:  # the request was done; its answer is lost on the way (a dropped connection)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        raw = payload if isinstance(payload, Raw) else Raw(json.dumps(payload), "application/json; charset=UTF-8")
        data = raw.body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", raw.content_type)
            if raw.location:
                self.send_header("Location", raw.location)
            for name, value in raw.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
        except OSError:  # the client gave up (its timeout fired): nobody left to answer
            self.close_connection = True
