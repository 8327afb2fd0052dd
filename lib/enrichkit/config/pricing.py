"""What an answer costs, and what each model is and accepts: `pricing.toml` (package data).

Priced by the model that served the answer (`modelVersion`), not the one asked for: an alias such as
`gemini-flash-latest` is billed as whatever it points at. A served model with no price is priced as the
model asked for (never $0). Thinking tokens are output; cached input tokens are billed at the cached
rate; `service_tier = "flex"` and the Batch API take their discount off the tokens (cached tokens and
the grounding fee stay at the standard rate). A price may hold from a date (`[model.from.YYYY-MM-DD]`):
an answer is priced by the price in force on the day it was answered (UTC).

Beside each price, the model's facts (`ModelFacts`): its lifecycle (stage, retirement date, replacement)
and its capabilities (thinking levels accepted, temperature honoured, Search with JSON, flex, batch).
"""

from __future__ import annotations

import datetime as dt
import threading
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from enrichkit.errors import ConfigError

PRICE_FIELDS = ("input", "output", "cached_input", "grounding", "grounding_per_1000")


@dataclass(frozen=True)
class ModelPrice:
    input: float  # USD per 1M tokens
    output: float
    cached_input: float | None = None  # None: cached tokens at the input price
    grounding: str = "prompt"  # the grounding fee is per "prompt" (2.5) or per search "query" (3.x)
    grounding_per_1000: float = 0.0
    since: dt.date | None = None  # the day this price holds from (None: from the start)


@dataclass(frozen=True)
class ModelFacts:
    """What a model is and accepts, as Google's model, deprecation and changelog pages say (see pricing.toml).

    `thinking_levels` None: any level is accepted (or unknown); () : the model takes no thinking_level (2.5).
    """

    stage: str = "stable"  # stable | preview | legacy | deprecated | retired
    retires: dt.date | None = None  # the shutdown date Google announced
    replacement: str | None = None  # Google's recommended replacement
    thinking_levels: tuple[str, ...] | None = None
    temperature: bool = True  # honoured (from 3.6 Flash on: deprecated, refused)
    search_json: bool = True  # Search grounding with a JSON response schema (2.x: no)
    flex: bool = True
    batch: bool = True


@dataclass(frozen=True)
class Charge:
    tokens: float
    grounding: float
    priced_as: str = ""  # the model whose price was used ("" when none was found)
    unpriced: bool = False  # the served model has no price: priced as the model asked for


class Pricing:
    """Thread-safe (the free grounding allowance is counted under a lock)."""

    def __init__(self, prices: dict[str, ModelPrice], *, aliases: dict[str, str] | None = None,
                 flex_discount: float = 0.5, batch_discount: float = 0.5, grounding_free: int = 0,
                 dated: dict[str, list[ModelPrice]] | None = None, facts: dict[str, ModelFacts] | None = None,
                 checked: dt.date | None = None, tier1_cap: float | None = None) -> None:
        self.prices = prices  # the price of each model from its first date (see `price_on` for a given day)
        self.aliases = aliases or {}
        self.flex_discount = flex_discount
        self.batch_discount = batch_discount
        self.checked = checked  # when the file was last checked against Google's pricing page
        self.tier1_cap = tier1_cap  # USD a month: Tier 1's billing cap
        self.facts = facts or {}
        self._dated = {m: sorted(v, key=lambda p: p.since or dt.date.min) for m, v in (dated or {}).items()}
        self._free_left = grounding_free
        self._lock = threading.Lock()

    def resolve(self, model: str) -> str | None:
        """The listed name a model is priced under: exact, then alias, then the longest listed prefix
        ("gemini-2.5-flash-001" as "gemini-2.5-flash"); None when none fits."""
        name = model.removeprefix("models/")
        name = self.aliases.get(name, name)
        if name in self.prices:
            return name
        return max((m for m in self.prices if name.startswith(m)), key=len, default=None)

    def lookup(self, model: str, on: dt.date | None = None) -> ModelPrice | None:
        """The price in force on day `on` (today, UTC, when None)."""
        name = self.resolve(model)
        if name is None:
            return None
        day = on or dt.datetime.now(dt.UTC).date()
        found = self.prices[name]
        for price in self._dated.get(name, ()):
            if price.since is None or price.since <= day:
                found = price
        return found

    def changes(self, model: str) -> list[ModelPrice]:
        """The model's later prices, with the day each holds from."""
        name = self.resolve(model)
        return [p for p in self._dated.get(name or "", ()) if p.since is not None]

    def known(self, model: str) -> bool:
        return self.resolve(model) is not None

    def facts_of(self, model: str) -> ModelFacts:
        name = self.resolve(model) or model.removeprefix("models/")
        return self.facts.get(name, ModelFacts())

    def used_grounding(self, units: int) -> None:
        """The job's grounded units so far (from the checkpoint): they used up that much of the free allowance."""
        with self._lock:
            self._free_left = max(0, self._free_left - units)

    def charge(self, model: str, *, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0,
               grounded: bool = False, search_queries: int = 0, flex: bool = False, batch: bool = False,
               asked: str | None = None, at: dt.datetime | None = None) -> Charge:
        """The cost of one answer served by `model`, priced on the day `at` (now when None).

        A served model with no price is priced as `asked`, the model the request named (Google bills a rerouted
        request at the serving model's rates, which are not known here: the asked model's are the floor
        enrichkit can stand behind). Only when neither has a price is it 0 (the run refuses those at start).
        Batch and flex discount the uncached tokens only: cached tokens and the grounding fee are at the
        standard rate."""
        day = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
        price = self.lookup(model, day)
        priced_as, unpriced = self.resolve(model) or "", False
        if price is None and asked:
            price, priced_as, unpriced = self.lookup(asked, day), self.resolve(asked) or "", True
        if price is None:
            return Charge(0.0, 0.0, "", True)
        cached = min(cached_tokens, prompt_tokens)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        fresh = ((prompt_tokens - cached) * price.input + output_tokens * price.output) / 1_000_000
        if flex:
            fresh *= 1 - self.flex_discount
        if batch:
            fresh *= 1 - self.batch_discount
        tokens = fresh + cached * cached_rate / 1_000_000
        units = 0
        if grounded:
            units = search_queries if price.grounding == "query" else 1
        free = 0
        if units and self._free_left:  # the allowance only shrinks: once spent (or 0), no lock is needed
            with self._lock:
                free = min(units, self._free_left)
                self._free_left -= free
        return Charge(tokens, (units - free) * price.grounding_per_1000 / 1000, priced_as, unpriced)


