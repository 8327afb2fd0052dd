"""The 429 judgement: what each answer says the quota is, and what the pool does about it. Pure.

`judge(history, answer) -> Decision`: `history` is what the pool sent and was answered in the last two
windows (`traffic.Traffic`) and what the judgement remembers (`Memory`: the quota learnt, the counts since the
pace last changed, a cut under review, a raise on trial); `answer` is one answer, a 429 with what it
said (its delay, whether it names a per-minute quota, the quota it states) or a success. The decision
is the end of a pause for every worker (if any), the events to report, and the next `Memory` (whose
`quota` and `rate` are the quota learnt and the pace it sets). No clock, no lock, no threads:
`quota.QuotaEstimate` records the requests and answers, asks, and keeps what it is told.

Every request is kept for two windows with its send time and answer, so at a 429 the judgement knows
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
has been exhausted"), is judged by what it does. A 429 may say more (`Answer.names_quota`, `Answer.limit`):
that it names a per-minute quota, or the quota itself (QuotaFailure quotaValue: taken at once, and the
pace stays under it until 5 windows pass without a 429 stating it; then it is probed like any quota,
so a quota that comes back is found; each time it is stated again unchanged, the wait doubles, up to
80 windows). Rates are counted per window: "rpm" is requests per `window` seconds.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, NamedTuple

from enrichkit.pace.traffic import Traffic

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

Event = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class Memory:
    """What the judgement keeps between answers. A value to `judge`: it returns a new one, never changes this."""

    rpm: float | None  # the configured quota (requests per window); None: not given
    window: float
    headroom: float  # pace = this share of the quota
    quota: float | None  # requests per window, as configured or learnt; None: not known
    rate: float | None  # the pace in force (requests per window); None: unpaced
    changed_at: float  # answers to requests sent before this are echoes
    tally_from: float  # when `tally` began
    hold: float  # the next hold's length
    next_probe_check: float  # no raise is considered before this
    stated: float | None = None  # the quota the server's last 429 stated
    stated_at: float = -math.inf  # when it last said so
    forgotten: float = 0.0  # the last stated quota let go
    stated_hold: float = STATED_HOLD  # windows without a 429 before it is let go: a quota may come back
    recent: tuple[bool, ...] = ()  # the last STORM_OF fresh answers since the last change: True = 429
    streak: int = 0  # fresh 429s since the last fresh success
    tally: tuple[int, int] = (0, 0)  # fresh answers, and of them 429s, since the pace last changed (or rose)
    holding: bool = False  # after a hold, until the first fresh answer says whether it was long enough
    check_resume: bool = False  # after a pause, until the first fresh answer says it was long enough
    last_429: float = -math.inf  # when a fresh 429 that teaches last came
    probe_step: float = PROBE_STEP
    cut: tuple[float, float, float] | None = None  # (when, quota before, 429 share): a cut under review
    background: float = 0.0  # share of 429s that cutting the pace did not lower (a loaded API's)
    raised_from: float = 0.0  # the quota before the last raise
    raised_at: float = -math.inf  # and when
    probe_wait: int = 1  # clean windows since the last 429 before a raise: more after each raise undone

    def copy(self) -> Memory:
        """A copy to change. Made through `__init__`: `judge` makes one per answer, and `copy.copy` is slower to
        make and leaves an instance slower to read."""
        return Memory(*_FIELDS(self))

    @classmethod
    def starting(cls, rpm: float | None, *, window: float, headroom: float, now: float) -> Memory:
        """Nothing heard yet: the pace is the configured quota's (unpaced without one)."""
        return cls(rpm, window, headroom, quota=rpm, rate=pace_of(rpm, headroom), changed_at=now, tally_from=now,
                   hold=window / HOLD_SHARE, next_probe_check=now)


_FIELDS = operator.attrgetter(*Memory.__dataclass_fields__)  # every field of a Memory, in order


class History(NamedTuple):
    """What `judge` reads: the requests and answers of the last windows, and its memory."""

    traffic: Traffic
    memory: Memory


class Answer(NamedTuple):
    """One answer to a request sent at `sent_at`: a success, or a 429 and what it said."""

    at: float  # when it came
    sent_at: float  # when its request went
    rejected: bool = False  # a 429
    delay: float = 0.0  # a 429's retry delay (s)
    names_quota: bool | None = None  # True: a per-minute quota's; None: it does not say; False: no quota's
    limit: float | None = None  # the quota it states (QuotaFailure quotaValue), requests per window


class Decision(NamedTuple):
    """What to do about an answer: pause every worker until `pause_until` (None: no pause), report `events`,
    and remember `memory` (its `quota` and `rate` are the quota learnt and the pace in force)."""

    pause_until: float | None
    events: list[Event]
    memory: Memory


