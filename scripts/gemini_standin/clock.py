"""The stand-in's clock: the real one, or time that runs `speed` times faster, shared with a CLI run in the
same process so that both agree on it.

Its quota windows, outages and latencies are on this clock. Given to an in-process run as well
(``enrichkit.testing.use(clock=clock)``: it is callable and has ``sleep``), the run's pace, pauses, retry
delays, backoff and circuit breaker count the same seconds: a test keeps Google's 60 s window and the
product's own waits, and a minute passes in 60/speed real seconds. What stays on the real clock: the
client's timeouts (and so X-Server-Timeout and ``hang_seconds``), the HTTP Date, and the Batch API (its
own accelerated times, ``batch_*``).
"""

from __future__ import annotations

import time


class ScaledClock:
    """Seconds that pass `speed` times faster than real ones; thread-safe (reads only). It starts at the
    monotonic clock's reading, so at speed 1 it is the monotonic clock (`FakeGemini.origin` is on it)."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be more than 0")
        self.speed = speed
        self._start = time.monotonic()

    def __call__(self) -> float:
        return self._start + (time.monotonic() - self._start) * self.speed

    def sleep(self, seconds: float) -> None:
        time.sleep(self.real(seconds))

    def real(self, seconds: float) -> float:
        """The real seconds that `seconds` on this clock take."""
        return max(0.0, seconds) / self.speed
