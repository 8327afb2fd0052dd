"""The job store: the output, the checkpoint, the error log and the report, and the order they are written in.

    open    decide what the checkpoint means (new job, resume, retry-failed, fresh), prove it belongs to
            this job, read the output back (the truth) and merge it;
    commit  a finished record: its row is written (flushed by the caller's batch), its counters added;
    save    fsync the output, then claim its rows in the checkpoint (temp file, fsync, rename);
    finish  the final status, checkpoint and report.

Beside those it books what the walk found (unreadable rows to the error log, the input's counts once known),
failed attempts to the error log, and the models that answered.

The checkpoint never claims a row that is not on disk: rows become `completed_ids` only after the
output was fsynced (and only while the file being written is still the output), and the checkpoint
stores the output's size and the CRC-32 of every byte up to it. A resume that finds those bytes
unchanged reads only what follows; any edit before it (rows deleted by hand, a re-save by Excel)
is detected and the whole output is read back. Every write failure (a full disk) becomes one
`WriteFailed` naming the path; nothing is claimed that was not written.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enrichkit.config.plan import JobMode, Plan
from enrichkit.errors import ConfigError, WriteFailed
from enrichkit.logs import log
from enrichkit.redact import redact_tree
from enrichkit.run.counters import Counters
from enrichkit.run.enricher import AttemptError, RecordResult
from enrichkit.store.checkpoint import Checkpoint, utc_now, write_checkpoint
from enrichkit.store.errorlog import ErrorLog
from enrichkit.store.jobfiles import atomic_write
from enrichkit.store.output import OutputWriter
from enrichkit.store.recovery import recover_job
from enrichkit.tables.records import BadRow
from enrichkit.tables.scan import ScanCounts


class JobStore:
    """Used from the pipeline's main thread only: the single writer of every job file."""

    def __init__(self, plan: Plan, cp: Checkpoint, mode: JobMode, *, input_changed: bool = False,
                 adopted: set[str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self.paths = plan.paths
        self.cp = cp
        self.mode = mode  # decided once, when the job was opened
        self.input_changed = input_changed
        self.adopted = adopted or set()  # job ids of rows already in the output when this job began
        self.run = Counters()  # this run's figures (the checkpoint's `totals` are the job's)
        self.run_completed = 0
        self.run_failed = 0
        self.clock = clock
        self.writer: OutputWriter | None = None
        self.errorlog: ErrorLog | None = None
        self.broken: WriteFailed | None = None  # the first write that failed (the one the closing line names)
        self._output_failed = False  # the output could not take a write, or was replaced: nothing more is claimed
        self.replaced_values = 0
        self._unsynced: list[str] = []  # rows written but not yet fsynced: not claimed by the checkpoint yet
        self._since_save = 0
        self._last_save = clock()
        self._save_cost = 0.0
        self._run_started = clock()
        self._elapsed_mark = clock()
        self._written_stat: tuple[int, int] | None = None  # (inode, mtime_ns) of the checkpoint we last wrote
        self._recovered_crc = 0  # CRC-32 of the output as the start found it: the writer's running CRC goes on

    @classmethod
    def open(cls, plan: Plan, *, confirm_fresh: Callable[[str], bool] = lambda message: False,
             relock: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic) -> JobStore:
        """The job's files as a run finds them (see `enrichkit.store.recovery`): raises `UsageError`/`ConfigError`
        (exit 2) before anything is written; may cut a torn last row."""
        found = recover_job(plan, confirm_fresh=confirm_fresh, relock=relock)
        store = cls(plan, found.cp, found.mode, input_changed=found.input_changed, adopted=found.adopted,
                    clock=clock)
        store._recovered_crc = found.output_crc32
        return store

    @property
    def counts_exactly(self) -> bool:
        """This run's walk over the input must count records, duplicates and bad rows (they are not known:
        a new job, a changed input, or an earlier counting walk that was stopped before the end)."""
        return self.mode == JobMode.NEW or self.input_changed or not self.cp.counts_exact

    # --- the run --------------------------------------------------------------------------------------

    def begin(self) -> None:
        """Mark the job running and write the first checkpoint; open the output and the error log."""
        cp, plan = self.cp, self.plan
        cp.status = "running"
        cp.runs += 1
        cp.pid, cp.host = os.getpid(), socket.gethostname()
        cp.run_started_at, cp.run_done, cp.run_seconds = utc_now(), 0, 0.0
        cp.report_path, cp.errors_path = str(self.paths.report.resolve()), str(self.paths.errors.resolve())
        adopted = cp.options.get("adopted_jobs")
        cp.options = plan.options.recorded()
        # The format in force, sniffed or given: a resume reads the file the same way, so its IDs stay the same.
        cp.options["encoding"] = plan.table.encoding or cp.options.get("encoding")
        cp.options["delimiter"] = plan.table.delimiter or cp.options.get("delimiter")
        if adopted:
            cp.options["adopted_jobs"] = adopted
        self.paths.output.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.writer = OutputWriter(self.paths.output, plan.columns, plan.stages.output_fields, cp.job_id,
                                       on_replaced=self._value_replaced, bom=bool(plan.options.excel))
        except OSError as exc:
            raise WriteFailed(str(self.paths.output), exc.strerror or str(exc)) from None
        if self.writer.size == cp.output_bytes:
            self.writer.resume_crc(self._recovered_crc)
        self.errorlog = ErrorLog(self.paths.errors)
        self.save()

    @property
    def unconfirmed(self) -> int:
        """Rows handed to the output that could not be confirmed on disk (it failed): a resume keeps the whole ones."""
        return len(self._unsynced) if self._output_broken() else 0

    def done_count(self) -> int:
        """Records done: claimed, plus those written since (unless the output could not take them)."""
        return self.cp.completed_count + (0 if self._output_broken() else len(self._unsynced))

    def commit(self, r: RecordResult) -> None:
        """A finished, failed or abandoned record: its row, its counters, its stage figures. The row is
        flushed by `flush()`, which the pipeline calls once per batch of results."""
        cp = self.cp
        self.run.add(r.counters)
        cp.totals.add(r.counters)
        stages = cp.stage_totals
        for name, _seconds in r.stage_latency:
            _stage(stages, name)["succeeded"] += 1
        for name in r.skipped_stages:
            _stage(stages, name)["skipped"] += 1
        for name, cost in r.stage_cost.items():
            entry = _stage(stages, name)
            entry["cost_usd"] = round(entry.get("cost_usd", 0.0) + cost, 9)
        if r.values is not None:
            writer, values = self.writer, r.values
            assert writer is not None
            self._write(lambda: writer.write(values, r.record_id, f"{r.counters.cost_usd:.6f}"))
            self._unsynced.append(r.record_id)
            cp.failed_ids.discard(r.record_id)
            self.run_completed += 1
            for name in self.plan.stages.output_fields:
                if r.values.get(name, "").strip():
                    cp.filled[name] = cp.filled.get(name, 0) + 1
            self._since_save += 1
        elif r.failure is not None:
            cp.mark_failed(r.record_id)
            self.run_failed += 1
            _bump(_stage(stages, r.failed_stage or "?")["failed_records"], r.failure.error_type)
            self._since_save += 1

    def count_only(self, r: RecordResult) -> None:
        """A result that arrived after the run could no longer write: what it cost is still the job's."""
        self.run.add(r.counters)
        self.cp.totals.add(r.counters)

    def log_unreadable(self, row: BadRow) -> None:
        """An unreadable input row: logged once per job, by the first walk that reaches it."""
        if row.row > self.cp.unreadable_logged:
            self.log_error({"record_id": None, "row": row.row, "stage": None, "attempt": 0,
                            "error_type": "input_error", "message": row.message})
            self.cp.unreadable_logged = row.row

    def counted(self, counts: ScanCounts) -> None:
        """A walk read the whole input: its counts are the job's, exactly."""
        cp = self.cp
        cp.total_records, cp.duplicates = counts.records, counts.duplicates
        cp.input_errors, cp.empty_rows = counts.unreadable, counts.empty
        cp.counts_exact = True

    def at_least(self, records: int) -> None:
        """The input holds at least `records` records (the walk met every one after its start)."""
        self.cp.total_records = max(self.cp.total_records, records)

    def counts_unknown(self) -> None:
        """The input changed under the run: its counts are of a file that no longer exists."""
        self.cp.counts_exact = False

    def note_models(self, models: dict[str, Any]) -> None:
        """What the answers said of the models, for the checkpoint."""
        self.cp.models = models

    def log_error(self, error: AttemptError | dict[str, Any]) -> None:
        """One line of the error log (a failed attempt, or an unreadable input row). A failed attempt is booked
        here once, for the whole job: its line, the checkpoint's last errors and its stage's attempt errors."""
        assert self.errorlog is not None
        fields = error if isinstance(error, dict) else {
            "record_id": error.record_id, "row": error.row, "stage": error.stage, "attempt": error.attempt,
            "error_type": error.error_type, "message": error.message}
        if self.broken is not None and self.broken.path == str(self.paths.errors):
            return
        try:
            entry = self.errorlog.record(**fields)
        except OSError as exc:
            raise self._broke(self.paths.errors, exc) from None
        self.cp.errors.append(entry)
        if isinstance(error, AttemptError):
            _bump(_stage(self.cp.stage_totals, error.stage)["attempt_errors"], error.error_type)

    def flush(self) -> None:
        if self.writer is not None:
            self._write(self.writer.flush)

    def save_due(self) -> bool:
        """Every --checkpoint-interval records, at least 1 s apart and never more than ~5 % of the run spent
        writing checkpoints; and at least every 10 s while anything is new."""
        now = self.clock()
        gap = max(1.0, 20 * self._save_cost)
        interval_due = self._since_save >= self.plan.options.checkpoint_interval
        return (interval_due and now - self._last_save >= gap) or (self._since_save > 0
                                                                    and now - self._last_save >= 10)

    def save(self, resume_at: dict[str, int] | None = None, *, pace: dict[str, Any] | None = None) -> None:
        """fsync the output, claim its rows, write the checkpoint (atomically)."""
        cp = self.cp
        started = self.clock()
        if self.writer is not None and not self._output_broken():
            self._check_output_file()
            self._write(self.writer.sync)
            for record_id in self._unsynced:
                cp.completed_ids.add(record_id)
            self._unsynced.clear()
            cp.output_bytes, cp.output_crc32 = self.writer.size, self.writer.crc32
            cp.output_rows = cp.completed_count
        cp.elapsed_seconds += started - self._elapsed_mark
        self._elapsed_mark = started
        cp.run_done = self.run_completed + self.run_failed
        cp.run_seconds = started - self._run_started
        # While the output cannot take rows, records handed to it may be lost: the resume mark stays where the
        # output last was whole, so the next run reads those records again.
        if (resume_at is not None or self.mode != JobMode.RETRY_FAILED) and not self._output_broken():
            cp.resume_at = resume_at if resume_at is None or resume_at.get("offset") else None
        if pace is not None:
            cp.pace = pace
        self._guard_foreign_writer()
        try:
            write_checkpoint(self.paths.checkpoint, cp)
        except OSError as exc:
            raise self._broke(self.paths.checkpoint, exc) from None
        st = self.paths.checkpoint.stat()
        self._written_stat = (st.st_ino, st.st_mtime_ns)
        self._since_save = 0
        self._last_save = self.clock()
        self._save_cost = self._last_save - started

    def _check_output_file(self) -> None:
        """The file this run appends to is still the output: not deleted, not replaced by another program (an
        editor's save, a `mv`, a cleanup script). Rows written to a replaced file are not claimed."""
        assert self.writer is not None
        try:
            here = self.paths.output.stat()
            same = (here.st_dev, here.st_ino) == self.writer.identity()
        except FileNotFoundError:
            same = False
        if not same:
            self._output_failed = True
            failure = WriteFailed(str(self.paths.output), "it was replaced or deleted by another program while this "
                                  "run wrote to it", "the rows written since are not in it; run again with --resume "
                                  "(the records missing from it are done again)")
            self.broken = self.broken or failure
            raise failure

    def _guard_foreign_writer(self) -> None:
        """Two jobs given one --checkpoint would overwrite each other's: stop when another process wrote it."""
        if self._written_stat is None:
            return
        try:
            st = self.paths.checkpoint.stat()
        except FileNotFoundError:
            return  # deleted by hand: written again below
        if (st.st_ino, st.st_mtime_ns) != self._written_stat:
            raise ConfigError(f"{self.paths.checkpoint} was written by another process while this run used it "
                              "(two jobs given the same --checkpoint?); give each job its own")

    def finish(self, status: str, resume_at: dict[str, int] | None, pace: dict[str, Any] | None = None) -> None:
        """The final status and checkpoint: as much of it as the disk allows."""
        self.cp.status = status
        said = str(self.broken) if self.broken is not None else None  # the run's stop already said it
        try:
            self.save(resume_at, pace=pace)
        except (WriteFailed, ConfigError) as exc:
            if str(exc) != said:
                log.error("%s", exc)

    def write_report(self, report: dict[str, Any]) -> None:
        """The report, redacted, replaced whole; a failure is remembered like any other write failure."""
        try:
            text = json.dumps(redact_tree(report), indent=2, ensure_ascii=False) + "\n"
            atomic_write(self.paths.report, text.encode("utf-8"), durable=False)
        except OSError as exc:
            self._broke(self.paths.report, exc)

    def close(self) -> None:
        """Close the files; a failure here was already reported (or is remembered), never raised."""
        if self.writer is not None:
            if self._output_broken():
                self.writer.abandon()
            else:
                try:
                    self.writer.close()
                except OSError as exc:
                    self._broke(self.paths.output, exc)
        if self.errorlog is not None:
            try:
                self.errorlog.close()
            except OSError as exc:
                self._broke(self.paths.errors, exc)

    def _output_broken(self) -> bool:
        return self._output_failed

    # --- write failures -------------------------------------------------------------------------------

    def _write(self, action: Callable[[], None]) -> None:
        if self._output_broken():
            raise self.broken or WriteFailed(str(self.paths.output), "an earlier write failed")
        try:
            action()
        except OSError as exc:
            self._output_failed = True
            raise self._broke(self.paths.output, exc) from None

    def _broke(self, path: Path, exc: OSError) -> WriteFailed:
        """Remember the first write that failed (the one the closing line names) and return it."""
        if self.broken is None:
            self.broken = WriteFailed(str(path), exc.strerror or str(exc))
        return self.broken

    def _value_replaced(self, column: str, record_id: str) -> None:
        self.replaced_values += 1
        log.warning("record %s: a value of %s could not be written as UTF-8 (a lone surrogate?); the "
                    "characters were replaced", record_id, column)


def _stage(stages: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    entry = stages.setdefault(name, {})
    entry.setdefault("succeeded", 0)
    entry.setdefault("skipped", 0)
    entry.setdefault("failed_records", {})
    entry.setdefault("attempt_errors", {})
    return entry


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1
