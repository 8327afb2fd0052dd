"""The model catalogue: today's models and aliases, retired names, Model resources, and the 404s and 400s
that depend on which model was asked for."""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

from .wire import Reply, error_body, pick


class ModelInfo(NamedTuple):
    name: str
    display: str
    generation: str  # "2.5" or "3": decides thinking controls and whether search + JSON mode is allowed
    kind: str  # "flash", "flash-lite", "pro" or "embedding"
    version: str = "001"
    alias_of: str | None = None
    levels: tuple[str, ...] | None = None  # thinking levels accepted (None: all four); refused with a 400 otherwise
    temperature: bool = True  # False: temperature refused with a 400 (deprecated from Gemini 3.6 Flash on)


NO_MINIMAL = ("LOW", "MEDIUM", "HIGH")
CATALOGUES = ("2026-12", "2026-05")  # today's (routing, modelStatus, today's aliases) and May's, which tests pin
CATALOGUE = {m.name: m for m in (
    ModelInfo("gemini-2.5-flash", "Gemini 2.5 Flash", "2.5", "flash"),
    ModelInfo("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", "2.5", "flash-lite"),
    ModelInfo("gemini-2.5-pro", "Gemini 2.5 Pro", "2.5", "pro"),
    ModelInfo("gemini-3-flash-preview", "Gemini 3 Flash Preview", "3", "flash", "3-flash-preview-12-2025"),
    ModelInfo("gemini-3.1-pro-preview", "Gemini 3.1 Pro Preview", "3", "pro", "3.1-pro-preview-02-2026",
              levels=NO_MINIMAL),
    ModelInfo("gemini-3.1-flash-lite", "Gemini 3.1 Flash-Lite", "3", "flash-lite"),
    ModelInfo("gemini-3.5-flash", "Gemini 3.5 Flash", "3", "flash"),
    ModelInfo("gemini-3.5-flash-lite", "Gemini 3.5 Flash-Lite", "3", "flash-lite", temperature=False),
    ModelInfo("gemini-3.6-flash", "Gemini 3.6 Flash", "3", "flash", temperature=False),
    ModelInfo("gemini-3.7-flash", "Gemini 3.7 Flash", "3", "flash", levels=NO_MINIMAL, temperature=False),
    ModelInfo("gemini-3.8-flash", "Gemini 3.8 Flash", "3", "flash", levels=NO_MINIMAL, temperature=False),
    ModelInfo("gemini-flash-latest", "Gemini Flash Latest", "3", "flash", "latest", "gemini-3.5-flash"),
    ModelInfo("gemini-flash-lite-latest", "Gemini Flash-Lite Latest", "3", "flash-lite", "latest",
              "gemini-3.1-flash-lite"),
    ModelInfo("gemini-pro-latest", "Gemini Pro Latest", "3", "pro", "latest", "gemini-3.1-pro-preview"),
    ModelInfo("gemini-embedding-001", "Gemini Embedding 001", "-", "embedding"),
)}
RETIRED = ("gemini-2.0-flash", "gemini-2.0-flash-001", "gemini-2.0-flash-lite", "gemini-2.0-flash-lite-001",
           "gemini-3-pro-preview")  # answered "no longer available"; 1.x names get the generic not-found 404
# December 2026: Google answers deprecated names with their successor (modelVersion) and says so (modelStatus).
ROUTES = {"gemini-3.5-flash": "gemini-3.6-flash", "gemini-3.7-flash": "gemini-3.8-flash",
          "gemini-2.5-flash": "gemini-3.5-flash-lite", "gemini-2.5-pro": "gemini-3.8-flash"}
STATUS = {"gemini-3.5-flash": ("DEPRECATED", None), "gemini-3.7-flash": ("DEPRECATED", None),
          "gemini-2.5-flash": ("DEPRECATED", "2026-12-01T00:00:00Z"),
          "gemini-2.5-pro": ("DEPRECATED", "2026-12-01T00:00:00Z")}
LATEST = {"gemini-flash-latest": "gemini-3.8-flash", "gemini-flash-lite-latest": "gemini-3.5-flash-lite",
          "gemini-pro-latest": "gemini-3.1-pro-preview"}
GENERATE_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
EMBED_METHODS = ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]


