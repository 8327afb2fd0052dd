"""Progress on stderr: a tqdm bar on a terminal, a plain log line every 30 s or 5 % elsewhere (cron, CI)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enrichkit.logs import log, use_color


@dataclass
class Figures:
    done: int
    total: int
    failed: int
    tokens: int
    cost: float
    rate_per_min: float  # records/min in this run (the same figure `jobs.py status` shows while it runs)
    rate_limited: int = 0  # 429 answers in this run
    retries: int = 0  # requests beyond the first of a call, in this run

    @property
    def eta_seconds(self) -> float | None:
        left = self.total - self.done
        if left <= 0:
            return 0.0
        return left / self.rate_per_min * 60 if self.rate_per_min > 0 else None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def describe(f: Figures) -> str:
    pct = 100 * f.done / f.total if f.total else 100.0
    return (f"{f.done}/{f.total} ({pct:.1f}%) done, {f.failed} failed, {f.tokens:,} tokens, ${f.cost:.4f}, "
            f"{f.rate_per_min:.1f} rec/min, ETA {format_duration(f.eta_seconds)}, "
            f"{f.rate_limited} rate-limited, {f.retries} retries")


class Progress:
    """Call `update(figures)` as often as you like; it decides when to draw."""

    def __init__(self, *, quiet: bool, tty: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 every_seconds: float = 30.0, every_fraction: float = 0.05) -> None:
        self._tty = sys.stderr.isatty() if tty is None else tty
        self._quiet = quiet
        self._clock = clock
        self._every_seconds = every_seconds
        self._every_fraction = every_fraction
        self._bar: Any = None
        self._last_time = clock()
        self._last_done: int | None = None

    def start(self, total: int, initial: int) -> None:
        if self._quiet:
            return
        if self._tty:
            from tqdm import tqdm

            # A terminal that reports no size (a fresh pty, some containers) makes tqdm draw nothing.
            size = shutil.get_terminal_size((100, 24))
            # tqdm's own rate is left out: the postfix carries the run's (records/min, as the log and `jobs.py`).
            self._bar = tqdm(total=total, initial=initial, unit="rec", file=sys.stderr, ncols=size.columns,
                             nrows=max(size.lines, 2), colour=None if not use_color() else "green", smoothing=0.1,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        self._last_done = initial

    def update(self, f: Figures, *, force: bool = False) -> None:
        if self._quiet:
            return
        if self._bar is not None:
            self._bar.total = f.total
            self._bar.n = f.done
            self._bar.set_postfix_str(f"failed={f.failed} ${f.cost:.4f} {f.rate_per_min:,.0f} rec/min "
                                      f"rate-limited={f.rate_limited} retries={f.retries}", refresh=False)
            self._bar.refresh()
            return
        now = self._clock()
        step = max(1, int(f.total * self._every_fraction))
        moved = self._last_done is None or f.done - self._last_done >= step
        if force or moved or now - self._last_time >= self._every_seconds:
            log.info("progress: %s", describe(f))
            self._last_time = now
            self._last_done = f.done

    def clear(self) -> None:
        """Take the bar off the screen for a moment, so a line printed now is not drawn over."""
        if self._bar is not None:
            self._bar.clear()

    def close(self, final: Figures | None = None) -> None:
        """End the bar with a last draw of the final figures (it would otherwise stop at its last refresh)."""
        if self._bar is not None:
            if final is not None:
                self.update(final)
            self._bar.close()
            self._bar = None
