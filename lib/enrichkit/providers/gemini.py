"""LLM stages through Google Gemini with the maintained `google-genai` SDK (imported only when needed).

`prepare` builds the request (model, schema, thinking, tier; `with_model` the same for a stage's
fallback model); `call` sends it once and reads the answer (`gemini_reply`), pricing it by the model
that served it; `check_models` asks `models.get` for each model before record 1 (unbilled).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import functools
import json
import math
import re
import warnings
from collections.abc import Callable
from typing import Any

from enrichkit.config.lifecycle import ModelNotes, retired_message
from enrichkit.config.pricing import Pricing
from enrichkit.config.stages import FieldSpec, Stage, StagesConfig
from enrichkit.errors import ConfigError, StageFailure
from enrichkit.logs import log
from enrichkit.pace.budget import worst_case
from enrichkit.pace.classify import classify_error, unreachable
from enrichkit.pace.deadline import call_with_deadline
from enrichkit.providers.base import Answer, BaseProvider, Request, Usage
from enrichkit.providers.gemini_reply import (
    Grounding,
    Reply,
    Tokens,
    parse_json_object,
    read_grounding,
    read_reply,
    read_tokens,
)
from enrichkit.providers.genai_client import http_options
from enrichkit.providers.sources import SourceResolver
from enrichkit.tables.records import stringify

FLEX_TIMEOUT = 900.0  # seconds: Google queues flex calls for 1-15 minutes and advises a client timeout of 600 s or more
NULL_HINT = "Use null for any value you cannot find; never guess."
_GENERATION = re.compile(r"gemini-(\d+)")


def generation(model: str, aliases: dict[str, str] | None = None) -> int:
    """The model family's major version (2 for gemini-2.5-flash, 3 for gemini-3.5-flash); 0 when unknown."""
    name = model.removeprefix("models/")
    name = (aliases or {}).get(name, name)
    match = _GENERATION.match(name)
    return int(match.group(1)) if match else 0


def json_schema(stage: Stage) -> dict[str, Any]:
    """The response schema of an llm stage: every field present; nullable ("unknown") unless required."""
    properties: dict[str, Any] = {}
    for name, spec in stage.specs.items():
        prop: dict[str, Any] = {"type": spec.type if spec.required else [spec.type, "null"]}
        if spec.description:
            prop["description"] = spec.description
        if spec.enum:
            prop["enum"] = list(spec.enum) + ([] if spec.required else [None])
        properties[name] = prop
    return {"type": "object", "properties": properties, "required": list(stage.fields)}


def full_prompt(stage: Stage, rendered: str, model: str = "", aliases: dict[str, str] | None = None) -> str:
    """The prompt sent. A 2.x model cannot take a response schema together with Search grounding, so a search
    stage on 2.x carries the keys and types in its prompt; nullable fields say that null means unknown."""
    nullable = any(not spec.required for spec in stage.specs.values())
    if stage.search and generation(model, aliases) < 3:
        shape = {name: spec.type if spec.required else f"{spec.type} or null" for name, spec in stage.specs.items()}
        hint = f" {NULL_HINT}" if nullable else ""
        return f"{rendered}\n\nReturn only a JSON object with these keys and types: {json.dumps(shape)}.{hint}"
    if stage.search and nullable:
        return f"{rendered}\n\n{NULL_HINT}"
    return rendered