def model_info(model: str, extra_models: list[str]) -> ModelInfo | None:
    """The catalogue's entry, one made up for an accepted extra name, or None for an unknown model."""
    if model in CATALOGUE:
        return CATALOGUE[model]
    if model in extra_models:
        kind = "pro" if "pro" in model else "flash-lite" if "lite" in model else "flash"
        return ModelInfo(model, model, "3" if model.startswith("gemini-3") else "2.5", kind)
    return None


def resource(info: ModelInfo) -> dict[str, Any]:
    """A Model resource as models.get and models.list return it."""
    generate = info.kind != "embedding"
    body: dict[str, Any] = {
        "name": f"models/{info.name}", "version": info.version, "displayName": info.display,
        "description": f"Stand-in for {info.display}" + (f" (currently {info.alias_of})" if info.alias_of else ""),
        "inputTokenLimit": 1_048_576 if generate else 2048, "outputTokenLimit": 65_536 if generate else 1,
        "supportedGenerationMethods": GENERATE_METHODS if generate else EMBED_METHODS}
    if generate:
        body.update(temperature=1, topP=0.95, topK=64, maxTemperature=2, thinking=True)
    return body


def model_page(infos: list[ModelInfo], query: dict[str, list[str]]) -> dict[str, Any]:
    """One page of models.list, paged as the real list: pageSize up to 1000, an opaque nextPageToken."""
    size = min(1000, int((query.get("pageSize") or ["50"])[0]) or 50)
    token = (query.get("pageToken") or [""])[0]
    start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    page: dict[str, Any] = {"models": [resource(i) for i in infos[start:start + size]]}
    if start + size < len(infos):
        page["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
    return page


def not_found(model: str, version: str, method: str) -> Reply:
    if model in RETIRED:
        return error_body(404, "NOT_FOUND", f"This model models/{model} is no longer available. Please update "
                          "your code to use a newer model for the latest features and improvements.")
    return error_body(404, "NOT_FOUND", f"models/{model} is not found for API version {version}, or is not "
                      f"supported for {method}. Call ListModels to see the list of available models and their "
                      "supported methods.")


def model_status(model: str, catalogue: str, overrides: dict[str, str]) -> dict[str, Any] | None:
    """The modelStatus an answer to `model` carries: `overrides` ("STAGE" or "STAGE@retirementTime") first, then
    today's catalogue; None for a current model."""
    if model in overrides:
        stage, _, when = overrides[model].partition("@")
        retires: str | None = when or None
    elif catalogue == "2026-12" and model in STATUS:
        stage, retires = STATUS[model]
    else:
        return None
    body: dict[str, Any] = {"modelStage": stage.upper()}
    if retires:
        body["retirementTime"] = retires
    successor = ROUTES.get(model)
    body["message"] = (f"{model} is {stage.lower()}" + (f"; requests are served by its replacement {successor}"
                                                        if successor else ""))
    return body


def request_error(info: ModelInfo, request: dict[str, Any], grounded: bool) -> tuple[str, Reply] | None:
    """Configuration errors the API reports before generating: (counter name, reply), or None."""
    config = pick(request, "generationConfig", "generation_config") or {}
    if not info.temperature and pick(config, "temperature") is not None:
        return "temperature_400", error_body(400, "INVALID_ARGUMENT", f"temperature is not supported for "
                                             f"{info.name}: sampling parameters are deprecated for this model.")
    level = str(pick(pick(config, "thinkingConfig", "thinking_config") or {}, "thinkingLevel", "thinking_level")
                or "").upper()
    if level and info.levels is not None and level not in info.levels:
        return "thinking_level_400", error_body(400, "INVALID_ARGUMENT", f"Thinking level {level} is not supported "
                                                f"for this model. Supported levels: {', '.join(info.levels)}.")
    mime = str(pick(config, "responseMimeType", "response_mime_type") or "")
    if grounded and info.generation != "3" and mime == "application/json":
        message = "Tool use with a response mime type: 'application/json' is unsupported"
        return "search_json_400", error_body(400, "INVALID_ARGUMENT", message)
    thinking = pick(config, "thinkingConfig", "thinking_config") or {}
    if info.kind == "pro" and pick(thinking, "thinkingBudget", "thinking_budget") == 0:
        return "thinking_budget_400", error_body(400, "INVALID_ARGUMENT",
                                                 "Budget 0 is invalid. This model only works in thinking mode.")
    return None
