"""What a stages file defines, as types: `Stage` (one stage; a python stage imports its function), `FieldSpec`,
and `StagesConfig` (the stages selected, their models and limits, the placeholder check, the fingerprint).

Read and checked by `enrichkit.config.stages`, which every other module imports them from.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.config.templates import Template, templates_in
from enrichkit.errors import ConfigError
from enrichkit.store.output import COST_COLUMN, ID_COLUMN, JOB_COLUMN

DEFAULT_MODEL = "gemini-3.8-flash"


@dataclass(frozen=True)
class FieldSpec:
    """An LLM or python stage's output field: its JSON type; llm fields may be described, restricted to an
    enum, and required (a null, meaning "unknown", is then a validation error instead of an empty cell)."""

    type: str
    description: str | None = None
    enum: tuple[Any, ...] | None = None
    required: bool = False


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline; `fields` maps output column -> JSON type (http: -> dotted path)."""

    name: str
    kind: str
    fields: dict[str, str]
    specs: dict[str, FieldSpec] = field(default_factory=dict)
    prompt: Template | None = None
    model: str | None = None  # None: --model, else [defaults] model
    settings: dict[str, Any] = field(default_factory=dict)  # model settings, [defaults] merged in
    search: bool = False
    sources: bool = True
    fallback_model: str | None = None
    skip_if_filled: tuple[str, ...] = ()
    function: str | None = None
    url: Template | None = None
    method: str = "GET"
    headers: dict[str, Template] = field(default_factory=dict)
    body: Any = None  # the `json` table of an http stage, strings as Templates
    raw: dict[str, Any] = field(default_factory=dict)  # the TOML table, for the fingerprint
    func: Callable[[dict[str, str]], Any] | None = field(default=None, compare=False)  # a callable given in Python

    @property
    def source_fields(self) -> list[str]:
        """The columns a grounded stage adds after its fields: sources, queries, whether it was grounded."""
        if self.kind == "llm" and self.search and self.sources:
            return [f"{self.name}_sources", f"{self.name}_queries", f"{self.name}_grounded"]
        return []

    @property
    def output_fields(self) -> list[str]:
        return [*self.fields, *self.source_fields]

    def placeholders(self) -> list[str]:
        found = [t for t in (self.prompt, self.url) if t is not None]
        found += list(self.headers.values())
        found += templates_in(self.body)
        return [name for template in found for name in template.placeholders]

    def load_function(self, search: Sequence[Path] = ()) -> Callable[[dict[str, str]], Any]:
        """Import `module:callable` of a python stage, also from the folders in `search` (the stages file's
        folder, the current one); a module that fails to import names its file and line."""
        if self.func is not None:
            return self.func
        assert self.function is not None
        module_name, _, attr = self.function.partition(":")
        try:
            with _importable_from(search):
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise ConfigError(f"stage {self.name!r}: no module named {module_name!r} for function "
                                  f"{self.function!r} (is it on PYTHONPATH?)") from None
            raise ConfigError(f"stage {self.name!r}: importing {module_name!r} failed: {_where(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - the user's module may raise anything at import
            raise ConfigError(f"stage {self.name!r}: importing {module_name!r} failed: {_where(exc)}") from None
        func = getattr(module, attr, None)
        if func is None:
            raise ConfigError(f"stage {self.name!r}: module {module_name!r} has no {attr!r} "
                              f"({getattr(module, '__file__', '')})")
        if not callable(func):
            raise ConfigError(f"stage {self.name!r}: {self.function!r} is not callable")
        return func  # type: ignore[no-any-return]


@contextlib.contextmanager
def _importable_from(folders: Sequence[Path]) -> Iterator[None]:
    """Put `folders` at the front of the import path for one import (a stage module beside the stages file
    is found without PYTHONPATH); the path is restored after it."""
    saved = list(sys.path)
    sys.path[:0] = [str(f) for f in folders if str(f) not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = saved


def _where(exc: BaseException) -> str:
    """'SyntaxError: invalid syntax at /path/mod.py line 3', or the innermost frame of an import error."""
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__}: {exc.msg} at {exc.filename} line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    where = f" at {user[-1].filename} line {user[-1].lineno}" if user else ""
    return f"{type(exc).__name__}: {exc}{where}"


@dataclass(frozen=True)
class StagesConfig:
    path: Path
    defaults: dict[str, Any]
    stages: list[Stage]
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> prices given in the stages file

    @property
    def model(self) -> str:
        return str(self.defaults.get("model") or DEFAULT_MODEL)

    @property
    def output_fields(self) -> list[str]:
        return [f for s in self.stages for f in s.output_fields]

    def select(self, names: Sequence[str] | None) -> StagesConfig:
        """Keep only the named stages, in file order."""
        if not names:
            return self
        known = [s.name for s in self.stages]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)} in --stages; "
                              f"the stages file defines: {', '.join(known)}")
        return StagesConfig(self.path, self.defaults, [s for s in self.stages if s.name in names], self.prices)

    def model_for(self, stage: Stage, override: str | None) -> str:
        """The model an llm stage asks: its own, else --model (`override`), else [defaults]."""
        return stage.model or override or self.model

    def models(self, override: str | None) -> list[str]:
        """Every model the llm stages use (with --model as the default), fallbacks included, in order."""
        return list(self.limits(override, None, None))

    def limits(self, override: str | None, rpm: float | None, tpm: float | None
               ) -> dict[str, tuple[float | None, float | None]]:
        """Each model's (rpm, tpm), in the order the stages name them: --rpm/--tpm (`rpm`, `tpm`), else the
        settings of the first stage that uses the model (its own, else [defaults])."""
        found: dict[str, tuple[float | None, float | None]] = {}
        for s in self.stages:
            if s.kind == "llm":
                for m in (self.model_for(s, override), s.fallback_model):
                    if m and m not in found:
                        found[m] = (rpm if rpm is not None else s.settings.get("rpm"),
                                    tpm if tpm is not None else s.settings.get("tpm"))
        return found

    def check_placeholders(self, columns: Sequence[str]) -> None:
        """Every placeholder names an input column or a field of an earlier stage; fail at start otherwise."""
        available = set(columns)
        for stage in self.stages:
            missing = [p for p in stage.placeholders() if p not in available]
            if missing:
                raise ConfigError(
                    f"stage {stage.name!r} uses {', '.join('{' + m + '}' for m in missing)}, which is neither "
                    f"an input column nor a field of an earlier stage (columns: {', '.join(columns)})")
            unknown = [f for f in stage.skip_if_filled if f not in available | set(stage.fields)]
            if unknown:
                raise ConfigError(f"stage {stage.name!r}: skip_if_filled names {', '.join(unknown)}, which is "
                                  "neither an input column nor a field of this or an earlier stage")
            own_columns = [f for f in stage.output_fields if f in (COST_COLUMN, ID_COLUMN, JOB_COLUMN)]
            if own_columns:
                raise ConfigError(f"stage {stage.name!r}: field(s) {', '.join(own_columns)} are named like columns "
                                  "enrichkit adds to every output row; rename them")
            clash = [f for f in stage.output_fields if f in available]
            # Filling an input column's gaps is what skip_if_filled is for: such a field is that column, filled in
            # place where the input left it empty. Any other clash would overwrite values.
            own = set(stage.skip_if_filled) & set(columns)
            clash = [f for f in clash if f not in own]
            if clash:
                raise ConfigError(f"stage {stage.name!r}: field(s) {', '.join(clash)} would overwrite an input "
                                  "column or an earlier field; rename them (to fill only an input column's empty "
                                  "cells, list it in the stage's skip_if_filled)")
            available.update(stage.output_fields)

    def fingerprint(self, id_columns: Sequence[str] | None, model: str | None = None) -> str:
        """Hash of what decides the answers: the selected stages, the models, the ID columns."""
        blob = json.dumps(self.fingerprint_inputs(id_columns, model), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def fingerprint_inputs(self, id_columns: Sequence[str] | None, model: str | None = None) -> dict[str, Any]:
        """What the fingerprint hashes (kept in the checkpoint, so a change can be named: config.configdiff)."""
        return {
            "stages": [s.raw for s in self.stages],
            "defaults": {k: v for k, v in self.defaults.items() if k not in ("rpm", "tpm", "timeout", "notify_url")},
            "models": self.models(model),
            "id_columns": list(id_columns) if id_columns else None,
        }
