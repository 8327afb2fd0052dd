"""Logging to stderr, with every registered secret redacted from every line."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("enrichkit")
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never let `value` (an API key) reach a log line or a file enrichkit writes."""
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(verbosity: int) -> None:
    """-q → warnings only, default → info, -v → debug (third-party HTTP logs stay quiet unless -vv)."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    noisy = logging.DEBUG if verbosity >= 2 else logging.WARNING
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "google_genai", "urllib3", "google"):
        logging.getLogger(name).setLevel(noisy)


def use_color() -> bool:
    return "NO_COLOR" not in os.environ and sys.stderr.isatty()
