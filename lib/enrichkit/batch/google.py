"""Google's Files and Batch APIs through google-genai (imported only here), and a request as a batch line.

The SDK's Developer-API mapping of a batch job keeps name, display name, state, times, model and output, and drops
`batchStats` and the operation's `error`: `get` and `jobs` read the raw JSON through the SDK's own API client
(pinned google-genai 3.4.0), so both are kept. Wire states are `BATCH_STATE_*`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from enrichkit.providers.base import Request

ENDED = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})


@dataclass(frozen=True)
class RemoteJob:
    """One Google batch job as `get`/`list` answer it; `state` without its BATCH_STATE_/JOB_STATE_ prefix."""

    name: str
    display_name: str
    state: str
    stats: dict[str, int] = field(default_factory=dict)
    output_file: str | None = None
    error: dict[str, Any] | None = None
    create_time: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def remote_job(raw: dict[str, Any]) -> RemoteJob:
    meta = raw.get("metadata") or {}
    state = str(meta.get("state") or "UNSPECIFIED").removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
    stats = {k: int(v) for k, v in (meta.get("batchStats") or {}).items() if str(v).lstrip("-").isdigit()}
    output = (meta.get("output") or {}).get("responsesFile") or (raw.get("response") or {}).get("responsesFile")
    return RemoteJob(str(raw.get("name") or meta.get("name") or ""), str(meta.get("displayName") or ""), state,
                     stats, output, raw.get("error"), meta.get("createTime"))


def request_line(key: str, request: Request) -> str:
    """One JSONL input line, `{"key", "request": GenerateContentRequest}` in the REST API's camelCase: the same
    prompt, settings, schema and tools as the synchronous call (`providers.gemini.GeminiProvider._make_config`);
    no service tier (a batch has its own)."""
    payload, stage = request.payload, request.stage
    settings = payload["settings"]
    config: dict[str, Any] = {"maxOutputTokens": int(settings["max_output_tokens"])}
    if settings.get("temperature") is not None:
        config["temperature"] = float(settings["temperature"])
    if settings.get("thinking_budget") is not None:
        config["thinkingConfig"] = {"thinkingBudget": int(settings["thinking_budget"])}
    elif settings.get("thinking_level"):
        config["thinkingConfig"] = {"thinkingLevel": str(settings["thinking_level"]).upper()}
    if payload["json_mode"]:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = payload["schema"]
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": payload["prompt"]}]}],
                            "generationConfig": config}
    if settings.get("system_instruction"):
        body["systemInstruction"] = {"parts": [{"text": str(settings["system_instruction"])}]}
    if stage.search:
        body["tools"] = [{"googleSearch": {}}]
    return json.dumps({"key": key, "request": body}, ensure_ascii=False, separators=(",", ":"))


def read_line(line: str) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """(key, response, status) of one output line; either shape, read defensively (a line that is not an object,
    or has no key, gives an empty key)."""
    try:
        data = json.loads(line)
    except ValueError:
        return "", None, None
    if not isinstance(data, dict):
        return "", None, None
    key = data.get("key")
    if key is None and isinstance(data.get("metadata"), dict):
        key = data["metadata"].get("key")
    response = data.get("response")
    status = data.get("status") or data.get("error")
    return (str(key) if key is not None else "", response if isinstance(response, dict) else None,
            status if isinstance(status, dict) else None)


class BatchClient:
    """The calls a batch run makes; each raises what the SDK raises (classified by the caller)."""

    def __init__(self, *, api_key: str, base_url: str | None, timeout: float) -> None:
        from google import genai
        from google.genai import types

        from enrichkit.providers.genai_client import http_options

        self._types = types
        # The same options as the run's client: v1beta, one attempt, and the process's one TLS context.
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=http_options(base_url, timeout))

    def upload(self, data: bytes, display_name: str) -> str:
        """A JSONL request file through the resumable upload (chunked by the SDK); returns its `files/…` name. The
        MIME type is "jsonl", as Google's batch-mode guide uploads its request file."""
        uploaded = self._client.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl",
                                                                             "display_name": display_name})
        return str(uploaded.name)

    def create(self, model: str, file_name: str, display_name: str) -> str:
        job = self._client.batches.create(model=model, src=file_name, config={"display_name": display_name})
        return str(job.name)

    def get(self, name: str) -> RemoteJob:
        response = self._client._api_client.request("get", name, {}, None)
        return remote_job(json.loads(response.body or "{}"))

    def jobs(self, page_size: int = 100) -> Iterator[RemoteJob]:
        """Every batch job of the project, newest first, page by page (raw JSON: the stats are kept)."""
        token = ""
        while True:
            path = f"batches?pageSize={page_size}" + (f"&pageToken={token}" if token else "")
            page = json.loads(self._client._api_client.request("get", path, {}, None).body or "{}")
            for raw in page.get("operations") or []:
                yield remote_job(raw)
            token = page.get("nextPageToken") or ""
            if not token:
                return

    def cancel(self, name: str) -> None:
        self._client.batches.cancel(name=name)

    def download(self, file_name: str) -> bytes:
        return bytes(self._client.files.download(file=file_name))

    def response(self, raw: dict[str, Any]) -> Any:
        """A batch line's `response` as the SDK's GenerateContentResponse (what the reply parser reads)."""
        return self._types.GenerateContentResponse._from_response(response=raw, kwargs={})

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing at exit must never mask the run's outcome
            pass
