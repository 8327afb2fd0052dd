"""A job as the files it wrote say it is: state (checked against the live PID), progress, rate, ETA.

Read-only by design: the job tools look at a job from another terminal, from cron or from the
dashboard while it may be running, so nothing here writes, truncates or locks a file a run uses.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from enrichkit.config.lifecycle import notes_lines
from enrichkit.errors import ConfigError
from enrichkit.jobs.continuing import continue_args, continue_command, next_command
from enrichkit.run.progress import format_duration
from enrichkit.store.checkpoint import Checkpoint, CheckpointSummary, read_checkpoint, read_summary
from enrichkit.store.jobfiles import (
    CHECKPOINT_SUFFIX,
    STOPPED,
    JobPaths,
    Owner,
    held_regular,
    is_run,
    read_owner,
)

CHECKPOINT_MAX = 256 << 20  # ~7 million records' IDs; a bigger "checkpoint" is shown as unreadable
ACTIVE = ("running", "starting")  # a run of the job is under way on this host


def job_paths(checkpoint: Path, cp: Checkpoint) -> JobPaths:
    """The job's files as the checkpoint records them; `checkpoint` is where it was found."""
    base = Path(str(cp.options.get("cwd") or checkpoint.parent))
    output = Path(cp.output) if cp.output else checkpoint.with_name(
        checkpoint.name[: -len(CHECKPOINT_SUFFIX)] + ".csv")
    recorded = str(cp.input.get("path") or "")
    return JobPaths.for_output(base / output, checkpoint=checkpoint, report=cp.report_path or None,
                               errors=cp.errors_path or None, input=base / recorded if recorded else None)


@dataclass
class JobStatus:
    """What `jobs.py status` shows; `to_json()` is its `--json` (and the dashboard's API). `cp` is
    usually read without its ID lists (`read_summary`); `with_ids()` has them."""

    paths: JobPaths
    cp: Checkpoint
    state: str  # running | starting | unknown | one of jobfiles.STOPPED
    active_pid: int | None  # the live run's PID on this host, if any
    now: float

    @property
    def total(self) -> int:
        return max(self.cp.total_records, self.done + self.failed)

    @property
    def done(self) -> int:
        return self.cp.completed_count

    @property
    def failed(self) -> int:
        return self.cp.failed_count

    @property
    def pending(self) -> int:
        return self.cp.records_left

    @property
    def progress_pct(self) -> float:
        return round(100.0 * (self.done + self.failed) / self.total, 1) if self.total else 100.0

    @property
    def rate_window(self) -> str:
        """"run": while a run is under way, its own figures (records done / seconds since it started,
        as its log lines count them); "job": once stopped, the job's average over every run."""
        return "run" if self.state == "running" and self.cp.run_seconds > 0 else "job"

    @property
    def records_per_min(self) -> float | None:
        if self.rate_window == "run":
            done, seconds = self.cp.run_done, self.cp.run_seconds
        else:
            done, seconds = self.done, self.cp.elapsed_seconds
        return round(done / seconds * 60, 1) if seconds > 0 and done else None

    @property
    def eta_seconds(self) -> float | None:
        """Running time the pending records still need at `records_per_min`; 0 when none is pending,
        None before there is a rate."""
        if not self.pending:
            return 0.0
        rate = self.records_per_min
        return round(self.pending / rate * 60, 1) if rate else None

    @property
    def last_error(self) -> dict[str, Any] | None:
        if not self.cp.errors:
            return None
        last = self.cp.errors[-1]
        return dict(last) if isinstance(last, dict) else {"message": str(last)}  # a hand-edited file

    @property
    def can_resume(self) -> bool:
        """`enrich.py --resume` would have work to do now."""
        return self.state in STOPPED and self.pending > 0

    @property
    def can_retry_failed(self) -> bool:
        return self.state in STOPPED and self.failed > 0

    @property
    def fill_rates(self) -> dict[str, float | None]:
        """Per output field: the share of the output's rows where it is non-empty."""
        return {name: round(self.cp.filled.get(name, 0) / self.done, 4) if self.done else None
                for name in self.cp.fields}

    def updated_ago(self) -> float | None:
        stamp = parse_utc(self.cp.last_updated)
        return None if stamp is None else max(0.0, self.now - stamp)

    def with_ids(self) -> Checkpoint:
        """The checkpoint with its completed and failed ID lists (read now if `cp` is a summary)."""
        return read_checkpoint(self.paths.checkpoint) if isinstance(self.cp, CheckpointSummary) else self.cp

    def resume_args(self, flag: str = "--resume") -> list[str]:
        return continue_args(self.paths, flag)

    def command(self, flag: str = "--resume") -> str:
        return continue_command(self.paths, flag, self.state)

    @property
    def next_command(self) -> str | None:
        """The command that continues this job now; None while a run is active or when nothing is left."""
        if self.state not in STOPPED:
            return None
        return next_command(self.paths, self.state, pending=self.pending, failed=self.failed)

    def to_json(self) -> dict[str, Any]:
        cp, t = self.cp, self.cp.totals
        return {
            "checkpoint": str(self.paths.checkpoint),
            "job_id": cp.job_id,
            "state": self.state,
            "recorded_status": cp.status,
            "pid": cp.pid,
            "host": cp.host,
            "active_pid": self.active_pid,
            "progress_pct": self.progress_pct,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "total_tokens": t.total_tokens,
            "prompt_tokens": t.prompt_tokens,
            "output_tokens": t.output_tokens,
            "thinking_tokens": t.thinking_tokens,
            "cost_usd": round(t.cost_usd, 6),
            "token_cost_usd": round(t.token_cost_usd, 6),
            "grounding_cost_usd": round(t.grounding_cost_usd, 6),
            "grounded_prompts": t.grounded_prompts,
            "search_queries": t.search_queries,
            "requests": t.requests,
            "retries": t.retries,
            "rate_limited": t.rate_limited,
            "cache_hits": t.cache_hits,
            "records_per_min": self.records_per_min,
            "eta_seconds": self.eta_seconds,
            "rate_window": self.rate_window,
            "elapsed_seconds": round(cp.elapsed_seconds, 3),
            "run_started_at": cp.run_started_at,
            "run_done": cp.run_done,
            "run_seconds": round(cp.run_seconds, 3),
            "runs": cp.runs,
            "started_at": cp.started_at,
            "last_updated": cp.last_updated,
            "last_error": self.last_error,
            "can_resume": self.can_resume,
            "can_retry_failed": self.can_retry_failed,
            "resume_command": self.command() if self.can_resume else None,
            "retry_failed_command": self.command("--retry-failed") if self.can_retry_failed else None,
            "next_command": self.next_command,
            "max_cost": cp.options.get("max_cost"),
            "input": str(self.paths.input),
            "output": str(self.paths.output),
            "stages": cp.stages,
            "duplicates": cp.duplicates,
            "input_errors": cp.input_errors,
            "empty_rows": cp.empty_rows,
            "pace": cp.pace,
            "models": cp.models,
            "model_notes": notes_lines(cp.models),  # deprecated models, answers from another model, unpriced
            "batch": cp.batch,  # --batch: the Google batch jobs (in flight, records they hold, each job's state)
            "stage_totals": cp.stage_totals.to_json(),
            "fill_rates": self.fill_rates,
        }


