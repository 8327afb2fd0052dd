"""One pace for all workers: strict request and token spacing, 429 pauses, and an adaptive rate.

Pacing is GCRA virtual scheduling with a burst of 1: each request reserves the next slot, one
interval (60/rpm s) after the previous one, and tokens run on a second clock the same way (a
request of T tokens occupies T*60/tpm s); a request goes at the later of the two. A burst at start
would overrun a server that counts any sliding 60 s window, so there is none.

Adaptation is AIMD. A 429 pauses every worker for the server's delay and multiplies the pace by
0.7; all 429s of one pause are one event (they answer requests already in flight). Each success
adds 1/50 of the configured rpm, so 15 successes restore it at any rpm and a one-off 429 costs
about 3 requests' worth of time beyond the pause. The climb is fast on purpose: the pause, not the
pace, keeps a too-high --rpm inside the quota (the server's delay runs until a slot frees), while a
slow climb lets the random 429s of a loaded API ratchet the pace down until it collapses (both
seen in simulation). Without an rpm, the first 429 sets the pace from the rate achieved over the
last 60 s, which then climbs by 1/50 of that per success with no ceiling, probing as TCP does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

WINDOW = 60.0  # seconds the provider counts a quota over
DECREASE = 0.7  # multiplicative decrease on a 429 event
RECOVERY_STEPS = 50  # additive increase: 1/50 of the configured (or learnt) rpm per success
MIN_RPM = 1.0
DEFAULT_PAUSE = 2.0  # when a 429 carries no delay; doubles when it was too short
MAX_DEFAULT_PAUSE = 60.0
ECHO_WINDOW = 2.0  # 429s this soon after an event's first one still come from requests sent before it
LATE_SLACK = 0.1  # a wake-up late by up to this fraction of a slot keeps the grid: threads cannot drift the pace


class Limiter:
    """Shared by every worker thread; all methods are thread-safe and hold the lock briefly."""

    def __init__(self, rpm: float | None, tpm: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep, max_nap: float = 0.25) -> None:
        if any(limit is not None and limit <= 0 for limit in (rpm, tpm)):
            raise ValueError("rpm and tpm must be positive (or None for no limit)")
        if max_nap <= 0:
            raise ValueError("max_nap must be positive")
        self._rpm, self._tpm = rpm, tpm
        self._clock, self._sleep, self._max_nap = clock, sleep, max_nap
        self._lock = threading.Lock()
        now = clock()
        self._rate: float | None = rpm  # the pace in force (requests/min); None: unpaced
        self._step = (rpm or 0.0) / RECOVERY_STEPS  # rpm added per success after a decrease
        self._next_req = now  # earliest start of the next request on the request clock
        self._next_tok = now  # ... and on the token clock
        self._slack = 0.0
        self._paused_until = now
        self._event_until = now  # 429s before this belong to the current event
        self._default_pause = DEFAULT_PAUSE
        self._sent: deque[float] = deque()  # acquire times within the last WINDOW
        self._first_sent: float | None = None
        self._rate_limited = self._pauses = self._decreases = 0
        self._paused_total = 0.0  # seconds of pause granted, including any still ahead

    def acquire(self, tokens: int, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Block until a request of about `tokens` tokens may go, and reserve it.

        Returns False, reserving nothing, once `should_stop()` is true. Sleeps in naps of at most
        `max_nap`, re-reading the schedule after each, so a pause that begins meanwhile holds it too.
        """
        while not should_stop():
            with self._lock:
                now = self._clock()
                start = max(self._next_req, self._next_tok, self._paused_until)
                if start <= now:
                    # A wake-up a little late keeps the slot grid (no drift); after idle time, start afresh.
                    slot = start if now - start <= self._slack else now
                    self._reserve(slot, max(0, tokens), now)
                    return True
            self._sleep(min(start - now, self._max_nap))  # never under the lock
        return False

    def _reserve(self, slot: float, tokens: int, now: float) -> None:
        gap_req = WINDOW / self._rate if self._rate else 0.0
        gap_tok = tokens * WINDOW / self._tpm if self._tpm else 0.0
        self._next_req, self._next_tok = slot + gap_req, slot + gap_tok
        self._slack = LATE_SLACK * max(gap_req, gap_tok)
        self._sent.append(now)
        self._forget(now)
        if self._first_sent is None:
            self._first_sent = now

    def _forget(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - WINDOW:
            self._sent.popleft()

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token clock once the response's usage (`actual` tokens) is known."""
        if self._tpm is None or actual == estimated:
            return
        with self._lock:
            shifted = self._next_tok + (actual - estimated) * WINDOW / self._tpm
            if actual < estimated:
                # Credit back, but never into the past: time nobody used cannot be spent in a burst later.
                shifted = max(shifted, min(self._next_tok, self._clock()))
            self._next_tok = shifted

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause every worker until now + `retry_after` (default 2 s, doubling) and slow the pace."""
        with self._lock:
            now = self._clock()
            self._rate_limited += 1
            new_event = now >= self._event_until
            if retry_after is not None:
                delay = max(0.0, retry_after)
            else:
                if new_event:
                    # A fresh 429 right after a default pause ended: that pause was too short.
                    too_short = self._pauses > 0 and now < self._paused_until + self._default_pause
                    self._default_pause = min(2 * self._default_pause, MAX_DEFAULT_PAUSE) if too_short \
                        else DEFAULT_PAUSE
                delay = self._default_pause
            if now + delay > self._paused_until:  # a later, shorter delay never shortens a pause
                self._paused_total += now + delay - max(self._paused_until, now)
                self._paused_until = now + delay
            if new_event:
                self._pauses += 1
                self._decrease(now)
                self._event_until = max(self._paused_until, now + ECHO_WINDOW)
            else:
                self._event_until = max(self._event_until, self._paused_until)

    def _decrease(self, now: float) -> None:
        before = self._rate
        if self._rpm is None and before is None:
            # No rpm was given: the first 429 starts the pace from the rate achieved so far. Only the first:
            # later measurements include the pauses themselves, and re-measuring would ratchet the pace
            # down to nothing under random 429s (seen in `make bench` P5).
            measured = self._achieved_rpm(now)
            if measured is not None:
                before = measured
                self._step = before / RECOVERY_STEPS
        if before is None:
            return  # nothing sent yet: the pause alone must do
        self._rate = max(MIN_RPM, before * DECREASE)
        self._decreases += 1

    def _achieved_rpm(self, now: float) -> float | None:
        self._forget(now)
        if self._first_sent is None or not self._sent:
            return None
        span = max(1.0, min(WINDOW, now - self._first_sent))
        return len(self._sent) * WINDOW / span

    def on_success(self) -> None:
        """A request succeeded: let the pace climb back toward the configured rpm."""
        with self._lock:
            if self._rate is None or self._rate == self._rpm or self._clock() < self._paused_until:
                return  # nothing to recover, or a request sent before the pause says nothing about the pace
            rate = self._rate + self._step
            self._rate = rate if self._rpm is None else min(rate, self._rpm)

    @property
    def current_rpm(self) -> float | None:
        """The pace in force, in requests per minute; None when nothing paces requests."""
        with self._lock:
            return self._rate

    @property
    def paused_until(self) -> float:
        """Clock time before which no request is let through (in the past when not paused)."""
        with self._lock:
            return self._paused_until

    def snapshot(self) -> dict[str, Any]:
        """Figures for progress lines and the final report."""
        with self._lock:
            ahead = max(0.0, self._paused_until - self._clock())
            return {"rpm": self._rpm, "tpm": self._tpm, "current_rpm": self._rate,
                    "rate_limited": self._rate_limited, "pauses": self._pauses,
                    "paused_seconds": round(self._paused_total - ahead, 3), "decreases": self._decreases}
