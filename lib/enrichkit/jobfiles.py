"""The files of one job: where they are, who holds the job, what state it is in, and the one way a
file is replaced (temp file beside it, fsync, rename, fsync the folder; no temp file left behind).

Both sides use this module: a run (`enrichkit.store`, `enrichkit.plan`) and the job tools that look
at a job from outside (`enrichkit.jobs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

Status = Literal["running", "interrupted", "completed", "completed_with_failures", "budget_exhausted", "failed"]
STATUSES: tuple[Status, ...] = ("running", "interrupted", "completed", "completed_with_failures",
                                "budget_exhausted", "failed")
# States in which no run is under way (the job tools add "starting" and "unknown" to the recorded ones, and show
# "limit_reached" for an `interrupted` checkpoint whose run stopped at its --limit: see jobs.state.decide_state).
STOPPED: tuple[str, ...] = ("interrupted", "limit_reached", "completed", "completed_with_failures",
                            "budget_exhausted", "failed")

CHECKPOINT_SUFFIX = ".progress.json"
# A process that started more than this after a file named its PID cannot be the one that wrote it:
# the PID was reused (after a reboot, say). Timestamps have 1 s resolution.
_START_SLACK = 2.0


@dataclass(frozen=True)
class JobPaths:
    """Every file of a job. All but `input` are written by a run and must differ from each other and
    from the input (see `enrichkit.plan.check_paths`)."""

    output: Path
    checkpoint: Path
    report: Path
    errors: Path
    lock: Path
    cache: Path
    input: Path | None = None

    @classmethod
    def for_output(cls, output: str | Path, *, checkpoint: str | Path | None = None, report: str | Path | None = None,
                   errors: str | Path | None = None, input: str | Path | None = None) -> JobPaths:
        """The paths `enrich.py` uses: each beside the output, named after its stem, unless given."""
        output = Path(output)
        stem = output.with_suffix("")
        return cls(
            output=output,
            checkpoint=Path(checkpoint) if checkpoint else Path(f"{stem}{CHECKPOINT_SUFFIX}"),
            report=Path(report) if report else Path(f"{stem}.report.json"),
            errors=Path(errors) if errors else Path(f"{stem}.errors.jsonl"),
            lock=Path(f"{stem}.lock"),
            cache=Path(f"{stem}.cache.sqlite"),
            input=Path(input) if input else None,
        )

    @property
    def owner(self) -> Path:
        """The lock's sidecar naming its holder (PID, host) for the message a second run prints."""
        return owner_path(self.lock)

    def written(self) -> dict[str, Path]:
        """The files a run writes, by the flag that names them (for collision checks and --fresh)."""
        return {"--output": self.output, "--checkpoint": self.checkpoint, "--report": self.report,
                "--errors": self.errors, "the lock": self.lock, "the lock's owner file": self.owner,
                "the cache": self.cache}

    def default_checkpoint(self) -> Path:
        return Path(f"{self.output.with_suffix('')}{CHECKPOINT_SUFFIX}")


def owner_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".owner")


@dataclass(frozen=True)
class Owner:
    """Who holds a job's lock, and when the sidecar was written (epoch seconds)."""

    pid: int
    host: str
    written: float


def write_owner(lock: Path) -> None:
    """Name this process as the lock's holder."""
    atomic_write(owner_path(lock), json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(),
                 durable=False)


def read_owner(lock: Path) -> Owner | None:
    """The holder named in the sidecar; None when there is none or it cannot be read. A run removes it
    when it ends; `kill -9` leaves it behind, so a PID read here must still be checked."""
    path = owner_path(lock)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Owner(int(data["pid"]), str(data["host"]), path.stat().st_mtime)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def temp_path(path: Path) -> Path:
    """The temp file a replacement of `path` goes through: hidden, beside it, unique to this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_stale_temps(path: Path) -> None:
    """Delete the temp files a replacement of `path` left behind when its process died mid-write (`kill -9`):
    `.<name>.<pid>.tmp` whose PID is no longer alive, or is now another process's (one that started after
    the temp file was last written). Another live writer's are left alone."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-4]
        if not pid.isdigit():
            continue
        try:
            written = tmp.stat().st_mtime
        except OSError:
            continue  # gone already
        if not process_alive(int(pid), started_by=written):
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | Callable[[IO[bytes]], None], *, durable: bool = True) -> None:
    """Replace `path` whole: write a temp file beside it (`data`, or `data(file)`), fsync it, rename it
    over `path`, fsync the folder. Readers see the old file or the new one, never half of one; a
    failure (a full disk) leaves the old file and no temp file. `durable=False` skips the fsyncs, for
    files whose loss in a power cut costs nothing (a report rewritten at every exit, a sidecar)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())  # the rename below must never expose bytes that are not on disk
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; some filesystems refuse fsync on a folder (then it is skipped)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def same_file(a: Path, b: Path) -> bool:
    """Do `a` and `b` name the same file: the same path after resolving links, or the same inode (a hard
    link)? A path that does not exist yet can only match by its resolved name."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):
        return False
    try:
        return a.samefile(b)
    except OSError:
        return False
