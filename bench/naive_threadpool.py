#!/usr/bin/env python3
"""What users write first: 20 threads, 3 tries, 2^n s sleeps. The bench's baseline, not enrichkit.

    python bench/naive_threadpool.py input.csv output.csv [--sleep-scale 0.1]

Talks to the API the SDK is pointed at (GEMINI_BASE_URL; the bench's stand-in). A row that fails
three times is left out of the output, as such scripts do. `--sleep-scale` shrinks the sleeps in
step with the bench's shrunken quota window; the code is otherwise as a user would write it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from google import genai
from google.genai import types

PROMPT = "Who is the point of contact of {title} managed by {manager}? Answer as JSON with poc_name, poc_email."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--sleep-scale", type=float, default=1.0)
    args = parser.parse_args()

    client = genai.Client(api_key=os.environ["GEMINI_API_KEY"],
                          http_options=types.HttpOptions(base_url=os.environ.get("GEMINI_BASE_URL")))

    def enrich(row: dict[str, str]) -> dict[str, str] | None:
        prompt = PROMPT.format(title=row["fund.title"], manager=row["fund.manager"])
        for attempt in range(3):
            try:
                response = client.models.generate_content(
                    model="gemini-2.5-flash", contents=prompt,
                    config=types.GenerateContentConfig(response_mime_type="application/json", temperature=0.2))
                return {**row, **json.loads(response.text or "{}")}
            except Exception:  # noqa: BLE001 - as users write it
                time.sleep(2 ** attempt * args.sleep_scale)
        return None

    with open(args.input, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = [r for r in pool.map(enrich, rows) if r is not None]
    with open(args.output, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in results for k in r}))
        writer.writeheader()
        writer.writerows(results)


if __name__ == "__main__":
    main()
