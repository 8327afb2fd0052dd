"""The stages file (TOML): stage definitions, prompt templates and the config fingerprint."""

from __future__ import annotations

import hashlib
import importlib
import json
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.errors import ConfigError

FIELD_TYPES = ("string", "number", "integer", "boolean")
STAGE_KINDS = ("llm", "python", "http")
DEFAULT_MODEL = "gemini-2.5-flash"


@dataclass(frozen=True)
class Template:
    """A text with `{column}` placeholders; the column name is taken literally, `{{`/`}}` are braces."""

    text: str
    parts: tuple[tuple[str, str | None], ...]  # (literal, placeholder or None)

    @classmethod
    def parse(cls, text: str, where: str) -> Template:
        parts: list[tuple[str, str | None]] = []
        buf: list[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if text.startswith("{{", i) or text.startswith("}}", i):
                buf.append(ch)
                i += 2
            elif ch == "{":
                end = text.find("}", i + 1)
                name = text[i + 1:end] if end != -1 else ""
                if end == -1 or not name or "{" in name:
                    raise ConfigError(f"{where}: unclosed or empty placeholder at character {i + 1} "
                                      "(write {{ and }} for literal braces)")
                parts.append(("".join(buf), name))
                buf = []
                i = end + 1
            elif ch == "}":
                raise ConfigError(f"{where}: a lone '}}' at character {i + 1} (write }}}} for a literal brace)")
            else:
                buf.append(ch)
                i += 1
        parts.append(("".join(buf), None))
        return cls(text, tuple(parts))

    @property
    def placeholders(self) -> list[str]:
        return [name for _, name in self.parts if name is not None]

    def render(self, values: dict[str, str]) -> str:
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(values.get(name, ""))
        return "".join(out)


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline; `fields` maps output column -> JSON type (http: -> dotted path)."""

    name: str
    kind: str
    fields: dict[str, str]
    prompt: Template | None = None
    model: str | None = None
    temperature: float | None = None
    search: bool = False
    function: str | None = None
    url: Template | None = None
    method: str = "GET"
    headers: dict[str, Template] = field(default_factory=dict)
    body: Any = None  # the `json` table of an http stage, strings as Templates
    raw: dict[str, Any] = field(default_factory=dict)  # the TOML table, for the fingerprint

    def placeholders(self) -> list[str]:
        names: list[str] = []
        for template in self._templates():
            names += template.placeholders
        return names

    def _templates(self) -> list[Template]:
        found = [t for t in (self.prompt, self.url) if t is not None]
        found += list(self.headers.values())
        found += _templates_in(self.body)
        return found

    def load_function(self) -> Callable[[dict[str, str]], dict[str, Any]]:
        """Import `module:callable` of a python stage."""
        assert self.function is not None
        module_name, _, attr = self.function.partition(":")
        try:
            module = importlib.import_module(module_name)
            func = getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"stage {self.name!r}: cannot import function {self.function!r} ({exc})") from None
        if not callable(func):
            raise ConfigError(f"stage {self.name!r}: {self.function!r} is not callable")
        return func  # type: ignore[no-any-return]


@dataclass(frozen=True)
class StagesConfig:
    path: Path
    defaults: dict[str, Any]
    stages: list[Stage]

    @property
    def model(self) -> str:
        return str(self.defaults.get("model") or DEFAULT_MODEL)

    @property
    def output_fields(self) -> list[str]:
        return [f for s in self.stages for f in s.fields]

    def select(self, names: Sequence[str] | None) -> StagesConfig:
        """Keep only the named stages, in file order."""
        if not names:
            return self
        known = [s.name for s in self.stages]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)} in --stages; "
                              f"the stages file defines: {', '.join(known)}")
        return StagesConfig(self.path, self.defaults, [s for s in self.stages if s.name in names])

    def check_placeholders(self, columns: Sequence[str]) -> None:
        """Every placeholder names an input column or a field of an earlier stage; fail at start otherwise."""
        available = set(columns)
        for stage in self.stages:
            missing = [p for p in stage.placeholders() if p not in available]
            if missing:
                raise ConfigError(
                    f"stage {stage.name!r} uses {', '.join('{' + m + '}' for m in missing)}, which is neither "
                    f"an input column nor a field of an earlier stage (columns: {', '.join(columns)})")
            clash = [f for f in stage.fields if f in available]
            if clash:
                raise ConfigError(f"stage {stage.name!r}: field(s) {', '.join(clash)} would overwrite an input "
                                  "column or an earlier field; rename them")
            available.update(stage.fields)

    def fingerprint(self, id_columns: Sequence[str] | None) -> str:
        """Hash of what decides the answers: the selected stages, the model defaults, the ID columns."""
        material = {
            "stages": [s.raw for s in self.stages],
            "model": self.model,
            "temperature": self.defaults.get("temperature"),
            "id_columns": list(id_columns) if id_columns else None,
        }
        blob = json.dumps(material, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_stages(path: str | Path) -> StagesConfig:
    """Read and check a stages file; every problem is a one-line `ConfigError`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: stages file not found (use --stages-file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the stages file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    defaults = data.get("defaults", {})
    tables = data.get("stages")
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [defaults] must be a table")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[stages]] defined")
    stages: list[Stage] = []
    for i, table in enumerate(tables):
        stage = _parse_stage(table, f"{path}: stage {i + 1}")
        if any(s.name == stage.name for s in stages):
            raise ConfigError(f"{path}: two stages are named {stage.name!r}")
        stages.append(stage)
    return StagesConfig(path, defaults, stages)


def _parse_stage(table: dict[str, Any], where: str) -> Stage:
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: every stage needs a name")
    where = f"{where} ({name!r})"
    kind = table.get("type", "llm")
    if kind not in STAGE_KINDS:
        raise ConfigError(f"{where}: type must be one of {', '.join(STAGE_KINDS)}, not {kind!r}")
    fields = table.get("fields", {})
    if not isinstance(fields, dict) or any(not isinstance(v, str) for v in fields.values()):
        raise ConfigError(f"{where}: [stages.fields] must map field names to strings")
    if kind != "http":
        bad = {k: v for k, v in fields.items() if v not in FIELD_TYPES}
        if bad:
            raise ConfigError(f"{where}: field types must be one of {', '.join(FIELD_TYPES)}: {bad}")
    if kind in ("llm", "http") and not fields:
        raise ConfigError(f"{where}: an {kind} stage needs [stages.fields]")
    kwargs: dict[str, Any] = {"name": name, "kind": kind, "fields": dict(fields), "raw": table}
    if kind == "llm":
        prompt = table.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{where}: an llm stage needs a prompt")
        kwargs["prompt"] = Template.parse(prompt, f"{where} prompt")
        kwargs["model"] = table.get("model")
        kwargs["temperature"] = table.get("temperature")
        kwargs["search"] = bool(table.get("search", False))
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
        headers = table.get("headers", {})
        if not isinstance(headers, dict):
            raise ConfigError(f"{where}: headers must be a table")
        kwargs["headers"] = {k: Template.parse(str(v), f"{where} header {k}") for k, v in headers.items()}
        kwargs["body"] = _template_tree(table.get("json"), f"{where} json")
    return Stage(**kwargs)


def _template_tree(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return Template.parse(value, where)
    if isinstance(value, dict):
        return {k: _template_tree(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_template_tree(v, where) for v in value]
    return value


def _templates_in(value: Any) -> list[Template]:
    if isinstance(value, Template):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _templates_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in _templates_in(v)]
    return []


def render_tree(value: Any, values: dict[str, str]) -> Any:
    """Render every Template inside a JSON-like tree (an http stage's body)."""
    if isinstance(value, Template):
        return value.render(values)
    if isinstance(value, dict):
        return {k: render_tree(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, values) for v in value]
    return value