def pace_of(quota: float | None, headroom: float) -> float | None:
    """The pace for a quota: `headroom` of it, at least MIN_RPM; None for no quota."""
    return None if quota is None else max(MIN_RPM, quota * headroom)


def is_fresh(memory: Memory, answer: Answer) -> bool:
    """Whether `answer`'s request went at the pace in force (else it is an echo of an earlier one)."""
    return answer.sent_at > memory.changed_at


def judge(history: History, answer: Answer) -> Decision:
    """What `answer` says, given `history`: a pause for everyone, a new pace, or nothing.

    `history.traffic` already holds `answer`'s request, its state, and (when fresh) its verdict.
    """
    m = history.memory.copy()
    log = history.traffic
    events: list[Event] = []
    pause_until = None
    now = answer.at
    if not answer.rejected:
        if is_fresh(m, answer):
            m.check_resume = m.holding = False
            m.streak, m.hold = 0, m.window / HOLD_SHARE
            _note(m, log, now, False, events)
            _maybe_raise(m, log, now, events)
        return Decision(None, events, m)
    stated = answer.names_quota is not False and answer.limit is not None and answer.limit > 0
    if stated:
        limit = float(answer.limit or 0)
        if limit == m.forgotten:  # let go too early: the quota had not come back
            m.stated_hold = min(MAX_STATED_HOLD, 2 * m.stated_hold)
        m.stated, m.stated_at, m.forgotten = limit, now, 0.0
    if is_fresh(m, answer):  # sent at the pace in force, not an echo of an earlier one
        pause_until = _judge_429(m, log, answer, events)
    if stated and m.stated != m.quota:
        _set_quota(m, m.stated or 0.0, events)  # the server says what the quota is
        _mark_change(m, now)
    return Decision(pause_until, events, m)


# Each of these changes `m`, the copy `judge` made: never the memory it was given.

def _note(m: Memory, log: Traffic, now: float, rejected: bool, events: list[Event]) -> None:
    m.recent = (*m.recent, rejected)[-STORM_OF:]
    m.tally = (m.tally[0] + 1, m.tally[1] + rejected)
    if m.cut is not None and now - m.cut[0] >= m.window:
        _review_cut(m, log, now, m.cut[1], m.cut[2], events)


def _review_cut(m: Memory, log: Traffic, now: float, before: float, share_then: float,
                events: list[Event]) -> None:
    """A window after a cut without a pause: if 429s came as often, they were not the pace's. Undo it."""
    m.cut = None
    share = log.share()
    if share_then >= CREEP_SHARE and share >= share_then / 2:  # a few 429s at a window's end: too few to judge
        m.background = max(m.background, share)  # a loaded API's share: not a sign of the quota
        _set_quota(m, before, events)
        _mark_change(m, now)


def _judge_429(m: Memory, log: Traffic, answer: Answer, events: list[Event]) -> float | None:
    """What a fresh 429 says: a storm, a raise gone too far, a pace a little over the quota, or nothing.
    Returns the end of the pause it calls for, if any."""
    now, sent_at, delay = answer.at, answer.sent_at, answer.delay
    teaches = answer.names_quota is not False
    _note(m, log, now, True, events)
    m.streak += 1
    if teaches:
        m.last_429, m.probe_step = now, PROBE_STEP
    # What the pool sends is the pace, or less when the workers cannot keep it.
    sending, admitted = log.window_before(sent_at)
    if m.rate is not None:
        sending = min(m.rate, sending)
    answers, rejected = log.answers_after(m.changed_at)
    many = rejected >= max(CREEP_MIN, (CREEP_SHARE + m.background) * answers)
    # Sending well above what the server admits (or unpaced): a storm once 429s flood the answers (a
    # paced pool's moderate overrun shows as many 429s in the window; an unpaced one's, as a flood).
    overrun = sending >= OVERRUN * admitted
    whole = log.covers_window(sent_at)  # counts that cover a whole window
    flood = sum(m.recent) >= STORM_429S or (teaches and many and m.rate is not None and whole)
    too_soon = m.check_resume and teaches  # the first answer after a pause is a 429 again
    if too_soon or (overrun and flood):
        # The quota is what the server let through while the pool sent well above it (unless a 429
        # stated it); not what it let through in a window that a pause left half empty.
        learnt = m.stated or (None if too_soon else float(admitted))
        return _storm(m, now, delay, learnt if teaches else None, events)
    if overrun or not teaches or m.rate is None or m.stated:
        return None  # not (yet) a flood, a loaded API's 429, one in an unpaced pool, or the quota is known
    if now - m.raised_at < m.window:
        _set_quota(m, m.raised_from, events)  # the last raise went past the quota: undo it
        m.raised_at = -math.inf
        m.probe_wait = min(MAX_PROBE_WAIT, 2 * m.probe_wait)  # and try again later each time
        _mark_change(m, now)
        return None
    # Several 429s in a row (a fixed window's end), or many in a window: if the server let through
    # less than the pace sends, the pace is over the quota, and what it let through is the quota.
    # (If not, requests bunched up on their way, late ones with early ones: the pace is right.)
    in_a_row = m.streak >= STREAK
    # A pace a hair over the quota draws a 429 or two a window, too few to be many or in a row: seen
    # over several windows, its share is what to take off (a loaded API's share, once known, excepted).
    windows = (now - m.tally_from) / m.window
    share = m.tally[1] / max(1, m.tally[0])
    steady = (windows >= STEADY_WINDOWS and m.tally[1] >= max(STEADY_WINDOWS, windows / 2)
              and share >= STEADY_SHARE + m.background)
    # Once a cut has been undone (the API sheds load with 429s), only many more 429s than that cut.
    over = many or (in_a_row and not m.background)
    quota = m.quota or 0.0
    if m.cut is None and steady and not (over and 0 < admitted < sending * (1 - CUT_MARGIN)):
        m.cut = (now, quota, log.share())
        _set_quota(m, min(float(admitted or quota), quota * (1 - share)), events)
        _mark_change(m, now)
    elif m.cut is None and over and 0 < admitted < sending * (1 - CUT_MARGIN):
        m.cut = (now, quota, log.share())
        _set_quota(m, float(admitted), events)
        _mark_change(m, now)
    if not (in_a_row or m.holding):
        return None
    # The window is used up until it ends (or slots free): hold everyone briefly, longer while it
    # lasts (the first answer after a hold says), rather than spend every worker on a long
    # retryDelay of its own.
    seconds = min(delay, m.hold)
    events.append(("hold", {"seconds": seconds,
                            "message": f"429s at the quota: holding all workers for {seconds:.1f} s"}))
    m.hold = min(2 * m.hold, m.window)
    _mark_change(m, now)  # answers to requests sent before the hold are its echoes
    m.holding = True
    return now + seconds