def build_request(stage: Stage, rendered: str, model: str, aliases: dict[str, str] | None = None) -> Request:
    """One llm call as it is sent (and as `--dry-run` shows and prices it): the prompt, the settings, whether the
    answer is asked as JSON, the response schema, and the input tokens the limiter reserves for it."""
    prompt = full_prompt(stage, rendered, model, aliases)
    settings = {k: v for k, v in stage.settings.items() if k not in ("rpm", "tpm", "timeout")}
    json_mode = not stage.search or generation(model, aliases) >= 3
    schema = json_schema(stage)
    payload = {"model": model, "prompt": prompt, "rendered": rendered, "settings": settings, "json_mode": json_mode,
               "schema": schema, "flex": settings.get("service_tier") == "flex"}
    answer_inputs = {"kind": "llm", "model": model, "prompt": prompt, "settings": settings, "search": stage.search,
                "schema": schema, "json_mode": json_mode}
    return Request(stage, payload, answer_inputs, model=model, input_tokens=len(prompt) // 4 + 1)


class GeminiProvider(BaseProvider):
    """One shared `genai.Client` for all workers; the SDK's own retry is off (enrichkit's does the work)."""

    kind = "gemini"
    remote = True
    has_models = True

    def __init__(self, *, api_key: str, base_url: str | None, timeout: float, stages: StagesConfig,
                 pricing: Pricing, model: str | None = None, resolver: SourceResolver | None = None,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        from google import genai
        from google.genai import types

        # A value newer than the pinned SDK (a finish reason, a model stage) is read as it comes (classify decides
        # what it means); the SDK's warning for each such answer would only flood stderr.
        warnings.filterwarnings("ignore", r".* is not a valid (FinishReason|ModelStage|BlockedReason)",
                                UserWarning)

        self._types = types
        self._stages = stages
        self._configs: dict[tuple[str, bool], Any] = {}  # (stage, JSON answer) -> its GenerateContentConfig
        self._pricing = pricing
        self._timeout = timeout  # --timeout: a stage's own `timeout` (or a flex stage's floor) may differ
        self._now = now  # when an answer carries no Date header: the day it is priced on
        self.notes: ModelNotes = ModelNotes(pricing)  # served models, unpriced answers, lifecycles, said once
        self._model = model  # --model: the default model for stages that name none
        self._resolver = resolver or SourceResolver()
        self._base_url = base_url or None
        options = http_options(base_url, timeout)
        # vertexai=False: GOOGLE_GENAI_USE_VERTEXAI=true in the environment would otherwise turn this
        # client into a Vertex AI one, where every call answers 404.
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=options)

    def model_for(self, stage: Stage) -> str:
        return self._stages.model_for(stage, self._model)

    # --- before record 1 ------------------------------------------------------------------------------

    def check_models(self, models: list[str]) -> None:
        """`models.get` for each model (unbilled): an unknown, retired or non-generating model stops the run
        (exit 2) with the list of models that can generate; a bad key stops it too; nothing listening at the
        address is an outage (exit 1). Any other trouble is logged and the run goes on."""
        for model in models:
            try:
                info = call_with_deadline(functools.partial(self._client.models.get, model=model), self._timeout)
            except Exception as exc:  # noqa: BLE001 - classified right here
                failure = classify_error(exc)
                if getattr(exc, "code", None) == 404:
                    listed = self._generating_models()
                    raise ConfigError(f"model {model!r} is unknown or retired ({failure.message[:160]}); models "
                                      f"that can generate: {listed}{self._base_url_hint(listed)}") from None
                if failure.fatal is not None:  # a rejected key, a refused project: every call would meet it
                    raise failure.fatal from None
                if failure.unconnected:
                    raise unreachable(failure) from None
                log.warning("could not check model %s before the run (%s); going on", model, failure.message[:200])
                continue
            actions = list(getattr(info, "supported_actions", None) or [])
            if actions and "generateContent" not in actions:
                raise ConfigError(f"model {model!r} cannot generate text (it supports {', '.join(actions)}); "
                                  f"models that can: {self._generating_models()}")

    def _base_url_hint(self, listed: str) -> str:
        """When no model can be listed either, every model answers 404: the address is not a Gemini API (a
        dashboard, another server on the port) far more often than every model is retired."""
        if not listed.startswith("(") or self._base_url is None:
            return ""
        return (f"; every model answers 404 at {self._base_url}: check the base URL (--base-url, or "
                "GEMINI_BASE_URL in the environment or a .env file): is a Gemini API answering there?")

    def _generating_models(self) -> str:
        try:
            listed = call_with_deadline(lambda: list(self._client.models.list(config={"page_size": 1000})),
                                        self._timeout)
            names = [str(m.name).removeprefix("models/") for m in listed
                     if "generateContent" in (getattr(m, "supported_actions", None) or [])]
        except Exception as exc:  # noqa: BLE001 - the list only decorates a message
            return f"(the list could not be read: {str(exc)[:80]})"
        return ", ".join(sorted(names)) or "(none listed)"

    # --- a call ---------------------------------------------------------------------------------------

    def prepare(self, stage: Stage, values: dict[str, str]) -> Request:
        assert stage.prompt is not None
        return self._request(stage, stage.prompt.render(values), self.model_for(stage))

    def with_model(self, request: Request, model: str) -> Request:
        """The same request for another model (a stage's fallback model)."""
        return self._request(request.stage, request.payload["rendered"], model)

    def _request(self, stage: Stage, rendered: str, model: str) -> Request:
        request = build_request(stage, rendered, model, self._pricing.aliases)
        return dataclasses.replace(request, worst_cost=worst_case(self._pricing, request))

    def _config(self, stage: Stage, payload: dict[str, Any]) -> Any:
        """The SDK's config for a stage: the same for each of its calls (JSON or not), so made once."""
        key = (stage.name, payload["json_mode"])
        config = self._configs.get(key)
        if config is None:
            config = self._configs[key] = self._make_config(stage, payload)
        return config

    def _make_config(self, stage: Stage, payload: dict[str, Any]) -> Any:
        types = self._types
        settings = payload["settings"]
        config: dict[str, Any] = {"automatic_continuation": False,  # one call is one request (and one slot)
                                  "max_output_tokens": int(settings["max_output_tokens"])}
        if settings.get("temperature") is not None:
            config["temperature"] = float(settings["temperature"])
        if settings.get("system_instruction"):
            config["system_instruction"] = str(settings["system_instruction"])
        if settings.get("thinking_budget") is not None:
            config["thinking_config"] = types.ThinkingConfig(thinking_budget=int(settings["thinking_budget"]))
        elif settings.get("thinking_level"):
            config["thinking_config"] = types.ThinkingConfig(
                thinking_level=types.ThinkingLevel(str(settings["thinking_level"]).upper()))
        if settings.get("service_tier"):
            config["service_tier"] = types.ServiceTier(str(settings["service_tier"]))
        if stage.search:
            config["tools"] = [types.Tool(google_search=types.GoogleSearch())]
        timeout = stage_timeout(stage, self._timeout)
        if timeout != self._timeout:  # sent as X-Server-Timeout too: a flex call may queue for minutes
            config["http_options"] = types.HttpOptions(timeout=int(timeout * 1000))
        if payload["json_mode"]:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = payload["schema"]
        return types.GenerateContentConfig(**config)

    def call(self, request: Request) -> Answer:
        stage, payload = request.stage, request.payload
        flex = payload["flex"]
        try:
            config = self._config(stage, payload)
            # The SDK's timeout bounds each read; the deadline bounds the whole request (an answer dripped slowly).
            response = call_with_deadline(lambda: self._client.models.generate_content(
                model=payload["model"], contents=payload["prompt"], config=config), self.deadline(stage))
        except Exception as exc:
            failure = classify_error(exc)
            if isinstance(failure.fatal, ConfigError) and getattr(exc, "code", None) == 404:
                facts = self._pricing.facts_of(payload["model"])  # "no longer available (to new users)"
                failure.fatal = ConfigError(f"{retired_message(payload['model'], facts.replacement, facts.retires)}; "
                                            f"the API says: {failure.message[:160]}")
                raise failure from exc
            if flex and failure.fatal is None and failure.error_type in ("server_error", "timeout") \
                    and not failure.unconnected:
                failure.shed = True  # queued past the deadline or shed (503): retried, never the breaker's
                raise failure from exc
            raise
        return self.read_answer(response, request)

    def read_answer(self, response: Any, request: Request, *, batch: bool = False) -> Answer:
        """The fields of one answer (a call's, or a batch line's `response` as an SDK object), priced by the model
        that served it (`batch`: at the batch rate); a `StageFailure` carrying what it cost when it has none."""
        stage, payload = request.stage, request.payload
        flex = payload["flex"] and not batch
        asked = payload["model"]
        at = _answered_at(response) or self._now()
        status = _model_status(response)
        try:
            reply = read_reply(response, asked)
        except StageFailure as failure:
            # An answer cut short or refused after its searches ran is billed for them (per query or prompt).
            candidates = getattr(response, "candidates", None) or []
            searched = read_grounding(candidates[0]) if stage.search and candidates else Grounding()
            failure.usage = self._usage(read_tokens(response), _served(response, asked), stage, flex,
                                        grounded=searched.grounded, queries=len(searched.queries), asked=asked,
                                        at=at, batch=batch)
            self._read_status(asked, status, failure)
            raise
        usage = self._usage(reply.tokens, reply.model_version, stage, flex, grounded=stage.search
                            and reply.grounding.grounded, queries=len(reply.grounding.queries), asked=asked, at=at,
                            batch=batch)
        self._read_status(asked, status, None, usage)
        try:
            fields = check_fields(parse_json_object(reply.text), stage)
        except StageFailure as failure:
            failure.usage = usage  # a malformed answer is billed all the same
            raise
        fields.update(self._source_fields(stage, reply))
        return Answer(fields, usage)

    def deadline(self, stage: Stage) -> float:
        """Seconds a whole request may take: the stage's `timeout`, else --timeout (flex: at least `FLEX_TIMEOUT`)."""
        return stage_timeout(stage, self._timeout)

    def _read_status(self, asked: str, status: dict[str, Any] | None, failure: StageFailure | None,
                     usage: Usage | None = None) -> None:
        """An answer's modelStatus: a retired model stops the run (exit 2); deprecated or legacy: said once."""
        if not status:
            return
        stage = status["stage"]
        facts = self._pricing.facts_of(asked)
        replacement = status.get("replacement") or facts.replacement
        if stage == "retired":
            stop = failure or StageFailure("client_error", f"model {asked} is retired")
            if usage is not None:
                stop.usage = usage
            stop.fatal = ConfigError(retired_message(asked, replacement, status.get("retires")))
            raise stop
        self.notes.lifecycle(asked, stage, status.get("retires") or (facts.retires.isoformat() if facts.retires
                                                                     else None),
                             replacement, message=status.get("message", ""))

    def _usage(self, tokens: Tokens, model: str, stage: Stage, flex: bool, *, grounded: bool, queries: int,
               asked: str, at: dt.datetime, batch: bool = False) -> Usage:
        charge = self._pricing.charge(model, prompt_tokens=tokens.billed_input, output_tokens=tokens.billed_output,
                                      cached_tokens=tokens.cached, grounded=grounded, search_queries=queries,
                                      flex=flex, batch=batch, asked=asked, at=at)
        self.notes.answered(asked, model, unpriced=charge.unpriced, priced_as=charge.priced_as)
        return Usage(model=model, prompt_tokens=tokens.billed_input, output_tokens=tokens.billed_output,
                     thinking_tokens=tokens.thoughts, cached_tokens=tokens.cached, grounded_prompts=int(grounded),
                     search_queries=queries if grounded else 0, token_cost_usd=charge.tokens,
                     grounding_cost_usd=charge.grounding)

    def _source_fields(self, stage: Stage, reply: Reply) -> dict[str, str]:
        if not stage.source_fields:
            return {}
        g = reply.grounding
        sources = [{"title": title, "url": self._resolver.resolve(uri)} for title, uri in g.sources]
        names = stage.source_fields
        return {names[0]: json.dumps(sources, ensure_ascii=False) if sources else "",
                names[1]: json.dumps(list(g.queries), ensure_ascii=False) if g.queries else "",
                names[2]: "true" if g.grounded else "false"}

    def close(self) -> None:
        self._resolver.close()
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing at exit must never mask the run's outcome
            pass


def _served(response: Any, asked: str) -> str:
    return str(getattr(response, "model_version", None) or asked).removeprefix("models/")


def stage_timeout(stage: Stage, default: float) -> float:
    """Seconds a call of `stage` may take: its own `timeout`, else --timeout (at least FLEX_TIMEOUT for flex)."""
    own = stage.settings.get("timeout")
    if own is not None:
        return float(own)
    return max(default, FLEX_TIMEOUT) if stage.settings.get("service_tier") == "flex" else default


def _answered_at(response: Any) -> dt.datetime | None:
    """When the API answered: the HTTP Date header (the server's clock), if the answer kept it."""
    headers = getattr(getattr(response, "sdk_http_response", None), "headers", None) or {}
    value = next((v for k, v in dict(headers).items() if str(k).lower() == "date"), None)
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(str(value)).astimezone(dt.UTC)
    except (TypeError, ValueError):
        return None


def _model_status(response: Any) -> dict[str, Any] | None:
    """An answer's modelStatus as {stage, retires, message, replacement}, stage lower case; None without one."""
    status = getattr(response, "model_status", None)
    if status is None:
        return None
    stage = getattr(status, "model_stage", None)
    name = str(getattr(stage, "value", stage) or "").rsplit(".", 1)[-1].lower()
    if not name or name == "model_stage_unspecified":
        return None
    retires = getattr(status, "retirement_time", None)
    message = str(getattr(status, "message", None) or "")
    replacement = re.search(r"(gemini-[\w.-]+\w)", message.split("replace", 1)[1]) if "replace" in message else None
    return {"stage": name, "retires": retires.date().isoformat() if isinstance(retires, dt.datetime) else None,
            "message": message, "replacement": replacement.group(1) if replacement else None}


def check_fields(data: dict[str, Any], stage: Stage) -> dict[str, str]:
    """Every declared field present with its type. null means "unknown": an empty cell (a validation error only
    for a field declared `required`); a value outside a field's enum is a validation error."""
    missing = [f for f in stage.fields if f not in data]
    if missing:
        raise StageFailure("validation_error", f"answer lacks field(s): {', '.join(missing)}")
    return {name: _coerce(name, data[name], stage.specs.get(name) or FieldSpec(kind))
            for name, kind in stage.fields.items()}


def _coerce(name: str, value: Any, spec: FieldSpec) -> str:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none") and not spec.required):
        if spec.required:
            raise StageFailure("validation_error", f"field {name!r} is required but the answer was null")
        return ""
    if spec.enum and value not in spec.enum:
        raise StageFailure("validation_error", f"field {name!r} should be one of {list(spec.enum)}, got {value!r:.60}")
    kind = spec.type
    if kind == "string":
        return value if isinstance(value, str) else stringify(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower()
    else:
        number = _as_number(value)
        # NaN and Infinity are no JSON numbers (Python's parser takes them): a number field never holds "nan".
        if number is not None and math.isfinite(number) and (kind == "number" or float(number).is_integer()):
            return str(int(number)) if kind == "integer" else str(number)
    raise StageFailure("validation_error", f"field {name!r} should be {kind}, got {value!r:.60}")


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return None
