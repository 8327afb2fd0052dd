"""Starting a run of a job from the dashboard: `python -m enrichkit --input I --output O --resume`
(or `--retry-failed`), detached from the server, in the folder the job was started from (its `.env`
is there), its stdout and stderr appended to a log beside the job.

The run takes every other option from its checkpoint, so it continues exactly as the job was started.
The job's lock still decides: a second start exits 3, and `Launch` reports that exit to the page.

A checkpoint is evidence, not a command: the page shows the exact command a Resume starts (`planned`),
and `launch_problem` refuses a job whose checkpoint, working folder, input, output or stages file is not
this user's own (a planted checkpoint naming another user's stages module would run its code as this
user; one naming another user's folder would read the `.env` there).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import enrichkit
from enrichkit.errors import EXIT_LOCKED
from enrichkit.jobs.control import distrusted
from enrichkit.jobs.state import JobStatus
from enrichkit.store.checkpoint import utc_now
from enrichkit.store.jobfiles import distrust_path, held_regular, read_owner

ACTIONS = {"resume": "--resume", "retry-failed": "--retry-failed"}
_LOG_TAIL = 4096


def log_path(job: JobStatus) -> Path:
    """`<output stem>.run.log`: what the runs the dashboard started printed."""
    return Path(f"{job.paths.output.with_suffix('')}.run.log")


def run_folder(job: JobStatus, fallback: Path) -> Path:
    """Where the job was started (recorded by the run as `cwd`), else `fallback`."""
    recorded = job.cp.options.get("cwd")
    if recorded and Path(str(recorded)).is_dir():
        return Path(str(recorded))
    return fallback


def planned(job: JobStatus, action: str, fallback_cwd: Path) -> dict[str, Any]:
    """What Resume (or Retry failed) starts for this job, as the page shows it: the command, the folder
    it runs in, and the options it takes from the checkpoint."""
    command = run_command(job, action)
    cwd = run_folder(job, fallback_cwd)
    options = job.cp.options
    return {"argv": command, "cwd": str(cwd), "command": f"cd {shlex.quote(str(cwd))} && {shlex.join(command)}",
            "stages_file": job.cp.stages_file or None, "base_url": options.get("base_url") or None}


def launch_problem(job: JobStatus, fallback_cwd: Path) -> str | None:
    """Why the dashboard must not start a run of this job, or None: every file the run would act on
    or read its code and key from must be this user's own (`jobfiles.distrust`)."""
    why = distrusted(job)
    if why is not None:
        return why
    cwd = run_folder(job, fallback_cwd)
    checks: list[tuple[str, Path, bool]] = [("working folder", cwd, True)]
    if job.paths.input is not None:
        checks.append(("input", job.paths.input, False))
    output = job.paths.output
    checks.append(("output folder", output.parent, True))  # where the run log is appended, by name
    if os.path.lexists(output):
        checks.append(("output", output, False))
    if job.cp.stages_file:
        checks.append(("stages file", cwd / job.cp.stages_file, False))
    for role, path, folder in checks:
        if not folder and not os.path.lexists(path):
            continue  # a missing input or stages file: the run says so itself
        why = distrust_path(path, folder=folder)
        if why is not None:
            return f"the job's recorded {role} {path} is {why}; run it yourself if you trust it"
    return None


def run_command(job: JobStatus, action: str, max_cost: float | None = None) -> list[str]:
    """The run's command line; `max_cost` is a new --max-cost (a job that spent its budget needs one)."""
    budget = ["--max-cost", repr(float(max_cost))] if max_cost is not None else []
    return [sys.executable, "-m", "enrichkit", *job.resume_args(ACTIONS[action]), *budget]


@dataclass
class Launch:
    """One run the dashboard started, and how it ended when it has."""

    action: str
    pid: int
    log: Path
    started_at: str = field(default_factory=utc_now)
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None

    def poll(self) -> int | None:
        """The exit code once the run has ended (and reap it, so no zombie stays behind)."""
        if self.exit_code is None and self.process is not None:
            self.exit_code = self.process.poll()
        return self.exit_code

    def last_line(self) -> str:
        """The last line the run printed (its closing line, or its one-line error)."""
        try:
            with held_regular(self.log) as (held, st), open(held, "rb") as f:
                f.seek(max(0, st.st_size - _LOG_TAIL))
                lines = [line.strip() for line in f.read(_LOG_TAIL).decode("utf-8", "replace").splitlines()]
        except OSError:
            return ""
        return next((line for line in reversed(lines) if line and not line.startswith("===")), "")

    def to_json(self) -> dict[str, Any]:
        code = self.poll()
        return {"action": self.action, "pid": self.pid, "started_at": self.started_at, "log": str(self.log),
                "running": code is None, "exit_code": code, "locked": code == EXIT_LOCKED,
                "message": self.last_line() if code not in (None, 0) else ""}


def start_run(job: JobStatus, action: str, *, fallback_cwd: Path, max_cost: float | None = None, settle: float = 3.0,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Launch:
    """Start the run detached (its own session: stopping the server leaves it running) and wait until
    it holds the job's lock or has exited, for at most `settle` seconds, so the caller can say which."""
    command = run_command(job, action, max_cost)
    log = log_path(job)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    lib = str(Path(enrichkit.__file__).resolve().parents[1])  # so `-m enrichkit` finds this enrichkit
    env["PYTHONPATH"] = os.pathsep.join([lib, *filter(None, [env.get("PYTHONPATH")])])
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with open(os.open(log, flags, 0o644), "ab") as out:  # never through a link planted under its name
        out.write(f"=== {utc_now()} jobs.py serve: {action}: {' '.join(command[1:])}\n".encode())
        out.flush()
        process = subprocess.Popen(command, cwd=run_folder(job, fallback_cwd), env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    launch = Launch(action, process.pid, log, process=process)
    deadline = clock() + settle
    while launch.poll() is None and clock() < deadline:
        owner = read_owner(job.paths.lock)
        if owner is not None and owner.pid == process.pid:
            break  # it holds the lock: it is working
        sleep(0.05)
    return launch


class Launches:
    """The runs this server started, the latest per job (thread-safe: requests run in a pool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Launch] = {}

    def add(self, key: str, launch: Launch) -> None:
        with self._lock:
            self._by_key[key] = launch

    def get(self, key: str) -> Launch | None:
        with self._lock:
            return self._by_key.get(key)

    def reap(self) -> None:
        with self._lock:
            launches = list(self._by_key.values())
        for launch in launches:
            launch.poll()