def _storm(m: Memory, now: float, delay: float, quota: float | None, events: list[Event]) -> float:
    """Pause every worker for the server's delay; the pace becomes `quota` (what the server admitted)."""
    events.append(("pause", {"seconds": delay, "message": f"429: pausing all workers for {delay:.0f} s"}))
    if quota:
        _set_quota(m, quota, events)
    _mark_change(m, now)
    m.check_resume = True
    return now + delay


def _maybe_raise(m: Memory, log: Traffic, now: float, events: list[Event]) -> None:
    """After a whole window at this pace without a 429, probe a higher quota (up to the configured one)."""
    quota, window = m.quota, m.window
    if m.stated and now - m.stated_at >= m.stated_hold * window:
        m.forgotten, m.stated = m.stated, None  # long unsaid: probe above it, as for any quota
    ceiling = min(m.rpm or math.inf, m.stated or math.inf)
    if quota is None or quota >= ceiling or now < m.next_probe_check:
        return
    if min(now - m.changed_at, now - m.raised_at) < window or now - m.last_429 < window * m.probe_wait:
        return
    m.next_probe_check = now + window / 20  # the count below costs a pass over a window's requests
    if m.rate is None or log.sent_after(now - window) < BINDING * m.rate:
        return  # the pool is not using the pace: a higher one would be untested
    if m.raised_at > -math.inf:
        m.probe_wait = 1  # the last raise held a whole window: the quota is higher than it was
    _set_quota(m, min(ceiling, quota * (1 + m.probe_step)), events)
    m.raised_from, m.raised_at = quota, now
    m.tally, m.tally_from = (0, 0), now  # a steady share of 429s is judged at this pace
    m.probe_step = min(MAX_PROBE_STEP, 2 * m.probe_step)
    # Not a change that makes echoes: a 429 for a request sent before the raise still says it went too far.


def _set_quota(m: Memory, quota: float, events: list[Event]) -> None:
    if m.rpm is not None:
        quota = min(quota, m.rpm)
    before = m.rate
    m.quota, m.rate = quota, pace_of(quota, m.headroom)
    if m.rate is None or m.rate == before:
        return
    word, says = ("decrease", "cut to") if before is None or m.rate < before else ("increase", "recovered to")
    events.append((word, {"rpm": m.rate, "from_rpm": before, "quota_rpm": quota,
                          "message": f"pace {says} {_rpm_text(m.rate, m.window)}"}))


def _rpm_text(rate: float, window: float) -> str:
    unit = "rpm" if window == 60 else f"per {window:g} s"
    return f"{rate:,.0f} {unit}"


def _mark_change(m: Memory, now: float) -> None:
    m.changed_at = now
    m.tally, m.tally_from = (0, 0), now
    m.recent = ()  # the window's verdicts stay: a cut is judged by them a window later
    m.streak = 0