def load_pricing(path: str | Path | None = None, extra: dict[str, dict[str, Any]] | None = None) -> Pricing:
    """The shipped `pricing.toml` (or `path`), with the stages file's `[prices]` on top."""
    try:
        if path is None:
            text = resources.files("enrichkit.config").joinpath("pricing.toml").read_text(encoding="utf-8")
            where = "enrichkit/config/pricing.toml"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = str(path)
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the pricing file: {exc}") from None
    try:
        settings = data.pop("settings", {})
        aliases = {str(k): str(v) for k, v in data.pop("aliases", {}).items()}
        tables = {str(m): v for m, v in data.items() if isinstance(v, dict)}
        prices = {m: _price(v) for m, v in tables.items()}
        dated = {m: [_price({**v, **later}, since) for since, later in v.get("from", {}).items()]
                 for m, v in tables.items() if v.get("from")}
        facts = {m: _facts(v) for m, v in tables.items()}
        for model, table in (extra or {}).items():  # the stages file's own prices replace every dated one
            prices[str(model)] = _price(table)
            dated.pop(str(model), None)
        checked = settings.get("checked")
        return Pricing(prices, aliases=aliases, flex_discount=float(settings.get("flex_discount", 0.5)),
                       batch_discount=float(settings.get("batch_discount", 0.5)),
                       grounding_free=int(settings.get("grounding_free", 0)), dated=dated, facts=facts,
                       checked=_date(checked) if checked is not None else None,
                       tier1_cap=float(settings["tier1_monthly_cap"]) if "tier1_monthly_cap" in settings else None)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ConfigError(f"{where}: a price or a model fact is not valid: {exc}") from None


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _price(table: dict[str, Any], since: Any = None) -> ModelPrice:
    cached = table.get("cached_input")
    price = ModelPrice(float(table["input"]), float(table["output"]), None if cached is None else float(cached),
                       str(table.get("grounding", "prompt")), float(table.get("grounding_per_1000", 0.0)))
    return replace(price, since=_date(since)) if since is not None else price


def _facts(table: dict[str, Any]) -> ModelFacts:
    levels = table.get("thinking_levels")
    retires = table.get("retires")
    return ModelFacts(stage=str(table.get("stage", "stable")), retires=_date(retires) if retires else None,
                      replacement=table.get("replacement"),
                      thinking_levels=None if levels is None else tuple(str(v) for v in levels),
                      temperature=bool(table.get("temperature", True)),
                      search_json=bool(table.get("search_json", True)), flex=bool(table.get("flex", True)),
                      batch=bool(table.get("batch", True)))
