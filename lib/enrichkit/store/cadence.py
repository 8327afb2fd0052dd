"""When the job store writes a checkpoint: every --checkpoint-interval records, at least 1 s apart and never more
than ~5 % of the run spent writing checkpoints; and at least every 10 s while anything is new."""

from __future__ import annotations

from collections.abc import Callable


class SaveCadence:
    def __init__(self, interval: int, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self._since_save = 0  # records written or failed since the last checkpoint
        self._last_save = clock()
        self._save_cost = 0.0  # seconds the last checkpoint took

    def counted(self) -> None:
        """A record was written or failed."""
        self._since_save += 1

    def due(self) -> bool:
        now = self.clock()
        gap = max(1.0, 20 * self._save_cost)
        interval_due = self._since_save >= self.interval
        return (interval_due and now - self._last_save >= gap) or (self._since_save > 0
                                                                    and now - self._last_save >= 10)

    def saved(self, started: float) -> None:
        """A checkpoint begun at `started` is written."""
        self._since_save = 0
        self._last_save = self.clock()
        self._save_cost = self._last_save - started
