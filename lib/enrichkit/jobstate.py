"""A job as the files it wrote say it is: state (checked against the live PID), progress, rate, ETA.

Read-only by design: the job tools look at a job from another terminal or from cron while it may be
running, so nothing here writes, truncates or locks anything a run uses (see `enrichkit.jobaudit`
for reading the output and the input).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrichkit.checkpoint import Checkpoint, read_checkpoint
from enrichkit.errors import ConfigError, UsageError

SUFFIX = ".progress.json"
_SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}
# A process that started more than this after the checkpoint (or lock) named its PID cannot be the
# run that wrote it: the PID was reused (after a reboot, say). Timestamps have 1 s resolution.
_START_SLACK = 2.0
# States in which a run is no longer under way; the others are "running", "starting", "unknown".
STOPPED = ("interrupted", "completed", "completed_with_failures", "budget_exhausted", "failed")


@dataclass(frozen=True)
class JobPaths:
    """The files of one job, derived as `scripts/enrich.py` names them (from the checkpoint's output)."""

    checkpoint: Path
    output: Path
    input: Path
    errors: Path
    report: Path
    lock: Path

    @classmethod
    def of(cls, checkpoint: Path, cp: Checkpoint) -> JobPaths:
        output = Path(cp.output) if cp.output else checkpoint.with_name(checkpoint.name[: -len(SUFFIX)] + ".csv")
        stem = output.with_suffix("")
        return cls(checkpoint=checkpoint, output=output, input=Path(str(cp.input.get("path", ""))),
                   errors=Path(cp.errors_path or f"{stem}.errors.jsonl"),
                   report=Path(cp.report_path or f"{stem}.report.json"),
                   lock=Path(f"{stem}.lock"))


@dataclass
class JobStatus:
    """What `jobs.py status` shows; `to_json()` is its `--json`."""

    paths: JobPaths
    cp: Checkpoint
    state: str  # running | starting | unknown | one of STOPPED
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
        return max(0, self.cp.total_records - self.done - self.failed)

    @property
    def progress_pct(self) -> float:
        return round(100.0 * (self.done + self.failed) / self.total, 1) if self.total else 100.0

    @property
    def records_per_min(self) -> float | None:
        """Records completed per minute of running time, over every run of the job."""
        elapsed = self.cp.elapsed_seconds
        return round(self.done / elapsed * 60, 1) if elapsed > 0 and self.done else None

    @property
    def eta_seconds(self) -> float | None:
        """Running time still needed for the pending records, at the job's pace so far (failures take
        time too, so the pace counts them); 0 when nothing is pending, None before any figure exists."""
        if not self.pending:
            return 0.0
        processed = self.done + self.failed
        if self.cp.elapsed_seconds <= 0 or not processed:
            return None
        return round(self.pending * self.cp.elapsed_seconds / processed, 1)

    @property
    def last_error(self) -> dict[str, Any] | None:
        return dict(self.cp.errors[-1]) if self.cp.errors else None

    @property
    def can_resume(self) -> bool:
        """`enrich.py --resume` would have work to do now."""
        return self.state in STOPPED and self.pending > 0

    @property
    def can_retry_failed(self) -> bool:
        return self.state in STOPPED and self.failed > 0

    def updated_ago(self) -> float | None:
        stamp = parse_utc(self.cp.last_updated)
        return None if stamp is None else max(0.0, self.now - stamp)

    def resume_args(self, flag: str = "--resume") -> list[str]:
        """The `enrich.py` arguments that continue this job (the flags that decide its config fingerprint)."""
        cp, paths = self.cp, self.paths
        args = ["--input", str(paths.input), "--output", str(paths.output)]
        if cp.stages_file:
            args += ["--stages-file", cp.stages_file]
        if cp.stages:
            args += ["--stages", ",".join(cp.stages)]
        if cp.id_columns:
            args += ["--id-columns", ",".join(cp.id_columns)]
        default = Path(f"{paths.output.with_suffix('')}{SUFFIX}")
        if paths.checkpoint.resolve() != default.resolve():
            args += ["--checkpoint", str(paths.checkpoint)]
        return [*args, flag]

    def to_json(self) -> dict[str, Any]:
        cp = self.cp
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
            "total_tokens": cp.total_tokens,
            "prompt_tokens": cp.prompt_tokens,
            "output_tokens": cp.output_tokens,
            "cost_usd": round(cp.cost_usd, 6),
            "requests": cp.requests,
            "retries": cp.retries,
            "rate_limited": cp.rate_limited,
            "cache_hits": cp.cache_hits,
            "records_per_min": self.records_per_min,
            "eta_seconds": self.eta_seconds,
            "elapsed_seconds": round(cp.elapsed_seconds, 3),
            "runs": cp.runs,
            "started_at": cp.started_at,
            "last_updated": cp.last_updated,
            "last_error": self.last_error,
            "can_resume": self.can_resume,
            "can_retry_failed": self.can_retry_failed,
            "input": str(self.paths.input),
            "output": str(self.paths.output),
            "stages": cp.stages,
            "duplicates": cp.duplicates,
            "input_errors": cp.input_errors,
        }


