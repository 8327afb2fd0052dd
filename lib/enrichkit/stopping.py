"""Stopping a run in steps: signals and fatal errors set flags that the main loop and the workers read."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

# How long SIGINT/SIGTERM waits for in-flight records (SPEC: 10 s); the variable exists for tests.
DRAIN_SECONDS = float(os.environ.get("ENRICHKIT_DRAIN_SECONDS", "10"))


class StopSignal:
    """Read by everyone. `stop()`: take no new records (SIGINT/SIGTERM, a budget, `jobs.py cancel`, a fatal
    error); the ones in flight may finish, stages and retries included, until the drain deadline.
    `abandoning()`: workers give up at their next call or wait (the deadline, a fatal error, a second
    Ctrl+C). `leaving()`: the main loop stops waiting for them (the deadline, a second Ctrl+C)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stopping = threading.Event()
        self._abandoning = threading.Event()
        self._leaving = False
        self.reason: str | None = None
        self.deadline = float("inf")

    def request(self, reason: str) -> None:
        if not self._stopping.is_set():
            self.reason = reason
            self.deadline = self._clock() + DRAIN_SECONDS
            self._stopping.set()

    def abandon(self) -> None:
        self._stopping.set()
        self._abandoning.set()

    def __call__(self) -> bool:
        return self._stopping.is_set()

    def abandoning(self) -> bool:
        return self._abandoning.is_set() or (self._stopping.is_set() and self._clock() > self.deadline)

    def leaving(self) -> bool:
        return self._leaving or (self._stopping.is_set() and self._clock() > self.deadline)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping.is_set() and self.reason == "signal":
            self._leaving = True  # a second Ctrl+C: do not wait for in-flight records
            self.abandon()
            return
        self.request("signal")
        name = signal.Signals(signum).name
        sys.stderr.write(f"\n{name}: finishing in-flight records (up to {DRAIN_SECONDS:.0f} s; "
                         "press Ctrl+C again to stop at once)...\n")
