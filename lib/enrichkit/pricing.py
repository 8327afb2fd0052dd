"""Token prices (`data/pricing.toml`, USD per million tokens) and the cost of a call."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from enrichkit.errors import ConfigError
from enrichkit.logs import log

DEFAULT_PRICING = Path(__file__).resolve().parents[2] / "data" / "pricing.toml"


@dataclass(frozen=True)
class Pricing:
    prices: dict[str, tuple[float, float]]  # model -> (input, output) USD per 1M tokens

    def cost(self, model: str, prompt_tokens: int, output_tokens: int) -> float:
        price = self.prices.get(model) or self._prefix_match(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price[0] + output_tokens * price[1]) / 1_000_000

    def known(self, model: str) -> bool:
        return model in self.prices or self._prefix_match(model) is not None

    def _prefix_match(self, model: str) -> tuple[float, float] | None:
        # "gemini-2.5-flash-001" is priced as "gemini-2.5-flash"; the longest known prefix wins.
        best = max((m for m in self.prices if model.startswith(m)), key=len, default=None)
        return self.prices[best] if best else None


def load_pricing(path: str | Path | None = None) -> Pricing:
    path = Path(path) if path else DEFAULT_PRICING
    if not path.exists():
        log.warning("pricing file %s not found: costs will show as $0", path)
        return Pricing({})
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        prices = {str(m): (float(v.get("input", 0)), float(v.get("output", 0))) for m, v in data.items()
                  if isinstance(v, dict)}
    except (tomllib.TOMLDecodeError, OSError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: cannot read the pricing file: {exc}") from None
    return Pricing(prices)
