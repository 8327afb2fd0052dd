"""The exit codes, the errors a user sees (`EnrichError` and its subclasses), and the failures that travel
between a call and the pipeline (`StageFailure`, `Abandoned`, `OutageTooLong`).

A user-facing error is one line that says what happened and what to do, mapped to an exit code by its
class (`exit_code`) in one place (`enrichkit.edge.error_edge`). A few narrow exceptions live beside the
code that raises them (`pace.deadline.DeadlineExceeded`, `pace.budget.BudgetRefused`,
`store.jobfiles.NotRegular`, `jobs.listing.AmbiguousJob`).
"""

from __future__ import annotations

from enrichkit.commands import cancel_command

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
    """The stages file, the pricing file, a model or the checkpoint disagrees with what was asked."""


class InputError(EnrichError):
    """The input file cannot be read at all (missing, empty, no header, wrong encoding or delimiter, ...)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class AuthError(EnrichError):
    """The API key is missing, invalid or not allowed: the whole run stops."""


class LockedError(EnrichError):
    """Another run holds this output's lock."""

    exit_code = EXIT_LOCKED

    def __init__(self, lock_path: str, pid: int | None, host: str | None, checkpoint: str = "<checkpoint>") -> None:
        holder = f"PID {pid} on {host}" if pid else "another process"
        super().__init__(
            f"another run ({holder}) is working on this output (lock {lock_path}); "
            f"wait for it, or stop it with: {cancel_command(checkpoint)}"
        )
        self.lock_path = lock_path
        self.pid = pid
        self.host = host


class ProviderStop(EnrichError):
    """The provider stopped the run early, resumably: quota used up, billing, an outage (exit 1)."""

    exit_code = EXIT_FAILURES


class QuotaExhausted(ProviderStop):
    """The provider's quota is used up (a daily quota, or 429s without end)."""


class BillingError(ProviderStop):
    """An account-level 429: prepaid credits depleted, a spend cap reached, or a model with no quota ("limit: 0")."""


class AccountError(ProviderStop):
    """The account itself is refused (limited or disabled for a policy violation): nothing will answer until it is
    cleared with Google."""


class OutageError(ProviderStop):
    """The API has been down longer than --max-outage, or refuses connections from the start."""


class WriteFailed(EnrichError):
    """A file of the job could not be written (a full disk, a read-only folder): stop, resumable (exit 1)."""

    exit_code = EXIT_FAILURES

    def __init__(self, path: str, reason: str,
                 advice: str = "free space or fix the folder, then run again with --resume") -> None:
        super().__init__(f"cannot write {path}: {reason}; {advice}")
        self.path = path
        self.reason = reason


class StageFailure(Exception):
    """One failed attempt of a stage call, classified (see `enrichkit.pace.classify`)."""

    def __init__(self, error_type: str, message: str, *, retry_after: float | None = None,
                 quota: str = "", retries_allowed: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after  # the server's delay for a 429 (RetryInfo, Retry-After, "retry in N s")
        self.quota = quota  # for a 429: "minute", "day", "account" (billing) or "" (not said)
        # None: retried as its error type says; a number: at most that many retries (SAFETY: 1, a block: 0).
        self.retries_allowed = retries_allowed
        self.usage: object | None = None  # what an answer that was billed but unusable cost (a `Usage`)
        self.fatal: EnrichError | None = None  # set when every record would fail alike: the run stops with it
        self.refused: bool = False  # a connection refused (nobody listens): no request got through
        self.shed: bool = False  # a flex call queued past its deadline or shed (503): retried, never the breaker's
        self.unconnected: bool = False  # no connection was made at all (refused, unknown host, bad address)
        self.quota_limit: float | None = None  # a 429's stated quota (QuotaFailure quotaValue), per window

    @property
    def transient(self) -> bool:
        if self.retries_allowed is not None:
            return self.retries_allowed > 0
        return self.error_type in TRANSIENT


TRANSIENT = frozenset({"rate_limit", "timeout", "server_error", "validation_error"})


class Abandoned(Exception):
    """The run is stopping: this call gave up without failing its record."""


class OutageTooLong(Exception):
    """The circuit breaker has stayed open longer than `max_outage` seconds."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the service has been failing for {seconds:.0f} s")
        self.seconds = seconds