# --- reading a job --------------------------------------------------------------------------------


def read_job_summary(checkpoint: Path) -> Checkpoint:
    """`read_summary` of a checkpoint that is a regular file of at most CHECKPOINT_MAX bytes; a FIFO, a
    device, a link or a huge file is a one-line `ConfigError`, never a read that blocks or fills memory.
    The file is opened once, checked, and read through that open file (/proc/self/fd), so nothing
    swapped in under its name since is read."""
    try:
        with held_regular(checkpoint) as (held, st):
            if st.st_size > CHECKPOINT_MAX:
                raise ConfigError(f"{checkpoint}: {st.st_size:,} bytes: too big for a checkpoint "
                                  f"(at most {CHECKPOINT_MAX:,})")
            try:
                return read_summary(held)
            except ConfigError as exc:
                raise ConfigError(str(exc).replace(str(held), str(checkpoint))) from None
    except OSError as exc:
        raise ConfigError(f"{checkpoint}: cannot read the checkpoint: {exc.strerror or exc}") from None


def load_status(checkpoint: Path, *, cp: Checkpoint | None = None, now: float | None = None,
                host: str | None = None, alive: Callable[[int, float | None], bool] | None = None) -> JobStatus:
    """Read a job's checkpoint (its summary, unless given as `cp`) and decide its state. `running` only if
    its PID is alive on this host and holds the job's lock (`jobfiles.is_run`; `alive` replaces that
    check in tests)."""
    cp = read_job_summary(checkpoint) if cp is None else cp
    paths = job_paths(checkpoint, cp)
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    state, pid = decide_state(cp, read_owner(paths.lock, trusted=True), host, alive or run_check(paths))
    return JobStatus(paths, cp, state, pid, now)


def run_check(paths: JobPaths) -> Callable[[int, float | None], bool]:
    """Is a PID the live run of this job: alive, started by the time given, holding its lock or output."""
    return lambda pid, started_by: is_run(pid, started_by, paths.lock, paths.output)


class Recorded(Protocol):
    """What deciding a job's state reads from its checkpoint."""

    status: str
    pid: int
    host: str
    last_updated: str
    stop_reason: str


def decide_state(cp: Recorded, holder: Owner | None, host: str,
                 alive: Callable[[int, float | None], bool]) -> tuple[str, int | None]:
    """(state, PID of the live run or None).

    - the checkpoint says running and its PID lives here: `running`;
    - another live process here holds the lock (a run still setting up: checking the output,
      reading the input): `starting`, whatever the checkpoint says;
    - the checkpoint says running but that run is gone: `interrupted` (it was killed);
    - the checkpoint says running on another host: `unknown` (this host cannot check it).
    """
    if cp.status == "running" and cp.host == host and alive(cp.pid, parse_utc(cp.last_updated)):
        return "running", cp.pid
    if holder is not None:
        finishing = holder.pid == cp.pid and cp.status != "running"  # its last checkpoint is written; it is exiting
        if holder.host == host and not finishing and alive(holder.pid, holder.written):
            return "starting", holder.pid
    if cp.status == "running":
        if cp.host and cp.host != host:
            return "unknown", None
        # A batch run that died leaves its Google jobs running: the job is waiting for them, not stopped.
        batch = getattr(cp, "batch", None) or {}  # a checkpoint's; a listing's summary may not carry it
        return ("waiting" if batch.get("jobs_in_flight") else "interrupted"), None
    if cp.status == "interrupted" and cp.stop_reason == "limit":
        return "limit_reached", None  # stopped as asked by --limit; the checkpoint keeps SPEC's `interrupted`
    return cp.status, None


def duration_text(seconds: float) -> str:
    """A span as people read it: "8.5 s" under a minute, else "3m07s" or "2h05m"."""
    return f"{seconds:.3g} s" if seconds < 60 else format_duration(seconds)


def parse_utc(stamp: str) -> float | None:
    try:
        return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except (TypeError, ValueError):
        return None
