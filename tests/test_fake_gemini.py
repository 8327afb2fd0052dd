"""The Gemini stand-in, driven through the real google-genai SDK as enrichkit drives it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fake_gemini.py"
MODEL = "gemini-2.5-flash"
SCHEMA = {
    "type": "object",
    "properties": {
        "poc_name": {"type": "string"},
        "poc_email": {"type": ["string", "null"]},
        "website": {"type": "STRING"},
        "confidence": {"type": "number"},
        "fund_size_musd": {"type": "number"},
        "vintage_year": {"type": "integer"},
        "active": {"type": "boolean"},
    },
    "required": ["poc_name", "poc_email", "confidence"],
}
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "poc_name": str, "poc_email": str, "website": str, "confidence": float,
    "fund_size_musd": (int, float), "vintage_year": int, "active": bool,
}


def load_fake_gemini() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_gemini", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_gemini"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


fake_gemini = load_fake_gemini()


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start a stand-in with the given config changes; every one started is stopped afterwards."""
    started: list[Any] = []

    def start(**config: Any) -> Any:
        fake = fake_gemini.FakeGemini(fake_gemini.FakeConfig(**config))
        fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def client_for() -> Iterator[Any]:
    """A google-genai client aimed at a stand-in, with the SDK's own retries off (enrichkit retries)."""
    from google import genai
    from google.genai import types

    clients: list[Any] = []

    def make(fake: Any, key: str = "test-key", timeout_ms: int = 5000) -> Any:
        options = types.HttpOptions(base_url=fake.url, api_version="v1beta", timeout=timeout_ms,
                                    retry_options=types.HttpRetryOptions(attempts=1))
        client = genai.Client(api_key=key, http_options=options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def ask(client: Any, prompt: str, schema: dict[str, Any] | None = SCHEMA, search: bool = False) -> Any:
    from google.genai import types

    config = types.GenerateContentConfig(temperature=0.2)
    if schema is not None:
        config.response_mime_type, config.response_json_schema = "application/json", schema
    if search:
        config.tools = [types.Tool(google_search=types.GoogleSearch())]
    return client.models.generate_content(model=MODEL, contents=prompt, config=config)


def call(fake: Any, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(fake.url + path, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def detail(exc: Any, kind: str) -> dict[str, Any]:
    """One entry of a google.rpc error's details, found by @type (their order is not fixed)."""
    return next(d for d in exc.details["error"]["details"] if d["@type"].endswith("." + kind))


def test_answer_is_valid_json_for_the_requested_schema(serve: Any, client_for: Any) -> None:
    fake = serve()
    response = ask(client_for(fake), 'Who is the point of contact of "Northbridge Growth III"?')
    answer = json.loads(response.text)
    assert set(answer) == set(JSON_TYPES)
    for field, kind in JSON_TYPES.items():
        assert isinstance(answer[field], kind), field
    assert 0 <= answer["confidence"] <= 1
    assert "@" in answer["poc_email"] and "." in answer["website"]
    usage = response.usage_metadata
    assert usage.prompt_token_count > 0 and usage.candidates_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count


def test_schema_embedded_in_the_prompt_with_search_grounding(serve: Any, client_for: Any) -> None:
    fake = serve()
    prompt = ('Find the point of contact for "Cedar Field Fund II".\nReturn only a JSON object with '
              'these keys and types: {"poc_name": "string", "confidence": "number"}')
    response = ask(client_for(fake), prompt, schema=None, search=True)
    answer = json.loads(response.text)
    assert set(answer) == {"poc_name", "confidence"}
    assert isinstance(answer["poc_name"], str) and isinstance(answer["confidence"], float)
    assert fake.stats()["grounded"] == 1


def test_no_schema_anywhere_gives_a_single_answer_field(serve: Any, client_for: Any) -> None:
    fake = serve()
    assert set(json.loads(ask(client_for(fake), "Say something.", schema=None).text)) == {"answer"}


def test_same_prompt_same_answer_and_seed_changes_it(serve: Any, client_for: Any) -> None:
    client = client_for(serve(seed=1))
    first, second = ask(client, "Fund Alpha"), ask(client, "Fund Alpha")
    assert first.text == second.text
    assert ask(client, "Fund Beta").text != first.text
    assert ask(client_for(serve(seed=2)), "Fund Alpha").text != first.text


def test_snake_case_request_and_key_in_the_query(serve: Any) -> None:
    fake = serve(require_key="k1")
    body = {"contents": [{"role": "user", "parts": [{"text": "Fund Gamma"}]}],
            "generation_config": {"response_mime_type": "application/json",
                                  "response_schema": {"type": "OBJECT", "properties": {
                                      "poc_email": {"type": "STRING"}, "founded_year": {"type": "INTEGER"}}}}}
    path = f"/v1/models/{MODEL}:generateContent?key=k1"
    status, reply = call(fake, path, json.dumps(body).encode())
    assert status == 200
    answer = json.loads(reply["candidates"][0]["content"]["parts"][0]["text"])
    assert "@" in answer["poc_email"] and 1990 <= answer["founded_year"] <= 2025
    assert reply["usageMetadata"]["promptTokenCount"] == 3  # ceil(len("Fund Gamma") / 4)


def test_sdk_response_schema_object(serve: Any, client_for: Any) -> None:
    from google.genai import types

    schema = types.Schema(type=types.Type.OBJECT, properties={
        "fund_status": types.Schema(type=types.Type.STRING), "active": types.Schema(type=types.Type.BOOLEAN)})
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=schema)
    response = client_for(serve()).models.generate_content(model=MODEL, contents="Fund Delta", config=config)
    answer = json.loads(response.text)
    assert isinstance(answer["fund_status"], str) and isinstance(answer["active"], bool)


def test_concurrent_clients_over_keep_alive(serve: Any, client_for: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fake = serve()
    client = client_for(fake)
    with ThreadPoolExecutor(max_workers=20) as pool:
        texts = list(pool.map(lambda i: ask(client, f"fund {i % 30}").text, range(90)))
    assert all(json.loads(text) for text in texts)
    assert texts[:30] == texts[30:60] == texts[60:]
    stats = fake.stats()
    assert stats["generate"] == 90 and stats["in_flight"] == 0 and len(stats["by_prompt"]) == 30


def test_count_tokens(serve: Any, client_for: Any) -> None:
    fake = serve()
    result = client_for(fake).models.count_tokens(model=MODEL, contents="x" * 41)
    assert result.total_tokens == 11
    assert fake.stats()["count_tokens"] == 1


def test_rpm_limit_answers_429_with_retry_info(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    fake = serve(rpm=2)
    client = client_for(fake)
    ask(client, "one")
    ask(client, "two")
    with pytest.raises(errors.ClientError) as caught:
        ask(client, "three")
    exc = caught.value
    assert exc.code == 429 and exc.status == "RESOURCE_EXHAUSTED"
    delay = detail(exc, "RetryInfo")["retryDelay"]
    assert delay.endswith("s") and 1 <= int(delay[:-1]) <= 60
    violation = detail(exc, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
    assert "Please retry in" in exc.message
    assert fake.stats()["faults"] == {"rpm": 1}


def test_daily_quota_then_lifted_through_control(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    fake = serve(daily_quota=1)
    client = client_for(fake)
    ask(client, "one")
    with pytest.raises(errors.ClientError) as caught:
        ask(client, "two")
    assert caught.value.code == 429
    violation = detail(caught.value, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert call(fake, "/_control", json.dumps({"daily_quota": None}).encode())[0] == 200
    assert json.loads(ask(client, "two").text)


def test_fail_matching_is_a_permanent_400_until_healed(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    fake = serve(fail_matching=["POISON"])
    client = client_for(fake)
    with pytest.raises(errors.ClientError) as caught:
        ask(client, "a POISON record")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    ask(client, "a healthy record")
    status, config = call(fake, "/_control", json.dumps({"fail_matching": []}).encode())
    assert status == 200 and config["fail_matching"] == []
    ask(client, "a POISON record")


def test_wrong_api_key_is_400_api_key_invalid(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    fake = serve(require_key="right-key")
    with pytest.raises(errors.ClientError) as caught:
        ask(client_for(fake, key="wrong-key"), "hello")
    assert caught.value.code == 400
    assert detail(caught.value, "ErrorInfo")["reason"] == "API_KEY_INVALID"
    assert caught.value.message == "API key not valid. Please pass a valid API key."
    ask(client_for(fake, key="right-key"), "hello")


def test_denied_key_is_403(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    with pytest.raises(errors.ClientError) as caught:
        ask(client_for(serve(deny_key="blocked"), key="blocked"), "hello")
    assert caught.value.code == 403 and caught.value.status == "PERMISSION_DENIED"


def test_malformed_rate_gives_truncated_json(serve: Any, client_for: Any) -> None:
    fake = serve(malformed_rate=1.0)
    response = ask(client_for(fake), "hello")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert response.parsed is None  # the SDK does not raise: the caller has to validate


def test_error_rate_gives_server_errors_until_healed(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    fake = serve(error_rate=1.0)
    client = client_for(fake)
    for _ in range(4):
        with pytest.raises(errors.ServerError) as caught:
            ask(client, "hello")
        assert caught.value.code in (500, 503)
    call(fake, "/_control", json.dumps({"error_rate": 0}).encode())
    ask(client, "hello")


def test_random_rate_limits_carry_a_one_second_retry_delay(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    with pytest.raises(errors.ClientError) as caught:
        ask(client_for(serve(rate_limit_rate=1.0)), "hello")
    assert caught.value.code == 429
    assert detail(caught.value, "RetryInfo")["retryDelay"] == "1s"


def test_outage_after_n_requests_then_healed(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    fake = serve(outage=600, outage_after=1)
    client = client_for(fake)
    ask(client, "first")
    with pytest.raises(errors.ServerError) as caught:
        ask(client, "second")
    assert caught.value.code == 503 and caught.value.status == "UNAVAILABLE"
    call(fake, "/_control", json.dumps({"outage": 0}).encode())
    ask(client, "third")


def test_hanging_request_makes_the_client_time_out(serve: Any, client_for: Any) -> None:
    import httpx2

    fake = serve(timeout_rate=1.0, hang_seconds=3)
    with pytest.raises(httpx2.TimeoutException):
        ask(client_for(fake, timeout_ms=500), "hello")
    assert fake.stats()["faults"] == {"timeout": 1}


def test_stats_count_requests_without_revealing_keys(serve: Any, client_for: Any) -> None:
    fake = serve()
    client = client_for(fake, key="secret-key-123")
    ask(client, "same")
    ask(client, "same")
    ask(client, "other")
    status, stats = call(fake, "/_stats")
    assert status == 200
    assert stats["generate"] == 3 and stats["by_status"]["200"] == 3
    assert sorted(stats["by_prompt"].values()) == [1, 2]
    assert stats["keys_seen"] == 3
    assert "secret-key-123" not in json.dumps(stats)


def test_bad_requests_get_google_style_errors(serve: Any) -> None:
    fake = serve()
    status, body = call(fake, f"/v1beta/models/{MODEL}:generateContent", b"{not json")
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    status, body = call(fake, "/v1beta/nowhere", b"{}")
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    status, body = call(fake, "/_control", json.dumps({"no_such_knob": 1}).encode())
    assert status == 400
    assert call(fake, "/_health") == (200, {"ok": True})


def test_control_answers_the_new_config_with_keys_masked(serve: Any) -> None:
    fake = serve(require_key="hidden")
    status, config = call(fake, "/_control", json.dumps({"latency": 0.0, "rpm": 100}).encode())
    assert status == 200 and config["rpm"] == 100 and config["require_key"] == "***"


def test_runs_as_a_script_and_writes_its_port_file(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--port", "0", "--port-file", str(port_file)],
                               stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        port = int(port_file.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_health", timeout=5) as response:
            assert json.loads(response.read()) == {"ok": True}
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert out == f"fake_gemini listening on http://127.0.0.1:{port}\n"
