#!/usr/bin/env python3
"""`make bench`: throughput against a quota, overhead, memory, resume latency and faults, in one run.

Prints one table and writes bench/results.json. Every run talks only to the Gemini stand-in on
127.0.0.1. Speed lives here, never in the test suite. `--quick` shrinks every size (a smoke test).
The Q rows (bench/quota_bench.py) run the pace against quotas counted over sliding and fixed
windows, beside a naive script. `--tree DIR` runs another checkout's CLI (e.g. an older commit
unpacked with `git archive`), for before/after figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import quota_bench  # noqa: E402 - the Q rows live in bench/
from workload import LLM_STAGES, NOOP_STAGES, bench_env, write_input  # noqa: E402 - so do its inputs

from fake_gemini import FakeGemini  # noqa: E402 - the stand-in lives beside this script

WORK = ROOT / "bench" / "work"
TREE = ROOT  # the checkout whose CLI runs (--tree)

ALL_PARTS = "p1,p2,p5,q"


def run(args: list[str], env: dict[str, str]) -> tuple[int, float, int, float]:
    """Run enrich.py; return (exit code, wall seconds, peak RSS in MB, start time)."""
    started = time.time()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(TREE / "scripts" / "enrich.py"), *args], env=env, cwd=WORK,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode not in (0, 1):
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return proc.returncode, wall, usage.ru_maxrss // 1024, started


def base_env(fake: FakeGemini | None = None, **extra: str) -> dict[str, str]:
    return bench_env(fake.url if fake is not None else None, **extra)


def p1_rate(records: int) -> dict[str, Any]:
    """Stand-in capped at 1,200 RPM, 0.2 s latency, 20 workers: achieved records/s vs the cap."""
    cap = 1200
    write_input(WORK / "p1.csv", records)
    (WORK / "llm.toml").write_text(LLM_STAGES)
    with FakeGemini(rpm=cap, latency=0.2, seed=1) as fake:
        code, wall, _, _ = run(["--input", "p1.csv", "--output", "p1.out.csv", "--stages-file", "llm.toml",
                                "--max-workers", "20", "--rpm", str(cap), "--quiet"], base_env(fake))
        stats = fake.stats()
    rep = json.loads((WORK / "p1.out.report.json").read_text())
    rate = rep["counts"]["completed_this_run"] / rep["wall_seconds"]
    answered_429 = stats["by_status"].get("429", 0)
    return {"exit": code, "records": records, "records_per_s": round(rate, 2), "cap_per_s": cap / 60,
            "ratio": round(rate / (cap / 60), 4), "requests": stats["generate"],
            "share_429": round(answered_429 / max(1, stats["generate"]), 4), "process_wall_s": round(wall, 1)}


def p2_p3_p4(small: int, large: int) -> dict[str, Any]:
    """A python no-op stage over `small` and `large` rows; peak RSS of the large run; resume latency."""
    (WORK / "noop.toml").write_text(NOOP_STAGES)
    out: dict[str, Any] = {}
    for label, rows in (("small", small), ("large", large)):
        # 10 rows more than processed: they stay pending for P4 (a resume after an interruption).
        write_input(WORK / f"{label}.csv", rows + 10)
        code, wall, rss, _ = run(["--input", f"{label}.csv", "--output", f"{label}.out.csv", "--stages-file",
                                  "noop.toml", "--limit", str(rows), "--quiet"], base_env())
        out[label] = {"exit": code, "rows": rows, "wall_s": round(wall, 2), "records_per_s": round(rows / wall),
                      "peak_rss_mb": rss}
    out["time_ratio"] = round(out["large"]["wall_s"] / out["small"]["wall_s"], 2)
    # P4: `large` records are done, the 10 pending ones are at the end of the input (the worst place).
    probe = WORK / "probe.txt"
    probe.unlink(missing_ok=True)
    code, wall, rss, started = run(["--input", "large.csv", "--output", "large.out.csv", "--stages-file",
                                    "noop.toml", "--resume", "--quiet"], base_env(BENCH_PROBE_FILE=str(probe)))
    first = float(probe.read_text()) - started if probe.exists() else None
    out["resume"] = {"exit": code, "done_before": large, "to_first_new_record_s": round(first, 2) if first else None,
                     "wall_s": round(wall, 2), "peak_rss_mb": rss}
    return out


def p5_faults(records: int) -> dict[str, Any]:
    """10 % 5xx, 5 % 429, 3 % malformed, 2 % timeouts over `records` records."""
    write_input(WORK / "p5.csv", records)
    (WORK / "llm.toml").write_text(LLM_STAGES)
    with FakeGemini(error_rate=0.10, rate_limit_rate=0.05, malformed_rate=0.03, timeout_rate=0.02,
                    hang_seconds=10, latency=0.05, seed=5) as fake:
        code, wall, _, _ = run(["--input", "p5.csv", "--output", "p5.out.csv", "--stages-file", "llm.toml",
                                "--max-workers", "20", "--timeout", "2", "--max-retries", "5", "--quiet"],
                               base_env(fake))
        stats = fake.stats()
    rep = json.loads((WORK / "p5.out.report.json").read_text())
    return {"exit": code, "records": records, "completed": rep["counts"]["completed"],
            "failed": rep["counts"]["failed"], "requests": stats["generate"],
            "requests_per_record": round(stats["generate"] / records, 3), "rate_limited": rep["rate_limited"],
            "retries": rep["retries"], "wall_s": round(wall, 1)}


def q_rows(quick: bool, jobs: int) -> dict[str, Any]:
    """The Q rows: the pace against sliding and fixed quota windows, and a naive script beside it."""
    (WORK / "llm.toml").write_text(LLM_STAGES)
    return quota_bench.run_rows(WORK, TREE, WORK / "llm.toml", base_env(), quick=quick, jobs=jobs)


def main(argv: list[str] | None = None) -> int:
    global TREE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the bench runs, measures little")
    parser.add_argument("--only", default=ALL_PARTS, help="which parts to run (p2 also measures P3 and P4)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose CLI runs (default: this one)")
    parser.add_argument("--jobs", type=int, default=3, help="Q rows run at once (default 3)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.json", help="where to write")
    args = parser.parse_args(argv)
    TREE = args.tree.resolve()
    only = set(args.only.split(","))
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    sizes = (120, 2000, 20000, 100) if args.quick else (1200, 100_000, 1_000_000, 1000)
    results_path = args.results
    results: dict[str, Any] = {}
    if only != set(ALL_PARTS.split(",")) and results_path.exists():
        results = json.loads(results_path.read_text())  # a partial run updates the parts it measured
    results.update({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "quick": args.quick,
                    "tree": str(TREE)})
    parts = {"p1": ("P1 rate against a 1,200 RPM quota", p1_rate, (sizes[0],)),
             "p2": ("P2/P3/P4 overhead, memory, resume", p2_p3_p4, (sizes[1], sizes[2])),
             "p5": ("P5 faults", p5_faults, (sizes[3],)),
             "q": ("Q rows: the pace against quota windows", q_rows, (args.quick, args.jobs))}
    for key, (title, measure, sizes_for) in parts.items():
        if key in only:
            print(f"{title} ...", flush=True)
            results[key] = measure(*sizes_for)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwritten: {results_path}")
    return 0


def print_table(results: dict[str, Any]) -> None:
    """One line per figure: what was measured, the target, and whether it is met."""
    rows: list[tuple[str, str, str, bool]] = []
    if p1 := results.get("p1"):
        rows.append(("P1 rate",
                     f"{p1['records_per_s']} rec/s of {p1['cap_per_s']:.0f} cap = {p1['ratio']:.3f}; "
                     f"429s {100 * p1['share_429']:.2f} %",
                     ">= 0.97 and <= 2 %", p1["ratio"] >= 0.97 and p1["share_429"] <= 0.02))
    if p2 := results.get("p2"):
        small, large, resume = p2["small"], p2["large"], p2["resume"]
        rows.append(("P2 overhead",
                     f"{small['records_per_s']:,} rec/s ({small['rows']:,}), {large['records_per_s']:,} rec/s "
                     f"({large['rows']:,}); time ratio {p2['time_ratio']}",
                     ">= 10,000 rec/s; ratio <= 11",
                     min(small["records_per_s"], large["records_per_s"]) >= 10_000 and p2["time_ratio"] <= 11))
        rows.append(("P3 memory", f"peak RSS {large['peak_rss_mb']} MB ({large['rows']:,} rows)", "<= 100 MB",
                     large["peak_rss_mb"] <= 100))
        first = resume["to_first_new_record_s"]
        rows.append(("P4 resume", f"{first} s to the first new record ({resume['done_before']:,} done)", "<= 2 s",
                     first is not None and first <= 2))
    if p5 := results.get("p5"):
        rows.append(("P5 faults",
                     f"{p5['completed']} completed, {p5['failed']} failed of {p5['records']}; "
                     f"{p5['requests_per_record']} requests/record",
                     "all complete", p5["failed"] == 0 and p5["completed"] == p5["records"]))
    if rows:
        width = max(len(r[1]) for r in rows)
        print(f"\n{'figure':<12} {'measured':<{width}}  {'target':<28} met")
        for name, measured, target, ok in rows:
            print(f"{name:<12} {measured:<{width}}  {target:<28} {'yes' if ok else 'NO'}")
    if q := results.get("q"):
        print(f"\nQ rows: {q['workers']} workers, {q['latency_s']} s latency, a quota of {q['quota_per_window']} "
              f"requests per {q['window_s']:g} s window (1,200 RPM, ten times faster) unless the row says; "
              "rate/cap over whole windows")
        lines = quota_bench.table(q)
        width = max(len(line[0]) for line in lines)
        for label, measured, target, met in lines:
            verdict = "" if met is None else ("  yes" if met else "  NO")
            print(f"{label:<{width}}  {measured}  [{target}]{verdict}")


if __name__ == "__main__":
    sys.exit(main())
