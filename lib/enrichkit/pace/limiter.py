"""One pace for all workers: the shell that reads the clock, holds the lock, sleeps, and keeps each worker's wait.

The rules are pure and live elsewhere: when the next request may go is `schedule.Schedule` (GCRA slots on
a request clock and a token clock, at `headroom`, 99 %, of the quota, so a server that counts a window,
sliding or fixed, never sees more than the quota in one even when requests reach it a little late or
early); what the quota is, and so the pace, and when a flood of 429s pauses every worker, is
`judge.judge`, applied by `quota.QuotaEstimate`. `Limiter` asks them under its lock with the time,
keeps what they return, and adds what only a shell can: sleeping in naps, one sleeper per slot, each
worker's own retry delay after its 429, events sent outside the lock, and the figures. Rates are counted
per window: "rpm" is requests per `window` seconds, a minute unless a test or the bench shrinks it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from enrichkit.pace.judge import Event
from enrichkit.pace.quota import QuotaEstimate
from enrichkit.pace.schedule import Schedule

WINDOW = 60.0  # seconds a quota is counted over (Gemini's quotas are per minute); read when a Limiter is made
HEADROOM = 0.99  # pace = this share of the quota: room for requests that reach the server late or early
DEFAULT_PAUSE = 2.0  # when a 429 carries no delay


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
        self._rpm, self._tpm = rpm, tpm
        self._window = WINDOW if window is None else window
        self._clock, self._sleep, self._max_nap = clock, sleep, max_nap
        self._on_event, self._worker = on_event, worker
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)  # workers waiting behind the one that sleeps until the slot
        self._head: Hashable | None = None  # that one: it alone wakes for the next slot
        now = clock()
        self._estimate = QuotaEstimate(rpm, window=self._window, headroom=headroom, now=now)
        self._schedule = Schedule.starting(now, window=self._window, tpm=tpm, headroom=headroom)
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
        wait, shared = self._schedule.wait(now, self._own_wait.get(me))
        if wait > 0:
            return wait, shared
        self._own_wait.pop(me, None)
        self._schedule = self._schedule.take(now, tokens, rate=self._estimate.rate, head=self._head == me)
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
            self._schedule = self._schedule.settle(self._clock(), estimated, actual)

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
            decision = self._estimate.on_rate_limited(me, now, delay, quota=quota, limit=limit)
            if decision.pause_until is not None:
                self._schedule = self._schedule.pause(now, decision.pause_until)
            wait = max(own, self._schedule.paused_until) - now
        self._emit(decision.events)
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
            return self._schedule.paused_until

    def snapshot(self) -> dict[str, Any]:
        """Figures for progress lines, `jobs.py status` and the final report."""
        with self._lock:
            ahead = self._schedule.paused_ahead(self._clock())
            est, counts = self._estimate, self._estimate.counts
            return {"rpm": self._rpm, "tpm": self._tpm, "current_rpm": est.rate, "quota_rpm": est.quota,
                    "window_seconds": self._window, "rate_limited": est.rate_limited, "pauses": counts["pause"],
                    "holds": counts["hold"],
                    "paused_seconds": round(self._schedule.paused_total - ahead, 3), "paused_for": round(ahead, 3),
                    "decreases": counts["decrease"], "increases": counts["increase"]}
