"""Python stages: `callable(record: dict) -> dict of fields`, run in the worker thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from enrichkit.config.stages import Stage
from enrichkit.errors import StageFailure
from enrichkit.providers.base import Answer, BaseProvider, Request
from enrichkit.tables.records import stringify

Function = Callable[[dict[str, str]], Any]


class FunctionProvider(BaseProvider):
    """Calls the stage's function on a copy of the record so far. Local: not paced, cached or abandoned."""

    kind = "python"
    remote = False

    def __init__(self, functions: dict[str, Function]) -> None:
        self._functions = functions

    def prepare(self, stage: Stage, values: dict[str, str]) -> Request:
        return Request(stage, payload=values)

    def call(self, request: Request) -> Answer:
        stage = request.stage
        try:
            result = self._functions[stage.name](dict(request.payload))
        except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
            # The user's function (or a library it calls) tried to end the program: that is its record's failure,
            # not the run's (a real Ctrl+C reaches the main thread, never a worker).
            raise StageFailure("client_error", f"{stage.function} raised {exc!r}") from None
        if not isinstance(result, dict):
            # The user's function is wrong for every record alike; retrying cannot help.
            raise StageFailure("client_error", f"{stage.function} returned {type(result).__name__}, not a dict")
        missing = [f for f in stage.fields if f not in result]
        if missing:
            raise StageFailure("client_error", f"{stage.function} returned no {', '.join(missing)}")
        cells = {}
        for name in stage.fields:
            value = result[name]
            cells[name] = value if type(value) is str else stringify(value)  # a str is a cell already
        return Answer(cells)

    def close(self) -> None:
        return None
