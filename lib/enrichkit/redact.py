"""The one redaction step: every secret registered here is replaced in everything enrichkit writes or
prints (log lines, the closing line, the error log, the checkpoint, the report, notifications),
whatever carried it (a 401 body that quotes the key back, a proxy's error page, an exception text).
"""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

MASK = "***"
_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Never let `value` (an API key) reach a file or a terminal; its URL-encoded form neither."""
    global _secrets
    if not value or len(value) < 6:
        return
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    with _lock:
        # Longest first, so a form that contains another is replaced whole.
        _secrets = tuple(sorted(set(_secrets) | forms, key=len, reverse=True))


def forget_secrets() -> None:
    """For tests that register keys of their own."""
    global _secrets
    with _lock:
        _secrets = ()


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_tree(value: Any) -> Any:
    """`redact` applied to every string of a JSON-like value (keys included)."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value
