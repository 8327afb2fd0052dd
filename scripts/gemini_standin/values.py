"""Values valid for the requested schema and plausible for their field, fixed by (seed, prompt, field name)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .wire import pick

SCHEMA_MARKER = "keys and types:"  # enrichkit's prompt-embedded schema (search stages) follows this
FIRST = ("Alice", "Bruno", "Chiara", "Daniel", "Elena", "Farid", "Greta", "Hiro", "Ingrid", "Jonas",
         "Keiko", "Luca", "Maya", "Nils", "Olivia", "Priya", "Rafael", "Sofia", "Tomas", "Yara")
LAST = ("Andersen", "Bauer", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito",
        "Jensen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Silva")
FIRMS = ("northbridge", "bluepeak", "harborline", "cedarfield", "ironwood", "silverlake", "oakmont",
         "redstone", "brightwater", "stonegate")
SUFFIXES = ("cap", "capital", "partners", "ventures", "equity")
JOB_TITLES = ("Managing Partner", "Partner", "Principal", "Head of Investor Relations", "CFO")
STATUSES = ("fundraising", "investing", "harvesting", "closed")


def digest(text: str) -> int:
    """A stable 64-bit number for a text (lone surrogates and all)."""
    return int.from_bytes(hashlib.sha256(text.encode(errors="replace")).digest()[:8], "big")


def requested_schema(request: dict[str, Any], prompt: str) -> dict[str, Any] | None:
    """The response schema from generationConfig, else the one enrichkit embeds in the prompt."""
    config = pick(request, "generationConfig", "generation_config") or {}
    schema = pick(config, "responseJsonSchema", "response_json_schema", "responseSchema", "response_schema")
    if isinstance(schema, dict):
        return schema
    at = prompt.find(SCHEMA_MARKER)
    try:
        flat = json.JSONDecoder().raw_decode(prompt[at + len(SCHEMA_MARKER):].lstrip())[0] if at >= 0 else 0
    except ValueError:
        return None
    return {"type": "object", "properties": flat} if isinstance(flat, dict) else None


def schema_type(schema: dict[str, Any]) -> str:
    """The JSON type a schema asks for, lower-case; the first non-null one of a list or anyOf."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is None:
        options = [o for o in schema.get("anyOf") or schema.get("oneOf") or [] if isinstance(o, dict)]
        kind = next((schema_type(o) for o in options if schema_type(o) != "null"), None)
        return kind or ("object" if "properties" in schema else "string")
    return str(kind).lower()


def nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    kinds: list[Any] = kind if isinstance(kind, list) else [kind]
    options = [o.get("type") for o in schema.get("anyOf") or [] if isinstance(o, dict)]
    return bool(schema.get("nullable")) or any(str(k).lower() == "null" for k in [*kinds, *options])


def firm_of(prompt: str, seed: int) -> tuple[str, str, str]:
    """One person and one firm per prompt (first name, last name, firm), so that the answer agrees with itself."""
    p = digest(f"{seed}\x1f{prompt}")
    return FIRST[p % len(FIRST)], LAST[(p >> 8) % len(LAST)], FIRMS[(p >> 16) % len(FIRMS)]


def domain_of(prompt: str, seed: int) -> str:
    suffix = SUFFIXES[(digest(f"{seed}\x1f{prompt}") >> 24) % len(SUFFIXES)]
    return f"{firm_of(prompt, seed)[2]}{suffix}.com"


def make_value(name: str, schema: Any, prompt: str, seed: int, null_rate: float = 0.0) -> Any:
    """A value of the schema's type, plausible for a field called ``name``, fixed by (seed, prompt, name)."""
    if isinstance(schema, str) and schema.endswith(" or null"):  # {"size": "number or null"}: a prompt's wording
        schema = {"type": [schema.removesuffix(" or null"), "null"]}
    schema = schema if isinstance(schema, dict) else {"type": schema}  # {"poc_name": "string"} style
    kind, lower = schema_type(schema), name.lower()
    h = digest(f"{seed}\x1f{prompt}\x1f{name}")
    if null_rate and nullable(schema) and (h >> 40) % 10_000 < null_rate * 10_000:
        return None
    if schema.get("enum"):
        return schema["enum"][h % len(schema["enum"])]
    if kind == "object":
        return {k: make_value(k, sub, prompt, seed, null_rate) for k, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [make_value(name, schema.get("items") or {}, prompt, seed, null_rate)]
    if kind in ("boolean", "integer", "number", "null"):
        if kind == "integer":
            return 1990 + h % 36 if any(w in lower for w in ("year", "vintage", "founded")) else 1 + h % 500
        if kind == "number":
            scored = any(w in lower for w in ("confidence", "score", "probability"))
            return (h % 101) / 100 if scored else round(20 + (h % 49_800) / 10, 1)
        return bool(h & 1) if kind == "boolean" else None
    first, last, _ = firm_of(prompt, seed)
    domain = domain_of(prompt, seed)
    if "email" in lower:
        return f"{first}.{last}@{domain}".lower()
    if any(w in lower for w in ("domain", "url", "website")):
        return domain
    if "name" in lower:
        return f"{first} {last}"
    if "title" in lower or "role" in lower:
        return JOB_TITLES[h % len(JOB_TITLES)]
    if "status" in lower:
        return STATUSES[h % len(STATUSES)]
    words = re.findall(r"[A-Za-z][A-Za-z'-]{3,}", prompt.split(SCHEMA_MARKER)[0]) or ["unknown"]
    return " ".join(dict.fromkeys(words[(h >> (8 * i)) % len(words)].lower() for i in range(3)))
