"""The one thing the job tools do to a run: ask it to stop, as Ctrl+C in its terminal would (`jobs.py
cancel` waits for it, the dashboard's Cancel does not)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from enrichkit.jobs.state import JobStatus, load_status
from enrichkit.store.jobfiles import distrust_path, owner_path, process_alive


def stop_signal_for(pid: int) -> int:
    """SIGINT (the run drains and writes `interrupted`), unless the process ignores it: a run started in
    the background by a script (`make enrich &`) ignores SIGINT until the CLI installs its handler,
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
    """What `send_stop`/`stop_run` did: `outcome` is signalled (asked, not waited for) | stopped |
    none (no live run) | elsewhere (another host) | denied (another user's process) | untrusted (the
    job's files are not this user's own: `why`) | timeout (still running); `job` is the state at the end."""

    outcome: str
    pid: int | None
    job: JobStatus
    why: str = ""


def distrusted(job: JobStatus) -> str | None:
    """Why the job's checkpoint or lock owner file is not evidence to act on (`jobfiles.distrust`)."""
    why = distrust_path(job.paths.checkpoint)
    if why is not None:
        return f"its checkpoint {job.paths.checkpoint} is {why}"
    owner = owner_path(job.paths.lock)
    if os.path.lexists(owner) and (why := distrust_path(owner)) is not None:
        return f"its lock owner file {owner} is {why}"
    return None


def send_stop(checkpoint: Path) -> StopResult:
    """Ask the job's live run to stop as Ctrl+C would, without waiting (the dashboard's Cancel). Only a
    PID verified to be the job's run (alive, holding the job's lock: `state.load_status`) named by files
    this user owns is signalled."""
    job = load_status(checkpoint)
    why = distrusted(job)
    if why is not None:
        return StopResult("untrusted", None, job, why)
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
    return StopResult("signalled", pid, job)


def stop_run(checkpoint: Path, timeout: float, *, on_signal: Callable[[int], None] = lambda pid: None,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> StopResult:
    """`send_stop`, then wait until the run has stopped (or `timeout` passes): done when the process is
    gone, or when its checkpoint no longer says running (then a short grace for the exit, so the
    lock is free for whoever runs next)."""
    sent = send_stop(checkpoint)
    if sent.outcome != "signalled" or sent.pid is None:
        return sent
    pid = sent.pid
    on_signal(pid)
    was_running = sent.job.state == "running"
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
