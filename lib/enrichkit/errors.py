"""The errors a user can meet, each carrying what they need to act, and its exit code.

The CLI maps these to exit codes in one place (`enrichkit.cli`); everything else raises them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = 130


class EnrichError(Exception):
    """Base of every error enrichkit reports to the user as one line."""

    exit_code = EXIT_USAGE


class UsageError(EnrichError):
    """A flag or a combination of flags that cannot work."""


class ConfigError(EnrichError):
    """The stages file, the pricing file or the checkpoint disagrees with what was asked."""


class InputError(EnrichError):
    """The input file cannot be read at all (missing, empty, no header, ...)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class AuthError(EnrichError):
    """The API key is missing, invalid or not allowed: the whole run stops."""


class LockedError(EnrichError):
    """Another run holds this output's lock."""

    exit_code = EXIT_LOCKED

    def __init__(self, lock_path: str, pid: int | None, host: str | None) -> None:
        holder = f"PID {pid} on {host}" if pid else "another process"
        super().__init__(
            f"another run ({holder}) is working on this output (lock {lock_path}); "
            "wait for it, or stop it with: python scripts/jobs.py cancel <checkpoint>"
        )
        self.lock_path = lock_path
        self.pid = pid
        self.host = host


class BudgetExhausted(EnrichError):
    """--max-cost would be exceeded by the next request."""

    exit_code = EXIT_BUDGET
