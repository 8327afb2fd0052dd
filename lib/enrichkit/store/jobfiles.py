"""The files of one job: where they are, who holds the job, what state it is in, and the one way a
file is replaced (temp file beside it, fsync, rename, fsync the folder; no temp file left behind).

Both sides use this module: a run (`enrichkit.store.jobstore`, `enrichkit.config.plan`) and the job tools that look
at a job from outside (`enrichkit.jobs`).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

Status = Literal["running", "waiting", "interrupted", "completed", "completed_with_failures", "budget_exhausted",
                 "failed"]
STATUSES: tuple[Status, ...] = ("running", "waiting", "interrupted", "completed", "completed_with_failures",
                                "budget_exhausted", "failed")
# States in which no run is under way (the job tools add "starting" and "unknown" to the recorded ones, and show
# "limit_reached" for an `interrupted` checkpoint whose run stopped at its --limit: see jobs.state.decide_state);
# `waiting`: Google batch jobs of the job are in flight (--batch), and the next run collects them.
STOPPED: tuple[str, ...] = ("waiting", "interrupted", "limit_reached", "completed", "completed_with_failures",
                            "budget_exhausted", "failed")

CHECKPOINT_SUFFIX = ".progress.json"
# A process that started more than this after a file named its PID cannot be the one that wrote it:
# the PID was reused (after a reboot, say). Timestamps have 1 s resolution.
_START_SLACK = 2.0


@dataclass(frozen=True)
class JobPaths:
    """Every file of a job. All but `input` are written by a run and must differ from each other and
    from the input (see `enrichkit.config.plan.check_paths`)."""

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
                "the cache": self.cache, "the batch ledger": self.output.with_name(f"{self.output.stem}.batch.sqlite")}

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


def read_owner(lock: Path, *, trusted: bool = False) -> Owner | None:
    """The holder named in the sidecar; None when there is none or it cannot be read. A run removes it
    when it ends; `kill -9` leaves it behind, so a PID read here must still be checked (`is_run`).
    `trusted`: only a sidecar that is evidence (`distrust` finds nothing wrong with it)."""
    path = owner_path(lock)
    try:
        data, st = read_regular(path, _OWNER_MAX)
        if trusted and distrust(st) is not None:
            return None
        parsed = json.loads(data.decode("utf-8"))
        pid = parsed["pid"]
        if type(pid) is not int or not 0 < pid <= _PID_MAX:
            return None
        return Owner(pid, str(parsed["host"]), st.st_mtime)
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- files as evidence ----------------------------------------------------------------------------------
# A job file may have been planted by another user of the machine (in a shared folder) or be a FIFO, a
# device or a link to one: the job tools read only regular files, with a size cap, and act only on files
# that this user owns and no one else may write.

_OWNER_MAX = 4096
_PID_MAX = 4_194_304  # Linux's highest pid_max; a bigger "PID" is no process's


class NotRegular(OSError):
    """A job file that is not a regular file (a FIFO, a device, a link) or is over its size cap."""


def read_regular(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of `path` and its stat, when it is a regular file of at most `limit` bytes. Opened
    without following a link and without blocking, and checked on the open file before a byte is
    read: a FIFO or a device is never read from, whatever is swapped in under the name."""
    fd = open_regular(path)
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise NotRegular(f"{path}: {st.st_size:,} bytes, more than the {limit:,} a job file may hold")
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise NotRegular(f"{path}: grew past the {limit:,} bytes a job file may hold")
        return data, st
    finally:
        os.close(fd)


