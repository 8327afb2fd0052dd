"""Quota simulators on a fake clock, and a discrete-event run of N workers sharing one Limiter.

No threads and no sleeping: each simulated worker asks `Limiter.try_acquire` for a slot and is told how
long to wait; it then waits as `Limiter.acquire` would: alone until its own retry delay ends, or, held by
the shared schedule, as the one worker that asks again at the slot (the head) or in turn behind it. A
request reaches the quota after some network jitter and is answered `latency` seconds later, when the
worker reports `on_success` or `on_rate_limited` (the limiter tells workers apart by `worker=`, here the
simulated worker's number). Same seed, same run.

The quotas count what the server admits with the stand-in's own code (`gemini_standin.quota`): over a
sliding window or fixed windows, with "exact" delays (until a slot frees or the window ends, in whole
seconds, at least 1) or Google-like ones (uniform in [window/3, window], whatever the quota's state),
as its RetryInfo says them. `noise` is the share of admitted requests answered 429 anyway (1 s, no
quota named), as a loaded API does.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Any

from enrichkit.pace.limiter import DEFAULT_PAUSE, Limiter
from gemini_standin.quota import QuotaWindow, retry_delay


class SlidingQuota:
    """At most `cap` requests admitted in any `window` seconds, counted by the stand-in's own `QuotaWindow`
    on the simulation's clock; a 429's delay is the RetryInfo the stand-in would send (`delays` is its
    rpm_delay: "exact", "precise" or "google")."""

    mode = "sliding"

    def __init__(self, cap: int, window: float = 60.0, delays: str = "exact", seed: int = 0) -> None:
        self.cap, self.window, self.delays, self.rng = cap, window, delays, random.Random(seed)
        self.origin = 0.0
        self._count = QuotaWindow()

    def admit(self, t: float) -> float | None:
        """None when admitted at time `t`, else the 429's retry delay."""
        wait = self._count.wait(t, 1, self.cap, self.window, self.mode, self.origin)
        if wait is None:
            self._count.record(t, 1, self.mode)
            return None
        _, retry_info = retry_delay(self.delays, wait, self.window, self.rng)
        return float(retry_info.removesuffix("s"))  # what a client reads


class FixedQuota(SlidingQuota):
    """At most `cap` requests admitted per window [k*window - phase, (k+1)*window - phase)."""

    mode = "fixed"

    def __init__(self, cap: int, window: float = 60.0, delays: str = "exact", seed: int = 0,
                 phase: float = 0.0) -> None:
        super().__init__(cap, window, delays, seed)
        self.origin = -phase

    def window_start(self, t: float) -> float:
        """The start of the first window beginning at or after `t`."""
        return math.ceil((t - self.origin) / self.window) * self.window + self.origin


@dataclass
class SimResult:
    ratio: float  # successes per window over the cap, over whole windows after the warm-up
    share_429: float  # of the answers in the same span
    share_429_all: float  # of all answers
    ok: int
    rejected: int
    snapshot: dict[str, Any]
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)


