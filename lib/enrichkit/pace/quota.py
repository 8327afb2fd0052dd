"""The quota estimate: the record of requests and answers, and the memory `judge` keeps, applied in order.

`QuotaEstimate` matches each answer to the request its worker sent last, records both (`traffic.Traffic`),
asks `judge.judge` what the answer says, keeps the memory it returns (the quota learnt and the pace it
sets: `quota`, `rate`) and counts what happened (429s, pauses, holds, pace cuts and raises) for the
limiter's figures. The rules themselves are in `enrichkit.pace.judge`.

It holds no lock and reads no clock: the `Limiter` calls it under its own lock with the time, and
applies what it returns (the end of a pause, events to report).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from enrichkit.pace.judge import Answer, Decision, Event, History, Memory, is_fresh, judge
from enrichkit.pace.traffic import ADMITTED, REJECTED, Sent, Traffic


class QuotaEstimate:
    """The quota learnt from the answers, and the pace (`rate`, requests per window) it sets.

    Not thread-safe: its owner serialises the calls. `worker` names the caller of each call, so an
    answer is matched to the request the same worker sent last.
    """

    def __init__(self, rpm: float | None, *, window: float, headroom: float, now: float) -> None:
        self.traffic = Traffic(window)
        self.memory = Memory.starting(rpm, window=window, headroom=headroom, now=now)
        self._mine: dict[Hashable, Sent] = {}  # each worker's request awaiting its answer
        self.rate_limited = 0  # 429s heard
        self.counts: Counter[str] = Counter()  # decisions taken, by event: pause, hold, decrease, increase

    @property
    def quota(self) -> float | None:
        """Requests per window, as configured or learnt; None: not known."""
        return self.memory.quota

    @property
    def rate(self) -> float | None:
        """The pace in force (requests per window); None: unpaced."""
        return self.memory.rate

    def on_sent(self, worker: Hashable, now: float) -> None:
        """`worker` sent a request at `now`; its next answer is that request's."""
        self._mine[worker] = self.traffic.sent(now)

    def on_success(self, worker: Hashable, now: float) -> list[Event]:
        """`worker`'s request was answered (not 429): the pace may rise after a clean window."""
        sent = self._mine.pop(worker, None)
        if sent is None:
            return []
        sent.state = ADMITTED
        return self._apply(Answer(now, sent.at)).events

    def on_rate_limited(self, worker: Hashable, now: float, delay: float, *, quota: bool | None = None,
                        limit: float | None = None) -> Decision:
        """`worker`'s request got a 429 with a retry delay of `delay` s: a pause for everyone, or none.

        `quota` and `limit` are `Limiter.on_rate_limited`'s: whether the 429 names a per-window quota
        (False: none, a loaded API's; None: unknown, taken as one) and the quota it states.
        """
        self.rate_limited += 1
        sent = self._mine.pop(worker, None)
        if sent is not None:
            sent.state = REJECTED
        return self._apply(Answer(now, now if sent is None else sent.at, True, delay, quota, limit))

    def _apply(self, answer: Answer) -> Decision:
        if is_fresh(self.memory, answer):  # its verdict is part of the history judged
            self.traffic.answered(answer.at, answer.rejected)
        decision = judge(History(self.traffic, self.memory), answer)
        self.memory = decision.memory
        for name, _ in decision.events:
            self.counts[name] += 1
        return decision
