"""Search grounding: groundingMetadata, the redirect tokens behind its chunks, and grounded text as 2.x wraps it."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .values import SCHEMA_MARKER, digest, domain_of, firm_of
from .wire import Raw, Reply

TOKEN_PREFIX = "AUZIYQ"  # how Google's grounding redirect tokens start


def token_of(target: str) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(target.encode()).decode().rstrip("=")


def target_of(token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    raw = token[len(TOKEN_PREFIX):]
    try:
        target = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except ValueError:
        return None
    return target if target.startswith("https://") else None


def redirect_reply(token: str) -> Reply:
    """What vertexaisearch.cloud.google.com answers for a token: 302 to its source, or 404."""
    target = target_of(token)
    if target is None:
        return 404, Raw("<html><body><h1>Not Found</h1></body></html>\n")
    return 302, Raw(f'<HTML><BODY>The document has moved <A HREF="{target}">here</A>.</BODY></HTML>\n',
                    location=target)


def wrap(text: str, mode: str, prompt: str) -> str:
    """A grounded answer without JSON mode, as 2.x models write it: bare, in prose or in a code fence."""
    if mode == "mixed":
        mode = ("json", "prose", "fence")[digest(f"wrap\x1f{prompt}") % 3]
    if mode == "prose":
        return (f"Based on the search results, here is what I found:\n\n{text}\n\n"
                "These details come from public sources and may have changed.")
    return f"```json\n{text}\n```" if mode == "fence" else text


def grounding_metadata(prompt: str, text: str, seed: int, redirect_url: Callable[[str], str]) -> dict[str, Any]:
    """groundingMetadata: queries, chunks whose uri is a redirect served here, one support, the entry point."""
    h = digest(f"{seed}\x1f{prompt}")
    _, _, firm = firm_of(prompt, seed)
    domain = domain_of(prompt, seed)
    quoted = re.findall(r'"([^"]{3,80})"', prompt.split(SCHEMA_MARKER)[0])
    subject = quoted[0] if quoted else " ".join(prompt.split()[:6])
    queries = [f"{subject} point of contact", f"{subject} {domain} team"][: 1 + h % 2]
    targets = [f"https://www.{domain}/team", f"https://www.linkedin.com/company/{firm}",
               f"https://www.crunchbase.com/organization/{firm}", f"https://www.{domain}/contact"][: 2 + h % 3]
    chunks = [{"web": {"uri": redirect_url(t), "title": (urlsplit(t).hostname or "").removeprefix("www.")}}
              for t in targets]
    chips = "".join(f'<a class="chip" href="https://www.google.com/search?q={q.replace(" ", "+")}">{q}</a>'
                    for q in queries)
    return {"searchEntryPoint": {"renderedContent": f'<style>.chip {{ display: inline-block; }}</style>'
                                                   f'<div class="container">{chips}</div>'},
            "groundingChunks": chunks,
            "groundingSupports": [{"segment": {"endIndex": len(text.encode()), "text": text},
                                   "groundingChunkIndices": list(range(len(chunks)))}],
            "webSearchQueries": queries}
