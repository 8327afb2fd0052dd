"""The B row of `make bench`: a two-LLM-stage job in batch mode (--batch) on the stand-in's accelerated clock.

Measures the wall time, the peak RSS of the enrich.py process, the Google batch jobs created and the lines billed
per record and stage (must be 1.00: never twice), beside the same job's synchronous time bound at 20 workers and
a 30 s grounded latency (records x LLM stages x 30 s / 20 workers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workload import bench_env, write_input

TWO_LLM_STAGES = """
[defaults]
model = "gemini-2.5-flash"
temperature = 0.2

[[stages]]
name = "poc"
prompt = "Who is the point of contact of {fund.title} managed by {fund.manager}?"
[stages.fields]
poc_name = "string"
poc_email = "string"

[[stages]]
name = "size"
prompt = "How large is {fund.title}, whose contact is {poc_name}?"
[stages.fields]
aum_musd = "number"
"""
SYNC_WORKERS, SYNC_LATENCY = 20, 30.0


def run_row(work: Path, tree: Path, fake: Any, records: int, chunk: int = 20_000) -> dict[str, Any]:
    write_input(work / "b.csv", records)
    (work / "b.toml").write_text(TWO_LLM_STAGES)
    env = bench_env(fake.url, ENRICHKIT_BATCH_CHUNK=str(chunk))
    args = [sys.executable, str(tree / "scripts" / "enrich.py"), "--input", "b.csv", "--output", "b.out.csv",
            "--stages-file", "b.toml", "--batch", "--batch-poll", "0.5", "--quiet"]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if code != 0:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    batch = fake.stats()["batch"]
    report = json.loads((work / "b.out.report.json").read_text())
    sync_bound = records * 2 * SYNC_LATENCY / SYNC_WORKERS
    return {"exit": code, "records": records, "llm_stages": 2, "wall_s": round(wall, 1),
            "enrich_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # the stand-in's answers are not in it
            "peak_rss_mb": usage.ru_maxrss // 1024, "creates": batch["creates"],
            "max_creates_per_name": batch["max_creates_per_name"],
            "lines_billed_per_record_stage": round(batch["lines_billed"] / (2 * records), 4),
            "max_billed_per_key": batch["max_billed_per_key"], "completed": report["counts"]["completed"],
            "cost_usd": report["cost_usd"], "sync_bound_s": sync_bound,
            "sync_bound": f"{records:,} x 2 stages x {SYNC_LATENCY:.0f} s / {SYNC_WORKERS} workers"}


def table_row(b: dict[str, Any]) -> tuple[str, str, str, bool]:
    hours = b["sync_bound_s"] / 3600
    return ("B batch",
            f"{b['records']:,} rec x 2 LLM stages in {b['wall_s']} s (stand-in clock; enrich CPU "
            f"{b.get('enrich_cpu_s', '?')} s), RSS {b['peak_rss_mb']} MB, "
            f"{b['creates']} jobs, {b['lines_billed_per_record_stage']:.2f} lines/record/stage; sync bound "
            f"{hours:,.0f} h",
            "1.00 lines; 1 create/name", b["exit"] == 0 and b["lines_billed_per_record_stage"] == 1.0
            and b["max_creates_per_name"] == 1 and b["completed"] == b["records"])
