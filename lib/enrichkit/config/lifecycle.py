"""What is known of each model before record 1 (`pricing.toml`'s facts) and what its answers say of it.

Before record 1, `check_models` reads each model's facts: a retired model stops the run (exit 2, naming
Google's replacement), a deprecated or legacy one is warned about once with its retirement date, and a
setting the model refuses (a thinking level it does not take, a temperature it ignores, flex it does not
serve) stops the run (exit 2, one line naming the model, the key and what it accepts).

While the run goes, `ModelNotes` hears every answer: the model that served it (`modelVersion`) when it is
not the one asked for, an answer whose served model has no price (priced as the model asked for), and
the `modelStatus` an answer carries (stage, retirement time). Each is said once in the log, and kept for
the checkpoint, the report, `jobs.py status` and the dashboard (`snapshot`).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from enrichkit.config.pricing import ModelFacts, Pricing
from enrichkit.config.stages import StagesConfig
from enrichkit.errors import ConfigError
from enrichkit.logs import log

WARNED_STAGES = ("deprecated", "legacy")


def check_models(stages: StagesConfig, override: str | None, pricing: Pricing, notes: ModelNotes | None = None
                 ) -> None:
    """Lifecycle and capabilities of every model the llm stages ask (fallbacks included), before record 1."""
    for model in stages.models(override):
        facts = pricing.facts_of(model)
        if facts.stage == "retired":
            raise ConfigError(retired_message(model, facts.replacement, facts.retires))
        if facts.stage in WARNED_STAGES and notes is not None:
            notes.lifecycle(model, facts.stage, facts.retires.isoformat() if facts.retires else None,
                            facts.replacement, source="pricing.toml")
    for stage in stages.stages:
        if stage.kind != "llm":
            continue
        for name in (stages.model_for(stage, override), stage.fallback_model):
            if name:
                refusal = refused_setting(name, pricing.facts_of(name), stage.settings)
                if refusal:
                    raise ConfigError(f"stage {stage.name!r}: {refusal}")


def retired_message(model: str, replacement: str | None, retired: dt.date | str | None) -> str:
    when = f" on {retired}" if retired else ""
    instead = f"use {replacement!r} instead" if replacement else "pick a current model"
    return f"model {model!r} was retired{when}: {instead} (set model = ... in the stages file, or --model)"


def refused_setting(model: str, facts: ModelFacts, settings: dict[str, Any]) -> str | None:
    """The one-line reason `model` refuses one of `settings`, or None."""
    level = settings.get("thinking_level")
    if level is not None and facts.thinking_levels is not None and level not in facts.thinking_levels:
        takes = (f"accepts thinking_level {', '.join(facts.thinking_levels)}" if facts.thinking_levels
                 else "takes no thinking_level (use thinking_budget)")
        return f"model {model!r} refuses thinking_level = {level!r}: it {takes}"
    if settings.get("temperature") is not None and not facts.temperature:
        return (f"model {model!r} refuses temperature (deprecated from Gemini 3.6 Flash on): it accepts none; "
                "remove temperature")
    if settings.get("service_tier") == "flex" and not facts.flex:
        return f"model {model!r} refuses service_tier = 'flex': it accepts 'standard' only"
    return None


class ModelNotes:
    """Thread-safe: every worker's answers tell it; each new fact is logged once."""

    def __init__(self, pricing: Pricing) -> None:
        self._pricing = pricing
        self._lock = threading.Lock()
        self._served: dict[str, dict[str, Any]] = {}  # "asked -> served" -> what was said
        self._status: dict[str, dict[str, Any]] = {}  # model -> its lifecycle

    def answered(self, asked: str, served: str, *, unpriced: bool, priced_as: str) -> None:
        """An answer to `asked` came from `served` (its modelVersion)."""
        asked, served = asked.removeprefix("models/"), served.removeprefix("models/")
        if served == asked or (not unpriced and served.startswith(asked)):
            return
        key = f"{asked} -> {served}"
        if key in self._served:  # read without the lock: an entry, once there, never changes
            return
        with self._lock:
            if key in self._served:
                return
            alias = self._pricing.aliases.get(asked) == served
            self._served[key] = {"asked": asked, "served": served, "unpriced": unpriced, "priced_as": priced_as,
                                 "alias": alias}
        # Each line names the served model once: a reader (or a script) counting it finds one line per pair.
        if unpriced:
            log.warning("%s was answered by %s, which has no price in pricing.toml: priced as the model asked for "
                        "(give the served model's prices in the stages file's [prices] for the exact figure)",
                        asked, served)
        elif not alias:
            log.warning("%s was answered by %s (Google routes the name there): priced as that model", asked, served)
        else:
            log.info("%s is an alias: answered by %s, priced as that model", asked, served)

    def lifecycle(self, model: str, stage: str, retires: str | None, replacement: str | None, *,
                  source: str = "answer", message: str = "") -> None:
        """A model's stage (from an answer's modelStatus or from pricing.toml); a deprecated or legacy one is
        warned about once."""
        model = model.removeprefix("models/")
        stage = stage.lower()
        with self._lock:
            known = self._status.get(model)
            if known is not None and known["stage"] == stage:
                if retires and not known.get("retires"):  # an answer tells the date the table did not know
                    known["retires"] = retires
                return
            self._status[model] = entry = {"stage": stage, "retires": retires, "replacement": replacement,
                                           "source": source, "message": message}
        if stage in WARNED_STAGES:
            # The replacement is in the report and `jobs.py status`; the log line names only this model, so the
            # model that serves it is named once, by the line that says so.
            log.warning("%s", lifecycle_line(model, {**entry, "replacement": None}))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"served": {k: dict(v) for k, v in self._served.items()},
                    "lifecycle": {k: dict(v) for k, v in self._status.items()}}


def lifecycle_line(model: str, status: dict[str, Any]) -> str:
    when = f", retires {status['retires']}" if status.get("retires") else ", no retirement date announced"
    instead = f"; Google recommends {status['replacement']}" if status.get("replacement") else ""
    return f"model {model} is {status.get('stage')}{when}{instead}"


def notes_lines(models: dict[str, Any]) -> list[str]:
    """What `jobs.py status` and the report's readers see: one line per fact."""
    lines = [lifecycle_line(model, status) for model, status in sorted((models.get("lifecycle") or {}).items())
             if status.get("stage") in WARNED_STAGES]
    for pair in (models.get("served") or {}).values():
        if pair.get("unpriced"):
            lines.append(f"{pair['asked']} answered by {pair['served']} (no price): priced as {pair['priced_as']}")
        elif not pair.get("alias"):
            lines.append(f"{pair['asked']} answered by {pair['served']}: priced as {pair['priced_as']}")
    return lines


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The job's notes over every run: this run's on top of the checkpoint's."""
    return {"served": {**(old.get("served") or {}), **(new.get("served") or {})},
            "lifecycle": {**(old.get("lifecycle") or {}), **(new.get("lifecycle") or {})}}
