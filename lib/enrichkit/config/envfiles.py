"""Where settings come from besides the options: the environment, then `.env` files, read as data.

The `.env` files looked at, in this order (a variable set in the environment, or by an earlier file, wins):

1. `.env` in the current folder;
2. `.env` in the stages file's folder (a job kept in one folder with its stages file and key);
3. `.env` in the checkout's folder, when enrichkit runs from a checkout (where `cp .env.example .env`
   puts it), not when it is installed with `pip install .`.

The library reads them into an `Environment` that the key and the base URL are looked up in; it never writes
`os.environ` (the CLI, at the process edge, exports what they hold: `Environment.exported`). The missing-key
message names each file and what was found there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enrichkit.config.plan import RunOptions

KEY_NAMES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_CHECKOUT = Path(__file__).resolve().parents[3]  # lib/enrichkit/config/envfiles.py -> the checkout


@dataclass(frozen=True)
class Environment:
    """The variables a run reads besides its options: the process environment's first, then each `.env` file's
    in order. `files` are the files looked at (they need not exist); `values` holds each one's variables (None:
    no such file)."""

    files: tuple[Path, ...] = ()
    values: tuple[Mapping[str, str | None] | None, ...] = ()
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def get(self, name: str) -> str | None:
        """The variable as a run sees it: the environment's, else the first `.env` file's that sets it."""
        if name in self.environ:
            return self.environ[name]
        for found in self.values:
            value = found.get(name) if found is not None else None
            if value is not None:
                return value
        return None

    def in_files(self, name: str) -> list[str]:
        """Every value the `.env` files give `name` (shadowed ones too: all of them are secrets)."""
        return [v for found in self.values if found is not None and (v := found.get(name)) is not None]

    def exported(self) -> dict[str, str]:
        """The `.env` files' variables the environment lacks, as loading them into it would set them."""
        out: dict[str, str] = {}
        for found in self.values:
            for name, value in (found or {}).items():
                if value is not None and name not in self.environ and name not in out:
                    out[name] = value
        return out


def env_files(stages_file: str | Path | None) -> list[Path]:
    """The `.env` files looked at, in order, each once (absolute; they need not exist)."""
    folders = [Path.cwd()]
    if stages_file:
        folders.append(Path(stages_file).absolute().parent)
    if (_CHECKOUT / "scripts" / "enrich.py").is_file() and (_CHECKOUT / "lib" / "enrichkit").is_dir():
        folders.append(_CHECKOUT)
    found: list[Path] = []
    for folder in folders:
        path = folder / ".env"
        if not any(_same(path, seen) for seen in found):
            found.append(path)
    return found


def read_environment(stages_file: str | Path | None, environ: Mapping[str, str] | None = None) -> Environment:
    """The environment (os.environ unless given) and the `.env` files for a run with this stages file."""
    from dotenv import dotenv_values

    paths = env_files(stages_file)
    values = tuple(dict(dotenv_values(path)) if path.is_file() else None for path in paths)
    return Environment(tuple(paths), values, os.environ if environ is None else environ)


def missing_key_message(env: Environment) -> str:
    """The line for a run that needs a key and found none: where it looked, and what each file held."""

    def what(found: Mapping[str, str | None] | None) -> str:
        if found is None:
            return "no such file"
        return "has an empty GEMINI_API_KEY" if "GEMINI_API_KEY" in found else "holds no GEMINI_API_KEY"

    looked = "; ".join(f"{path} ({what(found)})" for path, found in zip(env.files, env.values, strict=True))
    return ("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment or in a .env file; "
            f"looked in the environment and in {looked}")


def with_environment(options: RunOptions, env: Environment) -> RunOptions:
    """GEMINI_BASE_URL (from the environment or a .env file) counts as `--base-url` given: recorded with the
    job, so a bare `--resume`, cron and the dashboard's Resume reach the same API. The flag wins over it."""
    url = (env.get("GEMINI_BASE_URL") or "").strip()
    if not url or "base_url" in options.given:
        return options
    return replace(options, base_url=url, given=options.given | {"base_url"})


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b
