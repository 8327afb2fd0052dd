#!/usr/bin/env python3
"""`make demo-batch`: the main job in batch mode against the bundled Gemini stand-in; no key, no network.

The stand-in's Batch API runs on an accelerated clock (a Google job takes seconds, not hours). The demo runs the
job the way cron would: `--batch --batch-detach` submits the first stage's jobs and exits 5 while Google works;
the next tick collects them, submits the second stage, and so on until the job is done (exit 0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from fake_gemini import FakeGemini  # noqa: E402 - the stand-in lives beside this script


def run_tick(cmd: list[str], env: dict[str, str]) -> int:
    """One cron tick: the command as a process of its own."""
    return subprocess.call(cmd, env=env, cwd=ROOT)


def main(argv: list[str] | None = None, *, pending: float = 1.0, running: float = 2.0, pause: float = 2.0,
         tick: Callable[[list[str], dict[str, str]], int] = run_tick) -> int:
    """Run the demo; `argv` may name another output file (the tests' tmp folder). A Google job is PENDING for
    `pending` seconds, then RUNNING for `running`; cron's next tick comes `pause` seconds after one ends; `tick`
    runs a tick's command (the tests run it in their own process, on a quicker clock)."""
    args = sys.argv[1:] if argv is None else argv
    output = Path(args[0]) if args else ROOT / "out" / "demo-batch" / "enriched.csv"
    with FakeGemini(seed=7, batch_pending=pending, batch_seconds=running) as fake:
        print(f"Gemini stand-in on {fake.url} (no real API is called; a batch job takes ~{pending + running:g} s "
              "here, up to 24 h at Google)", flush=True)
        env = {**os.environ, "GEMINI_API_KEY": "demo-key-not-secret", "GEMINI_BASE_URL": fake.url,
               "ENRICHKIT_BATCH_CHUNK": "200"}
        base = [sys.executable, str(ROOT / "scripts" / "enrich.py"), "--input", str(ROOT / "data" / "sample.csv"),
                "--output", str(output), "--stages-file", str(ROOT / "data" / "stages.toml")]
        first = [*base, "--batch", "--batch-detach", "--batch-poll", "1", "--fresh", "--yes", "-q"]
        again = [*base, "--resume", "--batch-detach"]  # what a crontab line runs every few minutes
        code = 5
        for n, cmd in enumerate([first, *[again] * 30]):
            print(f"\n[tick {n}] $ " + " ".join(cmd[1:]), flush=True)
            code = tick(cmd, env)
            print(f"[tick {n}] exit code {code}" + (" (Google jobs still running: run again later)"
                                                    if code == 5 else ""), flush=True)
            if code != 5:
                break
            time.sleep(pause)
        batch = fake.stats()["batch"]
        print(f"\nexit code {code}; the stand-in made {batch['creates']} batch jobs and billed "
              f"{batch['lines_billed']} lines (at most {batch['max_billed_per_key']} per request); "
              f"{fake.stats()['generate']} synchronous calls.")
    print(f"Look at: {output}  (and {output.with_suffix('')}.report.json, {output.with_suffix('')}.batch.sqlite)")
    return code


if __name__ == "__main__":
    sys.exit(main())
