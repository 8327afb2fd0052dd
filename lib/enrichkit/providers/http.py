"""HTTP stages: one request per record, fields taken from the JSON answer by dotted path."""

from __future__ import annotations

import threading
from typing import Any

from enrichkit.providers.answers import Answer
from enrichkit.records import stringify
from enrichkit.retry import StageFailure
from enrichkit.stages import Stage, render_tree


class HttpProvider:
    """`requests` with one Session per worker thread (a Session is not documented as thread-safe)."""

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._local = threading.local()

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
        return session

    def call(self, stage: Stage, values: dict[str, str]) -> Answer:
        assert stage.url is not None
        url = stage.url.render(values)
        headers = {k: t.render(values) for k, t in stage.headers.items()}
        body = render_tree(stage.body, values) if stage.body is not None else None
        response = self._session().request(stage.method, url, headers=headers, json=body, timeout=self._timeout)
        response.raise_for_status()  # HTTPError is classified by its status code
        try:
            data = response.json()
        except ValueError:
            raise StageFailure("validation_error", f"answer is not JSON: {response.text[:120]!r}") from None
        return Answer({name: stringify(lookup(data, path)) for name, path in stage.fields.items()})


def lookup(data: Any, path: str) -> Any:
    """`data.items.0.email` style access; a missing step gives None (an empty field)."""
    node = data
    for step in path.split("."):
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and step.lstrip("-").isdigit() and -len(node) <= int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node