def open_regular(path: Path) -> int:
    """An O_RDONLY descriptor of `path`, only when it is a regular file (not a link, FIFO or device).
    The caller closes it. Raises `NotRegular` (an OSError) otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegular(f"{path}: a symbolic link, not a job's own file") from None
        raise
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegular(f"{path}: {file_kind(st.st_mode)}, not a regular file")
    return fd


@contextlib.contextmanager
def held_regular(path: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """A name for the regular file `path` is now, and its stat: /proc/self/fd/N of the file opened and
    checked by `open_regular`, so whatever is swapped in under `path` afterwards (a FIFO, a link) is not
    what gets read; `path` itself where there is no /proc."""
    fd = open_regular(path)
    try:
        st = os.fstat(fd)
        held = Path(f"/proc/self/fd/{fd}")
        yield (held if held.exists() else path), st
    finally:
        os.close(fd)


def file_kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def distrust(st: os.stat_result, *, folder: bool = False) -> str | None:
    """Why a file (or with `folder`, a folder) is not evidence this user may act on, or None when it is:
    a regular file (a real folder) owned by this user that no other user may write (no world-write bit;
    group-write only when the group is this user's own private group)."""
    if not (stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)):
        return f"{file_kind(st.st_mode)}, not a {'folder' if folder else 'regular file'}"
    me = os.geteuid()
    if st.st_uid != me:
        return f"owned by {_user(st.st_uid)}, not by {_user(me)} (who runs this)"
    if st.st_mode & stat.S_IWOTH:
        return "writable by every user"
    if st.st_mode & stat.S_IWGRP and not _private_group(st.st_gid, me):
        return f"writable by group {_group(st.st_gid)}"
    return None


def distrust_path(path: Path, *, folder: bool = False) -> str | None:
    """`distrust` of the file at `path` itself (a link is not followed: it is not the job's own file)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    return distrust(st, folder=folder)


def _private_group(gid: int, uid: int) -> bool:
    try:
        user, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:
        return False
    return user.pw_gid == gid and group.gr_name == user.pw_name and not set(group.gr_mem) - {user.pw_name}


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def lock_holders(*paths: Path) -> set[int] | None:
    """The PIDs holding a flock on any of `paths` (a run locks `<stem>.lock` and its output), from
    /proc/locks; None where the kernel does not say (no /proc)."""
    wanted: set[str] = set()
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        wanted.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
    try:
        with open("/proc/locks", "rb") as f:
            table = f.read(16 << 20).decode("ascii", "replace")
    except OSError:
        return None
    holders: set[int] = set()
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        # FLOCK: flock(2), what filelock takes; POSIX: how NFS and some filesystems carry a flock.
        if len(fields) >= 6 and fields[1] in ("FLOCK", "POSIX") and fields[5] in wanted and fields[4].isdigit():
            holders.add(int(fields[4]))
    return holders


def is_run(pid: int, started_by: float | None, *locks: Path) -> bool:
    """Is `pid` the live run of the job whose lock files are `locks`: alive on this host, started by
    `started_by` (epoch seconds), and, where the kernel says who holds a lock, holding one of them? A
    file naming a PID is not enough: the PID may be reused by any process since (a reboot, a clock
    moved back), or the file planted; only the job's run holds its lock."""
    if not process_alive(pid, started_by):
        return False
    if not locks:
        return True
    holders = lock_holders(*locks)
    return holders is None or pid in holders


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
    if type(pid) is not int or not 0 < pid <= _PID_MAX:
        return False  # a 20-digit "PID" from a hand-edited file is no process (and os.kill would overflow)
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
    return same_identity(file_identity(a), file_identity(b))


FileIdentity = tuple[Path, tuple[int, int] | None] | None


def file_identity(path: Path) -> FileIdentity:
    """What `same_file` compares, found once for a path compared with many: its name with links resolved and
    its inode (None while nothing is there); None when it cannot be resolved (it then matches nothing)."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return None
    try:
        found = path.stat()
    except OSError:
        return resolved, None
    return resolved, (found.st_dev, found.st_ino)


def same_identity(a: FileIdentity, b: FileIdentity) -> bool:
    """`same_file` on two identities from `file_identity`."""
    return a is not None and b is not None and (a[0] == b[0] or (a[1] is not None and a[1] == b[1]))
