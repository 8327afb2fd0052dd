"""The stages file (TOML, or the same tables given in Python): read and checked whole at start.

Every key is known: a typo (`serach = true`, `[default]`), a wrong type (`temperature = "hot"`) or
a value out of range (`rpm = 0`) stops the run before the first request, naming the file, the key
and, for a typo, the nearest valid key. What the tables become (`Stage`, `StagesConfig`, ...):
`enrichkit.config.stagetypes`, exported from here.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from enrichkit.config.stagetypes import DEFAULT_MODEL, FieldSpec, Stage, StagesConfig
from enrichkit.config.templates import Template, render_tree, template_tree
from enrichkit.errors import ConfigError
from enrichkit.pace.deadline import MAX_SECONDS

FIELD_TYPES = ("string", "number", "integer", "boolean")
STAGE_KINDS = ("llm", "python", "http")
DEFAULT_MAX_OUTPUT_TOKENS = 8192
THINKING_LEVELS = ("minimal", "low", "medium", "high")
SERVICE_TIERS = ("standard", "flex")
__all__ = ["DEFAULT_MODEL", "FieldSpec", "Stage", "StagesConfig", "Template", "load_stages", "render_tree",
           "stages_from_python"]


def _number(low: float | None = None, high: float | None = None, *, integer: bool = False,
            above: float | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return "an integer" if integer else "a number"
        if not math.isfinite(value):
            return "a finite number"
        if above is not None and value <= above:
            return f"a number above {above:g}"
        if (low is not None and value < low) or (high is not None and value > high):
            return f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        return None
    return check


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"one of {', '.join(map(repr, choices))}"


def _names(value: Any) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
    return None if ok else "a list of field names"


def _url(value: Any) -> str | None:
    return None if isinstance(value, str) and value.startswith(("http://", "https://")) else "an http(s) URL"


# Model settings: in [defaults] (for every llm stage) or on one stage.
MODEL_KEYS: dict[str, Callable[[Any], str | None]] = {
    "model": _text, "temperature": _number(0, 2), "max_output_tokens": _number(1, integer=True),
    "thinking_budget": _number(-1, integer=True), "thinking_level": _one_of(*THINKING_LEVELS),
    "system_instruction": _text, "service_tier": _one_of(*SERVICE_TIERS),
    "rpm": _number(above=0), "tpm": _number(above=0), "timeout": _number(0, MAX_SECONDS, above=0),
}
DEFAULT_KEYS = {**MODEL_KEYS, "notify_url": _url}
COMMON_STAGE_KEYS: dict[str, Callable[[Any], str | None]] = {
    "name": _text, "type": _one_of(*STAGE_KINDS), "fields": lambda v: None, "skip_if_filled": _names}
STAGE_KEYS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "llm": {**COMMON_STAGE_KEYS, **MODEL_KEYS, "prompt": _text, "search": _flag, "sources": _flag,
            "fallback_model": _text, "batch": _flag},  # batch = false: synchronous even in --batch
    "python": {**COMMON_STAGE_KEYS, "function": _text},
    "http": {**COMMON_STAGE_KEYS, "url": _text, "method": _one_of("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"),
             "headers": lambda v: None if isinstance(v, dict) else "a table", "json": lambda v: None},
}
FIELD_KEYS: dict[str, Callable[[Any], str | None] | None] = {
    "type": None,  # checked with its own message
    "description": _text, "enum": lambda v: None if isinstance(v, list) and v else "a non-empty list",
    "required": _flag}
PRICE_KEYS = {"input": _number(0), "output": _number(0), "cached_input": _number(0),
              "grounding_per_1000": _number(0), "grounding": _one_of("prompt", "query")}


def load_stages(path: str | Path) -> StagesConfig:
    """Read and check a stages file; every problem is a one-line `ConfigError`."""
    if not str(path):  # a job whose stages came from Python records no file (Path("") would read the folder ".")
        raise ConfigError("this job's stages were given in Python, not in a stages file: give them again "
                          "(enrichkit.enrich(..., stages=[...], resume=True)), or a stages file (--stages-file)")
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: stages file not found (use --stages-file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the stages file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_stages(data, path)


def stages_from_python(definitions: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> StagesConfig:
    """Stages given in Python (the library's `stages=`): a list of stage tables, or a whole file's tables
    ({"defaults": ..., "stages": [...], "prices": ...}), checked exactly as a stages file is. A python
    stage's `function` may be a callable instead of "module:callable"."""
    data: Any = dict(definitions) if isinstance(definitions, Mapping) else {"stages": list(definitions)}
    tables = data.get("stages")
    if not isinstance(tables, list):
        raise ConfigError("stages: give a stages file's path, or a list of stage tables (dicts)")
    functions = {str(t.get("name")): t["function"] for t in tables
                 if isinstance(t, Mapping) and callable(t.get("function"))}
    data["stages"] = [_with_function_name(t) for t in tables]  # dicts; anything else: the usual message
    stages = parse_stages(data, Path(PYTHON_STAGES))
    return StagesConfig(stages.path, stages.defaults,
                        [replace(s, func=functions.get(s.name)) for s in stages.stages], stages.prices)


PYTHON_STAGES = "<stages given in Python>"


def _with_function_name(table: Any) -> Any:
    """A callable `function` stands as its "module:qualname" in the table (what the fingerprint hashes, the
    same in every process), the callable itself is kept beside."""
    if isinstance(table, Mapping) and callable(table.get("function")):
        func = table["function"]
        name = f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', type(func).__name__)}"
        return {**table, "function": name}
    return table


def parse_stages(data: dict[str, Any], path: Path) -> StagesConfig:
    """Check a stages file's tables (read from TOML, or given in Python); `path` names them in messages."""
    _check_keys(data, {"defaults": None, "stages": None, "prices": None}, f"{path}", "top-level key")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [defaults] must be a table")
    _check_keys(defaults, DEFAULT_KEYS, f"{path}: [defaults]", "key")
    prices = data.get("prices", {})
    if not isinstance(prices, dict) or not all(isinstance(v, dict) for v in prices.values()):
        raise ConfigError(f'{path}: [prices] must hold one table per model ([prices."gemini-x"] input = ...)')
    for model, table in prices.items():
        _check_keys(table, PRICE_KEYS, f"{path}: [prices.{model!r}]", "key")
        if "input" not in table or "output" not in table:
            raise ConfigError(f"{path}: [prices.{model!r}] needs input and output (USD per million tokens)")
    tables = data.get("stages")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[stages]] defined")
    stages: list[Stage] = []
    for i, table in enumerate(tables):
        stage = _parse_stage(table, defaults, f"{path}: stage {i + 1}")
        if any(s.name == stage.name for s in stages):
            raise ConfigError(f"{path}: two stages are named {stage.name!r}")
        stages.append(stage)
    return StagesConfig(path, defaults, stages, prices)


