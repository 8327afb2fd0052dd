"""The quota estimate: what the server's answers, 429s above all, say the quota is, and the pace it sets.

Every request is kept for two windows with its send time and answer, so at a 429 the estimate knows
how many requests sent in the window before the rejected one were let through: the quota as the
server counts it. A 429 then does one of these (429s for requests sent before the pace last changed
are echoes: they wait, and teach nothing):

- Storm: the pace is 1.2x what the server let through or more (or unpaced), and 8 of the last 20
  answers (or 5 % of the window's) are 429; or the first answer after a pause is a 429 again. Every
  worker pauses for the server's delay; the pace becomes 99 % of what the server let through.
- At the pace, 3 429s in a row (a fixed window used up before its end) or 5 % of a window's answers:
  the pace is set from what the server let through, and every worker holds window/60 s (1 s),
  doubling while the 429s go on, rather than each spending Google's 20-60 s delay.
- At the pace, a 429 in every other window or more for 3 windows, 1.5 % of the answers or more: a pace
  a hair over the quota (too few 429s to be many or in a row); that share comes off the pace.
- Otherwise (an edge of a window, a loaded API): only the request that got it waits its delay; the
  others keep the pace, so no slot is lost.
- A cut that does not make 429s rarer a window later is undone, and their share is taken as a loaded
  API's: from then on only more 429s than that share cut the pace. So random 429s never ratchet it.
- A whole window without a 429 while the pace binds raises the quota estimate 2 % (4, 8, 16 % after
  more such windows), never above the configured rpm or the quota a 429 stated; a 429 within the
  window after a raise undoes it, and the next raise waits twice as many clean windows (up to 32).
  This finds a quota nobody gave, or one cut too low.

None of this needs the 429 to name a quota: one with only a RetryInfo, or no details at all ("Resource
has been exhausted"), is judged by what it does. A 429 may say more (see `QuotaEstimate.on_rate_limited`):
that it names a per-minute quota, or the quota itself (QuotaFailure quotaValue: taken at once, and the
pace stays under it until 5 windows pass without a 429 stating it; then it is probed like any quota,
so a quota that comes back is found; each time it is stated again unchanged, the wait doubles, up to
80 windows). Rates are counted per window: "rpm" is requests per `window` seconds.

`QuotaEstimate` holds no lock and reads no clock: the `Limiter` calls it under its own lock with the
time, and applies what it returns (the pace in `rate`, the end of a pause, events to report).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Any, NamedTuple

STORM_OF, STORM_429S = 20, 8  # this many 429s among the last answers is a flood (a loaded API's 2 %: never)
OVERRUN = 1.2  # ... and a storm when the pool sends this much more than the server let through
CREEP_SHARE, CREEP_MIN = 0.05, 10  # a window with this share of 429s (and at least this many): pace above quota
CUT_MARGIN = 0.01  # ... if the server let through at least this much less than the pool sent in the window
STREAK = 3  # ... as are this many 429s in a row (a fixed window's end); a loaded API's 429s come one by one
STEADY_WINDOWS, STEADY_SHARE = 3, 0.015  # ... as are 429s in every other window for this many, this share
HOLD_SHARE = 60  # a run of 429s at the quota holds every worker window/60 s (1 s), doubling while it lasts
PROBE_STEP, MAX_PROBE_STEP = 0.02, 0.16  # quota estimate raised after a clean window, doubling per clean window
MAX_PROBE_WAIT = 32  # a raise undone doubles the clean windows before the next one (1, 2, 4 ... this many)
STATED_HOLD, MAX_STATED_HOLD = 5, 80  # windows a stated quota caps the pace after the last 429 stating it
BINDING = 0.9  # the pace binds when the pool sent at least this share of it over the last window
MIN_RPM = 1.0

PENDING, ADMITTED, REJECTED = 0, 1, 2
Event = tuple[str, dict[str, Any]]


class Verdict(NamedTuple):
    """What a 429 decided: every worker waits until `pause_until` (None: no pause); `events` to report."""

    pause_until: float | None
    events: list[Event]


class _Sent:
    """One request: when it was sent and what became of it."""

    __slots__ = ("at", "state")

    def __init__(self, at: float) -> None:
        self.at, self.state = at, PENDING


class QuotaEstimate:
    """The quota learnt from the answers, and the pace (`rate`, requests per window) it sets.

    Not thread-safe: its owner serialises the calls. `worker` names the caller of each call, so an
    answer is matched to the request the same worker sent last.
    """

    def __init__(self, rpm: float | None, *, window: float, headroom: float, now: float) -> None:
        self._rpm, self._window, self._headroom = rpm, window, headroom
        self.quota: float | None = rpm  # requests per window, as configured or learnt; None: not known
        self.rate = self._pace(rpm)  # the pace in force (requests per window); None: unpaced
        self._stated: float | None = None  # the quota the server's last 429 stated
        self._stated_at, self._forgotten = -math.inf, 0.0  # when it last said so; the last one let go
        self._stated_hold = STATED_HOLD  # windows without a 429 before it is let go: a quota may come back
        self._sent: deque[_Sent] = deque()  # requests of the last two windows, oldest first
        self._mine: dict[Hashable, _Sent] = {}  # each worker's request awaiting its answer
        self._recent: deque[bool] = deque(maxlen=STORM_OF)  # answers since the last change: True = 429
        self._verdicts: deque[tuple[float, bool]] = deque()  # (answered at, 429?) of fresh answers, last window
        self._streak = 0  # fresh 429s since the last fresh success
        self._tally = [0, 0]  # fresh answers, and of them 429s, since the pace last changed (or rose)
        self._tally_from = now
        self._hold = window / HOLD_SHARE  # the next hold's length
        self._holding = False  # after a hold, until the first fresh answer says whether it was long enough
        self._changed_at = now  # answers to requests sent before this are echoes
        self._check_resume = False  # after a pause, until the first fresh answer says it was long enough
        self._last_429 = -math.inf  # when a fresh 429 last came
        self._probe_step = PROBE_STEP
        self._cut: tuple[float, float, float] | None = None  # (when, quota before, 429 share): a cut under review
        self._background = 0.0  # share of 429s that cutting the pace did not lower (a loaded API's)
        self._raised_from, self._raised_at = 0.0, -math.inf  # the quota before the last raise, and when
        self._probe_wait = 1  # clean windows since the last 429 before a raise: more after each raise undone
        self._next_probe_check = now
        self.rate_limited = self.pauses = self.holds = self.decreases = self.increases = 0

    # --- what the workers report --------------------------------------------------------------------

    def on_sent(self, worker: Hashable, now: float) -> None:
        """`worker` sent a request at `now`; its next answer is that request's."""
        sent = _Sent(now)
        self._sent.append(sent)
        self._mine[worker] = sent
        while self._sent and self._sent[0].at <= now - 2 * self._window:
            self._sent.popleft()

    def on_success(self, worker: Hashable, now: float) -> list[Event]:
        """`worker`'s request was answered (not 429): the pace may rise after a clean window."""
        events: list[Event] = []
        sent = self._mine.pop(worker, None)
        if sent is None:
            return events
        sent.state = ADMITTED
        if sent.at <= self._changed_at:
            return events  # sent at another pace: says nothing about this one
        self._check_resume = self._holding = False
        self._streak, self._hold = 0, self._window / HOLD_SHARE
        self._note(now, False, events)
        self._maybe_raise(now, events)
        return events

    def on_rate_limited(self, worker: Hashable, now: float, delay: float, *, quota: bool | None = None,
                        limit: float | None = None) -> Verdict:
        """`worker`'s request got a 429 with a retry delay of `delay` s: a pause for everyone, or none.

        `quota` and `limit` are `Limiter.on_rate_limited`'s: whether the 429 names a per-window quota
        (False: none, a loaded API's; None: unknown, taken as one) and the quota it states.
        """
        events: list[Event] = []
        self.rate_limited += 1
        sent = self._mine.pop(worker, None)
        sent_at = now if sent is None else sent.at
        if sent is not None:
            sent.state = REJECTED
        stated = quota is not False and limit is not None and limit > 0
        if stated:
            if float(limit or 0) == self._forgotten:  # let go too early: the quota had not come back
                self._stated_hold = min(MAX_STATED_HOLD, 2 * self._stated_hold)
            self._stated, self._stated_at, self._forgotten = float(limit or 0), now, 0.0
        pause_until = None
        if sent_at > self._changed_at:  # sent at the pace in force, not an echo of an earlier one
            pause_until = self._judge(now, sent_at, delay, quota is not False, events)
        if stated and self._stated != self.quota:
            self._set_quota(self._stated or 0.0, events)  # the server says what the quota is
            self._mark_change(now)
        return Verdict(pause_until, events)

    # --- judging ----------------------------------------------------------------------------------

    def _note(self, now: float, rejected: bool, events: list[Event]) -> None:
        self._recent.append(rejected)
        self._tally[0] += 1
        self._tally[1] += rejected
        self._verdicts.append((now, rejected))
        while self._verdicts and self._verdicts[0][0] <= now - self._window:
            self._verdicts.popleft()
        if self._cut is not None and now - self._cut[0] >= self._window:
            self._review_cut(now, *self._cut[1:], events)

    def _share(self) -> float:
        return sum(rejected for _, rejected in self._verdicts) / max(1, len(self._verdicts))

    def _review_cut(self, now: float, before: float, share_then: float, events: list[Event]) -> None:
        """A window after a cut without a pause: if 429s came as often, they were not the pace's. Undo it."""
        self._cut = None
        share = self._share()
        if share_then >= CREEP_SHARE and share >= share_then / 2:  # a few 429s at a window's end: too few to judge
            self._background = max(self._background, share)  # a loaded API's share: not a sign of the quota
            self._set_quota(before, events)
            self._mark_change(now)

    def _since_change(self) -> tuple[int, int]:
        """(fresh answers, of them 429) in the last window, since the pace last changed."""
        answers = rejected = 0
        for at, refused in reversed(self._verdicts):
            if at <= self._changed_at:
                break
            answers += 1
            rejected += refused
        return answers, rejected

    def _window_before(self, t: float) -> tuple[float, int]:
        """(requests per window the pool sends, requests the server let through) over the window before `t`.

        What it sends is the pace, or less when the workers cannot keep it; in a run younger than a window,
        what it sent so far, scaled to a window. What the server let through is not scaled: a quota's
        window can fill early.
        """
        sent = admitted = 0
        for request in reversed(self._sent):
            if request.at < t - self._window:
                break
            if request.at < t:
                sent += 1
                admitted += request.state != REJECTED
        span = min(self._window, t - self._sent[0].at) if self._sent else self._window
        sending = sent * self._window / max(span, self._window / 60)
        return (sending if self.rate is None else min(self.rate, sending)), admitted

    def _judge(self, now: float, sent_at: float, delay: float, teaches: bool, events: list[Event]) -> float | None:
        """What a fresh 429 says: a storm, a raise gone too far, a pace a little over the quota, or nothing.
        Returns the end of the pause it calls for, if any."""
        self._note(now, True, events)
        self._streak += 1
        if teaches:
            self._last_429, self._probe_step = now, PROBE_STEP
        sending, admitted = self._window_before(sent_at)
        answers, rejected = self._since_change()
        many = rejected >= max(CREEP_MIN, (CREEP_SHARE + self._background) * answers)
        # Sending well above what the server admits (or unpaced): a storm once 429s flood the answers (a
        # paced pool's moderate overrun shows as many 429s in the window; an unpaced one's, as a flood).
        overrun = sending >= OVERRUN * admitted
        whole = self._sent and sent_at - self._sent[0].at >= self._window  # counts that cover a whole window
        flood = sum(self._recent) >= STORM_429S or (teaches and many and self.rate is not None and whole)
        too_soon = self._check_resume and teaches  # the first answer after a pause is a 429 again
        if too_soon or (overrun and flood):
            # The quota is what the server let through while the pool sent well above it (unless a 429
            # stated it); not what it let through in a window that a pause left half empty.
            learnt = self._stated or (None if too_soon else float(admitted))
            return self._storm(now, delay, learnt if teaches else None, events)
        if overrun or not teaches or self.rate is None or self._stated:
            return None  # not (yet) a flood, a loaded API's 429, one in an unpaced pool, or the quota is known
        if now - self._raised_at < self._window:
            self._set_quota(self._raised_from, events)  # the last raise went past the quota: undo it
            self._raised_at = -math.inf
            self._probe_wait = min(MAX_PROBE_WAIT, 2 * self._probe_wait)  # and try again later each time
            self._mark_change(now)
            return None
        # Several 429s in a row (a fixed window's end), or many in a window: if the server let through
        # less than the pace sends, the pace is over the quota, and what it let through is the quota.
        # (If not, requests bunched up on their way, late ones with early ones: the pace is right.)
        in_a_row = self._streak >= STREAK
        # A pace a hair over the quota draws a 429 or two a window, too few to be many or in a row: seen
        # over several windows, its share is what to take off (a loaded API's share, once known, excepted).
        windows = (now - self._tally_from) / self._window
        share = self._tally[1] / max(1, self._tally[0])
        steady = (windows >= STEADY_WINDOWS and self._tally[1] >= max(STEADY_WINDOWS, windows / 2)
                  and share >= STEADY_SHARE + self._background)
        # Once a cut has been undone (the API sheds load with 429s), only many more 429s than that cut.
        over = many or (in_a_row and not self._background)
        quota = self.quota or 0.0
        if self._cut is None and steady and not (over and 0 < admitted < sending * (1 - CUT_MARGIN)):
            self._cut = (now, quota, self._share())
            self._set_quota(min(float(admitted or quota), quota * (1 - share)), events)
            self._mark_change(now)
        elif self._cut is None and over and 0 < admitted < sending * (1 - CUT_MARGIN):
            self._cut = (now, quota, self._share())
            self._set_quota(float(admitted), events)
            self._mark_change(now)
        if not (in_a_row or self._holding):
            return None
        # The window is used up until it ends (or slots free): hold everyone briefly, longer while it
        # lasts (the first answer after a hold says), rather than spend every worker on a long
        # retryDelay of its own.
        seconds = min(delay, self._hold)
        self.holds += 1
        events.append(("hold", {"seconds": seconds,
                                "message": f"429s at the quota: holding all workers for {seconds:.1f} s"}))
        self._hold = min(2 * self._hold, self._window)
        self._mark_change(now)  # answers to requests sent before the hold are its echoes
        self._holding = True
        return now + seconds

    def _storm(self, now: float, delay: float, quota: float | None, events: list[Event]) -> float:
        """Pause every worker for the server's delay; the pace becomes `quota` (what the server admitted)."""
        self.pauses += 1
        events.append(("pause", {"seconds": delay, "message": f"429: pausing all workers for {delay:.0f} s"}))
        if quota:
            self._set_quota(quota, events)
        self._mark_change(now)
        self._check_resume = True
        return now + delay

    def _maybe_raise(self, now: float, events: list[Event]) -> None:
        """After a whole window at this pace without a 429, probe a higher quota (up to the configured one)."""
        quota, window = self.quota, self._window
        if self._stated and now - self._stated_at >= self._stated_hold * window:
            self._forgotten, self._stated = self._stated, None  # long unsaid: probe above it, as for any quota
        ceiling = min(self._rpm or math.inf, self._stated or math.inf)
        if quota is None or quota >= ceiling or now < self._next_probe_check:
            return
        if min(now - self._changed_at, now - self._raised_at) < window or \
                now - self._last_429 < window * self._probe_wait:
            return
        self._next_probe_check = now + window / 20  # the count below costs a pass over a window's requests
        if self.rate is None or sum(s.at > now - window for s in self._sent) < BINDING * self.rate:
            return  # the pool is not using the pace: a higher one would be untested
        if self._raised_at > -math.inf:
            self._probe_wait = 1  # the last raise held a whole window: the quota is higher than it was
        self._set_quota(min(ceiling, quota * (1 + self._probe_step)), events)
        self._raised_from, self._raised_at = quota, now
        self._tally, self._tally_from = [0, 0], now  # a steady share of 429s is judged at this pace
        self._probe_step = min(MAX_PROBE_STEP, 2 * self._probe_step)
        # Not a change that makes echoes: a 429 for a request sent before the raise still says it went too far.

    def _set_quota(self, quota: float, events: list[Event]) -> None:
        if self._rpm is not None:
            quota = min(quota, self._rpm)
        before = self.rate
        self.quota, self.rate = quota, self._pace(quota)
        if self.rate is None or self.rate == before:
            return
        if before is None or self.rate < before:
            self.decreases += 1
            events.append(("decrease", {"rpm": self.rate, "from_rpm": before, "quota_rpm": quota,
                                        "message": f"pace cut to {self._rpm_text(self.rate)}"}))
        else:
            self.increases += 1
            events.append(("increase", {"rpm": self.rate, "from_rpm": before, "quota_rpm": quota,
                                        "message": f"pace recovered to {self._rpm_text(self.rate)}"}))

    def _rpm_text(self, rate: float) -> str:
        unit = "rpm" if self._window == 60 else f"per {self._window:g} s"
        return f"{rate:,.0f} {unit}"

    def _mark_change(self, now: float) -> None:
        self._changed_at = now
        self._tally, self._tally_from = [0, 0], now
        self._recent.clear()  # the window's verdicts stay: a cut is judged by them a window later
        self._streak = 0

    def _pace(self, quota: float | None) -> float | None:
        return None if quota is None else max(MIN_RPM, quota * self._headroom)
