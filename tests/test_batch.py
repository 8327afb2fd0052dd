"""Batch mode (--batch) through the real CLI, the real google-genai SDK and the stand-in's Batch and Files APIs."""

from __future__ import annotations

import json
import sqlite3

from conftest import COLUMNS, Workspace, expected_ids, read_csv, read_json

FAST = ("--batch", "--batch-poll", "0.05")


def batch_env(ws: Workspace, **extra: str) -> dict[str, str]:
    return ws.env(ENRICHKIT_BATCH_SETTLE="0.5", ENRICHKIT_BATCH_CHUNK="15", **extra)


def test_batch_run_enriches_every_record_once_through_google_jobs(ws: Workspace) -> None:
    proc = ws.run(*FAST, env=batch_env(ws))
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(ws.output)
    assert list(rows[0]) == [*COLUMNS, "poc_name", "poc_email", "confidence", "email_domain", "_cost_usd",
                             "_record_id", "_job_id"]
    assert sorted(r["_record_id"] for r in rows) == sorted(expected_ids(ws))
    for row in rows:
        assert row["poc_name"] and row["email_domain"] == row["poc_email"].split("@")[1].lower()
        assert float(row["_cost_usd"]) > 0
    stats = ws.fake.stats()
    assert stats["generate"] == 0  # nothing went the synchronous way
    batch = stats["batch"]
    assert batch["creates"] == 3 and batch["max_creates_per_name"] == 1  # 40 records in chunks of 15
    assert batch["lines_billed"] == 40 and batch["max_billed_per_key"] == 1
    cp = read_json(ws.checkpoint)
    assert cp["status"] == "completed" and cp["batch"]["jobs_in_flight"] == 0
    assert "Done: all 40 records enriched." in proc.stderr
