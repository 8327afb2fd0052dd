"""One run per output: a filelock beside it, and a lock on the output file itself, held for the whole run.

The kernel drops both when their holder dies (even by `kill -9`), so a stale lock file never blocks
the next run. The lock on the output's own inode is what makes a deleted `<stem>.lock` harmless: a
cleanup script can remove the lock file of a live run, and the next cron tick then takes a fresh
lock file, but never the output a live run is appending to.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from filelock import FileLock, Timeout

from enrichkit.errors import LockedError
from enrichkit.store.jobfiles import owner_path, read_owner, write_owner


class RunLock:
    def __init__(self, lock_path: str | Path, output: str | Path, checkpoint: str | Path = "<checkpoint>") -> None:
        self.path = Path(lock_path)
        self.output = Path(output)
        self._checkpoint = str(checkpoint)
        self._lock = FileLock(str(self.path), timeout=0)
        self._fd: int | None = None
        self._created_output = False

    def acquire(self) -> None:
        """Take both locks at once or raise `LockedError` naming the holder (exit 3)."""
        try:
            self._lock.acquire()
        except Timeout:
            raise self._locked() from None
        try:
            self._lock_output()
        except BaseException:
            self._lock.release()
            raise
        write_owner(self.path)

    def _lock_output(self) -> None:
        self._created_output = not self.output.exists()
        fd = os.open(self.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._locked() from None
        self._fd = fd

    def relock_output(self) -> None:
        """After `--fresh` replaced the output: lock the new file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock_output()

    def _locked(self) -> LockedError:
        owner = read_owner(self.path)
        return LockedError(str(self.path), owner.pid if owner else None, owner.host if owner else None,
                           self._checkpoint)

    def release(self) -> None:
        removed = False
        if self._fd is not None:
            # A run that stopped before writing anything leaves no empty output behind.
            with contextlib.suppress(OSError):
                if self._created_output and os.fstat(self._fd).st_size == 0 and self.output.exists() \
                        and self.output.samefile(f"/proc/self/fd/{self._fd}"):
                    self.output.unlink()
                    removed = True
            os.close(self._fd)
            self._fd = None
        if self._lock.is_locked:
            owner_path(self.path).unlink(missing_ok=True)
            if removed:  # nor its lock file (harmless to delete: see the module's docstring)
                self.path.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
