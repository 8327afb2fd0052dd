"""Where settings come from besides the flags: the environment, then `.env` files, and what a run records.

The `.env` files read, in this order (a variable already set, in the environment or by an earlier file,
is never overridden):

1. `.env` in the current folder;
2. `.env` in the stages file's folder (a job kept in one folder with its stages file and key);
3. `.env` in the checkout's folder, when enrichkit runs from a checkout (where `cp .env.example .env`
   puts it), not when it is installed with `pip install .`.

The missing-key message names each of them and what was found there.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enrichkit.config.plan import RunOptions

KEY_NAMES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_CHECKOUT = Path(__file__).resolve().parents[3]  # lib/enrichkit/config/envfiles.py -> the checkout


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


def load_env_files(stages_file: str | Path | None) -> list[Path]:
    """Set, from the `.env` files, every variable the environment lacks; returns the files looked at."""
    from dotenv import load_dotenv

    paths = env_files(stages_file)
    for path in paths:
        if path.is_file():
            load_dotenv(path, override=False)
    return paths


def env_values(stages_file: str | Path | None) -> list[dict[str, str | None]]:
    """The variables of each `.env` file that exists (for registering keys as secrets)."""
    from dotenv import dotenv_values

    return [dict(dotenv_values(path)) for path in env_files(stages_file) if path.is_file()]


def missing_key_message(searched: list[Path]) -> str:
    """The line for a run that needs a key and found none: where it looked, and what each file held."""
    from dotenv import dotenv_values

    def what(path: Path) -> str:
        if not path.is_file():
            return "no such file"
        values = dotenv_values(path)
        return "has an empty GEMINI_API_KEY" if "GEMINI_API_KEY" in values else "holds no GEMINI_API_KEY"

    looked = "; ".join(f"{path} ({what(path)})" for path in searched)
    return ("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment or in a .env file; "
            f"looked in the environment and in {looked}")


def with_environment(options: RunOptions) -> RunOptions:
    """GEMINI_BASE_URL (from the environment or a .env file) counts as `--base-url` given: recorded with the
    job, so a bare `--resume`, cron and the dashboard's Resume reach the same API. The flag wins over it."""
    url = os.environ.get("GEMINI_BASE_URL", "").strip()
    if not url or "base_url" in options.given:
        return options
    return replace(options, base_url=url, given=options.given | {"base_url"})


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b
