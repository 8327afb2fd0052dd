"""Python stages: `callable(record: dict) -> dict of fields`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from enrichkit.providers.answers import Answer
from enrichkit.records import stringify
from enrichkit.retry import StageFailure
from enrichkit.stages import Stage


def call_function(stage: Stage, func: Callable[[dict[str, str]], Any], values: dict[str, str]) -> Answer:
    result = func(dict(values))
    if not isinstance(result, dict):
        raise StageFailure("validation_error", f"{stage.function} returned {type(result).__name__}, not a dict")
    missing = [f for f in stage.fields if f not in result]
    if missing:
        raise StageFailure("validation_error", f"{stage.function} returned no {', '.join(missing)}")
    return Answer({name: stringify(result[name]) for name in stage.fields})
