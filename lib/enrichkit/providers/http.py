"""HTTP stages: one request per record, fields taken from the JSON answer by dotted path."""

from __future__ import annotations

from typing import Any

from enrichkit.errors import StageFailure
from enrichkit.providers.base import Answer, BaseProvider, Request
from enrichkit.providers.sessions import ThreadSessions
from enrichkit.records import stringify
from enrichkit.stages import Stage, render_tree


class HttpProvider(BaseProvider):
    """`requests`, one Session per worker thread, every Session closed with the provider."""

    kind = "http"
    remote = True

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._sessions = ThreadSessions()

    def prepare(self, stage: Stage, values: dict[str, str]) -> Request:
        assert stage.url is not None
        payload = {"method": stage.method, "url": stage.url.render(values),
                   "headers": {k: t.render(values) for k, t in stage.headers.items()},
                   "json": render_tree(stage.body, values) if stage.body is not None else None}
        # Everything the request carries decides its answer (the key is a hash: header secrets are not stored).
        return Request(stage, payload, material={"kind": "http", **payload, "fields": stage.fields})

    def call(self, request: Request) -> Answer:
        p = request.payload
        response = self._sessions.get().request(p["method"], p["url"], headers=p["headers"], json=p["json"],
                                           timeout=self._timeout)
        try:
            response.raise_for_status()  # HTTPError is classified by its status code
        finally:
            response.close()
        try:
            data = response.json()
        except ValueError:
            raise StageFailure("validation_error", f"answer is not JSON: {response.text[:120]!r}") from None
        return Answer({name: stringify(lookup(data, path)) for name, path in request.stage.fields.items()})

    def close(self) -> None:
        self._sessions.close()


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
