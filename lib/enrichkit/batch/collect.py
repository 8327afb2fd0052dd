"""Collecting from Google: each submitted job polled, shown when its state changes, and an ended one's answers
downloaded, matched by key, read by the synchronous path's parser and ingested in one transaction.
"""

from __future__ import annotations

import time
from typing import Any

from enrichkit.batch.google import RemoteJob, read_line
from enrichkit.batch.ledger import Chunk, Item
from enrichkit.batch.parts import (
    PROGRESS_EVERY,
    BatchState,
    _line_failure,
    _span,
    _usage_dict,
)
from enrichkit.config.stages import Stage
from enrichkit.errors import ConfigError, StageFailure
from enrichkit.logs import log
from enrichkit.providers.base import Request, Usage


class Collecting(BatchState):
    """The chunk's way back: submitted -> ingested | expired | failed | cancelled."""

    def _poll(self) -> None:
        for chunk in self.ledger.chunks("submitted"):
            assert chunk.batch_name is not None
            try:
                job = self.client.get(chunk.batch_name)
            except Exception as exc:  # noqa: BLE001 - classified: a fatal one stops the run, others wait a poll
                self._call_failed("get", exc)
                continue
            self._show(chunk, job)
            if job.ended:
                self._collect(chunk, job)

    def _show(self, chunk: Chunk, job: RemoteJob) -> None:
        """A line per Google job state change (and every 10 min): state, % done, age, expiry, records held."""
        said = self._seen.get(chunk.id)
        now = self.clock()
        if said is not None and said[0] == job.state and now - said[1] < PROGRESS_EVERY:
            return
        self._seen[chunk.id] = (job.state, now)
        total = job.stats.get("requestCount", chunk.lines) or chunk.lines
        done = job.stats.get("successfulRequestCount", 0) + job.stats.get("failedRequestCount", 0)
        age = time.time() - (chunk.submitted_at or chunk.changed_at)
        expires = max(0.0, 48 * 3600 - age)
        log.info("Google batch job %s (%s, stage %s): %s, %d%% done (%d/%d), age %s, expires in %s; %d records in it",
                 chunk.display_name, chunk.batch_name, chunk.stage, job.state, 100 * done // max(1, total), done,
                 total, _span(age), _span(expires), chunk.lines)
        if job.state != chunk.remote_state:
            self.ledger.set_chunk(chunk.id, remote_state=job.state, stats=job.stats)

    def _collect(self, chunk: Chunk, job: RemoteJob) -> None:
        if job.state == "FAILED" and not job.output_file:
            message = str((job.error or {}).get("message") or "no reason given")
            self._ingest(chunk.id, {}, "failed", job.state, job.stats, "failed_job")
            code = int((job.error or {}).get("code") or 0)
            if code in (3, 5, 7, 9) or "not supported" in message or "INVALID_ARGUMENT" in message:
                raise ConfigError(f"Google batch job {job.name} ({chunk.display_name}, stage {chunk.stage}) failed "
                                  f"for a configuration reason: {message}")
            log.warning("Google batch job %s failed (%s): its %d records go again", job.name, message, chunk.lines)
            return
        if not job.output_file:  # expired, or cancelled before any answer
            left = "expired" if job.state == "EXPIRED" else "cancelled"
            self._ingest(chunk.id, {}, left, job.state, job.stats, left)
            log.warning("Google batch job %s %s: its %d records go again", job.name, job.state.lower(), chunk.lines)
            self._dirty = True
            return
        try:
            data = self.client.download(job.output_file)
        except Exception as exc:  # noqa: BLE001 - a download that failed is tried again at the next poll
            self._call_failed("download", exc)
            return
        self.settings.crash_at("downloaded")
        stage = next((s for s in self.plan.stages.stages if s.name == chunk.stage), None)
        if stage is None:  # the stages file lost (or renamed) the stage since (--allow-config-change)
            log.warning("Google batch job %s answered stage %s, which the stages file no longer has: its %d answers "
                        "are not used", job.name, chunk.stage, chunk.lines)
            self._ingest(chunk.id, {}, "ingested", job.state, job.stats, "cancelled")
            self._dirty = True
            return
        held = {item.key: item for item in self.ledger.items_of(chunk.id) if item.state == "inflight"}
        results: dict[str, tuple[str, dict[str, Any]]] = {}
        strays = 0
        for line in data.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            key, response, status = read_line(line)
            item = held.get(key)
            if item is None or key in results:
                strays += 1  # not ours, or a second line for one key: never billed twice on our side
                continue
            results[key] = self._read_result(stage, item, response, status)
        if strays:
            log.warning("Google batch job %s: %d output lines matched no request of it (ignored)", job.name, strays)
        left = "cancelled" if job.state == "CANCELLED" else "missing"
        missing = len(held) - len(results)
        self._ingest(chunk.id, results, "ingested", job.state, job.stats, left)
        self.settings.crash_at("ingested")
        if missing:
            log.warning("Google batch job %s: %d requests came back without an answer; they go again", job.name,
                        missing)
        self._dirty = True

    def _read_result(self, stage: Stage, item: Item, response: dict[str, Any] | None,
                     status: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """One output line as the ledger keeps it: the fields (parsed by the synchronous path's reader), or the
        classified error, with what it cost at the batch rate."""
        request = self._request(stage)
        if response is not None:
            try:
                answer = self.llm.read_answer(self.client.response(response), request, batch=True)
            except StageFailure as refused:
                usage = refused.usage if isinstance(refused.usage, Usage) else Usage()
                return "error", {"error_type": refused.error_type, "message": refused.message,
                                 "usage": self._priced(usage), "cost_usd": usage.cost_usd}
            return "answered", {"fields": answer.fields, "usage": self._priced(answer.usage),
                                "cost_usd": answer.usage.cost_usd}
        failure = _line_failure(status)
        return "error", {"error_type": failure.error_type, "message": failure.message}

    def _priced(self, usage: Usage) -> dict[str, Any]:
        """The usage as the ledger keeps it, with what its tokens would have cost at the standard rate (the
        report's saving; the grounding fee is the same either way)."""
        standard = self.plan.pricing.charge(usage.model, prompt_tokens=usage.prompt_tokens,
                                            output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens)
        return {**_usage_dict(usage), "standard_token_usd": standard.tokens}

    def _request(self, stage: Stage) -> Request:
        """A request of the stage as the reply parser needs it (stage, model, schema; never the prompt)."""
        made = self._shapes.get(stage.name)
        if made is None:
            made = self._shapes[stage.name] = self.llm.prepare(stage, dict.fromkeys(stage.placeholders(), ""))
        return made
