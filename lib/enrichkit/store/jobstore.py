"""The job store: the output, the checkpoint, the error log and the report, and the order they are written in.
The single writer of the checkpoint: others tell it what happened, and ask it.

    open    what the checkpoint means and the output read back (`store.recovery`);
    commit  a finished record: its row is written (`store.outputrows`; flushed by the caller's batch), its figures
            booked (`store.tally`);
    save    fsync the output, then claim its rows and record the resume mark (`store.resumemark`) in the checkpoint
            (temp file, fsync, rename), when `store.cadence` says it is due;
    finish  the final status, checkpoint and report.

Beside those it books what the walk found (unreadable rows to the error log, the input's counts once known),
failed attempts to the error log, and what the answers said of the models and the money held for them.

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
from typing import Any

from enrichkit.config.lifecycle import merge as merge_notes
from enrichkit.config.plan import JobMode, Plan
from enrichkit.errors import ConfigError, WriteFailed
from enrichkit.logs import log
from enrichkit.redact import redact_tree
from enrichkit.run.enricher import AttemptError, RecordResult
from enrichkit.store.cadence import SaveCadence
from enrichkit.store.checkpoint import Checkpoint, utc_now, write_checkpoint
from enrichkit.store.errorlog import ErrorLog
from enrichkit.store.jobfiles import atomic_write
from enrichkit.store.outputrows import OutputRows, WriteFailures
from enrichkit.store.recovery import recover_job
from enrichkit.store.resumemark import ResumeMark
from enrichkit.store.tally import Tally
from enrichkit.tables.records import BadRow
from enrichkit.tables.scan import Position, ScanCounts


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
        self.tally = Tally(cp, plan.stages.output_fields)  # what records add to the job's and this run's figures
        self.run = self.tally.run  # this run's figures (the checkpoint's are the job's)
        self.mark = ResumeMark(mode, cp.resume_at, counts_known=cp.counts_exact and not input_changed)
        self.clock = clock
        self.failures = WriteFailures()
        self.output = OutputRows(self.paths.output, self.failures)
        self.errorlog: ErrorLog | None = None
        self.cadence = SaveCadence(plan.options.checkpoint_interval, clock)
        self._run_started = clock()
        self._elapsed_mark = clock()
        self._written_stat: tuple[int, int] | None = None  # (inode, mtime_ns) of the checkpoint we last wrote
        self._recovered_crc = 0  # CRC-32 of the output as the start found it: the writer's running CRC goes on
        self._models_before = dict(cp.models)  # the job's model notes from earlier runs
        self._unsettled_before = cp.unsettled_usd  # requests given up at their deadline in earlier runs (USD)

    @classmethod
    def open(cls, plan: Plan, *, confirm_fresh: Callable[[str], bool] = lambda message: False,
             relock: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic) -> JobStore:
        """The job's files as a run finds them (see `enrichkit.store.recovery`): raises `UsageError`/`ConfigError`
        (exit 2) before anything is written; may cut a torn last row."""
        job = recover_job(plan, confirm_fresh=confirm_fresh, relock=relock)
        store = cls(plan, job.cp, job.mode, input_changed=job.input_changed, adopted=job.adopted, clock=clock)
        store._recovered_crc = job.output_crc32
        return store

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
        self.output.open(plan.columns, plan.stages.output_fields, cp.job_id, bom=bool(plan.options.excel),
                         claimed_bytes=cp.output_bytes, crc32=self._recovered_crc, on_replaced=self._value_replaced)
        self.errorlog = ErrorLog(self.paths.errors)
        self.save()

    @property
    def broken(self) -> WriteFailed | None:
        """The first write that failed (the one the closing line names)."""
        return self.failures.first

    @property
    def unconfirmed(self) -> int:
        """Rows handed to the output that could not be confirmed on disk (it failed): a resume keeps the whole ones."""
        return self.output.unsynced if self.output.failed else 0

    def done_count(self) -> int:
        """Records done: claimed, plus those written since (unless the output could not take them)."""
        return self.cp.completed_count + (0 if self.output.failed else self.output.unsynced)

    def commit(self, r: RecordResult) -> None:
        """A finished, failed or abandoned record: its row, its figures, and the resume mark past it once it is
        written or failed. The row is flushed by `flush()`, which the pipeline calls once per batch of results."""
        if r.values is not None:
            try:
                self.output.write(r.values, r.record_id, f"{r.counters.cost_usd:.6f}")
            except WriteFailed:
                self.tally.charged(r)  # its row is lost, but what its calls cost is the job's
                raise
        self.tally.committed(r)
        if r.values is not None or r.failure is not None:
            self.mark.closed(r.record_id)

    def count_only(self, r: RecordResult) -> None:
        """A result that arrived after the run could no longer write: what it cost is still the job's."""
        self.tally.paid(r)

    def log_unreadable(self, row: BadRow) -> None:
        """An unreadable input row: logged once per job, by the first walk that reaches it."""
        if row.row > self.cp.unreadable_logged:
            self.log_error({"record_id": None, "row": row.row, "stage": None, "attempt": 0,
                            "error_type": "input_error", "message": row.message})
            self.cp.unreadable_logged = row.row

    def counted(self, counts: ScanCounts) -> None:
        """A walk read the whole input: its counts are the job's, exactly."""
        self.cp.take_counts(counts)

    def at_least(self, records: int) -> None:
        """The input holds at least `records` records (the walk met every one after its start)."""
        self.cp.total_records = max(self.cp.total_records, records)

    def counts_unknown(self) -> None:
        """The input changed under the run: its counts are of a file that no longer exists."""
        self.cp.counts_exact = False

    def note_models(self, snapshot: dict[str, Any]) -> None:
        """What this run's answers said of the models (`lifecycle.ModelNotes`), over what earlier runs' said."""
        self.cp.models = merge_notes(self._models_before, snapshot)

    def note_unsettled(self, usd: float) -> None:
        """What this run's requests given up at their deadline (or left on the wire) may have cost: Google may answer
        and bill them all the same, so --max-cost counts it in later runs."""
        self.cp.unsettled_usd = self.unsettled(usd)

    def note_batch(self, summary: dict[str, Any]) -> None:
        """--batch: the Google batch jobs, as the ledger sums them up (`batch.ledger.Ledger.summary`)."""
        self.cp.batch = summary

    def unsettled(self, given_up: float) -> float:
        """USD held for requests given up at their deadline, in earlier runs and this one (`given_up`)."""
        return self._unsettled_before + given_up

    def log_error(self, error: AttemptError | dict[str, Any]) -> None:
        """One line of the error log (a failed attempt, or an unreadable input row or a batch line, as a dict). A
        failed attempt is booked here once: its line, the checkpoint's last errors, and its stage's attempt errors in
        the job's figures and this run's."""
        assert self.errorlog is not None
        fields = error if isinstance(error, dict) else {
            "record_id": error.record_id, "row": error.row, "stage": error.stage, "attempt": error.attempt,
            "error_type": error.error_type, "message": error.message}
        if self.broken is not None and self.broken.path == str(self.paths.errors):
            return
        try:
            entry = self.errorlog.record(**fields)
        except OSError as exc:
            raise self.failures.broke(self.paths.errors, exc) from None
        self.cp.errors.append(entry)
        if isinstance(error, AttemptError):
            self.tally.attempt_error(error.stage, error.error_type)

    def flush(self) -> None:
        self.output.flush()

    def save_due(self) -> bool:
        return self.cadence.due(self.run.completed + self.run.failed)

    def save(self, read_to: Position | None = None, *, pace: dict[str, Any] | None = None) -> None:
        """fsync the output, claim its rows, record the resume mark (the walk having read to `read_to`), write the
        checkpoint (atomically)."""
        cp = self.cp
        started = self.clock()
        claimed = self.output.claim()
        if claimed is not None:
            for record_id in claimed:
                cp.completed_ids.add(record_id)
            cp.output_bytes, cp.output_crc32 = self.output.size, self.output.crc32
            cp.output_rows = cp.completed_count
        cp.elapsed_seconds += started - self._elapsed_mark
        self._elapsed_mark = started
        cp.run_done = self.run.completed + self.run.failed
        cp.run_seconds = started - self._run_started
        if self.mark.moves(output_whole=not self.output.failed):
            cp.resume_at = self.mark.at(read_to)
        if pace is not None:
            cp.pace = pace
        self._guard_foreign_writer()
        try:
            write_checkpoint(self.paths.checkpoint, cp)
        except OSError as exc:
            raise self.failures.broke(self.paths.checkpoint, exc) from None
        st = self.paths.checkpoint.stat()
        self._written_stat = (st.st_ino, st.st_mtime_ns)
        self.cadence.saved(started, self.run.completed + self.run.failed)

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

    def finish(self, status: str, read_to: Position | None, *, reason: str = "",
               pace: dict[str, Any] | None = None) -> None:
        """The final status (and `reason`: "limit" for a stop at --limit) and checkpoint: as much of it as the disk
        allows."""
        self.cp.status = status
        self.cp.stop_reason = reason
        said = str(self.broken) if self.broken is not None else None  # the run's stop already said it
        try:
            self.save(read_to, pace=pace)
        except (WriteFailed, ConfigError) as exc:
            if str(exc) != said:
                log.error("%s", exc)

    def write_report(self, report: dict[str, Any]) -> None:
        """The report, redacted, replaced whole; a failure is remembered like any other write failure."""
        try:
            text = json.dumps(redact_tree(report), indent=2, ensure_ascii=False) + "\n"
            atomic_write(self.paths.report, text.encode("utf-8"), durable=False)
        except OSError as exc:
            self.failures.broke(self.paths.report, exc)

    def close(self) -> None:
        """Close the files; a failure here was already reported (or is remembered), never raised."""
        self.output.close()
        if self.errorlog is not None:
            try:
                self.errorlog.close()
            except OSError as exc:
                self.failures.broke(self.paths.errors, exc)

    def _value_replaced(self, column: str, record_id: str) -> None:
        log.warning("record %s: a value of %s could not be written as UTF-8 (a lone surrogate?); the "
                    "characters were replaced", record_id, column)

