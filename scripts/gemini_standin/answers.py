"""A generateContent answer (HTTP 200): the candidate or the block, thoughts, finish reason and usageMetadata."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .catalogue import LATEST, ROUTES, ModelInfo, model_status
from .grounding import grounding_metadata, wrap
from .values import digest, make_value, requested_schema
from .wire import pick

if TYPE_CHECKING:
    from .config import FakeConfig

SAFETY_RATINGS = [{"category": f"HARM_CATEGORY_{c}", "probability": p, **({"blocked": True} if p == "MEDIUM" else {})}
                  for c, p in (("SEXUALLY_EXPLICIT", "NEGLIGIBLE"), ("HATE_SPEECH", "NEGLIGIBLE"),
                               ("HARASSMENT", "NEGLIGIBLE"), ("DANGEROUS_CONTENT", "MEDIUM"))]
FINISH_FAULTS = ("safety", "recitation", "prohibited_content", "blocklist", "spii")  # a finishReason, no content


class Answer(NamedTuple):
    reply: dict[str, Any]
    served: str  # the modelVersion that answered
    tokens: dict[str, int]  # billed: prompt, candidates, thoughts, tool_use, cached
    search_queries: int


def loop_text(value: Any, tokens: int) -> str:
    """Structured output stuck in a loop: a JSON object that never closes, about `tokens` tokens long."""
    head = json.dumps(value, ensure_ascii=False)[:-1] if isinstance(value, dict) and value else "{"
    head += (", " if len(head) > 1 else "") + '"notes": "'
    return (head + "see above, " * (tokens * 4 // 11 + 1))[: max(1, tokens * 4)]


def usage(prompt: int, output: int, thoughts: int, tool: int, cached: int) -> dict[str, Any]:
    """usageMetadata as Google writes it: zero counts left out; total = prompt + output + thoughts + tool use."""
    body: dict[str, Any] = {"promptTokenCount": prompt}
    if output:
        body["candidatesTokenCount"] = output
    body["totalTokenCount"] = prompt + output + thoughts + tool
    body["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    for key, count in (("thoughtsTokenCount", thoughts), ("toolUsePromptTokenCount", tool),
                       ("cachedContentTokenCount", cached)):
        if count:
            body[key] = count
    if tool:
        body["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": tool}]
    return body


def thought_tokens(info: ModelInfo, config: dict[str, Any], answer_tokens: int, prompt: str, thinking: bool) -> int:
    """thoughtsTokenCount: thinking models think unless told not to (2.5 Flash-Lite only when asked)."""
    if not thinking or info.kind == "embedding":
        return 0
    thinking_config = pick(config, "thinkingConfig", "thinking_config") or {}
    budget = pick(thinking_config, "thinkingBudget", "thinking_budget")
    level = str(pick(thinking_config, "thinkingLevel", "thinking_level") or "").upper()
    if budget == 0 or level == "MINIMAL" or (info.kind == "flash-lite" and budget is None and not level):
        return 0
    factor = {"LOW": 1, "MEDIUM": 2, "HIGH": 4}.get(level, {"pro": 4, "flash": 2, "flash-lite": 1}[info.kind])
    thoughts = factor * (answer_tokens + 8 + digest(f"thoughts\x1f{prompt}") % 32)
    return min(thoughts, budget) if isinstance(budget, int) and budget > 0 else thoughts


def answer(cfg: FakeConfig, info: ModelInfo, model: str, request: dict[str, Any], prompt: str, p_tokens: int,
           fault: str | None, grounded: bool, answer_no: int, redirect_url: Callable[[str], str]) -> Answer:
    """The 200 reply to a generateContent; `fault` is None, "malformed" or one of the answer faults."""
    seed = cfg.seed
    today = cfg.catalogue == "2026-12"
    alias = (LATEST.get(model) if today else None) or info.alias_of
    served = (cfg.reroute.get(model) or cfg.reroute.get(alias or "") or (ROUTES.get(model) if today else None)
              or alias or model)
    config = pick(request, "generationConfig", "generation_config") or {}
    json_mode = str(pick(config, "responseMimeType", "response_mime_type") or "") == "application/json"
    schema = requested_schema(request, prompt) or {"type": "object", "properties": {"answer": "string"}}
    value = make_value("answer", schema, prompt, seed, cfg.null_rate)
    body = json.dumps(value, ensure_ascii=False)
    if fault == "malformed":
        body = body[: max(1, len(body) // 2)]  # any strict prefix of a JSON object fails to parse
    if grounded and not json_mode:
        body = wrap(body, cfg.grounded_wrap, prompt)
    max_out = int(pick(config, "maxOutputTokens", "max_output_tokens") or 65_535)
    thoughts = thought_tokens(info, config, math.ceil(len(body) / 4), prompt, cfg.thinking)
    text: str | None = body
    finish = "STOP"
    if fault == "max_tokens_loop":
        thoughts = min(thoughts, max_out // 2)
        text, finish = loop_text(value, max_out - thoughts), "MAX_TOKENS"
    elif fault == "max_tokens_thinking" or thoughts >= max_out:  # thinking used the whole budget
        thoughts, text, finish = min(max_out, 24_576 if max_out == 65_535 else max_out), None, "MAX_TOKENS"
    elif thoughts + math.ceil(len(body) / 4) > max_out:
        text, finish = body[: (max_out - thoughts) * 4], "MAX_TOKENS"
    c_tokens = math.ceil(len(text) / 4) if text else 0
    tool_use = 60 + digest(f"tool\x1f{prompt}") % 240 if grounded else 0
    cached = math.floor(p_tokens * cfg.cached_fraction)
    reply: dict[str, Any] = {"modelVersion": served, "responseId": f"{digest(f'{seed}:{answer_no}:{prompt}'):016x}"}
    queries = 0
    if fault == "blocked":
        feedback: dict[str, Any] = {"blockReason": cfg.block_reason}
        if cfg.block_reason == "SAFETY":
            feedback["safetyRatings"] = SAFETY_RATINGS
        thoughts = c_tokens = tool_use = 0
        reply.update(promptFeedback=feedback)
    elif fault in FINISH_FAULTS or fault == "finish":
        reason = cfg.finish_reason.upper() if fault == "finish" else str(fault).upper()
        candidate: dict[str, Any] = {"finishReason": reason, "index": 0}
        if fault == "safety":
            candidate["safetyRatings"] = SAFETY_RATINGS
        c_tokens = 0
        reply.update(candidates=[candidate])
    else:
        content: dict[str, Any] = {"role": "model"}
        if text is not None:
            content["parts"] = [{"text": text}]
        candidate = {"content": content, "finishReason": finish, "index": 0}
        if grounded:
            grounding = grounding_metadata(prompt, text or "", seed, redirect_url)
            candidate["groundingMetadata"] = grounding
            queries = len(grounding["webSearchQueries"])
        reply.update(candidates=[candidate])
    reply["usageMetadata"] = usage(p_tokens, c_tokens, thoughts, tool_use, cached)
    status = model_status(model, cfg.catalogue, cfg.model_status)
    if status is not None:
        reply["modelStatus"] = status
    tokens = {"prompt": p_tokens, "candidates": c_tokens, "thoughts": thoughts, "tool_use": tool_use,
              "cached": cached}
    return Answer(reply, served, tokens, queries)
