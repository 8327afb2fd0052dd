"""Where a grounded answer's sources really are: Gemini gives each grounding chunk an opaque redirect URL
(`vertexaisearch.cloud.google.com/grounding-api-redirect/...`) that stops working after a while. Each
is resolved once, at run time, with one request that does not follow the redirect (its `Location` is
the source), bounded in time and cached; when that fails the redirect URL is kept."""

from __future__ import annotations

import threading
from collections import OrderedDict

from enrichkit.providers.sessions import ThreadSessions

TIMEOUT = 5.0
CACHED = 10_000  # resolved URLs remembered (least recently used go first)


class SourceResolver:
    """Thread-safe; one `requests.Session` per worker thread, all closed with `close()`."""

    def __init__(self, *, timeout: float = TIMEOUT) -> None:
        self._timeout = timeout
        self._known: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._sessions = ThreadSessions()

    def resolve(self, uri: str) -> str:
        """The URL `uri` redirects to, or `uri` itself (not a redirect, or the resolution failed)."""
        with self._lock:
            if uri in self._known:
                self._known.move_to_end(uri)
                return self._known[uri]
        target = self._ask(uri)
        with self._lock:
            self._known[uri] = target
            while len(self._known) > CACHED:
                self._known.popitem(last=False)
        return target

    def _ask(self, uri: str) -> str:
        if not uri.startswith(("http://", "https://")):
            return uri
        import requests

        try:
            response = self._sessions.get().head(uri, allow_redirects=False, timeout=self._timeout)
            if response.status_code == 405:  # HEAD not allowed: a GET that reads no body
                response = self._sessions.get().get(uri, allow_redirects=False, timeout=self._timeout, stream=True)
            location = response.headers.get("Location") if 300 <= response.status_code < 400 else None
            response.close()
        except requests.RequestException:
            return uri
        return str(location) if location else uri

    def close(self) -> None:
        self._sessions.close()