# --- processes ------------------------------------------------------------------------------------


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """Is `pid` a live process on this host (not a zombie), and, when `started_by` (epoch seconds) is
    given, one that had started by then? The second test rejects a PID reused since it was recorded."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (not Linux): the signal test is all there is
    state, start = stat
    if state in ("Z", "X"):
        return False  # exited, waiting for its parent to reap it
    return started_by is None or start is None or start <= started_by + _START_SLACK


def _proc_stat(pid: int) -> tuple[str, float | None] | None:
    """(state letter, start time in epoch seconds) from /proc, or None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ("X", None) if Path("/proc/self/stat").exists() else None
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ", which may hold spaces
    try:
        ticks = int(fields[19])  # field 22, starttime, in clock ticks after boot
        return fields[0], _boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return (fields[0] if fields else "?"), None


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def lock_holder(lock: Path) -> tuple[int, str, float] | None:
    """(pid, host, when written) from the lock's `.owner` sidecar; a run removes it when it ends,
    kill -9 leaves it behind (so the PID must still be checked)."""
    owner = lock.with_name(lock.name + ".owner")
    try:
        data = json.loads(owner.read_text(encoding="utf-8"))
        return int(data["pid"]), str(data["host"]), owner.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- reading a job --------------------------------------------------------------------------------


def load_status(checkpoint: Path, *, now: float | None = None, host: str | None = None,
                alive: Callable[[int, float | None], bool] = process_alive) -> JobStatus:
    """Read a job's checkpoint and decide its state. `running` only if its PID is alive on this host."""
    cp = read_checkpoint(checkpoint)
    paths = JobPaths.of(checkpoint, cp)
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    state, pid = decide_state(cp, lock_holder(paths.lock), host, alive)
    return JobStatus(paths, cp, state, pid, now)


