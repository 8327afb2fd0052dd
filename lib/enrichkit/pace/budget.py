"""--max-cost as the calls see it: what the job has spent, and what the calls in flight may still add.

Before a paid call goes out it reserves its worst case (`worst_case`: every input byte as a token, all
of `max_output_tokens` at the output price, the grounding fee of a search stage); it goes only when what
is spent plus everything reserved plus its own worst case fits the budget. Its answer replaces the
reservation with what it really cost. So the calls in flight can never take the job past the budget,
except by what an answer costs beyond its reservation (see `worst_case`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from enrichkit.errors import Abandoned

if TYPE_CHECKING:
    from enrichkit.config.pricing import ModelPrice, Pricing
    from enrichkit.providers.base import Request

FRAMING_TOKENS = 64  # the turn's own tokens around a prompt (role, schema markers): a margin, never undercounted
SEARCH_QUERIES = 10  # per-query grounding (3.x): queries one answer is assumed to run at most, for its reservation
_EPSILON = 1e-12  # float sums of prices: a job that exactly fits is not refused by a rounding error


class BudgetRefused(Abandoned):
    """The next call's worst case does not fit what is left of the budget: the call is not sent, its record
    stays pending, and the run stops (exit 4)."""


class Budget:
    """Thread-safe. `limit` None: no budget (every call goes, nothing is counted)."""

    def __init__(self, limit: float | None, spent: float = 0.0) -> None:
        self.limit = limit
        self.spent = spent  # the job's cost so far: the checkpoint's, then each answer's as it comes
        self.reserved = 0.0  # the worst cases of the calls in flight
        self.refused_at = 0.0  # the worst case of the first call refused (0: none refused)
        self.given_up = 0.0  # the worst cases of this run's requests given up at their deadline (maybe billed)
        self._cond = threading.Condition()

    @property
    def exhausted(self) -> bool:
        return self.refused_at > 0

    def reserve(self, worst: float, should_stop: Callable[[], bool]) -> float:
        """Reserve `worst` before a call; returns what was reserved (give it to `settle`). Waits while calls in
        flight hold the room it needs; raises `BudgetRefused` when it cannot fit even once they are all settled
        (or an earlier call was refused: the run is stopping on its budget), `Abandoned` on a stop."""
        if self.limit is None or worst <= 0:
            return 0.0
        with self._cond:
            while True:
                if self.refused_at:
                    raise BudgetRefused()
                if self.spent + self.reserved + worst <= self.limit + _EPSILON:
                    self.reserved += worst
                    return worst
                if not self.spent + worst <= self.limit + _EPSILON:  # a NaN cost (an edited file) too: never waits
                    self.refused_at = worst
                    self._cond.notify_all()
                    raise BudgetRefused()
                if should_stop():
                    raise Abandoned()
                self._cond.wait(0.25)

    def settle(self, held: float, cost: float, *, given_up: float = 0.0) -> None:
        """A call is over: its reservation `held` gives way to what it cost. `given_up`: the worst case of a request
        given up at its deadline, which may still be answered and billed: spent for the job (`unsettled_usd`)."""
        with self._cond:
            self.given_up += given_up
            if self.limit is None:
                return
            self.reserved = max(0.0, self.reserved - held)
            self.spent += cost + given_up
            self._cond.notify_all()


def worst_case(pricing: Pricing, request: Request, today: dt.date | None = None) -> float:
    """The most one Gemini call can cost (USD), priced as the model asked for.

    Input: every UTF-8 byte of the prompt, system instruction and response schema as one token (a token is at
    least one byte of text), plus `FRAMING_TOKENS`; output: all of `max_output_tokens` (thinking included, which
    it bounds); the flex discount when flex; a search stage's grounding fee (one grounded prompt, or
    `SEARCH_QUERIES` queries). At the dearer of the prices in force today and tomorrow (UTC): a call may be
    answered, and priced, after a price change at midnight (a request lasts at most a day); for a deprecated
    model, the dearer of its own and its replacement's (which serves it: 2.5 Flash's grounding is then billed per
    query). What it does not bound: another served model priced above the one asked for, the tool-use prompt
    tokens a search adds (billed as input), and more search queries than `SEARCH_QUERIES`."""
    payload = request.payload
    day = today or dt.datetime.now(dt.UTC).date()
    model = str(payload["model"])
    models = [model]
    facts = pricing.facts_of(model)
    if facts.stage == "deprecated" and facts.replacement:
        models.append(facts.replacement)  # Google serves a deprecated model's requests by its replacement
    prices = [p for m in models for p in (pricing.lookup(m, day), pricing.lookup(m, day + dt.timedelta(days=1)))
              if p is not None]
    if not prices:
        return 0.0  # a model with no price is refused at start
    settings = payload["settings"]
    text = str(payload["prompt"]) + str(settings.get("system_instruction") or "")
    if payload.get("json_mode"):
        import json

        text += json.dumps(payload.get("schema"))
    input_tokens = len(text.encode("utf-8")) + FRAMING_TOKENS
    output_tokens = int(settings.get("max_output_tokens") or 0)

    def at(price: ModelPrice) -> float:
        tokens = (input_tokens * price.input + output_tokens * price.output) / 1_000_000
        if payload.get("flex"):
            tokens *= 1 - pricing.flex_discount
        grounding = 0.0
        if request.stage.search:
            units = 1 if price.grounding == "prompt" else SEARCH_QUERIES
            grounding = units * price.grounding_per_1000 / 1000
        return tokens + grounding

    return max(at(price) for price in prices)
