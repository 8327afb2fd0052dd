"""A circuit breaker shared by all workers: stop hammering a service that is down, probe it, resume.

closed --(threshold consecutive failures)--> open --(cool-down over)--> half_open (one probe)
half_open --probe succeeds--> closed;  half_open --probe fails--> open, cool-down doubled (capped)
Any success, from the probe or from a request already in flight, closes it: the service answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from enrichkit.errors import OutageTooLong

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Thread-safe; callers wait in naps outside the lock, so a stop request is seen quickly."""

    def __init__(self, *, threshold: int = 5, base_cooldown: float = 2.0, max_cooldown: float = 60.0,
                 max_outage: float = 600.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep, max_nap: float = 0.25,
                 on_event: Callable[[str], None] = lambda message: None) -> None:
        if threshold < 1 or base_cooldown <= 0 or max_cooldown < base_cooldown or max_nap <= 0:
            raise ValueError("need threshold >= 1 and 0 < base_cooldown <= max_cooldown, max_nap > 0")
        self._threshold, self._base, self._max_cooldown = threshold, base_cooldown, max_cooldown
        self._max_outage, self._clock, self._sleep, self._max_nap = max_outage, clock, sleep, max_nap
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0  # consecutive failures while closed
        self._streak_started = 0.0  # first failure of the current streak
        self._cooldown = base_cooldown
        self._open_until = 0.0
        self._probe_since = 0.0
        self._opened = 0
        self._answered = False  # anything ever answered (even with an error): the address is right
        self._refused = 0  # connections refused before anything answered
        self._on_event = on_event

    def before_request(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Wait until a request may go: at once when closed; after the cool-down, one caller probes.

        Returns False once `should_stop()` is true. Raises OutageTooLong when the breaker has been
        open, since the first failure of its streak, for longer than `max_outage`.
        """
        while not should_stop():
            with self._lock:
                if self._state == "closed":
                    return True
                now = self._clock()
                if now - self._streak_started > self._max_outage:
                    raise OutageTooLong(now - self._streak_started)
                # A probe that never reported (its worker died) must not block everyone forever.
                probe_lost = self._state == "half_open" and now - self._probe_since > self._max_cooldown
                if (self._state == "open" and now >= self._open_until) or probe_lost:
                    self._state, self._probe_since = "half_open", now
                    return True  # this caller is the probe; the others wait for its result
                wait = self._open_until - now if self._state == "open" else self._max_nap
            self._sleep(min(wait, self._max_nap))  # never under the lock
        return False

    def record_success(self) -> None:
        """The service answered: close, forget the failure streak, reset the cool-down."""
        with self._lock:
            was = self._state
            self._state, self._failures, self._cooldown = "closed", 0, self._base
            self._answered = True
        if was != "closed":
            self._on_event("the API answers again: sending resumes")

    def unreachable(self, limit: int) -> bool:
        """Connections were refused `limit` times and nothing has ever answered: a wrong address, not an outage."""
        with self._lock:
            return not self._answered and self._refused >= limit

    def record_failure(self, *, refused: bool = False) -> None:
        """A server error or a timeout: count it while closed; a failed probe re-opens for longer."""
        with self._lock:
            if refused and not self._answered:
                self._refused += 1
            now = self._clock()
            if self._state == "closed":
                if self._failures == 0:
                    self._streak_started = now
                self._failures += 1
                if self._failures >= self._threshold:
                    self._open(now)
            elif self._state == "half_open":
                self._cooldown = min(2 * self._cooldown, self._max_cooldown)
                self._open(now)
            # open: a request sent before it opened failed too; that is already known.

    def _open(self, now: float) -> None:
        self._state, self._open_until = "open", now + self._cooldown
        self._opened += 1
        self._on_event(f"the API keeps failing: sending paused for {self._cooldown:.0f} s, then one probe "
                       "(circuit breaker open)")

    def cooling_down(self) -> bool:
        """Open and still in its cool-down: a stage with a fallback model uses it meanwhile."""
        with self._lock:
            return self._state == "open" and self._clock() < self._open_until

    @property
    def state(self) -> State:
        """One of closed, open (cooling down, or cooled down with no probe yet), half_open (probe out)."""
        with self._lock:
            return self._state

    def snapshot(self) -> dict[str, Any]:
        """Figures for progress lines and the final report."""
        with self._lock:
            outage = self._clock() - self._streak_started if self._state != "closed" else 0.0
            return {"state": self._state, "opened": self._opened, "cooldown": self._cooldown,
                    "outage_seconds": round(outage, 3)}
