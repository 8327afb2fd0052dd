"""The Gemini stand-in's own behaviour: answers, quota windows, faults, catalogue, control and stats.

What each answer shape looks like through the SDK is in test_gemini_wire.py.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fake_gemini

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


@pytest.fixture
def client_for() -> Iterator[Any]:
    """A google-genai client aimed at a stand-in, built as enrichkit builds its own (`http_options`: v1beta, the
    SDK's own retries off, the process's one TLS context)."""
    from google import genai

    from enrichkit.providers.gemini import http_options

    clients: list[Any] = []

    def make(fake: Any, key: str = "test-key", timeout_ms: int = 5000) -> Any:
        client = genai.Client(api_key=key, vertexai=False, http_options=http_options(fake.url, timeout_ms / 1000))
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
    assert usage.prompt_token_count > 0 and usage.candidates_token_count > 0 and usage.thoughts_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + \
        usage.thoughts_token_count


def test_schema_embedded_in_the_prompt_with_search_grounding(serve: Any, client_for: Any) -> None:
    fake = serve()
    prompt = ('Find the point of contact for "Cedar Field Fund II".\nReturn only a JSON object with '
              'these keys and types: {"poc_name": "string", "confidence": "number"}')
    response = ask(client_for(fake), prompt, schema=None, search=True)
    text = response.text
    answer = json.loads(text[text.index("{"): text.rindex("}") + 1])  # 2.x may wrap it in prose or a fence
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
        texts = list(pool.map(lambda i: ask(client, f"fund {i % 20}").text, range(60)))
    assert all(json.loads(text) for text in texts)
    assert texts[:20] == texts[20:40] == texts[40:]
    stats = fake.stats()
    assert stats["generate"] == 60 and stats["in_flight"] == 0 and len(stats["by_prompt"]) == 20


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
        ask(client_for(fake, timeout_ms=150), "hello")
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


def call_raw(fake: Any, path: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    """One request that follows no redirect: (status, body text, headers)."""
    connection = http.client.HTTPConnection(fake.config.host, int(fake.url.rsplit(":", 1)[1]), timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        connection.close()


def post(fake: Any, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return call(fake, path, json.dumps(payload).encode())


def generate_raw(fake: Any, prompt: str = "Fund Alpha", model: str = MODEL, **extra: Any) -> tuple[int, dict[str, Any]]:
    return post(fake, f"/v1beta/models/{model}:generateContent",
                {"contents": [{"role": "user", "parts": [{"text": prompt}]}], **extra})


def test_a_scaled_clock_runs_the_quota_window_and_the_latency_faster() -> None:
    clock = fake_gemini.ScaledClock(600)  # a minute in 0.1 s
    config = fake_gemini.FakeConfig(catalogue="2026-05", rpm=1, latency=30.0)
    with fake_gemini.FakeGemini(config, clock=clock) as fake:
        started = time.monotonic()
        assert generate_raw(fake, "first")[0] == 200
        assert 0.05 <= time.monotonic() - started < 2  # 30 s of latency on its clock
        status, body = generate_raw(fake, "second")
        assert status == 429  # within the minute (of its clock)
        retry = next(d for d in body["error"]["details"] if d["@type"].endswith(".RetryInfo"))
        delay = float(retry["retryDelay"].removesuffix("s"))
        assert 1 <= delay <= 60 and delay == int(delay)  # whole seconds, as Google's 60 s windows say
        clock.sleep(delay)  # the minute is over on its clock, and in the quota
        assert generate_raw(fake, "third")[0] == 200


def test_sliding_window_frees_a_slot_when_the_oldest_request_is_a_window_old() -> None:
    window = fake_gemini.QuotaWindow()
    for t in (0.0, 1.0):
        assert window.wait(t, 1, 2, 10.0, "sliding", 0.0) is None
        window.record(t, 1, "sliding")
    assert window.wait(2.0, 1, 2, 10.0, "sliding", 0.0) == pytest.approx(8.0)
    assert window.wait(10.0, 1, 2, 10.0, "sliding", 0.0) is None  # the request at 0 has left


def test_fixed_window_resets_at_the_boundary_and_allows_a_double_burst() -> None:
    window, admitted = fake_gemini.QuotaWindow(), []
    for t in (8.0, 9.0, 9.5, 10.0, 10.1, 10.2):
        wait = window.wait(t, 1, 2, 10.0, "fixed", 0.0)
        if wait is None:
            window.record(t, 1, "fixed")
            admitted.append(t)
        elif t == 9.5:
            assert wait == pytest.approx(0.5)  # until the next multiple of the window
    assert admitted == [8.0, 9.0, 10.0, 10.1]  # four in 2.1 s: what a fixed window lets through


def test_token_window_counts_amounts() -> None:
    window = fake_gemini.QuotaWindow()
    window.record(0.0, 70, "sliding")
    window.record(5.0, 20, "sliding")
    assert window.wait(6.0, 20, 100, 60.0, "sliding", 0.0) == pytest.approx(54.0)  # once the 70 leave
    assert window.wait(6.0, 500, 100, 60.0, "sliding", 0.0) == 60.0  # never fits: a window later


@pytest.mark.parametrize("mode", ["sliding", "fixed"])
def test_rpm_quota_in_both_window_modes(serve: Any, mode: str) -> None:
    fake = serve(rpm=2, window=60, window_mode=mode, rpm_delay="precise")
    assert [generate_raw(fake)[0] for _ in range(3)] == [200, 200, 429]
    before = time.monotonic()
    retry = generate_raw(fake)[1]["error"]["details"][-1]["retryDelay"]
    after = time.monotonic()
    assert 0 < float(retry[:-1]) <= 60 and "." in retry
    if mode == "fixed":  # until the window that began at `origin` (this process's monotonic clock) ends
        assert fake.origin + 60 - after - 0.001 <= float(retry[:-1]) <= fake.origin + 60 - before + 0.001
    assert fake.stats()["faults"] == {"rpm": 2} and fake.stats()["by_status"] == {"200": 2, "429": 2}


def test_google_like_delays_scale_with_the_window(serve: Any) -> None:
    fake = serve(rpm=1, window=30, rpm_delay="google", seed=3)
    generate_raw(fake)
    delays = [generate_raw(fake)[1]["error"]["details"][-1]["retryDelay"] for _ in range(6)]
    assert all(10 <= float(d[:-1]) <= 30 and "." in d for d in delays) and len(set(delays)) > 1  # ms: a scaled window


def test_rejected_requests_do_not_use_up_the_quota(serve: Any) -> None:
    fake = serve(rpm=5, tpm=10)
    assert generate_raw(fake, "x" * 80)[0] == 429  # 20 tokens: over the token quota
    assert [generate_raw(fake, "short")[0] for _ in range(5)] == [200] * 5  # every request slot still free


def test_faults_by_rate_and_by_matching_text_through_control(serve: Any) -> None:
    fake = serve()
    status, config = post(fake, "/_control", {"faults": {"overloaded_503": 1.0}, "fault_matching": {"blocked": "ACME"}})
    assert status == 200 and config["fault_matching"] == {"blocked": ["ACME"]}
    assert generate_raw(fake, "about ACME")[1]["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"}
    assert generate_raw(fake, "about Fund")[0] == 503
    post(fake, "/_control", {"faults": {}, "fault_matching": {}})
    assert generate_raw(fake, "about ACME")[0] == 200
    assert fake.stats()["faults"] == {"blocked": 1, "overloaded_503": 1}


def test_echo_key_401_quotes_the_received_key_back_in_clear(serve: Any, client_for: Any) -> None:
    from google.genai import errors

    fake = serve(fault_matching={"echo_key_401": ["via gateway"]})
    client = client_for(fake, key="sk-live-ECHOED-0123")
    with pytest.raises(errors.ClientError) as caught:
        ask(client, "Fund Alpha via gateway")
    assert (caught.value.code, caught.value.status) == (401, "UNAUTHENTICATED")
    assert "'sk-live-ECHOED-0123'" in str(caught.value.message)  # what a redaction step has to catch
    request = json.dumps({"contents": [{"parts": [{"text": "via gateway"}]}]}).encode()
    status, body = call(fake, f"/v1beta/models/{MODEL}:generateContent?key=key-in-the-query", request)
    assert status == 401 and body["error"]["message"] == "API key 'key-in-the-query' is invalid for this gateway."
    assert json.loads(ask(client, "Fund Alpha").text)  # only matching prompts meet the gateway
    stats = fake.stats()
    assert stats["faults"] == {"echo_key_401": 2} and stats["by_status"]["401"] == 2
    assert "sk-live-ECHOED-0123" not in json.dumps(stats)


def test_bad_control_values_are_refused_and_change_nothing(serve: Any) -> None:
    fake = serve()
    assert post(fake, "/_control", {"faults": {"no_such_fault": 1}})[0] == 400
    assert post(fake, "/_control", {"window_mode": "rolling", "rpm": 1})[0] == 400
    assert post(fake, "/_control", {"window": 0})[0] == 400
    assert fake.config.rpm is None and fake.config.window_mode == "sliding"


def test_random_fault_rates_keep_their_share(serve: Any) -> None:
    fake = serve(faults={"safety": 0.25, "bare_429": 0.25}, seed=5)
    statuses = [generate_raw(fake, f"fund {i}")[0] for i in range(200)]
    faults = fake.stats()["faults"]
    assert 30 < faults["safety"] < 70 and 30 < faults["bare_429"] < 70
    assert statuses.count(429) == faults["bare_429"]


def test_catalogue_pages_and_model_lookups(serve: Any) -> None:
    fake = serve()
    status, page = call(fake, "/v1beta/models?pageSize=4")
    assert status == 200 and len(page["models"]) == 4 and page["nextPageToken"]
    names = [m["name"] for m in page["models"]]
    while "nextPageToken" in page:
        page = call(fake, f"/v1beta/models?pageSize=4&pageToken={page['nextPageToken']}")[1]
        names += [m["name"] for m in page["models"]]
    assert names == [f"models/{name}" for name in fake_gemini.CATALOGUE]
    status, model = call(fake, "/v1/models/gemini-pro-latest")
    assert status == 200 and model["supportedGenerationMethods"][0] == "generateContent"
    assert call(fake, "/v1beta/models/gemini-2.0-flash")[0] == 404


def test_unknown_and_retired_models_are_counted_and_extra_models_accepted(serve: Any) -> None:
    fake = serve(extra_models=["my-test-model"])
    assert generate_raw(fake, model="gemini-2.0-flash")[0] == 404
    assert generate_raw(fake, model="no-such-model")[0] == 404
    assert post(fake, "/v1beta/models/no-such-model:countTokens", {"contents": []})[0] == 404
    status, answer = generate_raw(fake, model="my-test-model")
    assert status == 200 and answer["modelVersion"] == "my-test-model"
    assert fake.stats()["faults"] == {"retired_model": 1, "unknown_model": 1}


def test_redirect_endpoint(serve: Any) -> None:
    fake = serve()
    target = "https://www.example.com/team"
    status, _, headers = call_raw(fake, urllib.parse.urlsplit(fake.redirect_url(target)).path, "HEAD")
    assert status == 302 and headers["Location"] == target
    assert call_raw(fake, "/grounding-api-redirect/AUZIYQnotbase64")[0] == 404


def test_grounded_wrap_is_fixed_per_prompt_in_mixed_mode(serve: Any) -> None:
    fake = serve()
    search = {"tools": [{"googleSearch": {}}]}
    texts = [generate_raw(fake, f"Fund {i}", **search)[1]["candidates"][0]["content"]["parts"][0]["text"]
             for i in range(12)]
    assert {t[0] for t in texts} == {"{", "B", "`"}  # bare, prose and fenced all occur
    assert texts[0] == generate_raw(fake, "Fund 0", **search)[1]["candidates"][0]["content"]["parts"][0]["text"]
    assert fake.stats()["grounded"] == 13 and fake.stats()["search_queries"] >= 13


def test_deadline_from_the_server_timeout_header(serve: Any) -> None:
    fake = serve(latency=0.15)
    body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
    slow = urllib.request.Request(f"{fake.url}/v1beta/models/{MODEL}:generateContent", data=body,
                                  headers={"X-Server-Timeout": "0.05"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(slow, timeout=5)
    with caught.value as answer:
        assert answer.code == 504
    fake.configure(honor_server_timeout=False)
    with urllib.request.urlopen(slow, timeout=5) as answer:
        assert answer.status == 200


def test_cli_flags_build_the_config() -> None:
    config = fake_gemini.parse_args(["--fault", "safety=0.05", "--fault-matching", "blocked=ACME",
                                     "--fault-matching", "blocked=Globex", "--reroute", "a=b", "--model", "m1",
                                     "--window-mode", "fixed", "--rpm-delay", "google", "--tpm", "1000",
                                     "--no-thinking", "--grounded-wrap", "fence"])
    assert config.faults == {"safety": 0.05} and config.fault_matching == {"blocked": ["ACME", "Globex"]}
    assert config.reroute == {"a": "b"} and config.extra_models == ["m1"] and config.tpm == 1000
    assert (config.window_mode, config.rpm_delay, config.thinking, config.grounded_wrap) == \
        ("fixed", "google", False, "fence")
    with pytest.raises(SystemExit):
        fake_gemini.parse_args(["--fault", "nonsense=1"])


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
