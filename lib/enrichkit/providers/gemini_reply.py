"""Reading a Gemini answer: its text, why there is none, what it was billed for, and its grounding.

Every shape the live API gives (see docs/models-and-prices.md): a blocked prompt
(`promptFeedback.blockReason`, no candidates), a safety-type finish with no parts, MAX_TOKENS with
a truncated answer or with thoughts only, an answer wrapped in prose or a code fence. A usable
answer is text; anything else is a classified `StageFailure` carrying what it was billed for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from enrichkit.errors import StageFailure
from enrichkit.pace.classify import ANSWER_FINISHES, finish_failure

MAX_SOURCES = 10  # grounding chunks kept per answer (and redirects resolved)


@dataclass(frozen=True)
class Tokens:
    """The answer's `usageMetadata` (missing counts are 0: the API leaves zero counts out)."""

    prompt: int = 0  # promptTokenCount (includes cached tokens and the system instruction)
    tool_use: int = 0  # toolUsePromptTokenCount: search results fed back to the model, billed as input
    candidates: int = 0
    thoughts: int = 0  # billed as output
    cached: int = 0

    @property
    def billed_input(self) -> int:
        return self.prompt + self.tool_use

    @property
    def billed_output(self) -> int:
        return self.candidates + self.thoughts


@dataclass(frozen=True)
class Grounding:
    """What Search grounding did for one answer."""

    grounded: bool = False
    queries: tuple[str, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()  # (title, uri) of the grounding chunks, uri possibly a redirect


@dataclass(frozen=True)
class Reply:
    text: str
    tokens: Tokens
    model_version: str
    grounding: Grounding = field(default_factory=Grounding)
    finish: str = "STOP"


def read_tokens(response: Any) -> Tokens:
    meta = getattr(response, "usage_metadata", None)

    def count(name: str) -> int:
        return int(getattr(meta, name, 0) or 0)

    return Tokens(prompt=count("prompt_token_count"), tool_use=count("tool_use_prompt_token_count"),
                  candidates=count("candidates_token_count"), thoughts=count("thoughts_token_count"),
                  cached=count("cached_content_token_count"))


def read_reply(response: Any, asked_model: str) -> Reply:
    """The usable text of `response`, or a `StageFailure` saying why there is none (blocked, safety,
    MAX_TOKENS...). Its `usage` is set by the caller (it knows the prices)."""
    tokens = read_tokens(response)
    version = str(getattr(response, "model_version", None) or asked_model).removeprefix("models/")
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        feedback = getattr(response, "prompt_feedback", None)
        reason = _name(getattr(feedback, "block_reason", None))
        if reason:
            message = getattr(feedback, "block_reason_message", None) or ""
            raise StageFailure("blocked", f"the prompt was blocked ({reason}){': ' + message if message else ''}; "
                               "it is not retried", retries_allowed=0)
        raise StageFailure("validation_error", "the API returned no candidate")
    candidate = candidates[0]
    finish = _name(getattr(candidate, "finish_reason", None)) or "STOP"
    parts = getattr(getattr(candidate, "content", None), "parts", None) or []
    text = "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))
    grounding = read_grounding(candidate)
    if finish not in ANSWER_FINISHES:
        raise finish_failure(finish)  # every other reason is decided by classify.FINISH_REASONS
    if finish in ("MAX_TOKENS", "CONTINUATION"):
        if not text.strip():
            raise StageFailure("validation_error", "the answer hit max_output_tokens before any text (thinking "
                               f"used {tokens.thoughts} tokens of it); raise max_output_tokens or lower the "
                               "thinking budget", retries_allowed=1)
        try:
            parse_json_object(text)
        except StageFailure:
            raise StageFailure("validation_error", f"the answer hit max_output_tokens ({tokens.billed_output} "
                               "output tokens) without closing its JSON (a loop?)", retries_allowed=1) from None
    if not text.strip():
        raise StageFailure("validation_error", f"empty answer (finish reason {finish})")
    return Reply(text, tokens, version, grounding, finish)


def read_grounding(candidate: Any) -> Grounding:
    meta = getattr(candidate, "grounding_metadata", None)
    if meta is None:
        return Grounding()
    queries = tuple(str(q) for q in getattr(meta, "web_search_queries", None) or [] if q)
    sources: list[tuple[str, str]] = []
    for chunk in getattr(meta, "grounding_chunks", None) or []:
        web = getattr(chunk, "web", None)
        uri = getattr(web, "uri", None)
        if uri and len(sources) < MAX_SOURCES:
            sources.append((str(getattr(web, "title", None) or ""), str(uri)))
    return Grounding(bool(queries or sources), queries, tuple(sources))


def parse_json_object(text: str | None) -> dict[str, Any]:
    """The JSON object in a model's answer: bare, in a code fence, or inside prose (the first `{` from
    which a whole object parses)."""
    if not text or not text.strip():
        raise StageFailure("validation_error", "empty answer")
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise StageFailure("validation_error", f"answer is not a JSON object: {text.strip()[:120]!r}")


def _name(value: Any) -> str:
    """An SDK enum (or a plain string) as its API name: FinishReason.SAFETY -> 'SAFETY'."""
    if value is None:
        return ""
    name = getattr(value, "value", value)
    return str(name).rsplit(".", 1)[-1].upper()
