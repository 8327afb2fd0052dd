"""The stand-in's Files and Batch APIs, driven by the real google-genai SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import API_KEY, wait_for
from gemini_standin.server import FakeGemini


def client(fake: FakeGemini) -> Any:
    from google import genai
    from google.genai import types

    return genai.Client(api_key=API_KEY, vertexai=False, http_options=types.HttpOptions(
        base_url=fake.url, api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1)))


def jsonl(n: int, pad: int = 0, tag: str = "") -> bytes:
    lines = [json.dumps({"key": f"k{i}", "request": {"contents": [{"role": "user", "parts": [
        {"text": f"{tag}question {i} {'x' * pad}"}]}], "generationConfig": {
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}})
        for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def submit(c: Any, data: bytes, display: str = "job-1") -> Any:
    up = c.files.upload(file=io.BytesIO(data), config={"mime_type": "application/jsonl", "display_name": display})
    return c.batches.create(model="gemini-2.5-flash", src=up.name, config={"display_name": display})


def ended(c: Any, name: str) -> Any:
    box: list[Any] = []

    def done() -> bool:
        box[:] = [c.batches.get(name=name)]
        return str(box[0].state.value) in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_EXPIRED",
                                           "JOB_STATE_CANCELLED")
    wait_for(done, what="the batch job to end")
    return box[0]


@pytest.fixture
def batch_fake(serve: Callable[..., FakeGemini]) -> Iterator[FakeGemini]:
    yield serve(seed=3, batch_pending=0.0, batch_seconds=0.05)  # a job ends 0.05 s after its create


def test_upload_over_8_mib_create_get_list_download_every_key_once(batch_fake: FakeGemini) -> None:
    c = client(batch_fake)
    data = jsonl(200, pad=42_000)  # few long lines: the size is what matters here, each line costs an answer
    assert len(data) > 8 * 1024 * 1024 + 1  # the SDK sends it in more than one chunk
    job = submit(c, data, "enrich_x-poc-c1-a1")
    assert job.display_name == "enrich_x-poc-c1-a1" and job.name.startswith("batches/")
    job = ended(c, job.name)
    assert job.state.value == "JOB_STATE_SUCCEEDED" and job.dest.file_name.startswith("files/")
    assert [j.display_name for j in c.batches.list(config={"page_size": 10})] == ["enrich_x-poc-c1-a1"]
    lines = [json.loads(line) for line in c.files.download(file=job.dest.file_name).decode().splitlines()]
    keys = [line["key"] for line in lines]
    assert sorted(keys) == sorted(f"k{i}" for i in range(200)) and keys != sorted(keys, key=lambda k: int(k[1:]))
    assert all("usageMetadata" in line["response"] and line["response"]["modelVersion"] for line in lines)
    raw = json.loads(c._api_client.request("get", job.name, {}, None).body)  # batchStats: only in the raw JSON
    assert raw["metadata"]["batchStats"]["successfulRequestCount"] == "200" and raw["done"] is True
    stats = batch_fake.stats()["batch"]
    assert stats["creates_by_name"] == {"enrich_x-poc-c1-a1": 1} and stats["max_billed_per_key"] == 1
    assert stats["upload_bytes"] == len(data)


def test_line_errors_and_missing_lines_are_per_key(batch_fake: FakeGemini) -> None:
    batch_fake.configure(batch_line_error_matching=["question 3 "], batch_missing_matching=["question 5 "])
    c = client(batch_fake)
    job = ended(c, submit(c, jsonl(8)).name)
    lines = {json.loads(line)["key"]: json.loads(line) for line in
             c.files.download(file=job.dest.file_name).decode().splitlines()}
    assert "k5" not in lines and lines["k3"]["status"]["code"] == 13 and "response" in lines["k0"]
    assert batch_fake.stats()["batch"]["billed_by_key"].get("k3") is None


def test_dropped_create_made_the_job_and_list_finds_it_after_its_lag(batch_fake: FakeGemini) -> None:
    batch_fake.configure(batch_drop_create=1, batch_list_lag=3600)
    c = client(batch_fake)
    with pytest.raises(Exception):  # noqa: B017 - the SDK's transport error, whatever httpx calls it
        submit(c, jsonl(3), "lost-answer")
    assert batch_fake.stats()["batch"]["creates_by_name"] == {"lost-answer": 1}
    assert list(c.batches.list(config={"page_size": 10})) == []  # not listed yet: the lag
    batch_fake.configure(batch_list_lag=0.2)  # the lag, as the list reads it now: past in 0.2 s of the create
    wait_for(lambda: [j.display_name for j in c.batches.list(config={"page_size": 10})] == ["lost-answer"])


def test_create_429_help_only_then_expired_failed_and_cancelled_jobs(batch_fake: FakeGemini) -> None:
    from google.genai import errors

    batch_fake.configure(batch_create_429=1, batch_expire=1, batch_fail=1, batch_seconds=30)
    c = client(batch_fake)
    with pytest.raises(errors.ClientError) as refused:
        submit(c, jsonl(2))
    assert refused.value.code == 429 and "Help" in json.dumps(refused.value.details)
    batch_fake.configure(batch_seconds=0.1)
    failed = ended(c, submit(c, jsonl(2), "f").name)
    assert failed.state.value == "JOB_STATE_FAILED" and failed.dest is None
    assert "not supported" in json.loads(c._api_client.request("get", failed.name, {}, None).body)["error"]["message"]
    assert ended(c, submit(c, jsonl(2), "e").name).state.value == "JOB_STATE_EXPIRED"
    batch_fake.configure(batch_seconds=30)
    running = submit(c, jsonl(4), "c")
    c.batches.cancel(name=running.name)
    assert c.batches.get(name=running.name).state.value == "JOB_STATE_CANCELLED"
    c.batches.delete(name=running.name)
    assert [j.display_name for j in c.batches.list(config={"page_size": 10})] == ["e", "f"]


def test_the_command_line_sets_the_batch_faults() -> None:
    from gemini_standin.cli import parse_args

    cfg = parse_args(["--batch-seconds", "3", "--batch-expire", "2", "--batch-drop-create", "1", "--batch-list-lag",
                      "5", "--batch-line-error-matching", "ACME", "--batch-missing-matching", "Foo",
                      "--no-batch-shuffle", "--batch-create-429", "1", "--batch-fail", "1"])
    assert (cfg.batch_seconds, cfg.batch_expire, cfg.batch_drop_create, cfg.batch_list_lag) == (3.0, 2, 1, 5.0)
    assert cfg.batch_line_error_matching == ["ACME"] and cfg.batch_missing_matching == ["Foo"]
    assert not cfg.batch_shuffle and cfg.batch_create_429 == 1 and cfg.batch_fail == 1
