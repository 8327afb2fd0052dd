"""Every answer shape of the Gemini API, as the real google-genai SDK surfaces it (served by the stand-in).

These tests document what the provider code can rely on: which exception (class, code, status, details)
or which response fields (prompt_feedback, finish_reason, usage_metadata, grounding_metadata,
model_version) each shape of the live API turns into. The bodies follow /tmp/notes/gemini_findings.md.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from enrichkit.providers.genai_client import http_options, tls_context
from fake_gemini import FakeGemini

FLASH = "gemini-2.5-flash"
SCHEMA = {"type": "object", "properties": {"poc_name": {"type": "string"},
                                           "poc_email": {"type": ["string", "null"], "description": "work email"},
                                           "status": {"type": "string", "enum": ["active", "closed"]}},
          "required": ["poc_name", "poc_email", "status"]}
SEARCH = [types.Tool(google_search=types.GoogleSearch())]


@pytest.fixture
def client_for() -> Iterator[Callable[..., genai.Client]]:
    """Clients built as enrichkit builds them (`http_options`): Gemini API (not Vertex), SDK retries off, the
    process's one TLS context."""
    clients: list[genai.Client] = []

    def make(fake: FakeGemini, headers: dict[str, str] | None = None, timeout_ms: int = 5000) -> genai.Client:
        options = http_options(fake.url, timeout_ms / 1000)
        options.headers = headers
        client = genai.Client(api_key="test-key", vertexai=False, http_options=options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def generate(client: genai.Client, prompt: str = "Who runs Fund Alpha?", model: str = FLASH,
             **config: Any) -> types.GenerateContentResponse:
    return client.models.generate_content(model=model, contents=prompt,
                                          config=types.GenerateContentConfig(**config))


def fails(client: genai.Client, **kwargs: Any) -> errors.APIError:
    with pytest.raises(errors.APIError) as caught:
        generate(client, **kwargs)
    return caught.value


def details(exc: errors.APIError) -> dict[str, dict[str, Any]]:
    """google.rpc details by type name; their order in the body is not fixed."""
    return {d["@type"].rsplit(".", 1)[1]: d for d in exc.details["error"].get("details", [])}


def seconds(duration: str) -> float:
    assert duration.endswith("s")
    return float(duration[:-1])


# --- the model catalogue -------------------------------------------------------------------------------


def test_models_get_lists_the_generation_methods(serve: Any, client_for: Any) -> None:
    model = client_for(serve()).models.get(model=FLASH)
    assert model.name == f"models/{FLASH}"
    assert "generateContent" in (model.supported_actions or [])
    assert model.thinking is True and model.output_token_limit == 65_536


def test_models_list_pages_through_the_whole_catalogue(serve: Any, client_for: Any) -> None:
    fake = serve(extra_models=["gemini-9-test"])
    models = list(client_for(fake).models.list(config={"page_size": 3}))
    names = [m.name for m in models]
    assert len(names) == len(set(names)) > 3 and fake.stats()["model_lookups"] > 1  # several pages
    assert {"models/gemini-2.5-pro", "models/gemini-3.5-flash", "models/gemini-9-test"} <= set(names)
    embedding = next(m for m in models if m.name == "models/gemini-embedding-001")
    assert "generateContent" not in (embedding.supported_actions or [])


def test_unknown_model_is_404_not_found_for_get_and_generate(serve: Any, client_for: Any) -> None:
    client = client_for(serve())
    with pytest.raises(errors.ClientError) as caught:
        client.models.get(model="gemini-9-ultra")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    exc = fails(client, model="gemini-1.5-flash")
    assert isinstance(exc, errors.ClientError) and (exc.code, exc.status) == (404, "NOT_FOUND")
    assert exc.message == ("models/gemini-1.5-flash is not found for API version v1beta, or is not supported "
                           "for generateContent. Call ListModels to see the list of available models and their "
                           "supported methods.")
    assert "details" not in exc.details["error"]


def test_retired_model_is_404_no_longer_available(serve: Any, client_for: Any) -> None:
    exc = fails(client_for(serve()), model="gemini-2.0-flash")
    assert exc.code == 404 and exc.status == "NOT_FOUND"
    assert exc.message is not None and exc.message.startswith("This model models/gemini-2.0-flash is no longer")


def test_a_model_that_cannot_generate_is_404(serve: Any, client_for: Any) -> None:
    assert fails(client_for(serve()), model="gemini-embedding-001").code == 404


def test_alias_and_models_prefix_answer_with_the_concrete_model_version(serve: Any, client_for: Any) -> None:
    fake = serve()
    client = client_for(fake)
    assert generate(client, model="gemini-flash-latest").model_version == "gemini-3.5-flash"
    assert generate(client, model=f"models/{FLASH}").model_version == FLASH  # the SDK sends the same URL
    assert fake.stats()["by_model"] == {"gemini-flash-latest": 1, FLASH: 1}


def test_reroute_serves_another_model_version(serve: Any, client_for: Any) -> None:
    fake = serve(reroute={FLASH: "gemini-2.5-flash-lite"})
    assert generate(client_for(fake)).model_version == "gemini-2.5-flash-lite"
    assert fake.stats()["served_by"] == {"gemini-2.5-flash-lite": 1}


# --- usage ---------------------------------------------------------------------------------------------


def test_usage_counts_thoughts_and_the_total_adds_everything_up(serve: Any, client_for: Any) -> None:
    usage = generate(client_for(serve(cached_fraction=0.5)), "x" * 400).usage_metadata
    assert usage is not None and usage.thoughts_token_count and usage.thoughts_token_count > 0
    assert usage.prompt_token_count == 100 and usage.cached_content_token_count == 50
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + \
        usage.thoughts_token_count
    assert usage.tool_use_prompt_token_count is None  # not grounded


def test_thinking_budget_zero_turns_thinking_off_where_the_api_allows_it(serve: Any, client_for: Any) -> None:
    client = client_for(serve())
    off = types.ThinkingConfig(thinking_budget=0)
    assert generate(client, thinking_config=off).usage_metadata.thoughts_token_count is None
    assert generate(client, model="gemini-2.5-flash-lite").usage_metadata.thoughts_token_count is None
    exc = fails(client, model="gemini-2.5-pro", thinking_config=off)
    assert (exc.code, exc.status) == (400, "INVALID_ARGUMENT") and "only works in thinking mode" in str(exc.message)


def test_thinking_level_on_3x_scales_the_thoughts(serve: Any, client_for: Any) -> None:
    client = client_for(serve())

    def thoughts(level: types.ThinkingLevel) -> int:
        usage = generate(client, model="gemini-3-flash-preview",
                         thinking_config=types.ThinkingConfig(thinking_level=level)).usage_metadata
        return usage.thoughts_token_count or 0

    assert thoughts(types.ThinkingLevel.MINIMAL) == 0 < thoughts(types.ThinkingLevel.LOW) < \
        thoughts(types.ThinkingLevel.HIGH)


# --- grounding -----------------------------------------------------------------------------------------


def test_grounded_answer_carries_queries_redirect_chunks_and_supports(serve: Any, client_for: Any) -> None:
    fake = serve(grounded_wrap="json")
    response = generate(client_for(fake), 'Find the point of contact of "Cedar Field Fund II".', tools=SEARCH)
    meta = response.candidates[0].grounding_metadata
    assert meta.web_search_queries and "Cedar Field Fund II" in meta.web_search_queries[0]
    assert meta.search_entry_point.rendered_content.startswith("<style>")
    chunks = meta.grounding_chunks
    assert chunks and all(c.web.uri.startswith(f"{fake.url}/grounding-api-redirect/AUZIYQ") for c in chunks)
    assert all(c.web.title and "." in c.web.title and c.web.domain is None for c in chunks)
    support = meta.grounding_supports[0]
    assert support.segment.text == response.text and support.grounding_chunk_indices
    assert response.usage_metadata.tool_use_prompt_token_count > 0
    assert fake.stats()["search_queries"] == len(meta.web_search_queries)


def test_redirect_resolves_with_one_non_following_request(serve: Any, client_for: Any) -> None:
    fake = serve()
    uri = generate(client_for(fake), "Fund Beta", tools=SEARCH).candidates[0].grounding_metadata \
        .grounding_chunks[0].web.uri

    class NoFollow(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoFollow)
    for method in ("HEAD", "GET"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open(urllib.request.Request(uri, method=method), timeout=5)
        with caught.value as answer:
            assert answer.code == 302 and answer.headers["Location"].startswith("https://")
    assert fake.stats()["redirects"] == 2


@pytest.mark.parametrize("mode", ["prose", "fence"])
def test_grounded_2x_json_comes_wrapped(serve: Any, client_for: Any, mode: str) -> None:
    prompt = 'Point of contact?\nReturn only a JSON object with these keys and types: {"poc_name": "string"}'
    text = generate(client_for(serve(grounded_wrap=mode)), prompt, tools=SEARCH).text or ""
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert set(json.loads(text[text.index("{"): text.rindex("}") + 1])) == {"poc_name"}


def test_search_with_json_mode_on_2x_is_a_400(serve: Any, client_for: Any) -> None:
    exc = fails(client_for(serve()), tools=SEARCH, response_mime_type="application/json", response_json_schema=SCHEMA)
    assert isinstance(exc, errors.ClientError) and (exc.code, exc.status) == (400, "INVALID_ARGUMENT")
    assert exc.message == "Tool use with a response mime type: 'application/json' is unsupported"


def test_search_with_a_json_schema_on_3x_answers_clean_json(serve: Any, client_for: Any) -> None:
    response = generate(client_for(serve()), "Fund Gamma", model="gemini-3-flash-preview", tools=SEARCH,
                        response_mime_type="application/json", response_json_schema=SCHEMA)
    assert set(json.loads(response.text or "")) == {"poc_name", "poc_email", "status"}
    assert response.candidates[0].grounding_metadata.grounding_chunks


def test_nullable_fields_may_be_null_and_enums_are_kept(serve: Any, client_for: Any) -> None:
    answer = json.loads(generate(client_for(serve(null_rate=1.0)), response_mime_type="application/json",
                                 response_json_schema=SCHEMA).text or "")
    assert answer["poc_email"] is None and answer["poc_name"] and answer["status"] in ("active", "closed")


# --- answers that are not JSON -------------------------------------------------------------------------


def test_blocked_prompt_has_feedback_and_no_candidates(serve: Any, client_for: Any) -> None:
    response = generate(client_for(serve(fault_matching={"blocked": ["ACME"]})), "Tell me about ACME")
    assert response.candidates is None and response.text is None
    assert response.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    assert response.usage_metadata.prompt_token_count > 0 and response.usage_metadata.candidates_token_count is None


def test_safety_blocked_prompt_carries_safety_ratings(serve: Any, client_for: Any) -> None:
    response = generate(client_for(serve(faults={"blocked": 1.0}, block_reason="SAFETY")))
    feedback = response.prompt_feedback
    assert feedback.block_reason == types.BlockedReason.SAFETY
    assert any(r.probability == types.HarmProbability.MEDIUM for r in feedback.safety_ratings)


@pytest.mark.parametrize("fault", ["safety", "recitation", "prohibited_content", "blocklist", "spii"])
def test_safety_type_finish_has_no_content(serve: Any, client_for: Any, fault: str) -> None:
    response = generate(client_for(serve(faults={fault: 1.0})))
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason(fault.upper())
    assert candidate.content is None and response.text is None
    assert bool(candidate.safety_ratings) == (fault == "safety")
    assert response.usage_metadata.thoughts_token_count  # the thinking was done, and is billed


def test_loop_until_max_tokens_is_billed_in_full(serve: Any, client_for: Any) -> None:
    client = client_for(serve(faults={"max_tokens_loop": 1.0}))
    capped = generate(client, max_output_tokens=300, response_mime_type="application/json",
                      response_json_schema=SCHEMA)
    assert capped.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    with pytest.raises(json.JSONDecodeError):
        json.loads(capped.text or "")
    usage = capped.usage_metadata
    assert usage.candidates_token_count + (usage.thoughts_token_count or 0) == 300
    uncapped = generate(client, response_mime_type="application/json", response_json_schema=SCHEMA).usage_metadata
    assert uncapped.candidates_token_count + (uncapped.thoughts_token_count or 0) == 65_535


def test_thinking_can_use_the_whole_output_budget(serve: Any, client_for: Any) -> None:
    response = generate(client_for(serve(faults={"max_tokens_thinking": 1.0})), max_output_tokens=1000)
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.text is None and response.usage_metadata.thoughts_token_count == 1000


def test_a_small_output_budget_truncates_the_answer(serve: Any, client_for: Any) -> None:
    response = generate(client_for(serve()), max_output_tokens=60, thinking_config=types.ThinkingConfig(
        thinking_budget=0), response_mime_type="application/json", response_json_schema=SCHEMA | {
        "properties": {f"f{i}": {"type": "string"} for i in range(30)}})
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata.candidates_token_count <= 60


# --- 429s ----------------------------------------------------------------------------------------------


def test_quota_429_names_the_quota_and_says_when_to_retry(serve: Any, client_for: Any) -> None:
    fake = serve(rpm=1)
    client = client_for(fake)
    generate(client)
    exc = fails(client)
    assert isinstance(exc, errors.ClientError) and (exc.code, exc.status) == (429, "RESOURCE_EXHAUSTED")
    found = details(exc)
    violation = found["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel" and violation["quotaValue"] == "1"
    assert violation["quotaDimensions"] == {"location": "global", "model": FLASH}
    assert found["Help"]["links"][0]["url"] == "https://ai.google.dev/gemini-api/docs/rate-limits"
    assert 1 <= seconds(found["RetryInfo"]["retryDelay"]) <= 60 and "Please retry in" in str(exc.message)
    assert fake.stats()["faults"] == {"rpm": 1}


def test_free_tier_token_quota_429(serve: Any, client_for: Any) -> None:
    client = client_for(serve(tpm=10, free_tier=True))
    violation = details(fails(client, prompt="x" * 80))["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateContentInputTokensPerModelPerMinute-FreeTier"


def test_google_like_per_minute_delays_are_a_third_of_a_window_or_more(serve: Any, client_for: Any) -> None:
    client = client_for(serve(faults={"minute_429": 1.0}))
    delays = [seconds(details(fails(client))["RetryInfo"]["retryDelay"]) for _ in range(5)]
    assert all(20 <= d <= 60 for d in delays) and len(set(delays)) > 1


def test_per_day_429_carries_a_short_retry_delay(serve: Any, client_for: Any) -> None:
    found = details(fails(client_for(serve(faults={"day_429": 1.0}))))
    assert found["QuotaFailure"]["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert seconds(found["RetryInfo"]["retryDelay"]) < 60


def test_limit_zero_429_leaves_the_quota_value_out(serve: Any, client_for: Any) -> None:
    exc = fails(client_for(serve(faults={"limit_zero_429": 1.0})))
    found = details(exc)
    violations = found["QuotaFailure"]["violations"]
    assert all(v["quotaId"].endswith("-FreeTier") and "quotaValue" not in v for v in violations)
    assert "limit: 0, model: gemini-2.5-flash" in str(exc.message) and "RetryInfo" in found


@pytest.mark.parametrize(("fault", "text"), [
    ("bare_429", "Resource has been exhausted (e.g. check quota)."),
    ("prepay_429", "Your prepayment credits are depleted."),
    ("spend_cap_429", "Your billing account has exceeded its monthly spending cap."),
])
def test_account_and_bare_429s_have_no_details(serve: Any, client_for: Any, fault: str, text: str) -> None:
    exc = fails(client_for(serve(faults={fault: 1.0})))
    assert (exc.code, exc.status) == (429, "RESOURCE_EXHAUSTED") and str(exc.message).startswith(text)
    assert details(exc) == {}


def test_a_used_up_daily_quota_may_say_only_where_to_read_about_quotas(serve: Any, client_for: Any) -> None:
    exc = fails(client_for(serve(faults={"help_day_429": 1.0})))
    assert (exc.code, exc.status) == (429, "RESOURCE_EXHAUSTED")
    assert str(exc.message).startswith("You exceeded your current quota, please check your plan and billing details.")
    found = details(exc)
    assert list(found) == ["Help"] and found["Help"]["links"][0]["url"] == "https://ai.google.dev/gemini-api/docs/rate-limits"


def test_the_per_day_search_grounding_quota_names_itself(serve: Any, client_for: Any) -> None:
    found = details(fails(client_for(serve(faults={"grounding_day_429": 1.0})), tools=SEARCH))
    violation = found["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "SearchGroundingRequestsPerDayPerProject" and violation["quotaValue"] == "1500"
    assert violation["quotaMetric"] == "generativelanguage.googleapis.com/search_grounding_requests"
    assert set(found) == {"QuotaFailure", "Help", "RetryInfo"}


@pytest.mark.parametrize(("shape", "kinds"), [("retry_info", {"RetryInfo"}), ("bare", set())])
def test_a_quota_s_429s_may_carry_only_retry_info_or_nothing(serve: Any, client_for: Any, shape: str,
                                                               kinds: set[str]) -> None:
    fake = serve(rpm=1, quota_429=shape)
    client = client_for(fake)
    generate(client)
    exc = fails(client)
    assert (exc.code, exc.status) == (429, "RESOURCE_EXHAUSTED")
    assert str(exc.message) == "Resource has been exhausted (e.g. check quota)." and set(details(exc)) == kinds
    assert fake.stats()["faults"] == {"rpm": 1}
    if kinds:
        assert 1 <= seconds(details(exc)["RetryInfo"]["retryDelay"]) <= 60


def test_a_per_minute_fault_may_carry_only_retry_info(serve: Any, client_for: Any) -> None:
    found = details(fails(client_for(serve(faults={"retry_info_429": 1.0}))))
    assert set(found) == {"RetryInfo"} and 20 <= seconds(found["RetryInfo"]["retryDelay"]) <= 60


# --- other errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "code", "status"), [
    ("internal_500", 500, "INTERNAL"), ("overloaded_503", 503, "UNAVAILABLE"),
    ("deadline_504", 504, "DEADLINE_EXCEEDED"), ("location_400", 400, "FAILED_PRECONDITION"),
    ("echo_key_401", 401, "UNAUTHENTICATED"),
])
def test_error_faults(serve: Any, client_for: Any, fault: str, code: int, status: str) -> None:
    exc = fails(client_for(serve(faults={fault: 1.0})))
    assert (exc.code, exc.status) == (code, status)
    assert isinstance(exc, errors.ServerError if code >= 500 else errors.ClientError)


def test_server_timeout_header_shorter_than_the_work_is_a_504(serve: Any, client_for: Any) -> None:
    fake = serve(latency=0.5)
    exc = fails(client_for(fake, headers={"X-Server-Timeout": "0.05"}))
    assert isinstance(exc, errors.ServerError) and (exc.code, exc.status) == (504, "DEADLINE_EXCEEDED")
    assert fake.stats()["faults"] == {"deadline_504": 1}


def test_html_502_from_the_front_end(serve: Any, client_for: Any) -> None:
    exc = fails(client_for(serve(fault_matching={"html_502": ["Fund"]})))
    assert isinstance(exc, errors.ServerError) and exc.code == 502 and exc.status == "Bad Gateway"
    assert "That\u2019s an error." in str(exc.message) and "error" not in exc.details


def test_wrong_api_key_is_400_api_key_invalid(serve: Any, client_for: Any) -> None:
    exc = fails(client_for(serve(require_key="other-key")))
    assert (exc.code, exc.status) == (400, "INVALID_ARGUMENT")
    assert details(exc)["ErrorInfo"]["reason"] == "API_KEY_INVALID"


def test_denied_key_is_403_permission_denied(serve: Any, client_for: Any) -> None:
    exc = fails(client_for(serve(deny_key="test-key")))
    assert isinstance(exc, errors.ClientError) and (exc.code, exc.status) == (403, "PERMISSION_DENIED")


# --- the client itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("retry", [types.HttpRetryOptions(attempts=1), None])
def test_sdk_retries_are_off_with_one_attempt_or_none(serve: Any, retry: Any) -> None:
    fake = serve(faults={"overloaded_503": 1.0})
    options = http_options(fake.url, timeout=5)
    options.retry_options = retry
    client = genai.Client(api_key="k", vertexai=False, http_options=options)
    with pytest.raises(errors.ServerError):
        generate(client)
    client.close()
    assert fake.stats()["generate"] == 1


def test_vertexai_false_overrides_the_environment(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    assert genai.Client(api_key="k").vertexai is True  # what enrichkit must not get
    fake = serve()
    tls = tls_context()
    client = genai.Client(api_key="k", vertexai=False, http_options=types.HttpOptions(
        base_url=fake.url, client_args={"verify": tls}, async_client_args={"verify": tls, "ssl": tls}))
    assert client.vertexai is False and generate(client).text
    client.close()


def test_flex_service_tier_reaches_the_server(serve: Any, client_for: Any) -> None:
    fake = serve()
    assert generate(client_for(fake), service_tier=types.ServiceTier.FLEX).text
    assert fake.stats()["flex"] == 1


def test_clients_share_one_tls_context_that_verifies_as_the_sdks_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    import certifi

    first, second = http_options("https://a.example", 5), http_options("https://b.example", 1)
    assert first.client_args and second.async_client_args
    shared = first.client_args["verify"]
    assert shared is tls_context() is second.async_client_args["verify"] is second.async_client_args["ssl"]
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname  # no weaker than the SDK's default
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # honoured, as the SDK honours it
    own = tls_context()
    assert own is not shared and own is tls_context()
    assert len(own.get_ca_certs()) == len(ssl.create_default_context(cafile=certifi.where()).get_ca_certs()) > 0
