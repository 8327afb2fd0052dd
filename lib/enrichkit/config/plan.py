"""A run's options and the plan made from them: every check that needs no lock, no key and no network.

Flags, the stages file, the input's header, placeholders, python stage imports, prices, and the
paths a job writes (each different from the input and from each other, also through links). A plan
that passes touches nothing; a run starts from it, and `--dry-run` shows it.
"""

from __future__ import annotations

import difflib
import math
import urllib.parse
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from enrichkit.config.lifecycle import check_models
from enrichkit.config.pricing import Pricing, load_pricing
from enrichkit.config.stages import StagesConfig, load_stages
from enrichkit.errors import ConfigError, InputError, UsageError
from enrichkit.logs import log
from enrichkit.pace.deadline import MAX_SECONDS
from enrichkit.store.jobfiles import JobPaths, file_identity, same_identity
from enrichkit.store.output import COST_COLUMN, ID_COLUMN, JOB_COLUMN, output_columns
from enrichkit.tables.records import InputTable, Table

# Options a job records in its checkpoint: a bare --resume continues with them.
RECORDED = ("stages_file", "stages", "id_columns", "max_workers", "checkpoint_interval", "rpm", "tpm",
            "max_retries", "timeout", "max_outage", "max_cost", "base_url", "model", "no_cache", "delay",
            "encoding", "delimiter", "report", "errors", "excel",
            "batch", "batch_poll")  # not notify_url: a webhook URL is a secret


