"""HTTP stages: one request per record, fields taken from the JSON answer by dotted path.

A request ends within `--timeout` whatever the server does (`enrichkit.pace.deadline`), and its answer may
inflate to at most `MAX_BODY_BYTES` once decompressed (a gzip bomb fails the record, memory stays bounded).
"""

from __future__ import annotations

import json
import time
from typing import Any

from enrichkit.config.stages import Stage, render_tree
from enrichkit.errors import StageFailure
from enrichkit.pace.deadline import DeadlineExceeded, call_with_deadline
from enrichkit.providers.base import Answer, BaseProvider, Request
from enrichkit.providers.sessions import ThreadSessions
from enrichkit.tables.records import stringify

MAX_BODY_BYTES = 16 * 1024 * 1024  # an answer's body after decompression
_CHUNK = 64 * 1024


class HttpProvider(BaseProvider):
    """`requests`, one Session per worker thread, every Session closed with the provider."""

    kind = "http"
    remote = True

    def __init__(self, *, timeout: float, max_body: int = MAX_BODY_BYTES) -> None:
        self._timeout = timeout
        self._max_body = max_body
        self._sessions = ThreadSessions()

    def prepare(self, stage: Stage, values: dict[str, str]) -> Request:
        assert stage.url is not None
        payload = {"method": stage.method, "url": stage.url.render(values),
                   "headers": {k: t.render(values) for k, t in stage.headers.items()},
                   "json": render_tree(stage.body, values) if stage.body is not None else None}
        # Everything the request carries decides its answer (the key is a hash: header secrets are not stored).
        return Request(stage, payload, answer_inputs={"kind": "http", **payload, "fields": stage.fields})

    def call(self, request: Request) -> Answer:
        session = self._sessions.get()  # this worker's; a request given up on takes it along (not thread-safe)
        deadline = time.monotonic() + self._timeout
        response, body = call_with_deadline(lambda: self._fetch(session, request.payload, deadline),
                                            self._timeout, on_abandon=self._sessions.discard)
        response.raise_for_status()  # HTTPError is classified by its status code
        try:
            data = json.loads(body)
        except ValueError:
            raise StageFailure("validation_error", f"answer is not JSON: {body[:120]!r}") from None
        return Answer({name: stringify(lookup(data, path)) for name, path in request.stage.fields.items()})

    def _fetch(self, session: Any, p: dict[str, Any], deadline: float) -> tuple[Any, bytes]:
        """The (closed) response and its decompressed body, read in chunks: no further than the deadline, no
        more than the cap."""
        import requests
        import urllib3

        response = session.request(p["method"], p["url"], headers=p["headers"], json=p["json"],
                                   timeout=self._timeout, stream=True)
        try:
            body = bytearray()
            try:
                for chunk in response.iter_content(_CHUNK):
                    body += chunk
                    if len(body) > self._max_body:
                        raise StageFailure("client_error", f"the answer inflates to more than "
                                           f"{self._max_body // (1024 * 1024)} MB (a compressed bomb?); not read")
                    if time.monotonic() > deadline:
                        raise DeadlineExceeded(f"no complete answer within --timeout {self._timeout:g} s")
            except requests.ConnectionError as exc:
                # requests reports a read that timed out in the body as a connection error: it is a timeout.
                if isinstance(exc.args[0] if exc.args else None, urllib3.exceptions.ReadTimeoutError):
                    raise DeadlineExceeded(f"the answer stalled for --timeout {self._timeout:g} s") from None
                raise
            return response, bytes(body)
        finally:
            response.close()

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
