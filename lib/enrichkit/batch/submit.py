"""Sending work to Google: chunks planned, uploaded and created (each step in the ledger first), creates in doubt
settled by display name, strays and --cancel-batches cancelled.
"""

from __future__ import annotations

import time
from pathlib import Path

from enrichkit.batch.ledger import Chunk
from enrichkit.batch.parts import (
    STRAY_WINDOW,
    BatchState,
    _display_prefix,
    _Queued,
    _write_durably,
    list_pause,
)
from enrichkit.errors import ConfigError
from enrichkit.logs import log
from enrichkit.pace.classify import classify_error


class Submitting(BatchState):
    """The chunk's way to Google: planning -> planned -> uploaded -> creating -> submitted."""

    def _settle(self) -> None:
        ledger = self.ledger
        for chunk in ledger.chunks("planning"):
            ledger.drop_chunk(chunk.id)  # its file may be half-written; its records were never in flight
            self._full = True
            self._chunk_file(chunk.id).unlink(missing_ok=True)
        for chunk in ledger.chunks("planned"):
            self._upload(chunk)
        for chunk in ledger.chunks("creating"):
            self._find_or_recreate(chunk)
        self._cancel_strays()
        for chunk in ledger.chunks("uploaded"):
            if self._waiting_for_quota():
                break
            self._create(chunk)

    def _find_or_recreate(self, chunk: Chunk) -> None:
        """A create in doubt: the job may exist (its answer was lost). Find it by display name; only once the
        list had time to settle and still lacks it is it created anew (under the next display name)."""
        prefix = _display_prefix(self.cp.job_id, chunk)
        try:
            found = [job for job in self.client.jobs() if job.display_name.startswith(prefix)]
        except Exception as exc:  # noqa: BLE001 - still in doubt: looked for again at the next poll
            self._call_failed("list", exc)
            return
        if found:
            job = found[-1]  # the oldest (the list is newest first); there is never more than one
            self.ledger.set_chunk(chunk.id, state="submitted", batch_name=job.name, display_name=job.display_name,
                                  remote_state=job.state, submitted_at=time.time())
            log.info("batch chunk %d: found its Google job %s (%s) after a lost create answer", chunk.id, job.name,
                     job.display_name)
            return
        if time.time() - (chunk.creating_at or 0.0) < self.settings.settle:
            return  # the list may lag behind a create: ask again at the next poll
        self.ledger.set_chunk(chunk.id, state="uploaded")
        self._create(self.ledger.chunk(chunk.id))

    def _cancel_strays(self) -> None:
        """A create taken as never made (unlisted past the settle time) may still show up later, behind a slow
        list: for an hour after such a chunk was created again, any other job under its display names is
        cancelled at once (its answers are never read; while it is PENDING nothing is billed)."""
        now = time.time()
        watched = [c for c in self.ledger.chunks("submitted", "ingested")
                   if c.create_tries > 1 and now - (c.submitted_at or now) < STRAY_WINDOW]
        if not watched:
            return
        try:
            listed = list(self.client.jobs())
        except Exception as exc:  # noqa: BLE001 - looked for again at the next poll
            self._call_failed("list", exc)
            return
        for chunk in watched:
            prefix = _display_prefix(self.cp.job_id, chunk)
            for job in listed:
                if job.display_name.startswith(prefix) and job.name != chunk.batch_name and not job.ended:
                    log.warning("Google batch job %s (%s) was created by a create whose answer was lost and that "
                                "the list showed too late; the chunk has job %s: cancelling the stray", job.name,
                                job.display_name, chunk.batch_name)
                    try:
                        self.client.cancel(job.name)
                    except Exception as exc:  # noqa: BLE001 - tried again at the next poll
                        self._call_failed("cancel", exc)

    def _submit(self, queued: dict[tuple[str, str, bool], list[_Queued]]) -> None:
        """What the walk left queued (less than a chunk a stage, or what a budget or a stop held back)."""
        for (stage_name, model, _), lines in queued.items():
            if lines and not self.budget_hit and not self.stop():
                self._submit_part(stage_name, model, lines)

    def _submit_part(self, stage_name: str, model: str, part: list[_Queued]) -> None:
        """One chunk: the ledger's row (planning), the request file (fsynced), its items in flight (planned), then
        the upload and the create, each recorded."""
        estimate = sum(q.estimate for q in part)
        if not self._fits(estimate):
            self.budget_hit = self._full = True
            log.warning("--max-cost: a batch job of %d requests (about $%.4f) does not fit the budget; waiting for "
                        "the jobs in flight", len(part), estimate)
            return
        chunk_id = self.ledger.new_chunk(stage_name, model, estimate)
        path = self._chunk_file(chunk_id)
        _write_durably(path, ("\n".join(q.line for q in part) + "\n").encode("utf-8"))
        self.ledger.plan(chunk_id, [(stage_name, q.record_id, q.attempt) for q in part])
        self.settings.crash_at("planned")
        self._upload(self.ledger.chunk(chunk_id))

    def _fits(self, estimate: float) -> bool:
        limit = self.opts.max_cost
        if limit is None:
            return True
        budget = self.job.enricher.budget
        spent = self.ledger.spent() - self._ledger_counted  # batch answers the checkpoint's cost does not hold yet
        if budget is not None:
            spent += budget.spent + budget.reserved  # the checkpoint's cost at the start, and synchronous calls since
        return spent + self.ledger.reserved() + estimate <= limit

    def _upload(self, chunk: Chunk) -> None:
        path = self._chunk_file(chunk.id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # planned, then the file was lost: its records go again
            self._ingest(chunk.id, {}, "cancelled", "NOT_SENT", {}, "cancelled")
            return
        display = _display_prefix(self.cp.job_id, chunk) + f"{chunk.create_tries + 1}"
        try:
            file_name = self.client.upload(data, display)
        except Exception as exc:  # noqa: BLE001 - classified; the upload is tried again at the next poll
            self._call_failed("upload", exc)
            return
        self.settings.crash_at("uploaded")
        self.ledger.set_chunk(chunk.id, state="uploaded", file_name=file_name)
        path.unlink(missing_ok=True)  # Google holds the requests now (48 h); the create names its file
        self.settings.crash_at("upload_recorded")
        if not self._waiting_for_quota():
            self._create(self.ledger.chunk(chunk.id))

    def _waiting_for_quota(self) -> bool:
        """After a 429 on create (the model's enqueued-token quota is full), the next create waits until a job in
        flight ends; with none in flight, it is tried at the next poll."""
        return self._quota_full and bool(self.ledger.chunks("submitted"))

    def _create(self, chunk: Chunk) -> None:
        assert chunk.file_name is not None
        tries = chunk.create_tries + 1
        display = _display_prefix(self.cp.job_id, chunk) + str(tries)
        self.ledger.set_chunk(chunk.id, state="creating", create_tries=tries, display_name=display,
                              creating_at=time.time())
        self.settings.crash_at("creating")
        try:
            name = self.client.create(chunk.model, chunk.file_name, display)
        except Exception as exc:  # noqa: BLE001 - classified below
            failure = classify_error(exc)
            code = getattr(exc, "code", None)
            if code == 429:  # the enqueued-token quota is full: no job was made; wait for one in flight to end
                self.ledger.set_chunk(chunk.id, state="uploaded")
                self._quota_full = True
                log.warning("batch create for %s refused (429: the model's enqueued-token quota is full); trying "
                            "again once a job in flight ends", display)
                return
            if isinstance(code, int) and 400 <= code < 500 and failure.fatal is None:
                self.ledger.set_chunk(chunk.id, state="uploaded")
                raise ConfigError(f"Google refused the batch job {display}: {failure.message}") from None
            if failure.fatal is not None:
                self.ledger.set_chunk(chunk.id, state="uploaded")
                raise failure.fatal from None
            # No answer (a dropped connection, a timeout, a 5xx): the job may exist. In doubt until found.
            log.warning("batch create for %s got no clear answer (%s); looking for it by name before creating "
                        "anything", display, failure.message[:120])
            return
        self.settings.crash_at("created")
        self.ledger.set_chunk(chunk.id, state="submitted", batch_name=name, remote_state="PENDING",
                              submitted_at=time.time())
        self.settings.crash_at("submitted")
        log.info("Google batch job %s created for %d requests of stage %s (%s)", name, chunk.lines, chunk.stage,
                 display)

    def _cancel_all(self) -> None:
        """--cancel-batches: every job of this job's in flight is cancelled at Google; its records go back to
        pending (what Google answered before the cancel is kept: it is paid for)."""
        self._settle_without_creating()
        cancelled = 0
        for chunk in self.ledger.chunks("submitted"):
            assert chunk.batch_name is not None
            self.ledger.set_chunk(chunk.id, cancel=1)
            self.settings.crash_at("cancelling")
            try:
                self.client.cancel(chunk.batch_name)
            except Exception as exc:  # noqa: BLE001 - an ended job cannot be cancelled: it is collected below
                log.info("cancel of %s: %s", chunk.batch_name, str(exc)[:160])
            cancelled += 1
        for chunk in self.ledger.chunks("uploaded", "planned"):
            self.ledger.ingest(chunk.id, {}, "cancelled", "NOT_SENT", {}, "cancelled")
        deadline = self.clock() + max(30.0, 3 * self.settings.poll)
        while self.ledger.chunks("submitted") and self.clock() < deadline:
            self._poll()
            if self.ledger.chunks("submitted"):
                self.sleep(min(1.0, self.settings.poll))
        self.say(f"Cancelled {cancelled} Google batch job(s); their unanswered records are pending again.")

    def _settle_without_creating(self) -> None:
        for chunk in self.ledger.chunks("planning"):
            self.ledger.drop_chunk(chunk.id)
        for chunk in self.ledger.chunks("creating"):
            # A create in doubt: its job may exist behind a lagging list. Given up (not sent) only once the list
            # had its settle time, as `_find_or_recreate` does; a stop leaves it in doubt (the next run looks).
            prefix = _display_prefix(self.cp.job_id, chunk)
            while not self.stop():
                try:
                    found = [job for job in self.client.jobs() if job.display_name.startswith(prefix)]
                except Exception as exc:  # noqa: BLE001 - asked again after a pause
                    self._call_failed("list", exc)
                    found = None
                if found:
                    self.ledger.set_chunk(chunk.id, state="submitted", batch_name=found[-1].name,
                                          submitted_at=time.time())
                    break
                if found is not None and time.time() - (chunk.creating_at or 0.0) >= self.settings.settle:
                    self.ledger.set_chunk(chunk.id, state="uploaded")
                    break
                self.sleep(list_pause(self.settings.poll, self.settings.settle))

    def _chunk_file(self, chunk_id: int) -> Path:
        folder = self.ledger.path.with_name(self.ledger.path.name.removesuffix(".sqlite") + ".files")
        return folder / f"chunk-{chunk_id:06d}.jsonl"
