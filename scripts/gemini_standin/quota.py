"""Quota windows (requests or input tokens per window, sliding or fixed) and the retry delays of their 429s."""

from __future__ import annotations

import collections
import math
import random


class QuotaWindow:
    """Amounts admitted in the last `window` seconds (sliding) or in the current aligned window (fixed)."""

    def __init__(self) -> None:
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.used = 0
        self.index = -1

    def wait(self, now: float, amount: int, limit: int, window: float, mode: str, origin: float) -> float | None:
        """None if `amount` fits now, else the seconds until it would (nothing is recorded)."""
        if mode == "fixed":
            index = math.floor((now - origin) / window)
            if index != self.index:
                self.index, self.used = index, 0
            return origin + (index + 1) * window - now if self.used + amount > limit else None
        while self.events and self.events[0][0] <= now - window:
            self.used -= self.events.popleft()[1]
        if self.used + amount <= limit:
            return None
        excess = self.used + amount - limit
        for t, n in self.events:  # the oldest admissions leave the window first
            excess -= n
            if excess <= 0:
                return t + window - now
        return window  # more than the whole quota at once: never fits, try again a window later

    def record(self, now: float, amount: int, mode: str) -> None:
        self.used += amount
        if mode != "fixed":  # a sliding window keeps each admission to let it go later
            self.events.append((now, amount))


def duration(seconds: float, window: float) -> str:
    """A google.protobuf.Duration as Google writes RetryInfo: whole seconds, rounded down; ms on a scaled window."""
    return f"{max(1, int(seconds))}s" if window >= 60 else f"{max(0.001, seconds):.3f}s"


def google_delay(window: float, draw: float) -> float:
    """A per-minute 429's delay as Google's look: 20-60 s for a 60 s window, whatever the quota's state;
    `draw` in [0, 1) picks it."""
    return window / 3 + draw * window * 2 / 3


def retry_delay(mode: str, wait: float, window: float, rng: random.Random) -> tuple[float, str]:
    """(seconds for the message, RetryInfo.retryDelay) of a window's 429; `mode` is the rpm_delay setting.

    The RNG is drawn from only in "google" mode, so that the other modes leave the fault draws unchanged.
    """
    if mode == "google":
        wait = google_delay(window, rng.random())
        return wait, duration(wait, window)
    if mode == "precise":
        return wait, f"{max(0.001, wait):.3f}s"
    return wait, f"{max(1, math.ceil(wait))}s"  # whole seconds, never 0: a client honouring it finds the slot free
