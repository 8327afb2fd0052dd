"""LLM stages through Google Gemini with the maintained `google-genai` SDK (imported only when needed)."""

from __future__ import annotations

import json
from typing import Any

from enrichkit.errors import StageFailure
from enrichkit.pricing import Pricing
from enrichkit.providers.answers import check_fields, parse_json_object
from enrichkit.providers.base import Answer, Request, Usage
from enrichkit.stages import Stage, StagesConfig

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

    kind = "gemini"
    remote = True

    def __init__(self, *, api_key: str, base_url: str | None, timeout: float, stages: StagesConfig,
                 pricing: Pricing, model: str | None = None) -> None:
        from google import genai
        from google.genai import types

        self._types = types
        self._stages = stages
        self._pricing = pricing
        self._model = model  # --model: the default model for stages that name none
        options = types.HttpOptions(
            base_url=base_url or None,
            api_version=API_VERSION,
            timeout=int(timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        # vertexai=False: GOOGLE_GENAI_USE_VERTEXAI=true in the environment would otherwise turn this
        # client into a Vertex AI one, where every call answers 404.
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=options)

    def model_for(self, stage: Stage) -> str:
        return stage.model or self._model or self._stages.model

    def prepare(self, stage: Stage, values: dict[str, str]) -> Request:
        assert stage.prompt is not None
        model = self.model_for(stage)
        temperature = stage.temperature if stage.temperature is not None else self._stages.defaults.get("temperature")
        prompt = full_prompt(stage, stage.prompt.render(values))
        material = {"kind": "llm", "model": model, "temperature": temperature, "prompt": prompt,
                    "fields": stage.fields, "search": stage.search}
        return Request(stage, {"model": model, "temperature": temperature, "prompt": prompt}, material,
                       pace=model, input_tokens=len(prompt) // 4 + 1)

    def call(self, request: Request) -> Answer:
        types = self._types
        stage, p = request.stage, request.payload
        config: dict[str, Any] = {}
        if p["temperature"] is not None:
            config["temperature"] = p["temperature"]
        if stage.search:
            config["tools"] = [types.Tool(google_search=types.GoogleSearch())]
        else:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = json_schema(stage.fields)
        response = self._client.models.generate_content(
            model=p["model"], contents=p["prompt"], config=types.GenerateContentConfig(**config))
        usage = self._usage(response, p["model"], stage.search)
        try:
            fields = check_fields(parse_json_object(_answer_text(response)), stage.fields)
        except StageFailure as failure:
            failure.usage = usage  # a malformed answer is billed all the same
            raise
        return Answer(fields, usage)

    def _usage(self, response: Any, asked: str, search: bool) -> Usage:
        meta = response.usage_metadata
        served = str(getattr(response, "model_version", None) or asked)
        prompt = int(getattr(meta, "prompt_token_count", 0) or 0) + \
            int(getattr(meta, "tool_use_prompt_token_count", 0) or 0)
        thinking = int(getattr(meta, "thoughts_token_count", 0) or 0)
        output = int(getattr(meta, "candidates_token_count", 0) or 0) + thinking  # thinking is billed as output
        charge = self._pricing.charge(served, prompt_tokens=prompt, output_tokens=output, grounded=search)
        return Usage(model=served, prompt_tokens=prompt, output_tokens=output, thinking_tokens=thinking,
                     grounded=search, token_cost_usd=charge.tokens, grounding_cost_usd=charge.grounding)

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
