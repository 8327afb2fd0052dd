"""The Gemini stand-in with a quota counted over sliding or fixed windows, with exact or Google-like delays.

`scripts/fake_gemini.py` has `window_mode` ("sliding" | "fixed") and `rpm_delay` ("exact" | "google",
and "precise"); `quota_gemini()` passes them on. `QuotaGemini` is the bench's own count with the same
meaning, for a checkout whose stand-in predates them:

- sliding: at most `rpm` requests admitted in any `window` seconds; "exact" delay: until the oldest
  admitted request leaves the window.
- fixed: at most `rpm` admitted per window [k*window, (k+1)*window) from `window_origin()`; "exact"
  delay: until the next window starts.
- "google": the delay is drawn uniformly from [window/3, window] (20-60 s for 60 s), whatever the
  quota's state, as Google's per-minute 429s look.

Delays go out as whole seconds, at least 1 (`quota_error` rounds them, as the real API does).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from fake_gemini import FakeConfig, FakeGemini, Reply, quota_error

NATIVE = {"window_mode", "rpm_delay"} <= {f.name for f in dataclasses.fields(FakeConfig)}
QUOTA_ID = "GenerateRequestsPerMinutePerProjectPerModel"


class QuotaGemini(FakeGemini):
    """FakeGemini whose rpm quota is counted here (sliding or fixed windows, exact or Google-like delays)."""

    def __init__(self, *, rpm: int, window: float, window_mode: str, rpm_delay: str, **overrides: Any) -> None:
        if window_mode not in ("sliding", "fixed") or rpm_delay not in ("exact", "google"):
            raise ValueError(f"unknown window_mode/rpm_delay: {window_mode}/{rpm_delay}")
        super().__init__(window=window, **overrides)  # no rpm: the base class counts nothing
        self.quota, self.quota_window, self.window_mode, self.rpm_delay = rpm, window, window_mode, rpm_delay
        self._admitted: collections.deque[float] = collections.deque()
        self._fixed_index, self._fixed_count = -1, 0

    def _refuse(self, model: str, key: str | None, prompt: str, now: float) -> tuple[str, Reply] | None:
        refused = super()._refuse(model, key, prompt, now)
        if refused is not None:
            return refused
        delay = self._quota_delay(now)  # under the base class's lock, like the rest of _refuse
        if delay is None:
            return None
        return "rpm", quota_error(QUOTA_ID, self.quota, model, delay)

    def _quota_delay(self, now: float) -> float | None:
        window = self.quota_window
        if self.window_mode == "sliding":
            while self._admitted and self._admitted[0] <= now - window:
                self._admitted.popleft()
            if len(self._admitted) < self.quota:
                self._admitted.append(now)
                return None
            exact = self._admitted[0] + window - now
        else:
            index = math.floor(now / window)
            if index != self._fixed_index:
                self._fixed_index, self._fixed_count = index, 0
            if self._fixed_count < self.quota:
                self._fixed_count += 1
                return None
            exact = (index + 1) * window - now
        return self._rng.uniform(window / 3, window) if self.rpm_delay == "google" else exact


def window_origin(fake: FakeGemini) -> float:
    """Where the stand-in's fixed windows start on the monotonic clock (they are multiples of the window after)."""
    return float(getattr(fake, "_origin", 0.0)) if NATIVE else 0.0  # the real one aligns them to its start


def quota_gemini(*, rpm: int, window: float, window_mode: str, rpm_delay: str, **overrides: Any) -> FakeGemini:
    """The stand-in with this quota: the real one when it models windows itself, else `QuotaGemini`."""
    if NATIVE:
        return FakeGemini(rpm=rpm, window=window, window_mode=window_mode, rpm_delay=rpm_delay, **overrides)
    return QuotaGemini(rpm=rpm, window=window, window_mode=window_mode, rpm_delay=rpm_delay, **overrides)
