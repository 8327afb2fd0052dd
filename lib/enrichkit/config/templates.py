"""Prompt, URL and body templates: `{column}` placeholders, the column name taken literally."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from enrichkit.errors import ConfigError


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


def template_tree(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return Template.parse(value, where)
    if isinstance(value, dict):
        return {k: template_tree(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [template_tree(v, where) for v in value]
    return value


def templates_in(value: Any) -> list[Template]:
    if isinstance(value, Template):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in templates_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in templates_in(v)]
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
