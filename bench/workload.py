"""What every `make bench` run is given: its input rows, its stages files and its environment
(`scripts/bench.py` and `bench/quota_bench.py` both use these)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

BENCH = Path(__file__).resolve().parent

LLM_STAGES = """
[defaults]
model = "gemini-2.5-flash"
temperature = 0.2

[[stages]]
name = "poc"
prompt = "Who is the point of contact of {fund.title} managed by {fund.manager}?"
[stages.fields]
poc_name = "string"
poc_email = "string"
confidence = "number"
"""

NOOP_STAGES = """
[[stages]]
name = "noop"
type = "python"
function = "probe:first_call"
"""


def write_input(path: Path, rows: int, start: int = 0, mode: str = "w") -> None:
    """`rows` fund records numbered from `start` (with the header when `mode` is "w"; "a" appends)."""
    with open(path, mode, newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        if mode == "w":
            w.writerow(["fund.title", "fund.manager", "poc.email"])
        for i in range(start, start + rows):
            w.writerow([f"Fund {i:07d}", f"Manager {i % 97}", f"p{i}@m{i % 97}.example.com"])


def bench_env(base_url: str | None = None, **extra: str) -> dict[str, str]:
    """This environment without any real Google key, a bench key instead, the stand-in's URL when given,
    and bench/ importable (the no-op stage's `probe` module)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_"))}
    env.update({"GEMINI_API_KEY": "bench-key-not-secret", "PYTHONPATH": str(BENCH)})
    if base_url is not None:
        env["GEMINI_BASE_URL"] = base_url
    env.update(extra)
    return env
