"""Google's REST wire format: replies, error bodies, and fields read out of a request in either spelling."""

from __future__ import annotations

from typing import Any, NamedTuple

RPC = "type.googleapis.com/google.rpc."


class Raw(NamedTuple):
    """A reply that is not JSON (an HTML error page, a redirect)."""

    body: str
    content_type: str = "text/html; charset=UTF-8"
    location: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # more response headers (the Files API's X-Goog-Upload-*)


Reply = tuple[int, "dict[str, Any] | Raw"]


def error_body(code: int, status: str, message: str, details: list[Any] | None = None) -> Reply:
    """A reply in Google's error format; `details` only when there are some, as Google sends it."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return code, {"error": error}


def pick(mapping: Any, *keys: str) -> Any:
    """The first of `keys` (camelCase and snake_case spellings) present in a dict."""
    if not isinstance(mapping, dict):
        return None
    return next((mapping[k] for k in keys if mapping.get(k) is not None), None)


def texts_of(contents: Any) -> list[str]:
    texts: list[str] = []
    for content in contents if isinstance(contents, list) else [contents]:
        parts = content.get("parts") or [] if isinstance(content, dict) else [{"text": content}]
        texts += [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return texts


def prompt_text(request: dict[str, Any]) -> str:
    """All text parts of the request's contents, joined by newlines."""
    return "\n".join(texts_of(request.get("contents") or []))