def decide_state(cp: Checkpoint, holder: tuple[int, str, float] | None, host: str,
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
        pid, owner_host, written = holder
        finishing = pid == cp.pid and cp.status != "running"  # its last checkpoint is written; it is exiting
        if owner_host == host and not finishing and alive(pid, written):
            return "starting", pid
    if cp.status == "running":
        return ("unknown" if cp.host and cp.host != host else "interrupted"), None
    return cp.status, None


def find_checkpoints(root: Path) -> list[Path]:
    """Every `*.progress.json` under `root`, skipping hidden folders (.git, .venv) and package trees."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        found += [Path(folder) / name for name in sorted(files) if name.endswith(SUFFIX) and not name.startswith(".")]
    return found


def resolve_checkpoint(arg: str | None, cwd: Path | None = None) -> Path:
    """A CHECKPOINT argument: the progress file itself, a job's output CSV (its checkpoint beside it),
    or a folder holding exactly one job; none = the one job under the current folder."""
    if arg is None or Path(arg).is_dir():
        root = Path(arg) if arg is not None else (cwd or Path.cwd())
        found = find_checkpoints(root)
        if len(found) == 1:
            return found[0]
        if not found:
            raise UsageError(f"no job under {root} (no *{SUFFIX} found); pass a CHECKPOINT")
        raise AmbiguousJob(root, found)
    path = Path(arg)
    if path.suffix.lower() == ".csv" and not path.name.endswith(SUFFIX):
        path = Path(f"{path.with_suffix('')}{SUFFIX}")
    if not path.exists():
        raise UsageError(f"{arg}: no such checkpoint (a job's *{SUFFIX}, beside its output)")
    if not path.is_file():
        raise UsageError(f"{arg}: not a file")
    return path


class AmbiguousJob(UsageError):
    """Several jobs where one was expected; carries them so the CLI can list them."""

    def __init__(self, root: Path, found: list[Path]) -> None:
        super().__init__(f"{len(found)} jobs under {root}; pass one of them as CHECKPOINT")
        self.found = found


def load_all(checkpoints: Iterable[Path], **kwargs: Any) -> Iterator[JobStatus | tuple[Path, str]]:
    """Each job's status, or (path, reason) for a file that is not a readable checkpoint."""
    for path in checkpoints:
        try:
            yield load_status(path, **kwargs)
        except ConfigError as exc:
            yield path, str(exc)


def newest_first(jobs: list[JobStatus]) -> list[JobStatus]:
    return sorted(jobs, key=lambda j: (parse_utc(j.cp.last_updated) or 0.0, j.cp.started_at), reverse=True)


def totals(jobs: list[JobStatus]) -> dict[str, Any]:
    """What `jobs.py stats` shows: sums across jobs, and the success rate of the records tried."""
    done = sum(j.done for j in jobs)
    failed = sum(j.failed for j in jobs)
    states: dict[str, int] = {}
    for j in jobs:
        states[j.state] = states.get(j.state, 0) + 1
    elapsed = sum(j.cp.elapsed_seconds for j in jobs)
    return {
        "jobs": len(jobs),
        "states": dict(sorted(states.items())),
        "records": sum(j.total for j in jobs),
        "done": done,
        "failed": failed,
        "pending": sum(j.pending for j in jobs),
        "success_rate": round(done / (done + failed), 4) if done + failed else None,
        "total_tokens": sum(j.cp.total_tokens for j in jobs),
        "cost_usd": round(sum(j.cp.cost_usd for j in jobs), 6),
        "requests": sum(j.cp.requests for j in jobs),
        "rate_limited": sum(j.cp.rate_limited for j in jobs),
        "elapsed_seconds": round(elapsed, 3),
        "records_per_min": round(done / elapsed * 60, 1) if elapsed > 0 and done else None,
    }


def parse_utc(stamp: str) -> float | None:
    try:
        return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except (TypeError, ValueError):
        return None


def stop_signal_for(pid: int) -> int:
    """SIGINT (the run drains and writes `interrupted`), unless the process ignores it: a run started in
    the background by a script (`make enrich &`) ignores SIGINT until the runner installs its handler,
    so while it is still setting up, SIGTERM (same handling once running) is the signal that works."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return signal.SIGINT
    for line in text.splitlines():
        if line.startswith("SigIgn:"):
            ignored = int(line.split()[1], 16)
            return signal.SIGTERM if ignored & (1 << (signal.SIGINT - 1)) else signal.SIGINT
    return signal.SIGINT


@dataclass
class StopResult:
    """What `stop_run` did: `outcome` is stopped | none (no live run) | elsewhere (another host) |
    denied (another user's process) | timeout (still running); `job` is the state at the end."""

    outcome: str
    pid: int | None
    job: JobStatus


def stop_run(checkpoint: Path, timeout: float, *, on_signal: Callable[[int], None] = lambda pid: None,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> StopResult:
    """Ask the job's live run to stop as Ctrl+C would, and wait until it has (or `timeout` passes).

    Done when the process is gone, or when its checkpoint no longer says running (then a short grace
    for the exit, so the lock is free for whoever runs next)."""
    job = load_status(checkpoint)
    if job.state == "unknown":
        return StopResult("elsewhere", None, job)
    pid = job.active_pid
    if pid is None:
        return StopResult("none", None, job)
    try:
        os.kill(pid, stop_signal_for(pid))
    except ProcessLookupError:
        return StopResult("none", None, load_status(checkpoint))
    except PermissionError:
        return StopResult("denied", pid, job)
    on_signal(pid)
    was_running = job.state == "running"
    deadline = clock() + timeout
    while process_alive(pid):
        if was_running and load_status(checkpoint).cp.status != "running":
            grace = min(deadline, clock() + 2.0)
            while process_alive(pid) and clock() < grace:
                sleep(0.05)
            break
        if clock() >= deadline:
            return StopResult("timeout", pid, load_status(checkpoint))
        sleep(0.1)
    return StopResult("stopped", pid, load_status(checkpoint))
