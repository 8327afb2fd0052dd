#!/usr/bin/env python3
"""enrich.py's CLI from an older checkout (`scripts/bench.py --tree DIR`) whose CLI does not read
ENRICHKIT_QUOTA_WINDOW: the limiter's default window is set to it here instead, so that the limiter
counts over the bench stand-in's window (6 s, not 60 s). Nothing else changes.

Environment: BENCH_LIB (the `lib` folder of the tree to run), ENRICHKIT_QUOTA_WINDOW (seconds).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.environ["BENCH_LIB"])

import enrichkit.pace.limiter as limiter_module

limiter_module.WINDOW = float(os.environ["ENRICHKIT_QUOTA_WINDOW"])  # read when a Limiter is made

from enrichkit.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
