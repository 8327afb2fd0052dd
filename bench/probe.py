"""A no-op python stage for `make bench` that notes when it was first called (for P4, resume latency)."""

from __future__ import annotations

import os
import time

_noted = False


def first_call(record: dict[str, str]) -> dict[str, str]:
    global _noted
    if not _noted:
        _noted = True
        path = os.environ.get("BENCH_PROBE_FILE")
        if path:
            with open(path, "w") as f:
                f.write(repr(time.time()))
    return {}