@dataclass
class RunOptions:
    """Everything the CLI passes to a run (names as the flags)."""

    input: str
    output: str
    stages_file: str = "data/stages.toml"
    stages: list[str] | None = None
    max_workers: int = 10
    checkpoint: str | None = None
    checkpoint_interval: int = 10
    resume: bool = False
    retry_failed: bool = False
    fresh: bool = False
    yes: bool = False
    id_columns: list[str] | None = None
    limit: int | None = None
    delay: float = 0.0
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 3
    timeout: float = 60.0
    max_outage: float = 600.0
    max_cost: float | None = None
    base_url: str | None = None
    model: str | None = None
    no_cache: bool = False
    report: str | None = None
    errors: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    excel: bool = False  # the output CSV starts with a UTF-8 BOM (Excel then reads its accents right)
    notify_url: str | None = None
    allow_config_change: bool = False
    dry_run: bool = False
    batch: bool = False  # LLM stages through the Gemini Batch API (enrichkit.batch)
    batch_detach: bool = False
    batch_poll: float = 60.0
    cancel_batches: bool = False
    quiet: bool = False
    verbose: int = 0
    given: frozenset[str] = field(default_factory=frozenset)  # the flags given on the command line

    def recorded(self, cwd: str | None = None) -> dict[str, Any]:
        """What the checkpoint keeps (absolute paths, so cron and the dashboard can resume from anywhere)."""
        data = {k: v for k, v in asdict(self).items() if k in RECORDED}
        for key in ("stages_file", "report", "errors"):
            data[key] = self._recordable(key)
        data["cwd"] = cwd or str(Path.cwd())
        return data

    def _recordable(self, key: str) -> Any:
        """This option as `recorded` keeps it (a path made absolute)."""
        value = getattr(self, key)
        return str(Path(value).resolve()) if key in ("stages_file", "report", "errors") and value else value

    def with_recorded(self, recorded: dict[str, Any]) -> RunOptions:
        """These options with the job's recorded ones filled in where no flag was given; a flag given again
        overrides, and says so."""
        known = {f.name for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in recorded.items():
            if key not in RECORDED or key not in known:
                continue
            if key in self.given:
                if self._recordable(key) != value:
                    log.info("%s %s given: overrides the job's recorded %s", _flag(key), getattr(self, key), value)
                continue
            changes[key] = value
        result = RunOptions(**{**asdict(self), **changes, "given": self.given})
        result.stages = list(result.stages) if result.stages else None
        result.id_columns = list(result.id_columns) if result.id_columns else None
        return result


class JobMode(StrEnum):
    """What a run does with its job, decided once (`JobMode.of`) when the job is opened; everyone else asks."""

    NEW = "new"  # no job yet: every record is pending
    RESUME = "resume"  # a job exists: the records not yet done or failed
    RETRY_FAILED = "retry_failed"  # only the records the job lists as failed

    @classmethod
    def of(cls, options: RunOptions, job_exists: bool) -> JobMode:
        if not job_exists:
            return cls.NEW
        return cls.RETRY_FAILED if options.retry_failed else cls.RESUME

    @property
    def label(self) -> str:
        """As the start line says it."""
        return {"new": "new job", "resume": "resuming", "retry_failed": "retrying failures"}[self.value]


def _workbook_hint(paths: JobPaths) -> str:
    """For `--output x.xlsx`: how to get a workbook (the job writes CSV; the job tools export it)."""
    if paths.output.suffix.lower() not in (".xlsx", ".xlsm", ".xls", ".ods"):
        return ""
    from enrichkit.commands import export_command

    csv_output = paths.output.with_suffix(".csv")
    checkpoint = Path(f"{csv_output.with_suffix('')}.progress.json")
    return (f"; for Excel, write the job to {csv_output.name} (add --excel for a CSV that Excel opens with its "
            f"accents intact), then export it as a workbook: {export_command(checkpoint, paths.output)}")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


@dataclass
class Plan:
    """A validated request: what `--dry-run` shows and what a run starts from."""

    options: RunOptions
    paths: JobPaths
    stages: StagesConfig
    table: Table
    id_columns: list[str]
    columns: list[str]  # of the output
    fingerprint: str
    functions: dict[str, Any]
    pricing: Pricing

    @property
    def remote(self) -> bool:
        return any(s.kind in ("llm", "http") for s in self.stages.stages)

    @property
    def llm(self) -> bool:
        return any(s.kind == "llm" for s in self.stages.stages)

    def check_prices(self) -> None:
        """Every model has a price (cost, --max-cost and the report depend on it); a misspelt name is told so."""
        unpriced = [m for m in self.stages.models(self.options.model) if not self.pricing.known(m)]
        if not unpriced:
            return
        model = unpriced[0]
        near = difflib.get_close_matches(model, [*self.pricing.prices, *self.pricing.aliases], n=1, cutoff=0.8)
        if near:
            raise ConfigError(f"model {model!r} is not one enrichkit knows: did you mean {near[0]!r}? (a model that "
                              f"exists but is not priced gets [prices.\"{model}\"] input = ..., output = ... in the "
                              "stages file)")
        raise ConfigError(f"no price for model(s) {', '.join(unpriced)} in enrichkit's pricing.toml; give them in "
                          f"the stages file ({self.options.stages_file}): [prices.\"{model}\"] input = ..., "
                          "output = ... (USD per million tokens)")


def check_options(options: RunOptions) -> None:
    """Flags that cannot work, alone or together (exit 2)."""
    if not 1 <= options.max_workers <= 20:
        raise UsageError(f"--max-workers must be between 1 and 20, not {options.max_workers}")
    if options.checkpoint_interval < 1:
        raise UsageError("--checkpoint-interval must be at least 1")
    if options.limit is not None and options.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if options.max_retries < 0:
        raise UsageError("--max-retries must be 0 or more")
    for name in ("delay", "timeout", "max_outage", "max_cost", "rpm", "tpm"):
        value = getattr(options, name)
        if value is not None and (not math.isfinite(value) or value < 0 or (value == 0 and name != "delay")):
            raise UsageError(f"{_flag(name)} must be a finite number {'>= 0' if name == 'delay' else '> 0'}, "
                             f"not {value}")
    if options.timeout is not None and options.timeout > MAX_SECONDS:
        raise UsageError(f"--timeout must be at most {MAX_SECONDS:.0f} s (a day), not {options.timeout:g}")
    if not options.output.strip() or not options.input.strip():
        raise UsageError("--input and --output need a file name")
    if options.base_url and not options.base_url.startswith(("http://", "https://")):
        raise UsageError(f"--base-url must be an http(s) URL, not {options.base_url!r}")
    if options.notify_url is not None and not _url_ok(options.notify_url):
        raise UsageError("--notify-url must be an http(s) URL with a host (and a port from 1 to 65535)")
    if options.fresh and (options.resume or options.retry_failed):
        raise UsageError("--fresh starts over; it cannot be combined with --resume or --retry-failed")
    if options.resume and options.retry_failed:
        raise UsageError("--resume and --retry-failed are two different runs; give one")


def _url_ok(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        return False


def job_paths(options: RunOptions) -> JobPaths:
    return JobPaths.for_output(options.output, checkpoint=options.checkpoint, report=options.report,
                               errors=options.errors, input=options.input)


def check_paths(paths: JobPaths, options: RunOptions) -> None:
    """Every path a job writes differs from the input, the stages file and each other (also through symlinks and
    hard links); each is valid UTF-8; explicitly given ones are in folders that exist. Touches nothing."""
    written = paths.written()
    named: dict[str, Path] = {"--input": Path(options.input), "--stages-file": Path(options.stages_file), **written}
    for flag, path in named.items():
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{flag}: the path {str(path).encode('utf-8', 'replace').decode()!r} is not valid "
                             "UTF-8; rename the file") from None
    if paths.output.suffix.lower() != ".csv":
        raise UsageError(f"--output must be a .csv file, not {paths.output.name}{_workbook_hint(paths)}")
    items = list(named.items())
    # Each path resolved and stat'ed once (a pair at a time took 45 pairs x 2 resolves: ~10 ms a start).
    identity = {flag: file_identity(path) for flag, path in items}
    journals = {flag: [file_identity(Path(f"{path}{suffix}")) for suffix in ("-wal", "-shm")]
                for flag, path in items if flag in ("the cache", "the batch ledger")}
    for i, (flag_a, a) in enumerate(items):
        for flag_b, _ in items[i + 1:]:
            if same_identity(identity[flag_a], identity[flag_b]) or any(
                    same_identity(identity[flag_a], journal) for journal in journals.get(flag_b, ())):
                raise UsageError(f"{flag_a} and {flag_b} are the same file ({a}); every file a job writes must "
                                 "differ from the input, the stages file and each other")
    given = {"--checkpoint": options.checkpoint, "--report": options.report, "--errors": options.errors}
    for flag, value in given.items():
        if value:
            folder = Path(value).parent
            if not folder.is_dir():
                raise UsageError(f"{flag} {value}: the folder {folder} does not exist")
            if Path(value).is_dir():
                raise UsageError(f"{flag} {value}: is a folder; give a file name")
    if paths.output.is_dir():
        raise UsageError(f"--output {paths.output}: is a folder; give a file name")


def plan_job(options: RunOptions, *, check_prices: bool = True, stages: StagesConfig | None = None) -> Plan:
    """Every check that needs no lock, no key and no network. A run checks prices later (`Plan.check_prices`),
    after the API has said the models exist: a misspelt or retired model then gets the right message.
    `stages`: stages given in Python (`enrichkit.Job(stages=[...])`) instead of `options.stages_file`."""
    check_options(options)
    paths = job_paths(options)
    check_paths(paths, options)
    stages = (stages or load_stages(options.stages_file)).select(options.stages)
    table = InputTable(options.input, encoding=options.encoding, delimiter=options.delimiter)
    own = [c for c in (COST_COLUMN, ID_COLUMN, JOB_COLUMN) if c in table.columns]
    if own:
        raise InputError(f"the input has {', '.join(own)}, columns enrichkit adds to its output: it is an enrichkit "
                         "output; enrich the original input, or drop those columns from a copy", str(table.path))
    id_columns = options.id_columns or list(table.columns)
    table.require_columns(id_columns, "--id-columns")
    stages.check_placeholders(table.columns)
    search = (Path(options.stages_file or ".").resolve().parent, Path.cwd())
    functions = {s.name: s.load_function(search) for s in stages.stages if s.kind == "python"}
    pricing = load_pricing(extra=stages.prices)
    check_models(stages, options.model, pricing)  # retired, or a setting the model refuses: exit 2 before anything
    columns = output_columns(table.columns, stages.output_fields)
    fingerprint = stages.fingerprint(options.id_columns, options.model)
    plan = Plan(options, paths, stages, table, id_columns, columns, fingerprint, functions, pricing)
    if check_prices:
        plan.check_prices()
    return plan
