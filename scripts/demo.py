#!/usr/bin/env python3
"""`make demo`: the main job end to end against the bundled Gemini stand-in; no key, no network.

Starts scripts/fake_gemini.py on a free local port, enriches data/sample.csv through
data/stages.toml into out/demo/enriched.csv (starting over each time), and stops the stand-in. It echoes
the environment it sets and the command it runs, and closes with a command to run the job yourself
(which continues a job and never deletes one) and a reminder that the stand-in's answers are invented.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from fake_gemini import FakeGemini  # noqa: E402 - the stand-in lives beside this script

STANDIN_PORT = 8766  # the port .env.example and the README give the stand-in (the dashboard's is 8765)


def run(input_path: Path, stages: Path, output: Path, say: Callable[[str], None] = print) -> int:
    enrich = [sys.executable, str(ROOT / "scripts" / "enrich.py")]
    job = ["--input", str(input_path), "--stages-file", str(stages)]
    with FakeGemini(latency=0.15, jitter=0.1, seed=7) as fake:
        say(f"Gemini stand-in on {fake.url} (no real API is called)")
        env = {"GEMINI_API_KEY": "demo-key-not-secret", "GEMINI_BASE_URL": fake.url}
        say("$ export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items()))
        cmd = [*enrich, *job, "--output", str(output), "--max-workers", "20", "--rpm", "6000", "--fresh", "--yes"]
        say("$ " + shlex.join(cmd) + "   # --fresh --yes: the demo starts over each time")
        code = subprocess.call(cmd, env={**os.environ, **env}, cwd=ROOT)
        say(f"\nexit code {code}; the stand-in answered {fake.stats()['generate']} requests.")
    say("The stand-in's answers are invented: random words and numbers of the right type, not facts about these "
        "funds. Only a real key gives real answers.")
    say(f"Look at: {output}  (and {output.with_suffix('')}.report.json)")
    yours = output.parent.parent / "enriched.csv" if output.parent.name == "demo" else output.with_name("mine.csv")
    say("Run the job yourself (this command starts a job, or continues it; it never deletes rows):")
    say(f"  with a stand-in: python {shlex.quote(str(ROOT / 'scripts' / 'fake_gemini.py'))} --port {STANDIN_PORT}"
        "   # in another terminal")
    say(f"    and: export GEMINI_BASE_URL=http://127.0.0.1:{STANDIN_PORT} GEMINI_API_KEY=anything")
    say("  or with your key: GEMINI_API_KEY=... in a .env file (and GEMINI_BASE_URL unset)")
    say("  then: " + shlex.join([*enrich, *job, "--output", str(yours), "--resume"]))
    return code


def main() -> int:
    return run(ROOT / "data" / "sample.csv", ROOT / "data" / "stages.toml", ROOT / "out" / "demo" / "enriched.csv")


if __name__ == "__main__":
    sys.exit(main())