def simulate(quota: SlidingQuota, rpm: float | None, *, seconds: float, warmup: float = 0.0, workers: int = 20,
             latency: float = 0.2, jitter: float = 0.0, hiccups: tuple[float, float] = (0.0, 0.0),
             noise: float = 0.0, tell_quota: bool = False,
             tell_limit: bool = False, bare: bool = False, seed: int = 1, **limiter_options: Any) -> SimResult:
    """Run `workers` workers for `seconds` through one Limiter told `rpm` (per window) against `quota`.

    A request reaches the quota up to `jitter` s after it was let go. With the chance `hiccups[0]` a
    request starts a stall of `hiccups[1]` s (a client process paused): the requests let go meanwhile
    all arrive when it ends, bunched, and the ones after on time.
    `tell_quota` passes `quota=` to `on_rate_limited` (True for the quota's 429s, False for noise), as a
    caller that reads QuotaFailure does; `tell_limit` also passes the quota's `limit`. Otherwise a 429
    says only its delay (RetryInfo alone), or with `bare` not even that ("Resource has been exhausted").
    """
    rng = random.Random(seed)
    now = [0.0]
    me = [0]
    events: list[tuple[float, str, dict[str, Any]]] = []

    def no_sleep(_seconds: float) -> None:
        raise AssertionError("the simulation asks try_acquire and never sleeps")

    limiter = Limiter(rpm, None, window=quota.window, clock=lambda: now[0], sleep=no_sleep, worker=lambda: me[0],
                      on_event=lambda name, fields: events.append((now[0], name, fields)), **limiter_options)
    queue: list[tuple[float, int, str, int, Any]] = []
    seq = 0

    def push(at: float, kind: str, worker: int, data: Any = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (at, seq, kind, worker, data))

    # `Limiter.acquire`'s turns: of the workers the shared schedule holds, only the head is scheduled at its
    # wait; the others wait in turn (oldest first) and a slot taken by the head wakes the next one, which
    # asks at once. A waiter also wakes every `max_nap` s, which matters only while there is no head (the
    # one woken took its slot at once and woke nobody): the head wakes at the slot, and the slot never
    # comes sooner, so a waiter's own naps cannot win it before the head.
    nap = limiter_options.get("max_nap", 0.25)
    head: int | None = None
    head_wakes = 0.0  # when the head asks next
    waiting: dict[int, float] = {}  # waiter -> when it began waiting, in the order they came
    armed: set[int] = set()  # waiters with a nap's end queued
    woken = False  # a waiter woken by a taken slot has yet to ask
    own: dict[int, float] = {}  # a worker's own retry time after its 429, as the limiter keeps it

    for w in range(workers):
        push(0.0, "poll", w)
    answers: list[tuple[float, float, bool]] = []  # (arrived at, answered at, 429?)
    stalled_until = 0.0
    while queue:
        at, _, kind, worker, data = heapq.heappop(queue)
        if at > seconds:
            break
        now[0], me[0] = at, worker
        if kind == "nap":
            if waiting.get(worker) != data:
                continue  # woken meanwhile
            armed.discard(worker)
            if head is not None or woken:
                continue  # the head (or the one just woken) asks first: it waits on
            del waiting[worker]
            kind = "poll"
        if kind == "poll":
            if data == "woken":
                woken = False
            wait = limiter.try_acquire(500)
            if wait > 0:
                mine = own.get(worker)
                if mine is not None and at + wait <= mine + 1e-9:
                    push(at + wait, "poll", worker)  # its own retry delay binds: it sleeps alone
                elif head is None or head == worker:
                    head, head_wakes = worker, at + wait
                    push(head_wakes, "poll", worker)
                else:
                    waiting[worker] = at
            else:
                own.pop(worker, None)
                if head == worker:
                    head = None
                    if waiting:
                        woken = True
                        nxt = next(iter(waiting))
                        del waiting[nxt]
                        armed.discard(nxt)
                        push(at, "poll", nxt, "woken")
                if at >= stalled_until and hiccups[0] and rng.random() < hiccups[0]:
                    stalled_until = at + hiccups[1]
                push(max(at, stalled_until) + rng.uniform(0, jitter), "arrive", worker)
            if head is None and not woken:
                for w, since in waiting.items():
                    if w not in armed:
                        armed.add(w)
                        push(since + nap * (math.floor((at - since) / nap) + 1), "nap", w, since)
        elif kind == "arrive":
            delay = quota.admit(at)
            named = delay is not None
            if delay is None and noise and rng.random() < noise:
                delay = 1.0
            push(at + latency, "answer", worker, (at, delay, named))
        else:
            arrived, delay, named = data
            answers.append((arrived, at, delay is not None))
            if delay is None:
                limiter.on_success()
            else:
                retry = None if bare else delay
                limiter.on_rate_limited(retry, quota=named if tell_quota else None,
                                        limit=quota.cap if tell_limit and named else None)
                own[worker] = max(own.get(worker, at), at + (DEFAULT_PAUSE if retry is None else max(0.0, retry)))
            if head is not None and head_wakes > at and own.get(worker, at) <= at:
                waiting[worker] = at  # it would be told to wait for the head's slot, and wait in turn
            else:
                push(at, "poll", worker)
    return _result(quota, answers, seconds, warmup, limiter, events)


def _result(quota: SlidingQuota, answers: list[tuple[float, float, bool]], seconds: float, warmup: float,
            limiter: Limiter, events: list[tuple[float, str, dict[str, Any]]]) -> SimResult:
    # Whole windows by arrival time: k windows admit at most k quotas (fixed ones counted from a window start).
    start = quota.window_start(warmup) if isinstance(quota, FixedQuota) else warmup
    windows = max(1, math.floor((seconds - 1.0 - start) / quota.window))  # answers of the last second may be in flight
    end = start + windows * quota.window
    span = [rejected for arrived, _, rejected in answers if start <= arrived < end]
    ok = sum(not r for r in span)
    rejected_all = sum(r for _, _, r in answers)
    return SimResult(ratio=ok / (windows * quota.cap), share_429=sum(span) / max(1, len(span)),
                     share_429_all=rejected_all / max(1, len(answers)), ok=len(answers) - rejected_all,
                     rejected=rejected_all, snapshot=limiter.snapshot(), events=events)
