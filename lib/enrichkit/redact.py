"""The one redaction step: every secret registered here is replaced in everything enrichkit writes or
prints (log lines, the closing line, the error log, the checkpoint, the report, notifications),
whatever carried it (a 401 body that quotes the key back, a proxy's error page, an exception text).

The module functions use one process-wide `Redactor`; the dashboard keeps one of its own for the keys
of the jobs it serves (`Redactor(also=DEFAULT)`: those and this process's).
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

MASK = "***"


class Redactor:
    """Secrets (and their URL-encoded forms) to replace with `MASK`; `also`'s are replaced too."""

    def __init__(self, also: Redactor | None = None) -> None:
        self._lock = threading.Lock()
        self._forms: tuple[str, ...] = ()
        self._also = also

    def add(self, *values: str | None) -> None:
        """Never let these values (API keys) through; a value shorter than 6 characters is no secret."""
        forms = {form for value in values if value and len(value) >= 6
                 for form in (value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value))}
        if not forms:
            return
        with self._lock:
            # Longest first, so a form that contains another is replaced whole.
            self._forms = tuple(sorted(set(self._forms) | forms, key=len, reverse=True))

    def add_all(self, values: Iterable[str | None]) -> None:
        self.add(*values)

    def clear(self) -> None:
        with self._lock:
            self._forms = ()

    def __bool__(self) -> bool:
        """Is there anything to replace?"""
        return bool(self._forms) or bool(self._also)

    def redact(self, text: str) -> str:
        for secret in self._forms:
            if secret in text:
                text = text.replace(secret, MASK)
        return self._also.redact(text) if self._also is not None else text

    def redact_tree(self, value: Any) -> Any:
        """`redact` applied to every string of a JSON-like value (keys included)."""
        if not self:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact_tree(k): self.redact_tree(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_tree(v) for v in value]
        return value


DEFAULT = Redactor()  # what this process registered: its API keys


def register_secret(value: str | None) -> None:
    """Never let `value` (an API key) reach a file or a terminal; its URL-encoded form neither."""
    DEFAULT.add(value)


def forget_secrets() -> None:
    """For tests that register keys of their own."""
    DEFAULT.clear()


def redact(text: str) -> str:
    return DEFAULT.redact(text)


def redact_tree(value: Any) -> Any:
    """`redact` applied to every string of a JSON-like value (keys included)."""
    return DEFAULT.redact_tree(value)