def _check_keys(table: dict[str, Any], known: dict[str, Any], where: str, what: str) -> None:
    for key, value in table.items():
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(known)})"
            raise ConfigError(f"{where}: unknown {what} {key!r}{hint}")
        check = known[key]
        problem = check(value) if check is not None else None
        if problem:
            raise ConfigError(f"{where}: {key} must be {problem}, not {value!r}")


def _parse_stage(table: Any, defaults: dict[str, Any], where: str) -> Stage:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: each [[stages]] entry must be a table")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: every stage needs a name")
    where = f"{where} ({name!r})"
    kind = table.get("type", "llm")
    if kind not in STAGE_KINDS:
        raise ConfigError(f"{where}: type must be one of {', '.join(STAGE_KINDS)}, not {kind!r}")
    _check_keys(table, STAGE_KEYS[kind], where, f"key for a {kind} stage")
    fields, specs = _parse_fields(table.get("fields", {}), kind, where)
    if kind in ("llm", "http") and not fields:
        raise ConfigError(f"{where}: an {kind} stage needs [stages.fields]")
    kwargs: dict[str, Any] = {"name": name, "kind": kind, "fields": fields, "specs": specs, "raw": table,
                              "skip_if_filled": tuple(table.get("skip_if_filled", ()))}
    if kind == "llm":
        kwargs["prompt"] = Template.parse(table.get("prompt") or _missing(where, "a prompt"), f"{where} prompt")
        kwargs["model"] = table.get("model")
        kwargs["search"] = bool(table.get("search", False))
        kwargs["sources"] = bool(table.get("sources", True))
        kwargs["fallback_model"] = table.get("fallback_model")
        settings = {k: v for k, v in defaults.items() if k in MODEL_KEYS and k != "model"}
        settings.update({k: v for k, v in table.items() if k in MODEL_KEYS and k != "model"})
        settings.setdefault("max_output_tokens", DEFAULT_MAX_OUTPUT_TOKENS)
        if "thinking_budget" in settings and "thinking_level" in settings:
            raise ConfigError(f"{where}: set thinking_budget (2.5 models) or thinking_level (3.x), not both")
        kwargs["settings"] = settings
    elif kind == "python":
        function = table.get("function")
        if not isinstance(function, str) or ":" not in function:
            raise ConfigError(f"{where}: a python stage needs function = \"module:callable\"")
        kwargs["function"] = function
    else:
        url = table.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "{")):
            raise ConfigError(f"{where}: an http stage needs url = \"https://...\"")
        kwargs["url"] = Template.parse(url, f"{where} url")
        kwargs["method"] = str(table.get("method", "GET")).upper()
        kwargs["headers"] = {k: Template.parse(str(v), f"{where} header {k}")
                             for k, v in table.get("headers", {}).items()}
        kwargs["body"] = template_tree(table.get("json"), f"{where} json")
    return Stage(**kwargs)


def _missing(where: str, what: str) -> str:
    raise ConfigError(f"{where}: an llm stage needs {what}")


def _parse_fields(fields: Any, kind: str, where: str) -> tuple[dict[str, str], dict[str, FieldSpec]]:
    if not isinstance(fields, dict):
        raise ConfigError(f"{where}: [stages.fields] must be a table of field = type")
    if kind == "http":
        if any(not isinstance(v, str) for v in fields.values()):
            raise ConfigError(f"{where}: an http stage's fields map names to dotted paths (\"data.email\")")
        return dict(fields), {}
    plain: dict[str, str] = {}
    specs: dict[str, FieldSpec] = {}
    for name, value in fields.items():
        spec_where = f"{where} field {name!r}"
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{spec_where}: give a type (\"string\") or a table {{ type = ..., description = ... }}")
        _check_keys(value, FIELD_KEYS, spec_where, "key")
        if value.get("type") not in FIELD_TYPES:
            raise ConfigError(f"{spec_where}: field types must be one of {', '.join(FIELD_TYPES)}, "
                              f"not {value.get('type')!r}")
        if kind == "python" and set(value) - {"type"}:
            raise ConfigError(f"{spec_where}: a python stage's fields take a type only")
        enum = value.get("enum")
        plain[name] = str(value["type"])
        specs[name] = FieldSpec(str(value["type"]), value.get("description"), tuple(enum) if enum else None,
                                bool(value.get("required", False)))
    return plain, specs
