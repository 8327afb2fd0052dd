"""The Gemini API key: read from `api_key=`, the environment or a .env file, and registered as a secret.

The library reads the key itself (a notebook has no CLI to do it), and registers every form of it it can see,
so no caller can forget to: a key reaches no file enrichkit writes and no line it prints. Which .env files are
read, and in what order: `enrichkit.config.envfiles`.
"""

from __future__ import annotations

from enrichkit.config.envfiles import KEY_NAMES, Environment, missing_key_message
from enrichkit.errors import AuthError, UsageError
from enrichkit.redact import register_secret


def api_key(env: Environment) -> str:
    """The Gemini key from GEMINI_API_KEY or GOOGLE_API_KEY (the environment, else the .env files: see
    enrichkit.config.envfiles). A key pasted with typographic quotes, spaces or other non-ASCII characters is
    refused here (exit 2)."""
    name = "GEMINI_API_KEY" if env.get("GEMINI_API_KEY") else "GOOGLE_API_KEY"
    key = env.get(name) or ""
    if not key:
        raise AuthError(missing_key_message(env) + " (or pass api_key=)")
    bad = [c for c in key if not (c.isascii() and c.isprintable()) or c.isspace() or c in "\"'"]
    if bad:
        kinds = sorted({"spaces" if c.isspace() else "quotes" if c in "\"'“”‘’" else "non-ASCII characters"
                        for c in bad})
        raise UsageError(f"{name} contains {' and '.join(kinds)} (pasted from a document?); an API key is plain "
                         "letters, digits, - and _: fix it in the environment or .env")
    return key


def register_keys(given: str | None, env: Environment) -> None:
    """Whatever the stages, a key given or in the environment or a .env file is a secret: a python stage's error
    text, an http stage's answer may carry it, and it must reach no file and no line."""
    values = [given]
    for name in KEY_NAMES:
        values += [env.environ.get(name), *env.in_files(name)]
    for value in values:
        if value:
            register_secret(value)
            register_secret(value.strip().strip("\"'“”‘’"))
