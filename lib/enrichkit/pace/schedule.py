"""When the next request may go: GCRA slot arithmetic on the request clock and the token clock. Pure.

GCRA virtual scheduling with a burst of 1: each request reserves the next slot, one interval
(window/pace s) after the previous one, and its input tokens reserve time on a second clock the same
way (tokens * window / (tpm * headroom) s); a request goes at the later of the two, and never during a
pause. A `Schedule` is a value: it reads no clock, holds no lock and never sleeps; `Limiter` keeps
the one in force, passes it the time and replaces it with what `take`, `settle` and `pause` return.
"""

from __future__ import annotations

from typing import NamedTuple

LATE_SLACK = 0.1  # a wake-up late by up to this fraction of a slot keeps the grid: threads cannot drift the pace


class Schedule(NamedTuple):
    """The two clocks' next free slots, the pause in force, and the last slot's length. A value (a tuple: made
    once per request, and a frozen dataclass is several times slower to make)."""

    window: float  # seconds a quota is counted over
    tpm: float | None  # input tokens per window (None: tokens are not paced)
    headroom: float  # share of the token quota the token clock runs at
    next_req: float  # earliest start of the next request on the request clock
    next_tok: float  # ... and on the token clock
    paused_until: float  # no request goes before this
    paused_total: float = 0.0  # seconds of pause granted, including any still ahead
    gap: float = 0.0  # the last slot's length
    slack: float = 0.0  # the lateness that keeps the grid (for a worker that did not sleep for the slot)

    @classmethod
    def starting(cls, now: float, *, window: float, tpm: float | None, headroom: float) -> Schedule:
        """A schedule whose first request may go at `now`."""
        return cls(window, tpm, headroom, now, now, now)

    def due(self) -> float:
        """When the shared schedule lets the next request go (the later clock, or the pause's end)."""
        return max(self.next_req, self.next_tok, self.paused_until)

    def wait(self, now: float, own: float | None = None) -> tuple[float, bool]:
        """(seconds until a request may go, <= 0 when it may go now; whether the shared schedule binds rather
        than `own`, the asking worker's own earliest start after its last 429)."""
        grid = max(self.next_req, self.next_tok, self.paused_until)  # `due()`, inline: every poll asks
        if own is None or own <= grid:
            return grid - now, True
        return own - now, False

    def token_seconds(self, tokens: float) -> float:
        """The token clock's time for `tokens` input tokens (0 when tokens are not paced)."""
        return tokens * self.window / (self.tpm * self.headroom) if self.tpm else 0.0

    def take(self, now: float, tokens: int, *, rate: float | None, head: bool) -> Schedule:
        """Reserve the slot of a request of `tokens` input tokens going at `now` (when `wait` says it may), at
        `rate` requests per window (None: unpaced). `head`: the taker slept for this very slot."""
        grid = max(self.next_req, self.next_tok, self.paused_until)  # `due()`, inline: this is the hot path
        # A wake-up a little late keeps the slot grid (no drift); after idle time, start afresh. The head
        # slept for this very slot, so its lateness (a slow wake-up, the GIL) is not idle time: up to a slot.
        slot = grid if now - grid <= (self.gap if head else self.slack) else now
        gap_req = self.window / rate if rate else 0.0
        gap_tok = max(0, tokens) * self.window / (self.tpm * self.headroom) if self.tpm else 0.0  # token_seconds
        gap = max(gap_req, gap_tok)
        return Schedule(self.window, self.tpm, self.headroom, slot + gap_req, slot + gap_tok, self.paused_until,
                        self.paused_total, gap, LATE_SLACK * gap)

    def settle(self, now: float, estimated: int, actual: int) -> Schedule:
        """The token clock corrected once an answer says its request's real input tokens (`actual`)."""
        shifted = self.next_tok + self.token_seconds(actual - estimated)
        if actual < estimated:
            # Credit back, but never into the past: time nobody used cannot be spent in a burst later.
            shifted = max(shifted, min(self.next_tok, now))
        return Schedule(self.window, self.tpm, self.headroom, self.next_req, shifted, self.paused_until,
                        self.paused_total, self.gap, self.slack)

    def pause(self, now: float, until: float) -> Schedule:
        """No request goes before `until`; a pause already longer stays as it is (a later, shorter one never
        shortens it)."""
        if until <= self.paused_until:
            return self
        return Schedule(self.window, self.tpm, self.headroom, self.next_req, self.next_tok, until,
                        self.paused_total + (until - max(self.paused_until, now)), self.gap, self.slack)

    def paused_ahead(self, now: float) -> float:
        """Seconds of pause still ahead at `now`."""
        return max(0.0, self.paused_until - now)
