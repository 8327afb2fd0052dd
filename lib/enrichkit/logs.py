"""Lines on stderr: enrichkit's log and the lines a run prints, every one through `redact`."""

from __future__ import annotations

import logging
import os
import sys
import threading

from enrichkit.redact import redact

log = logging.getLogger("enrichkit")
log.addHandler(logging.NullHandler())  # a library prints nothing unless its user sets logging up (the CLI does)
_write_lock = threading.Lock()


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(verbosity: int) -> None:
    """-q: warnings only; default: info; -v: enrichkit's own debug lines; -vv: the HTTP libraries' too."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = redacting_handler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Third-party loggers stay at WARNING unless -vv: -v is for enrichkit's own debug lines.
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    log.setLevel(level)


def redacting_handler() -> logging.Handler:
    """Log lines on the stderr of the moment, redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    return handler


def say(text: str) -> None:
    """Print a line of the run's own (the closing line, the summary) to stderr, redacted. A stderr that is
    gone (`... 2>&1 | head`) must not change the run's outcome, so a failed write is ignored."""
    with _write_lock:
        try:
            sys.stderr.write(redact(text) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def use_color() -> bool:
    return "NO_COLOR" not in os.environ and sys.stderr.isatty()
