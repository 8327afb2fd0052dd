"""What a library run says: `RunResult` at its end, `Event`s as it goes (lines, figures, the end), and its log
lines on stderr when it prints."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from enrichkit.errors import EnrichError
from enrichkit.run.progress import Figures, Progress


@dataclass(frozen=True)
class Event:
    """What a run tells a callback as it goes.

    kind: "line" (a line the CLI would print: the start line, a stop's notice, the closing line, the summary),
    "progress" (`figures` holds done/total/failed/tokens/cost/rate/ETA), "end" (`text` is the closing line)."""

    kind: str
    text: str = ""
    figures: Figures | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended. `exit_code` is the one `enrich.py` would exit with (0 every record done, 1 failures, or
    stopped by the provider, a write failure or `limit` with records left, 4 budget reached, 130 interrupted;
    all resumable)."""

    status: str  # the checkpoint's: completed, completed_with_failures, interrupted, budget_exhausted, failed, dry_run
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)  # the report's: total, completed, failed, pending, ...
    cost_usd: float = 0.0  # the job's cost so far (all runs)
    report: dict[str, Any] = field(default_factory=dict)  # what <output stem>.report.json holds
    message: str = ""  # the closing line
    error: EnrichError | None = None  # what stopped a run early before it began (exit 1: the API unreachable)
    abandoned: int = 0  # records still on the wire when the run left (their threads end with their calls)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class EventProgress(Progress):
    """The run's figures as `Event`s, and drawn as the CLI draws them when asked to print."""

    def __init__(self, emit: Callable[[Event], None], drawn: Progress) -> None:
        self._emit = emit
        self._drawn = drawn

    def start(self, total: int, initial: int) -> None:
        self._drawn.start(total, initial)

    def update(self, f: Figures, *, force: bool = False) -> None:
        self._emit(Event("progress", figures=f))
        self._drawn.update(f, force=force)

    def clear(self) -> None:
        self._drawn.clear()

    def close(self, final: Figures | None = None) -> None:
        if final is not None:
            self._emit(Event("progress", figures=final))
        self._drawn.close(final)


@contextlib.contextmanager
def stderr_logging(printing: bool) -> Iterator[None]:
    """progress=True with no logging set up: enrichkit's log lines (progress off a terminal, warnings) go to
    stderr for the run, as the CLI's do."""
    logger = logging.getLogger("enrichkit")
    if not printing or logging.getLogger().handlers or any(
            not isinstance(h, logging.NullHandler) for h in logger.handlers):
        yield
        return
    from enrichkit.logs import redacting_handler

    handler = redacting_handler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def write(stream: Any, text: str) -> None:
    """Print to a stream that may be closed or gone (a notebook's, a daemon's)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stream.write(text)
        stream.flush()
