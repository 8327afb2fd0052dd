"""One pace for all workers: requests spaced just under the quota, pauses, and each worker's own wait.

Pacing is GCRA virtual scheduling with a burst of 1: each request reserves the next slot, one
interval (window/pace s) after the previous one, and input tokens run on a second clock the same
way; a request goes at the later of the two, and never during a pause or before the worker's own
retry delay is over. The pace is `headroom` (99 %) of the quota, so a server that counts a window,
sliding or fixed, never sees more than the quota in one even when requests reach it a little late
or early.

What the quota is, and so the pace, comes from the answers: `quota.QuotaEstimate` (which also says
when a flood of 429s pauses every worker). The limiter calls it under its lock and applies what it
returns. Rates are counted per window: "rpm" is requests per `window` seconds, a minute unless a
test or the bench shrinks it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from enrichkit.pace.quota import Event, QuotaEstimate

WINDOW = 60.0  # seconds a quota is counted over (Gemini's quotas are per minute); read when a Limiter is made
HEADROOM = 0.99  # pace = this share of the quota: room for requests that reach the server late or early
DEFAULT_PAUSE = 2.0  # when a 429 carries no delay
LATE_SLACK = 0.1  # a wake-up late by up to this fraction of a slot keeps the grid: threads cannot drift the pace


class Limiter:
    """Shared by every worker thread; all methods are thread-safe and hold the lock briefly.

    A worker calls `acquire` before each request and then, from the same thread, `on_success` or
    `on_rate_limited` (the limiter matches the answer to the request by thread), and `settle` with
    the input tokens the answer reports. `worker` names the caller (the thread, unless a test says).
    """

    def __init__(self, rpm: float | None, tpm: float | None, *, window: float | None = None,
                 headroom: float = HEADROOM, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep, max_nap: float = 0.25,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 worker: Callable[[], Hashable] = threading.get_ident) -> None:
        if any(limit is not None and limit <= 0 for limit in (rpm, tpm)):
            raise ValueError("rpm and tpm must be positive (or None for no limit)")
        if max_nap <= 0 or not 0 < headroom <= 1:
            raise ValueError("max_nap must be positive and headroom in (0, 1]")
        self._rpm, self._tpm, self._headroom = rpm, tpm, headroom
        self._window = WINDOW if window is None else window
        self._clock, self._sleep, self._max_nap = clock, sleep, max_nap
        self._on_event, self._worker = on_event, worker
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)  # workers waiting behind the one that sleeps until the slot
        self._head: Hashable | None = None  # that one: it alone wakes for the next slot
        now = clock()
        self._estimate = QuotaEstimate(rpm, window=self._window, headroom=headroom, now=now)
        self._next_req = self._next_tok = now  # earliest start of the next request on each clock
        self._gap = self._slack = 0.0  # the last slot's length, and the lateness that keeps the grid
        self._paused_until = now
        self._paused_total = 0.0  # seconds of pause granted, including any still ahead
        self._own_wait: dict[Hashable, float] = {}  # a worker's own retry delay, from its last 429

    # --- sending ------------------------------------------------------------------------------

    def acquire(self, tokens: int, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Block until a request of about `tokens` input tokens may go, and reserve it.

        Returns False, reserving nothing, once `should_stop()` is true. Sleeps in naps of at most
        `max_nap`, re-reading the schedule after each, so a pause that begins meanwhile holds it too.
        Of the workers waiting for the shared schedule only one (the head) sleeps until the next slot;
        the others wait for it to take that slot, so a slot wakes one worker, not all of them.
        """
        me = self._worker()
        try:
            while not should_stop():
                with self._lock:
                    wait, shared = self._check(tokens, me)
                    if wait <= 0:
                        self._leave(me)
                        return True
                    if shared and self._head is not None and self._head != me:
                        self._turn.wait(self._max_nap)  # at most a nap: a stop is still seen
                        continue
                    if shared:
                        self._head = me
                self._sleep(min(wait, self._max_nap))  # never under the lock
            return False
        finally:
            if self._head == me:  # stopped (or interrupted) at the head: the next waiter takes over
                with self._lock:
                    self._leave(me)

    def try_acquire(self, tokens: int) -> float:
        """Reserve a slot now and return 0.0, or return the seconds to wait before asking again."""
        with self._lock:
            return self._check(tokens, self._worker())[0]

    def _check(self, tokens: int, me: Hashable) -> tuple[float, bool]:
        """Reserve a slot if one is due: (0.0, _), else (seconds to wait, whether the shared schedule
        binds rather than the worker's own retry delay). Under the lock."""
        now = self._clock()
        grid = max(self._next_req, self._next_tok, self._paused_until)
        own = self._own_wait.get(me, grid)
        start = max(grid, own)
        if start > now:
            return start - now, own <= grid
        self._own_wait.pop(me, None)
        # A wake-up a little late keeps the slot grid (no drift); after idle time, start afresh. The head
        # slept for this very slot, so its lateness (a slow wake-up, the GIL) is not idle time: up to a slot.
        slot = grid if now - grid <= (self._gap if self._head == me else self._slack) else now
        rate = self._estimate.rate
        gap_req = self._window / rate if rate else 0.0
        gap_tok = max(0, tokens) * self._window / (self._tpm * self._headroom) if self._tpm else 0.0
        self._next_req, self._next_tok = slot + gap_req, slot + gap_tok
        self._gap = max(gap_req, gap_tok)
        self._slack = LATE_SLACK * self._gap
        self._estimate.on_sent(me, now)
        return 0.0, False

    def _leave(self, me: Hashable) -> None:
        """`me` no longer waits: if it was the head, wake one other waiter to sleep until the next slot."""
        if self._head == me:
            self._head = None
            self._turn.notify()

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token clock once the response's usage (`actual` input tokens) is known."""
        if self._tpm is None or actual == estimated:
            return
        with self._lock:
            shifted = self._next_tok + (actual - estimated) * self._window / (self._tpm * self._headroom)
            if actual < estimated:
                # Credit back, but never into the past: time nobody used cannot be spent in a burst later.
                shifted = max(shifted, min(self._next_tok, self._clock()))
            self._next_tok = shifted

    # --- answers ------------------------------------------------------------------------------

    def on_success(self) -> None:
        """The calling worker's request was answered (not 429): the pace may rise after a clean window."""
        with self._lock:
            events = self._estimate.on_success(self._worker(), self._clock())
        self._emit(events)

    def on_rate_limited(self, retry_after: float | None, *, quota: bool | None = None,
                        limit: float | None = None) -> float:
        """The calling worker's request got a 429. Returns the seconds it must wait before its retry.

        `retry_after` is the server's delay (None: none given). `quota` says whether the 429 names a
        per-minute quota (True: a QuotaFailure with a PerMinute quotaId; None: it does not say, as one
        with only a RetryInfo or no details at all, judged by how often such 429s come; False: the
        caller knows it is no quota's, and it never changes the pace). `limit` is the quota
        the 429 states (QuotaFailure `quotaValue`) when it counts requests per window. The next
        `acquire` from this worker waits the returned time by itself; the caller need not sleep it.
        """
        with self._lock:
            now = self._clock()
            me = self._worker()
            delay = DEFAULT_PAUSE if retry_after is None else max(0.0, retry_after)
            own = max(self._own_wait.get(me, now), now + delay)
            self._own_wait[me] = own
            pause_until, events = self._estimate.on_rate_limited(me, now, delay, quota=quota, limit=limit)
            if pause_until is not None and pause_until > self._paused_until:  # a later, shorter one never shortens it
                self._paused_total += pause_until - max(self._paused_until, now)
                self._paused_until = pause_until
            wait = max(own, self._paused_until) - now
        self._emit(events)
        return wait

    def _emit(self, events: list[Event]) -> None:
        if self._on_event is not None:
            for name, fields in events:  # outside the lock: the callback may log, and logging may block
                self._on_event(name, fields)

    # --- figures ------------------------------------------------------------------------------

    @property
    def current_rpm(self) -> float | None:
        """The pace in force, in requests per window (minute); None when nothing paces requests."""
        with self._lock:
            return self._estimate.rate

    @property
    def paused_until(self) -> float:
        """Clock time before which no request is let through (in the past when not paused)."""
        with self._lock:
            return self._paused_until

    def snapshot(self) -> dict[str, Any]:
        """Figures for progress lines, `jobs.py status` and the final report."""
        with self._lock:
            ahead = max(0.0, self._paused_until - self._clock())
            est = self._estimate
            return {"rpm": self._rpm, "tpm": self._tpm, "current_rpm": est.rate, "quota_rpm": est.quota,
                    "window_seconds": self._window, "rate_limited": est.rate_limited, "pauses": est.pauses,
                    "holds": est.holds,
                    "paused_seconds": round(self._paused_total - ahead, 3), "paused_for": round(ahead, 3),
                    "decreases": est.decreases, "increases": est.increases}
