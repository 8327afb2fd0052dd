#!/usr/bin/env python3
"""enrich.py's own CLI, with the limiter's quota window scaled to the bench stand-in's (e.g. 6 s, not 60 s).

`make bench` scales the quota window down so that a one-minute run fills many windows. The limiter
must count over the same window as the stand-in: a CLI that reads ENRICHKIT_QUOTA_WINDOW is told so
by the bench; for an older one (`--tree`) this sets the limiter's default. Nothing else changes: this
runs `enrichkit.cli.main` with the arguments given. Environment: BENCH_LIB (the `lib` folder of the tree to run),
BENCH_WINDOW (seconds), BENCH_LIMITER_OUT (optional: the limiter's `snapshot()` is written there as
JSON at exit).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.environ["BENCH_LIB"])

import enrichkit.limiter as limiter_module

limiter_module.WINDOW = float(os.environ["BENCH_WINDOW"])  # read at run time by the limiter
_made: list[Any] = []
_init = limiter_module.Limiter.__init__


def _remember(self: Any, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    _made.append(self)


def _write_snapshots() -> None:
    out = os.environ.get("BENCH_LIMITER_OUT")
    if out and _made:
        with open(out, "w") as f:
            json.dump([lim.snapshot() for lim in _made], f)


limiter_module.Limiter.__init__ = _remember  # type: ignore[method-assign]
atexit.register(_write_snapshots)

from enrichkit.cli import main  # noqa: E402

if __name__ == "__main__":
    code = main(sys.argv[1:])
    _write_snapshots()  # also when the run leaves through os._exit later on
    sys.exit(code)
