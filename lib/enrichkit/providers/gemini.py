"""LLM stages through Google Gemini with the maintained `google-genai` SDK (imported only when needed)."""

from __future__ import annotations

import json
from typing import Any

from enrichkit.providers.answers import Answer, check_fields, parse_json_object
from enrichkit.retry import StageFailure
from enrichkit.stages import Stage

API_VERSION = "v1beta"
_JSON_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}


def json_schema(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": _JSON_TYPES[kind]} for name, kind in fields.items()},
        "required": list(fields),
    }


def full_prompt(stage: Stage, rendered: str) -> str:
    """With Search grounding, Gemini 2.x cannot also enforce a response schema, so the schema goes in the prompt."""
    if stage.search:
        return f"{rendered}\n\nReturn only a JSON object with these keys and types: {json.dumps(stage.fields)}"
    return rendered


class GeminiProvider:
    """One shared `genai.Client` for all workers; the SDK's own retry is off (enrichkit's does the work)."""

    def __init__(self, *, api_key: str, base_url: str | None, timeout: float) -> None:
        from google import genai
        from google.genai import types

        self._types = types
        options = types.HttpOptions(
            base_url=base_url or None,
            api_version=API_VERSION,
            timeout=int(timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(api_key=api_key, http_options=options)

    def generate(self, stage: Stage, prompt: str, *, model: str, temperature: float | None) -> Answer:
        types = self._types
        config: dict[str, Any] = {}
        if temperature is not None:
            config["temperature"] = temperature
        if stage.search:
            config["tools"] = [types.Tool(google_search=types.GoogleSearch())]
        else:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = json_schema(stage.fields)
        response = self._client.models.generate_content(
            model=model, contents=prompt, config=types.GenerateContentConfig(**config))
        usage = response.usage_metadata
        prompt_tokens = int(getattr(usage, "prompt_token_count", 0) or 0) + \
            int(getattr(usage, "tool_use_prompt_token_count", 0) or 0)
        # Thinking tokens are billed as output.
        output_tokens = int(getattr(usage, "candidates_token_count", 0) or 0) + \
            int(getattr(usage, "thoughts_token_count", 0) or 0)
        text = _answer_text(response)
        try:
            fields = check_fields(parse_json_object(text), stage.fields)
        except StageFailure as failure:
            failure.tokens = (prompt_tokens, output_tokens)
            raise
        return Answer(fields, prompt_tokens, output_tokens, model)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing at exit must never mask the run's outcome
            pass


def _answer_text(response: Any) -> str | None:
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        feedback = getattr(response, "prompt_feedback", None)
        reason = getattr(feedback, "block_reason", None)
        raise StageFailure("validation_error", f"no answer (prompt blocked: {reason})" if reason else "no answer")
    parts = getattr(getattr(candidates[0], "content", None), "parts", None) or []
    text = "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))
    if not text:
        reason = getattr(candidates[0], "finish_reason", None)
        raise StageFailure("validation_error", f"empty answer (finish reason {reason})")
    return text
