"""The response cache (`*.cache.sqlite` beside the output): finished stage calls, keyed by request.

A record that failed in stage 2 does not pay for stage 1 again on retry or resume, and two
records asking the same question pay once. SQLite keeps it on disk (constant memory) and makes
each insert atomic, so a `kill -9` leaves either the whole entry or none. The cache is an
optimisation: a damaged file is replaced, and a cache that cannot be opened is no cache.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enrichkit.logs import log

LOCK_WAIT = 0.1  # seconds a call may wait for SQLite's lock (another process's transaction)


class ResponseCache:
    """Thread-safe key -> JSON store; one connection, one lock, held only around SQLite calls."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._failed: sqlite3.Error | None = None
        try:
            self._db = self._connect()
        except sqlite3.OperationalError:
            raise  # I/O trouble (a full disk, a read-only folder), not damage: the cache stays for a later run
        except sqlite3.DatabaseError:
            # A damaged cache only costs money, never correctness: start a new one (its WAL and shared-memory
            # files too, or SQLite would replay the old journal into the new file).
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        # Never wait on a lock another process holds (SQLite's default waits 5 s a call, one call after the
        # other): a locked cache fails at once, and the run goes on without it.
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=LOCK_WAIT)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._call(lambda db: db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone())
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        blob = json.dumps(value)  # ASCII: a lone surrogate in an answer is escaped, never an encoding error
        with self._lock:
            self._call(lambda db: db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                                             (key, blob)))

    def _call(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        """Under the lock. Once a call failed, every later one fails at once: the calls queued behind it do not
        each wait on SQLite again."""
        if self._failed is not None:
            raise sqlite3.OperationalError(f"the cache was given up: {self._failed}")
        try:
            return query(self._db)
        except sqlite3.Error as exc:
            self._failed = exc
            raise

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()


def open_cache(path: Path) -> ResponseCache | None:
    """The cache, or None (with a warning) when it cannot be opened at all: a full disk, a read-only folder."""
    try:
        return ResponseCache(path)
    except (sqlite3.Error, OSError) as exc:
        log.warning("cannot open the response cache %s (%s); running without it", path, exc)
        return None
