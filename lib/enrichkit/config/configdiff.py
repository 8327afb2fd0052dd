"""What changed in a job's configuration: the stages file's inputs to the config fingerprint (kept in the
checkpoint) compared key by key, so a resume that stops on a change says which stage and key changed."""

from __future__ import annotations

import json
from typing import Any


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if not _same(old.get(k), new.get(k))]


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """"stage 'poc': prompt changed; [defaults] model changed" (empty when nothing differs or `old` is unknown)."""
    if not old:
        return ""
    parts: list[str] = []
    before = {str(s.get("name")): s for s in old.get("stages") or [] if isinstance(s, dict)}
    after = {str(s.get("name")): s for s in new.get("stages") or [] if isinstance(s, dict)}
    for name, stage in after.items():
        if name not in before:
            parts.append(f"stage {name!r} added")
        elif keys := _keys(before[name], stage):
            parts.append(f"stage {name!r}: {', '.join(keys)} changed")
    parts += [f"stage {name!r} removed" for name in before if name not in after]
    common = [n for n in before if n in after]
    if not parts and common != [n for n in after if n in before]:
        parts.append("the stages' order changed")
    if keys := _keys(old.get("defaults") or {}, new.get("defaults") or {}):
        parts.append(f"[defaults] {', '.join(keys)} changed")
    if not _same(old.get("models"), new.get("models")) and not parts:
        parts.append(f"the models changed ({', '.join(map(str, old.get('models') or []))} -> "
                     f"{', '.join(map(str, new.get('models') or []))}; --model?)")
    if not _same(old.get("id_columns"), new.get("id_columns")):
        parts.append("--id-columns changed")
    return "; ".join(parts)
