"""What the pool sent in the last two windows and how the server answered: the record the 429 judgement reads.

Each request is kept with its send time and what became of it (let through or refused), so at a 429
`judge` can count how many requests sent in the window before the rejected one were let through: the
quota as the server counts it. The verdicts of fresh answers (to requests sent at the pace in force) of
the last window say how often 429s come. `quota.QuotaEstimate` appends to it in time order; `judge`
only reads it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

PENDING, ADMITTED, REJECTED = 0, 1, 2  # what became of a request


class Sent:
    """One request: when it was sent and what became of it (PENDING, ADMITTED, REJECTED)."""

    __slots__ = ("at", "state")

    def __init__(self, at: float, state: int = PENDING) -> None:
        self.at, self.state = at, state


class Traffic:
    """What the pool sent in the last two windows, and the verdicts of the fresh answers of the last one.

    Appended to in time order by its owner (`QuotaEstimate`); `judge` only reads it.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._sent: deque[Sent] = deque()  # oldest first
        self._verdicts: deque[tuple[float, bool]] = deque()  # (answered at, 429?) of fresh answers, oldest first

    @classmethod
    def of(cls, window: float, sent: Iterable[tuple[float, int]] = (),
           verdicts: Iterable[tuple[float, bool]] = ()) -> Traffic:
        """A record built from (sent at, state) and (answered at, 429?) pairs, oldest first (for tests)."""
        log = cls(window)
        log._sent.extend(Sent(at, state) for at, state in sent)
        log._verdicts.extend(verdicts)
        return log

    def sent(self, now: float) -> Sent:
        """A request goes at `now`; the returned record is told its answer (`state`)."""
        request = Sent(now)
        self._sent.append(request)
        while self._sent and self._sent[0].at <= now - 2 * self.window:
            self._sent.popleft()
        return request

    def answered(self, now: float, rejected: bool) -> None:
        """A fresh answer (to a request sent at the pace in force) came at `now`."""
        self._verdicts.append((now, rejected))
        while self._verdicts and self._verdicts[0][0] <= now - self.window:
            self._verdicts.popleft()

    def share(self) -> float:
        """The share of 429s among the fresh answers of the last window."""
        return sum(rejected for _, rejected in self._verdicts) / max(1, len(self._verdicts))

    def answers_after(self, t: float) -> tuple[int, int]:
        """(fresh answers, of them 429) of the last window that came after `t`."""
        answers = rejected = 0
        for at, refused in reversed(self._verdicts):
            if at <= t:
                break
            answers += 1
            rejected += refused
        return answers, rejected

    def window_before(self, t: float) -> tuple[float, int]:
        """(requests per window the pool sent, requests the server let through) over the window before `t`.

        In a record younger than a window, what it sent so far is scaled to a window. What the server let
        through is not scaled: a quota's window can fill early.
        """
        sent = admitted = 0
        for request in reversed(self._sent):
            if request.at < t - self.window:
                break
            if request.at < t:
                sent += 1
                admitted += request.state != REJECTED
        span = min(self.window, t - self._sent[0].at) if self._sent else self.window
        return sent * self.window / max(span, self.window / 60), admitted

    def covers_window(self, t: float) -> bool:
        """Whether the record reaches a whole window back from `t`."""
        return bool(self._sent) and t - self._sent[0].at >= self.window

    def sent_after(self, t: float) -> int:
        """Requests sent after `t`."""
        return sum(request.at > t for request in self._sent)
