"""Stopping a run in steps. Signals, a budget, `jobs.py cancel` and fatal errors set flags that the
main loop and the workers read; nothing here prints or touches the process
(`enrichkit.cli` and `enrichkit.edge` do)."""

from __future__ import annotations

import time
from collections.abc import Callable

DRAIN_SECONDS = 10.0  # SPEC: in-flight records get this long to finish after SIGINT/SIGTERM


class StopSignal:
    """Read by everyone.

    - `stopping` (a plain flag; `stop()` / `__call__` reads it): take no new records, and start no record not yet
      started; the ones in flight may finish, stages and retries included, until the drain deadline;
    - `abandoning()`: workers give up at their next call or wait (the deadline, a fatal error, a
      second Ctrl+C); never before `stopping` is set, so a hot path reads the flag first;
    - `leaving()`: the main loop stops waiting for them (the deadline, a second Ctrl+C).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, drain_seconds: float = DRAIN_SECONDS) -> None:
        self._clock = clock
        self.drain_seconds = drain_seconds
        # Plain attributes, not Events: a signal handler must take no lock the interrupted thread may hold
        # (threading.Event.set does). Setting and reading a bool is atomic under the GIL.
        self.stopping = False
        self._abandoning = False
        self._leaving = False
        self.reason: str | None = None
        self.deadline = float("inf")
        self._announce: str | None = None  # a line for the main loop to print (never printed from a handler)

    def request(self, reason: str) -> None:
        if not self.stopping:
            self.reason = reason
            self.deadline = self._clock() + self.drain_seconds
            self.stopping = True

    def abandon(self) -> None:
        self.stopping = True
        self._abandoning = True

    def __call__(self) -> bool:
        return self.stopping

    def abandoning(self) -> bool:
        return self._abandoning or (self.stopping and self._clock() > self.deadline)

    def leaving(self) -> bool:
        return self._leaving or (self.stopping and self._clock() > self.deadline)

    def interrupt(self, name: str) -> None:
        """A signal (SIGINT, SIGTERM): the first one drains, any later one abandons the records in flight,
        whatever stopped the run first (a budget, a fatal error, the first signal). Safe in a handler:
        it only assigns attributes (the clock it reads takes no lock)."""
        if self.stopping:
            self._leaving = True
            self.abandon()
            self._announce = f"{name} again: abandoning the records in flight (they are redone on --resume)"
            return
        self.request("signal")
        self._announce = (f"{name}: finishing in-flight records (up to {self.drain_seconds:.0f} s; press Ctrl+C "
                          "again to stop at once)...")

    def take_announcement(self) -> str | None:
        """The line a signal asked to print, once (the main loop prints it between its own writes)."""
        text, self._announce = self._announce, None
        return text
