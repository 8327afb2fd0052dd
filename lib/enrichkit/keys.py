"""The Gemini API key: read from `api_key=`, the environment or a .env file, and registered as a secret.

The library reads the key itself (a notebook has no CLI to do it), and registers every form of it it can see,
so no caller can forget to: a key reaches no file enrichkit writes and no line it prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from enrichkit.errors import AuthError, UsageError
from enrichkit.redact import register_secret


def api_key() -> str:
    """The Gemini key from GEMINI_API_KEY or GOOGLE_API_KEY (environment, or .env in the current folder).
    A key pasted with typographic quotes, spaces or other non-ASCII characters is refused here (exit 2)."""
    found = {**_dotenv(), **{k: v for k, v in os.environ.items() if v}}  # the environment wins, as load_dotenv's
    name = "GEMINI_API_KEY" if found.get("GEMINI_API_KEY") else "GOOGLE_API_KEY"
    key = found.get(name) or ""
    if not key:
        raise AuthError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment or in a .env file "
                        "(or pass api_key=)")
    bad = [c for c in key if not (c.isascii() and c.isprintable()) or c.isspace() or c in "\"'"]
    if bad:
        kinds = sorted({"spaces" if c.isspace() else "quotes" if c in "\"'“”‘’" else "non-ASCII characters"
                        for c in bad})
        raise UsageError(f"{name} contains {' and '.join(kinds)} (pasted from a document?); an API key is plain "
                         "letters, digits, - and _: fix it in the environment or .env")
    return key


def register_keys(given: str | None = None) -> None:
    """Whatever the stages, a key given or in the environment or .env is a secret: a python stage's error text,
    an http stage's answer may carry it, and it must reach no file and no line."""
    dotenv = _dotenv()
    values = [given]
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        values += [os.environ.get(name), dotenv.get(name)]
    for value in values:
        if value:
            register_secret(value)
            register_secret(value.strip().strip("\"'“”‘’"))


def _dotenv() -> dict[str, str]:
    """The .env file of the current folder, read without changing this process's environment."""
    from dotenv import dotenv_values

    path = Path.cwd() / ".env"
    return {k: v for k, v in dotenv_values(path).items() if v} if path.is_file() else {}
