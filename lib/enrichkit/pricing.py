"""What an answer costs: token prices and the Search grounding fee, per model (`pricing.toml`, package data).

Priced by the model that served the answer (`modelVersion`), not the one asked for: an alias such as
`gemini-flash-latest` is billed as whatever it points at. Thinking tokens are output; cached input
tokens are billed at the cached rate; `service_tier = "flex"` takes the flex discount off the tokens.
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from enrichkit.errors import ConfigError


@dataclass(frozen=True)
class ModelPrice:
    input: float  # USD per 1M tokens
    output: float
    cached_input: float | None = None  # None: cached tokens at the input price
    grounding: str = "prompt"  # the grounding fee is per "prompt" (2.5) or per search "query" (3.x)
    grounding_per_1000: float = 0.0


@dataclass(frozen=True)
class Charge:
    tokens: float
    grounding: float


class Pricing:
    """Thread-safe (the free grounding allowance is counted under a lock)."""

    def __init__(self, prices: dict[str, ModelPrice], *, aliases: dict[str, str] | None = None,
                 flex_discount: float = 0.5, grounding_free: int = 0) -> None:
        self.prices = prices
        self.aliases = aliases or {}
        self.flex_discount = flex_discount
        self._free_left = grounding_free
        self._lock = threading.Lock()

    def lookup(self, model: str) -> ModelPrice | None:
        """Exact name, then alias, then the longest listed prefix ("gemini-2.5-flash-001" as "gemini-2.5-flash")."""
        name = model.removeprefix("models/")
        name = self.aliases.get(name, name)
        if name in self.prices:
            return self.prices[name]
        best = max((m for m in self.prices if name.startswith(m)), key=len, default=None)
        return self.prices[best] if best else None

    def known(self, model: str) -> bool:
        return self.lookup(model) is not None

    def used_grounding(self, units: int) -> None:
        """The job's grounded units so far (from the checkpoint): they used up that much of the free allowance."""
        with self._lock:
            self._free_left = max(0, self._free_left - units)

    def charge(self, model: str, *, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0,
               grounded: bool = False, search_queries: int = 0, flex: bool = False, batch: bool = False) -> Charge:
        """The cost of one answer. An unknown model costs 0 here: the run refuses those at start. `batch`: the Batch
        API halves the input and output token prices; cached tokens and the grounding fee stay at the standard rate."""
        price = self.lookup(model)
        if price is None:
            return Charge(0.0, 0.0)
        cached = min(cached_tokens, prompt_tokens)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        halve = 0.5 if batch else 1.0
        tokens = ((prompt_tokens - cached) * price.input * halve + cached * cached_rate
                  + output_tokens * price.output * halve) / 1_000_000
        if flex:
            tokens *= 1 - self.flex_discount
        units = 0
        if grounded:
            units = search_queries if price.grounding == "query" else 1
        free = 0
        if units and self._free_left:  # the allowance only shrinks: once spent (or 0), no lock is needed
            with self._lock:
                free = min(units, self._free_left)
                self._free_left -= free
        return Charge(tokens, (units - free) * price.grounding_per_1000 / 1000)


def load_pricing(path: str | Path | None = None, extra: dict[str, dict[str, Any]] | None = None) -> Pricing:
    """The shipped `pricing.toml` (or `path`), with the stages file's `[prices]` on top."""
    try:
        if path is None:
            text = resources.files("enrichkit").joinpath("pricing.toml").read_text(encoding="utf-8")
            where = "enrichkit/pricing.toml"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = str(path)
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the pricing file: {exc}") from None
    try:
        settings = data.pop("settings", {})
        aliases = {str(k): str(v) for k, v in data.pop("aliases", {}).items()}
        prices = {str(m): _price(v) for m, v in data.items() if isinstance(v, dict)}
        prices.update({str(m): _price(v) for m, v in (extra or {}).items()})
        return Pricing(prices, aliases=aliases, flex_discount=float(settings.get("flex_discount", 0.5)),
                       grounding_free=int(settings.get("grounding_free", 0)))
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ConfigError(f"{where}: a price is not a number: {exc}") from None


def _price(table: dict[str, Any]) -> ModelPrice:
    cached = table.get("cached_input")
    return ModelPrice(float(table["input"]), float(table["output"]), None if cached is None else float(cached),
                      str(table.get("grounding", "prompt")), float(table.get("grounding_per_1000", 0.0)))
