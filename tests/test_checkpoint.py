"""The checkpoint round-trips, stays compact with many IDs, and is replaced atomically."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from enrichkit.errors import ConfigError
from enrichkit.store.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from enrichkit.store.idset import IdSet


def _ids(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(64):016x}" for _ in range(n)]


def test_idset_membership_order_and_merges() -> None:
    ids = _ids(40_000)  # about 10 to each of the 4,096 buckets: inserts land between, before and after
    s = IdSet()
    for record_id in ids:
        s.add(record_id)
    s.add(ids[0])
    assert len(s) == 40_000
    assert all(i in s for i in ids[::997])
    assert "ffffffffffffffff" not in s or "ffffffffffffffff" in ids
    assert list(s) == sorted(ids)


def test_idset_counts_the_ids_another_set_lacks() -> None:
    ids = _ids(20_000)
    mine, theirs = IdSet(ids), IdSet(ids[::3] + _ids(50, seed=2))
    assert mine.count_not_in(theirs) == len(set(ids) - set(ids[::3])) == 13_333
    assert theirs.count_not_in(mine) == 50 and IdSet().count_not_in(mine) == 0


def test_roundtrip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "job.progress.json"
    cp = Checkpoint(job_id="enrich_x", output="o.csv", input={"path": "i.csv", "size": 3, "mtime": 1.5},
                    stages=["a"], config_fingerprint="f", id_columns=["k"], total_records=9)
    for record_id in _ids(1000):
        cp.mark_completed(record_id)
    cp.mark_failed("00000000000000ff")
    cp.totals.prompt_tokens, cp.totals.grounding_cost_usd, cp.totals.rate_limited = 12, 0.5, 3
    cp.options = {"model": "gemini-x", "max_workers": 7}
    cp.output_crc32, cp.filled = 123456789, {"poc_name": 3}
    cp.errors.extend({"n": i} for i in range(80))
    write_checkpoint(path, cp)
    data = json.loads(path.read_text())  # plain JSON for any reader
    assert data["completed_count"] == 1000 and len(data["completed_ids"]) == 1000
    assert len(data["errors"]) == 50 and data["errors"][-1] == {"n": 79}
    back = read_checkpoint(path)
    assert sorted(back.completed_ids) == sorted(cp.completed_ids)
    assert back.failed_ids == {"00000000000000ff"}
    assert (back.totals.prompt_tokens, back.totals.cost_usd, back.totals.rate_limited) == (12, 0.5, 3)
    assert data["cost_usd"] == 0.5 and data["prompt_tokens"] == 12  # SPEC's flat keys
    assert (back.id_columns, back.options, back.output_crc32, back.filled) == (
        ["k"], {"model": "gemini-x", "max_workers": 7}, 123456789, {"poc_name": 3})
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


def test_completing_a_failed_record_removes_it_from_failed(tmp_path: Path) -> None:
    cp = Checkpoint(job_id="j", output="o", input={}, stages=[], config_fingerprint="f")
    cp.mark_failed("00000000000000aa")
    cp.mark_completed("00000000000000aa")
    cp.mark_failed("00000000000000aa")  # a completed record never goes back to failed
    assert cp.failed_ids == set() and cp.completed_count == 1


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 9, "job_id": "x"}',
                                  '{"version": 1, "job_id": "x", "completed_ids": ["zz"]}'])
def test_corrupt_checkpoints_raise_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(ConfigError):
        read_checkpoint(path)


def test_edited_unsorted_ids_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    ids = _ids(20)
    path.write_text(json.dumps({"version": 1, "job_id": "x", "completed_ids": ids + ids[:3]}))
    assert sorted(read_checkpoint(path).completed_ids) == sorted(ids)
