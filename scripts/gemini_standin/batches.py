"""The Files and Batch APIs of the stand-in, in the Gemini Developer API's wire format (as google-genai 3.4.0
speaks it), on an accelerated clock.

    POST   /upload/v1beta/files                      resumable upload: start (X-Goog-Upload-Command: start)
    POST   /upload/v1beta/files?upload_id=U          upload / "upload, finalize" chunks at X-Goog-Upload-Offset
    GET    /v1beta/files/{id}                        a file's resource
    GET    /v1beta/files/{id}:download?alt=media     a generated file's bytes (an uploaded one: 400)
    DELETE /v1beta/files/{id}
    POST   /v1beta/models/{model}:batchGenerateContent   {"batch": {"displayName", "inputConfig": {"fileName"}}}
    GET    /v1beta/batches/{id}, GET /v1beta/batches?pageSize=&pageToken=
    POST   /v1beta/batches/{id}:cancel, DELETE /v1beta/batches/{id}

A job is an Operation (`name`, `metadata` = the GenerateContentBatch with `state` BATCH_STATE_*, `batchStats`,
`output.responsesFile`; `done`, `response` or `error` once it ended). Its state follows the clock: PENDING for
`batch_pending` seconds, RUNNING for `batch_seconds`, then its end. The answers are made when it ends, each as
generateContent would answer it, and written as a JSONL file of `{"key", "response"}` or `{"key", "status"}`
lines (shuffled unless told otherwise).

Faults, each "the next N" (a counter) so a test says exactly which job meets it: `batch_expire`,
`batch_fail` (a configuration reason), `batch_fail_internal` (an internal error), `batch_drop_create` (the job
is made, the answer is a dropped connection), `batch_create_429` (a Help-only 429, no job made); per line:
`batch_line_error_matching`
(a prompt with that text gets a status line), `batch_line_error_rate`, `batch_missing_matching`
(no line at all); `batch_list_lag` (seconds a new job stays out of the list). Like the job's states, the lag is
read when the list is asked, from the config as it is then: a test can hold a job out of the list (a long lag)
until its run reached the point the test wants, then let it show (`configure(batch_list_lag=0)`).

Counters (in /_stats under "batch"): creates per display name, lines billed per key, uploads, bytes.
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .answers import answer
from .catalogue import model_info
from .faults import draw_fault
from .wire import Raw, Reply, error_body, pick, prompt_text, texts_of

if TYPE_CHECKING:
    from .config import FakeConfig

DROP = Raw("", "x-standin/drop")  # the handler hangs up without answering
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
ENDED = ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED")
HELP_ONLY_429 = [{"@type": "type.googleapis.com/google.rpc.Help",
                  "links": [{"description": "Learn more about Gemini API quotas",
                             "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}]


def _stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class BatchService:
    """State of the Files and Batch APIs; every method is called under no lock and takes its own."""

    def __init__(self, config: FakeConfig, base_url: Callable[[], str], redirect_url: Callable[[str], str],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._base_url = base_url
        self._redirect_url = redirect_url
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._uploads: dict[str, dict[str, Any]] = {}  # upload id -> {file, size, data}
        self._files: dict[str, dict[str, Any]] = {}  # "files/x" -> {resource, data}
        self._jobs: dict[str, dict[str, Any]] = {}  # "batches/x" -> job
        self.creates: collections.Counter[str] = collections.Counter()  # display name -> creates that made a job
        self.billed: collections.Counter[str] = collections.Counter()  # line key -> lines answered (billed)
        self.stats = {"uploads": 0, "upload_bytes": 0, "creates": 0, "create_429": 0, "dropped_creates": 0,
                      "cancels": 0, "deletes": 0, "downloads": 0, "gets": 0, "lists": 0}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            jobs = {name: job["state"] for name, job in self._jobs.items()}
            return {**self.stats, "creates_by_name": dict(self.creates), "billed_by_key": dict(self.billed),
                    "max_creates_per_name": max(self.creates.values(), default=0),
                    "max_billed_per_key": max(self.billed.values(), default=0),
                    "lines_billed": sum(self.billed.values()), "jobs": jobs}

    # --- the Files API ----------------------------------------------------------------------------------

    def upload(self, query: dict[str, list[str]], headers: Any, body: bytes) -> Reply:
        command = str(headers.get("X-Goog-Upload-Command") or "").lower()
        upload_id = (query.get("upload_id") or [""])[0]
        if command == "start":
            try:
                request = json.loads(body or b"{}")
            except ValueError as exc:
                return error_body(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
            meta = request.get("file") or {}
            size = int(headers.get("X-Goog-Upload-Header-Content-Length") or meta.get("sizeBytes") or 0)
            mime = str(headers.get("X-Goog-Upload-Header-Content-Type") or meta.get("mimeType") or "")
            new_id = secrets.token_hex(12)
            with self._lock:
                self._uploads[new_id] = {"size": size, "mime": mime, "data": bytearray(),
                                         "display_name": meta.get("displayName")}
            url = f"{self._base_url()}/upload/v1beta/files?upload_id={new_id}&upload_protocol=resumable"
            return 200, Raw("", "text/plain; charset=UTF-8",
                            headers=(("X-Goog-Upload-URL", url), ("X-Goog-Upload-Status", "active")))
        with self._lock:
            pending = self._uploads.get(upload_id)
            if pending is None:
                return error_body(404, "NOT_FOUND", "No upload session with this id.")
            offset = int(headers.get("X-Goog-Upload-Offset") or 0)
            if offset != len(pending["data"]):
                return error_body(400, "INVALID_ARGUMENT", f"Offset {offset} != received {len(pending['data'])}.")
            pending["data"] += body
            self.stats["upload_bytes"] += len(body)
            if "finalize" not in command:
                return 200, Raw("", "text/plain; charset=UTF-8", headers=(("X-Goog-Upload-Status", "active"),))
            del self._uploads[upload_id]
            data = bytes(pending["data"])
            if len(data) != pending["size"]:
                return error_body(400, "INVALID_ARGUMENT", f"Upload size {len(data)} != declared {pending['size']}.")
            resource = self._file_resource(pending["mime"], len(data), "UPLOADED", pending["display_name"])
            self._files[resource["name"]] = {"resource": resource, "data": data}
            self.stats["uploads"] += 1
        return 200, Raw(json.dumps({"file": resource}), "application/json; charset=UTF-8",
                        headers=(("X-Goog-Upload-Status", "final"),))

    def _file_resource(self, mime: str, size: int, source: str, display_name: str | None = None) -> dict[str, Any]:
        """Under the lock."""
        name = f"files/{secrets.token_hex(6)}"
        now = _stamp(self._clock())
        resource = {"name": name, "mimeType": mime, "sizeBytes": str(size), "createTime": now, "updateTime": now,
                    "expirationTime": _stamp(self._clock() + 48 * 3600), "sha256Hash": "",
                    "uri": f"{self._base_url()}/v1beta/{name}", "state": "ACTIVE", "source": source}
        if source == "GENERATED":
            resource["downloadUri"] = f"{self._base_url()}/v1beta/{name}:download?alt=media"
        if display_name:
            resource["displayName"] = display_name
        return resource

    def file(self, method: str, name: str, download: bool) -> Reply:
        with self._lock:
            stored = self._files.get(name)
            if stored is None:
                return error_body(404 if method != "DELETE" else 403, "NOT_FOUND" if method != "DELETE"
                                  else "PERMISSION_DENIED", f"File {name} not found or no permission.")
            if method == "DELETE":
                del self._files[name]
                return 200, {}
            if not download:
                return 200, dict(stored["resource"])
            if stored["resource"]["source"] != "GENERATED":
                return error_body(400, "INVALID_ARGUMENT", "Only generated files can be downloaded.")
            self.stats["downloads"] += 1
            return 200, Raw(stored["data"].decode(), "application/octet-stream")

    # --- the Batch API ----------------------------------------------------------------------------------

    def create(self, model: str, body: bytes) -> Reply:
        try:
            request = json.loads(body or b"{}")
        except ValueError as exc:
            return error_body(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}")
        batch = request.get("batch") or {}
        display = str(batch.get("displayName") or batch.get("display_name") or "")
        source = pick(batch.get("inputConfig") or batch.get("input_config") or {}, "fileName", "file_name")
        cfg = self.config
        with self._lock:
            if model_info(model, cfg.extra_models) is None:
                return error_body(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta.")
            if not display:
                return error_body(400, "INVALID_ARGUMENT", "batch.display_name is required.")
            if source not in self._files:
                return error_body(400, "INVALID_ARGUMENT", f"Input file {source!r} not found.")
            if cfg.batch_create_429 > 0:
                cfg.batch_create_429 -= 1
                self.stats["create_429"] += 1
                return error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                                  HELP_ONLY_429)
            lines = self._files[source]["data"].decode().splitlines()
            now = self._clock()
            name = f"batches/{secrets.token_hex(8)}"
            end = "BATCH_STATE_SUCCEEDED"
            transient = False
            if cfg.batch_fail > 0:
                cfg.batch_fail, end = cfg.batch_fail - 1, "BATCH_STATE_FAILED"
            elif cfg.batch_fail_internal > 0:
                cfg.batch_fail_internal, end, transient = cfg.batch_fail_internal - 1, "BATCH_STATE_FAILED", True
            elif cfg.batch_expire > 0:
                cfg.batch_expire, end = cfg.batch_expire - 1, "BATCH_STATE_EXPIRED"
            self._jobs[name] = {"name": name, "model": f"models/{model}", "display": display, "source": source,
                                "lines": [line for line in lines if line.strip()], "created": now, "updated": now,
                                "state": "BATCH_STATE_PENDING", "end_state": end, "output": None, "error": None,
                                "ended": None, "stats": None, "transient": transient}
            self.creates[display] += 1
            self.stats["creates"] += 1
            drop = cfg.batch_drop_create > 0
            if drop:
                cfg.batch_drop_create -= 1
                self.stats["dropped_creates"] += 1
            operation = self._operation(self._jobs[name])
        return (200, DROP) if drop else (200, operation)

    def get(self, name: str) -> Reply:
        with self._lock:
            self.stats["gets"] += 1
            job = self._jobs.get(name)
            if job is None:
                return error_body(404, "NOT_FOUND", f"Batch {name} not found.")
            self._advance(job)
            return 200, self._operation(job)

    def list(self, query: dict[str, list[str]]) -> Reply:
        size = int((query.get("pageSize") or ["50"])[0] or 50)
        start = int((query.get("pageToken") or ["0"])[0] or 0)
        with self._lock:
            self.stats["lists"] += 1
            now = self._clock()
            lag = self.config.batch_list_lag
            jobs = sorted((j for j in self._jobs.values() if j["created"] + lag <= now),
                          key=lambda j: j["created"], reverse=True)
            for job in jobs[start:start + size]:
                self._advance(job)
            page: dict[str, Any] = {"operations": [self._operation(j) for j in jobs[start:start + size]]}
        if start + size < len(jobs):
            page["nextPageToken"] = str(start + size)
        return 200, page

    def cancel(self, name: str) -> Reply:
        with self._lock:
            job = self._jobs.get(name)
            if job is None:
                return error_body(404, "NOT_FOUND", f"Batch {name} not found.")
            self._advance(job)
            if job["state"] not in ENDED:
                job["end_state"] = "BATCH_STATE_CANCELLED"
                job["cancelled_while"] = job["state"]
                self._finish(job)
            self.stats["cancels"] += 1
        return 200, {}

    def delete(self, name: str) -> Reply:
        with self._lock:
            if self._jobs.pop(name, None) is None:
                return error_body(404, "NOT_FOUND", f"Batch {name} not found.")
            self.stats["deletes"] += 1
        return 200, {}

    # --- the clock ------------------------------------------------------------------------------------

    def _advance(self, job: dict[str, Any]) -> None:
        """Under the lock: the state the clock has reached."""
        if job["state"] in ENDED:
            return
        elapsed = self._clock() - job["created"]
        if elapsed >= self.config.batch_pending + self.config.batch_seconds:
            self._finish(job)
        elif elapsed >= self.config.batch_pending and job["state"] == "BATCH_STATE_PENDING":
            job["state"], job["updated"] = "BATCH_STATE_RUNNING", self._clock()

    def _finish(self, job: dict[str, Any]) -> None:
        """Under the lock: the job ends; a successful (or cancelled) one answers its lines and writes the file."""
        state = job["end_state"]
        now = self._clock()
        job["state"], job["updated"], job["ended"] = state, now, now
        total = len(job["lines"])
        if state == "BATCH_STATE_FAILED":
            job["error"] = ({"code": 13, "message": "Batch failed: internal error."} if job.get("transient") else
                            {"code": 3, "message": "Batch failed: the request's tools or generation config are not "
                             "supported for this model (INVALID_ARGUMENT)."})
            job["stats"] = {"requestCount": str(total), "failedRequestCount": str(total)}
            return
        if state == "BATCH_STATE_EXPIRED":
            job["error"] = {"code": 4, "message": "Batch expired: it did not finish within 48 hours."}
            job["stats"] = {"requestCount": str(total), "pendingRequestCount": str(total)}
            return
        cancelled = state == "BATCH_STATE_CANCELLED"
        # A job cancelled while RUNNING keeps (and bills) what it had answered, half here; one still PENDING, nothing.
        done = total if not cancelled else 0 if job.get("cancelled_while") == "BATCH_STATE_PENDING" else total // 2
        out: list[str] = []
        ok = failed = 0
        for line in job["lines"][:done]:
            text, success = self._answer_line(job, line)
            if text is None:
                continue
            out.append(text)
            ok, failed = ok + success, failed + (not success)
        if self.config.batch_shuffle:
            self._rng.shuffle(out)
        data = ("\n".join(out) + "\n" if out else "").encode()
        resource = self._file_resource("application/jsonl", len(data), "GENERATED",
                                       f"{job['display']}-output")
        self._files[resource["name"]] = {"resource": resource, "data": data}
        job["output"] = resource["name"]
        job["stats"] = {"requestCount": str(total), "successfulRequestCount": str(ok),
                        "failedRequestCount": str(failed), **({"pendingRequestCount": str(total - done)}
                                                              if total - done else {})}

    def _answer_line(self, job: dict[str, Any], line: str) -> tuple[str | None, bool]:
        """Under the lock: one output line for an input line (None: the line goes missing)."""
        try:
            item = json.loads(line)
            key, request = str(item["key"]), item["request"]
        except (ValueError, KeyError, TypeError) as exc:
            return json.dumps({"key": "", "status": {"code": 3, "message": f"Invalid line: {exc}"}}), False
        cfg = self.config
        prompt = prompt_text(request)
        if any(text in prompt for text in cfg.batch_missing_matching):
            return None, False
        failing = any(text in prompt for text in cfg.batch_line_error_matching)
        if failing or (cfg.batch_line_error_rate and self._rng.random() < cfg.batch_line_error_rate):
            return json.dumps({"key": key, "status": {"code": 13, "message": "Internal error encountered."}}), False
        model = job["model"].removeprefix("models/")
        info = model_info(model, cfg.extra_models)
        assert info is not None  # checked at create
        system = "\n".join(texts_of(pick(request, "systemInstruction", "system_instruction") or []))
        tools = json.dumps(request.get("tools") or [])
        grounded = "google_search" in tools or "googleSearch" in tools
        p_tokens = math.ceil(len(prompt + system) / 4)
        fault = draw_fault(cfg, prompt, self._rng, model)
        if fault not in (None, "malformed", "blocked", "safety", "recitation", "prohibited_content", "blocklist",
                         "spii", "max_tokens_loop", "max_tokens_thinking"):
            fault = None  # transport faults (timeouts, 5xx, 429s) have no meaning inside a batch
        reply = answer(cfg, info, model, request, prompt, p_tokens, fault, grounded, sum(self.billed.values()),
                       self._redirect_url).reply
        self.billed[key] += 1
        return json.dumps({"key": key, "response": reply}), True

    def _operation(self, job: dict[str, Any]) -> dict[str, Any]:
        """Under the lock: the job as the API answers it (an Operation whose metadata is the batch)."""
        total = len(job["lines"])
        meta: dict[str, Any] = {"@type": BATCH_TYPE, "model": job["model"], "displayName": job["display"],
                                "inputConfig": {"fileName": job["source"]}, "createTime": _stamp(job["created"]),
                                "updateTime": _stamp(job["updated"]), "state": job["state"], "name": job["name"],
                                "batchStats": job["stats"] or {"requestCount": str(total),
                                                               "pendingRequestCount": str(total)}}
        operation: dict[str, Any] = {"name": job["name"], "metadata": meta}
        if job["ended"] is not None:
            meta["endTime"] = _stamp(job["ended"])
            operation["done"] = True
            if job["output"]:
                meta["output"] = {"responsesFile": job["output"]}
                operation["response"] = {"@type": OUTPUT_TYPE, "responsesFile": job["output"]}
            if job["error"]:
                operation["error"] = job["error"]
        return operation
