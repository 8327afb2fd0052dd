"""One `requests.Session` per worker thread (a Session is not documented as thread-safe), all closed together."""

from __future__ import annotations

import threading
from typing import Any


class ThreadSessions:
    def __init__(self) -> None:
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        """This thread's session (made on first use)."""
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def discard(self) -> None:
        """Forget this thread's session (a request given up on still uses it); it is closed with the others."""
        self._local.session = None

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
