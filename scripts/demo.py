#!/usr/bin/env python3
"""`make demo`: the main job end to end against the bundled Gemini stand-in; no key, no network.

Starts scripts/fake_gemini.py on a free local port, enriches data/sample.csv through
data/stages.toml into out/demo/enriched.csv (starting over each time), and stops the stand-in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from fake_gemini import FakeGemini  # noqa: E402 - the stand-in lives beside this script


def main() -> int:
    output = ROOT / "out" / "demo" / "enriched.csv"
    with FakeGemini(latency=0.15, jitter=0.1, seed=7) as fake:
        print(f"Gemini stand-in on {fake.url} (no real API is called)", flush=True)
        env = {**os.environ, "GEMINI_API_KEY": "demo-key-not-secret", "GEMINI_BASE_URL": fake.url}
        cmd = [sys.executable, str(ROOT / "scripts" / "enrich.py"), "--input", str(ROOT / "data" / "sample.csv"),
               "--output", str(output), "--stages-file", str(ROOT / "data" / "stages.toml"),
               "--max-workers", "20", "--rpm", "6000", "--fresh", "--yes"]
        print("$ " + " ".join(cmd[1:]), flush=True)
        code = subprocess.call(cmd, env=env, cwd=ROOT)
        print(f"\nexit code {code}; the stand-in answered {fake.stats()['generate']} requests.")
    print(f"Look at: {output}  (and {output.with_suffix('')}.report.json)")
    return code


if __name__ == "__main__":
    sys.exit(main())
