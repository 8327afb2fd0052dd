"""Checking and stringifying what a stage returned against its declared fields."""

from __future__ import annotations

import json
import re
from typing import Any

from enrichkit.errors import StageFailure
from enrichkit.records import stringify

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def parse_json_object(text: str | None) -> dict[str, Any]:
    """The JSON object in a model's answer (code fences and surrounding prose tolerated)."""
    if not text or not text.strip():
        raise StageFailure("validation_error", "empty answer")
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start == -1 or end < start:
        raise StageFailure("validation_error", f"answer is not a JSON object: {body[:120]!r}")
    try:
        value = json.loads(body[start:end + 1])
    except ValueError as exc:
        raise StageFailure("validation_error", f"answer is not valid JSON ({exc}): {body[:120]!r}") from None
    if not isinstance(value, dict):
        raise StageFailure("validation_error", "answer is not a JSON object")
    return value


def check_fields(data: dict[str, Any], fields: dict[str, str]) -> dict[str, str]:
    """Every declared field present with its type (null allowed, meaning unknown); values as CSV strings."""
    missing = [f for f in fields if f not in data]
    if missing:
        raise StageFailure("validation_error", f"answer lacks field(s): {', '.join(missing)}")
    return {name: _coerce(name, data[name], kind) for name, kind in fields.items()}


def _coerce(name: str, value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "string":
        return value if isinstance(value, str) else stringify(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower()
    else:
        number = _as_number(value)
        if number is not None and (kind == "number" or float(number).is_integer()):
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
