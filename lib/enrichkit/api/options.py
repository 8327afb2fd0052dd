"""The library's keyword options (`max_workers=10`, `select_stages=[...]`, ...) checked into `RunOptions`."""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

from enrichkit.config.plan import RunOptions
from enrichkit.errors import UsageError

StagesArg = str | os.PathLike[str] | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
InlineStages = Sequence[Mapping[str, Any]] | Mapping[str, Any]

# RunOptions fields that are not options of the library (`stages` is the stages themselves there).
_NOT_OPTIONS = {"input", "output", "stages_file", "stages", "given", "verbose"}
OPTION_NAMES = (*(f.name for f in dataclasses.fields(RunOptions) if f.name not in _NOT_OPTIONS), "select_stages")
_TYPES = {f.name: f.type for f in dataclasses.fields(RunOptions)}


def run_options(input: str | os.PathLike[str], output: str | os.PathLike[str], stages: StagesArg,
                options: dict[str, Any]) -> tuple[RunOptions, InlineStages | None]:
    """`RunOptions` from keyword options (all of them "given": they override a job's recorded ones), and the
    stages given in Python (None: a stages file)."""
    unknown = [name for name in options if name not in OPTION_NAMES]
    if unknown:
        near = difflib.get_close_matches(unknown[0], OPTION_NAMES, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (options: {', '.join(OPTION_NAMES)})"
        raise UsageError(f"unknown option {unknown[0]!r}{hint}")
    values: dict[str, Any] = {k: v for k, v in options.items() if v is not None and k != "select_stages"}
    for name, value in values.items():
        _check_type(name, value)
    selected = options.get("select_stages")
    if selected is not None:
        values["stages"] = [selected] if isinstance(selected, str) else list(selected)
    inline: InlineStages | None = None
    if isinstance(stages, str | os.PathLike):
        values["stages_file"] = os.fspath(stages)
    elif stages is not None:
        if not isinstance(stages, Sequence | Mapping) or isinstance(stages, bytes):
            raise UsageError("stages must be a stages file's path or a list of stage tables (dicts)")
        inline = cast("InlineStages", stages)
        values["stages_file"] = ""
    for name in ("id_columns",):
        if isinstance(values.get(name), str):
            values[name] = [v.strip() for v in values[name].split(",") if v.strip()]
        elif name in values:
            values[name] = list(values[name])
    given = frozenset(values)
    return RunOptions(input=os.fspath(input), output=os.fspath(output), **values, given=given), inline


def _check_type(name: str, value: Any) -> None:
    kind = str(_TYPES.get(name, ""))
    if kind.startswith("bool"):
        ok = isinstance(value, bool)
    elif kind.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind.startswith("float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind.startswith("str"):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise UsageError(f"option {name} must be {kind.split(' ')[0]}, not {value!r}")
