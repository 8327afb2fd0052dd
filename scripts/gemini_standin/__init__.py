"""Local stand-in for the Gemini REST API, one concept per module.

wire (replies, error bodies, reading requests), catalogue (models, aliases, retired names), values
(schema-valid values), grounding (search metadata, redirects, wrapped text), answers (the 200 reply and its
usage), faults (fault names and error bodies), quota (windows and retry delays), config (FakeConfig),
clock (the real one or a faster one an in-process CLI run shares), server (FakeGemini over http.server), cli
(flags and main). ``scripts/fake_gemini.py`` is the entry point.
"""

from __future__ import annotations

from .answers import SAFETY_RATINGS, Answer, answer, loop_text, thought_tokens, usage
from .catalogue import CATALOGUE, EMBED_METHODS, GENERATE_METHODS, RETIRED, ModelInfo, not_found, resource
from .cli import main, parse_args
from .clock import ScaledClock
from .config import CHOICES, RUNTIME_KEYS, FakeConfig, coerce
from .faults import ANSWER_FAULTS, DOCS, ERROR_FAULTS, FAULTS, HTML_502, error_fault, quota_error, quota_ids
from .grounding import TOKEN_PREFIX, target_of, token_of, wrap
from .quota import QuotaWindow, duration, google_delay, retry_delay
from .server import FakeGemini
from .values import SCHEMA_MARKER, make_value, requested_schema, schema_type
from .wire import RPC, Raw, Reply, error_body, pick, prompt_text

__all__ = [
    "ANSWER_FAULTS", "CATALOGUE", "CHOICES", "DOCS", "EMBED_METHODS", "ERROR_FAULTS", "FAULTS", "GENERATE_METHODS",
    "HTML_502", "RETIRED", "RPC", "RUNTIME_KEYS", "SAFETY_RATINGS", "SCHEMA_MARKER", "TOKEN_PREFIX", "Answer",
    "FakeConfig", "FakeGemini", "ModelInfo", "QuotaWindow", "Raw", "Reply", "ScaledClock", "answer", "coerce",
    "duration", "error_body", "error_fault", "google_delay", "loop_text", "main", "make_value", "not_found",
    "parse_args", "pick", "prompt_text", "quota_error", "quota_ids", "requested_schema", "resource", "retry_delay",
    "schema_type", "target_of", "thought_tokens", "token_of", "usage", "wrap",
]
