"""One run per output: a filelock beside it, held for the whole run.

The kernel drops the lock when its holder dies (even by `kill -9`), so a stale lock file never
blocks the next run. Who holds it (PID, host) is written to a sidecar for the message a second
run prints.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

from enrichkit.errors import LockedError


class RunLock:
    def __init__(self, lock_path: str | Path) -> None:
        self.path = Path(lock_path)
        self.owner_path = self.path.with_name(self.path.name + ".owner")
        self._lock = FileLock(str(self.path), timeout=0)

    def acquire(self) -> None:
        """Take the lock at once or raise `LockedError` naming the holder (exit 3)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            pid, host = self.holder()
            raise LockedError(str(self.path), pid, host) from None
        tmp = self.owner_path.with_name(f".{self.owner_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
        tmp.replace(self.owner_path)

    def holder(self) -> tuple[int | None, str | None]:
        try:
            data = json.loads(self.owner_path.read_text(encoding="utf-8"))
            return int(data["pid"]), str(data["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, None

    def release(self) -> None:
        if self._lock.is_locked:
            self.owner_path.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
