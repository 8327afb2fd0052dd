"""When the job store writes a checkpoint: every --checkpoint-interval records, at least 1 s apart and never more
than ~5 % of the run spent writing checkpoints; and at least every 10 s while anything is new.

It reads the run's count of records written or failed (`done`, the tally's), as of each question and each
checkpoint: nothing on a record's path calls it."""

from __future__ import annotations

from collections.abc import Callable


class SaveCadence:
    def __init__(self, interval: int, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self._done_at_save = 0  # records written or failed when the last checkpoint was written
        self._last_save = clock()
        self._save_cost = 0.0  # seconds the last checkpoint took

    def due(self, done: int) -> bool:
        """Is a checkpoint due, `done` records written or failed so far?"""
        since_save = done - self._done_at_save
        now = self.clock()
        gap = max(1.0, 20 * self._save_cost)
        interval_due = since_save >= self.interval
        return (interval_due and now - self._last_save >= gap) or (since_save > 0 and now - self._last_save >= 10)

    def saved(self, started: float, done: int) -> None:
        """A checkpoint begun at `started` is written, `done` records written or failed so far."""
        self._done_at_save = done
        self._last_save = self.clock()
        self._save_cost = self._last_save - started
