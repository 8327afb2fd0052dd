"""The 429 judgement as a pure function: a history and an answer in, a decision out. No threads, no clock.

Each case writes the history by hand (the requests of the last windows, what the judgement remembers)
and says what one answer must decide: the end of a pause for every worker, the events, the quota after.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from enrichkit.pace.judge import Answer, History, Memory, judge
from enrichkit.pace.traffic import ADMITTED, REJECTED, Traffic

W = 60.0  # a minute's window


def ladder(first: float, count: int, step: float, *, rejected_last: int = 0) -> list[tuple[float, int]]:
    """`count` requests sent `step` s apart from `first`; the last `rejected_last` of them got a 429."""
    return [(first + i * step, REJECTED if i >= count - rejected_last else ADMITTED) for i in range(count)]


def answered(sent: list[tuple[float, int]], latency: float = 0.2) -> list[tuple[float, bool]]:
    """The verdicts of `sent`, each answered `latency` s after it went (what the estimate records)."""
    return [(at + latency, state == REJECTED) for at, state in sent]


def memory(rpm: float | None, window: float = W, **fields: Any) -> Memory:
    """A memory that began at 0 with `rpm` configured, then holds `fields`."""
    return replace(Memory.starting(rpm, window=window, headroom=0.99, now=0.0), **fields)


@dataclass
class Case:
    memory: Memory
    sent: list[tuple[float, int]]  # the answer's request is the last one
    answer: Answer
    pause_until: float | None
    events: list[str]
    quota: float | None
    also: dict[str, Any] = field(default_factory=dict)  # other fields of the memory after


# Unpaced: 50 let through, then 8 refused: the 8th 429 among the last 20 answers is a flood.
FLOOD = ladder(0.0, 58, 0.001, rejected_last=8)
LAST = FLOOD[-1][0]
# Paced at 594 per minute (600 configured) for a window, all let through but the last.
AT_PACE = ladder(0.0, 594, W / 594, rejected_last=1)
# 120 configured per 6 s (118.8 the pace): a window sent at the pace, the last 4 refused (a fixed window
# used up): in the window before the last 429 the server let through 116 while the pool sent 118.8.
FULL = ladder(0.0, 120, 0.04) + ladder(6.04, 120, 0.049, rejected_last=4)
# Raised from 100 to 102 a second ago (the pace 100.98), a window at the pace, the last refused.
RAISED = ladder(60.0, 101, W / 101, rejected_last=1)
# A stated quota of 60 (the pace 59.4) kept for two windows, no 429 since it was last stated.
STATED = ladder(280.0, 118, 120 / 118)

CASES = {
    "a 429 stating a quota below the pace sets the pace at once, with no pause": Case(
        memory(600), [(10.0, REJECTED)], Answer(10.2, 10.0, True, 20.0, names_quota=True, limit=300),
        None, ["decrease"], 300, {"rate": 297.0, "stated": 300.0}),
    "a bare 429 in a flood while unpaced pauses everyone and paces at what got through": Case(
        memory(None, recent=(False,) * 13 + (True,) * 7, streak=7), FLOOD,
        Answer(LAST + 0.2, LAST, True, 2.0), LAST + 2.2, ["pause", "decrease"], 50,
        {"rate": 49.5, "check_resume": True}),
    "the flood's pause lasts the retryDelay the 429 gave": Case(
        memory(None, recent=(False,) * 13 + (True,) * 7, streak=7), FLOOD,
        Answer(LAST + 0.2, LAST, True, 37.0), LAST + 37.2, ["pause", "decrease"], 50),
    "a flood of 429s naming no quota pauses everyone and learns nothing": Case(
        memory(None, recent=(False,) * 13 + (True,) * 7, streak=7), FLOOD,
        Answer(LAST + 0.2, LAST, True, 5.0, names_quota=False), LAST + 5.2, ["pause"], None),
    "a lone 429 with a long retryDelay at the pace keeps the pace and pauses no one": Case(
        memory(600, recent=(False,) * 19), AT_PACE, Answer(AT_PACE[-1][0] + 0.2, AT_PACE[-1][0], True, 40.0),
        None, [], 600, {"rate": 594.0, "streak": 1}),
    "three 429s in a row at the pace cut it to what got through and hold everyone window/60 s": Case(
        memory(120, window=6.0, recent=(False,) * 17 + (True,) * 2, streak=2, tally_from=11.0), FULL,
        Answer(FULL[-1][0] + 0.2, FULL[-1][0], True, 40.0), FULL[-1][0] + 0.2 + 0.1, ["decrease", "hold"], 116,
        {"hold": 0.2, "holding": True}),
    "a 429 in the window after a raise undoes it and doubles the wait before the next": Case(
        memory(None, quota=102.0, rate=100.98, raised_from=100.0, raised_at=119.0, changed_at=59.0,
               recent=(False,) * 20), RAISED, Answer(RAISED[-1][0] + 0.2, RAISED[-1][0], True, 1.0),
        None, ["decrease"], 100, {"rate": 99.0, "probe_wait": 2, "raised_at": -math.inf}),
    "the first answer after a pause being a 429 again pauses again, for its own delay": Case(
        memory(None, quota=50.0, rate=49.5, check_resume=True, changed_at=LAST + 0.2), [*FLOOD, (2.3, REJECTED)],
        Answer(2.5, 2.3, True, 7.0), 9.5, ["pause"], 50),
    "a 429 for a request sent before the pace changed is an echo: it decides nothing": Case(
        memory(None, quota=50.0, rate=49.5, changed_at=LAST + 0.2), FLOOD, Answer(0.3, LAST, True, 5.0),
        None, [], 50, {"streak": 0, "recent": ()}),
    "a stated quota unsaid for 5 windows is let go: a clean window raises the pace above it": Case(
        memory(120, quota=60.0, rate=59.4, stated=60.0, stated_at=99.0, last_429=99.0), STATED,
        Answer(STATED[-1][0] + 0.2, STATED[-1][0]), None, ["increase"], 61.2, {"stated": None, "forgotten": 60.0}),
    "a stated quota said less than 5 windows ago still caps the pace": Case(
        memory(120, quota=60.0, rate=59.4, stated=60.0, stated_at=161.0, last_429=161.0), STATED,
        Answer(STATED[-1][0] + 0.2, STATED[-1][0]), None, [], 60, {"stated": 60.0}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_judge(case: Case) -> None:
    verdicts = [(at, rejected) for at, rejected in answered(case.sent) if at <= case.answer.at]
    traffic = Traffic.of(case.memory.window, case.sent, verdicts)
    decision = judge(History(traffic, case.memory), case.answer)
    assert decision.pause_until == (None if case.pause_until is None else pytest.approx(case.pause_until))
    assert [name for name, _ in decision.events] == case.events
    assert decision.memory.quota == (None if case.quota is None else pytest.approx(case.quota))
    for name, value in case.also.items():
        assert getattr(decision.memory, name) == (pytest.approx(value) if isinstance(value, float) else value), name


def test_judge_leaves_the_history_it_was_given_as_it_was() -> None:
    given = memory(None, recent=(False,) * 13 + (True,) * 7, streak=7)
    before = copy.deepcopy(given)
    decision = judge(History(Traffic.of(W, FLOOD, answered(FLOOD)), given), Answer(LAST + 0.2, LAST, True, 2.0))
    assert decision.memory.quota == 50
    assert given == before


def test_a_stated_quota_let_go_too_early_is_kept_twice_as_long_when_stated_again() -> None:
    mem = memory(120, quota=61.2, rate=60.588, forgotten=60.0)  # let go; then a 429 states the same quota
    decision = judge(History(Traffic.of(W, [(400.0, REJECTED)]), mem),
                     Answer(400.2, 400.0, True, 10.0, names_quota=True, limit=60))
    assert decision.memory.stated_hold == 10
    assert decision.memory.quota == 60
    assert [name for name, _ in decision.events] == ["decrease"]


def test_the_events_say_the_new_pace_in_words() -> None:
    case = CASES["a bare 429 in a flood while unpaced pauses everyone and paces at what got through"]
    decision = judge(History(Traffic.of(W, case.sent, answered(case.sent)), case.memory), case.answer)
    assert [fields["message"] for _, fields in decision.events] == [
        "429: pausing all workers for 2 s", "pace cut to 50 rpm"]
    assert decision.events[1][1] == {"rpm": 49.5, "from_rpm": None, "quota_rpm": 50.0, "message": "pace cut to 50 rpm"}
