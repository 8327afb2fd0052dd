"""Setting a job up: every check that can fail happens here, before any request is sent.

`prepare_job` validates the stages, the input and the key, takes the lock, and decides what the
checkpoint means (new job, resume, retry-failed, fresh) and what the output already holds.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enrichkit.checkpoint import Checkpoint, new_job_id, read_checkpoint
from enrichkit.errors import AuthError, ConfigError, UsageError
from enrichkit.idset import IdSet
from enrichkit.logs import log, register_secret
from enrichkit.output import output_columns, recover_output
from enrichkit.records import BadRow, InputTable, RecordIds
from enrichkit.runlock import RunLock
from enrichkit.stages import StagesConfig, load_stages


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
    allow_config_change: bool = False
    quiet: bool = False
    verbose: int = 0


@dataclass
class JobPaths:
    output: Path
    checkpoint: Path
    report: Path
    errors: Path
    lock: Path
    cache: Path

    @classmethod
    def for_options(cls, options: RunOptions) -> JobPaths:
        output = Path(options.output)
        stem = output.with_suffix("")
        return cls(
            output=output,
            checkpoint=Path(options.checkpoint) if options.checkpoint else Path(f"{stem}.progress.json"),
            report=Path(options.report) if options.report else Path(f"{stem}.report.json"),
            errors=Path(options.errors) if options.errors else Path(f"{stem}.errors.jsonl"),
            lock=Path(f"{stem}.lock"),
            cache=Path(f"{stem}.cache.sqlite"),
        )


@dataclass
class Job:
    options: RunOptions
    paths: JobPaths
    stages: StagesConfig
    table: InputTable
    id_columns: list[str]
    columns: list[str]  # of the output
    checkpoint: Checkpoint
    lock: RunLock
    api_key: str | None
    functions: dict[str, Any] = field(default_factory=dict)
    mode: str = "new"  # new | resume | retry_failed
    input_changed: bool = False

    @property
    def counts_exactly(self) -> bool:
        """This run's pass over the input must count records, duplicates and bad rows (they are not known:
        a new job, a changed input, or an earlier counting pass that was stopped before the end)."""
        return self.mode == "new" or self.input_changed or not self.checkpoint.counts_exact


@dataclass
class Plan:
    """A validated request: what `--dry-run` shows and what a run starts from."""

    options: RunOptions
    paths: JobPaths
    stages: StagesConfig
    table: InputTable
    id_columns: list[str]
    columns: list[str]
    fingerprint: str
    functions: dict[str, Any]


def plan_job(options: RunOptions) -> Plan:
    """Every check that needs no lock and no key: flags, stages file, input header, placeholders."""
    if not 1 <= options.max_workers <= 20:
        raise UsageError(f"--max-workers must be between 1 and 20, not {options.max_workers}")
    if options.checkpoint_interval < 1:
        raise UsageError("--checkpoint-interval must be at least 1")
    if options.limit is not None and options.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if options.max_retries < 0:
        raise UsageError("--max-retries must be 0 or more")
    if options.delay < 0:
        raise UsageError("--delay must be 0 or more")
    if options.fresh and (options.resume or options.retry_failed):
        raise UsageError("--fresh starts over; it cannot be combined with --resume or --retry-failed")
    paths = JobPaths.for_options(options)
    if paths.output.suffix.lower() != ".csv":
        raise UsageError(f"--output must be a .csv file, not {paths.output.name}")
    if paths.output.resolve() == Path(options.input).resolve():
        raise UsageError("--output must not be the input file")
    stages = load_stages(options.stages_file).select(options.stages)
    table = InputTable(options.input)
    id_columns = options.id_columns or list(table.columns)
    table.require_columns(id_columns, "--id-columns")
    stages.check_placeholders(table.columns)
    functions = {s.name: s.load_function() for s in stages.stages if s.kind == "python"}
    columns = output_columns(table.columns, stages.output_fields)
    return Plan(options, paths, stages, table, id_columns, columns, stages.fingerprint(options.id_columns),
                functions)


def prepare_job(options: RunOptions) -> Job:
    """All checks, then the lock, then the checkpoint and the output. Raises EnrichError subclasses."""
    plan = plan_job(options)
    paths, table = plan.paths, plan.table
    api_key = _api_key(plan.stages)
    lock = RunLock(paths.lock)
    lock.acquire()
    try:
        cp, mode, changed = _open_checkpoint(options, paths, plan.stages, table, plan.fingerprint)
        consistent = mode != "new" and cp.output_digest and cp.output_rows == cp.completed_count
        trusted = (cp.output_bytes, cp.output_digest) if consistent else None
        recovered = recover_output(paths.output, plan.columns, trusted)
        if recovered.torn_bytes:
            log.warning("cut a torn last row (%d bytes) from %s: a crash interrupted its write; "
                        "that record will be done again", recovered.torn_bytes, paths.output)
        if recovered.bad_rows:
            log.warning("%s has %d malformed row(s) in the middle (edited by hand?); they are ignored",
                        paths.output, recovered.bad_rows)
        if not recovered.from_offset:  # (a verified prefix is exactly what the checkpoint lists)
            _check_output_matches(cp, recovered.ids, paths.output)
        for record_id in recovered.ids:
            cp.mark_completed(record_id)
        if mode == "new" or changed:
            # A first figure for the progress bar; the run's pass over the input makes it exact.
            cp.total_records = table.estimate_rows()
        cp.pid, cp.host = os.getpid(), socket.gethostname()
        cp.report_path, cp.errors_path = str(paths.report.resolve()), str(paths.errors.resolve())
    except BaseException:
        lock.release()
        raise
    return Job(options, paths, plan.stages, table, plan.id_columns, plan.columns, cp, lock, api_key,
               plan.functions, mode, changed)


def _check_output_matches(cp: Checkpoint, in_output: IdSet, output: Path) -> None:
    """The checkpoint never claims more than the output holds (the output is fsynced first). If it does, the
    output was cut by hand: the output wins and the missing records are done again. A missing output is
    more likely a wrong path than a wish to pay for everything twice, so that one stops."""
    claimed = cp.completed_count
    if claimed <= len(in_output):
        return
    if len(in_output) == 0:
        raise ConfigError(f"{output} is missing or empty but the checkpoint lists {claimed} finished records; "
                          "restore the file, or start over with --fresh")
    log.warning("the checkpoint lists %d finished records but %s holds %d; the output wins: records missing "
                "from it will be done again", claimed, output, len(in_output))
    cp.completed_ids = IdSet()
    cp.resume_at = None  # rows before it may be among the missing: read the input from the top


def _api_key(stages: StagesConfig) -> str | None:
    if not any(s.kind == "llm" for s in stages.stages):
        return None
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    key = os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
    if not key:
        raise AuthError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment or in a .env file")
    register_secret(key)
    return key


def _open_checkpoint(options: RunOptions, paths: JobPaths, stages: StagesConfig, table: InputTable,
                     fingerprint: str) -> tuple[Checkpoint, str, bool]:
    exists = paths.checkpoint.exists()
    if options.fresh:
        if exists or paths.output.exists():
            _confirm_fresh(options, paths)
        for path in (paths.checkpoint, paths.output, paths.report, paths.errors, paths.cache,
                     Path(f"{paths.cache}-wal"), Path(f"{paths.cache}-shm")):
            path.unlink(missing_ok=True)
        exists = False
    elif not exists and options.retry_failed:
        raise UsageError(f"no checkpoint at {paths.checkpoint}: nothing to retry (run without --retry-failed first)")
    elif exists and not (options.resume or options.retry_failed):
        raise UsageError(f"a job already exists for {paths.output} ({paths.checkpoint}); "
                         "continue it with --resume, or discard it with --fresh")
    elif not exists and not options.resume and paths.output.exists() and paths.output.stat().st_size > 0:
        raise UsageError(f"{paths.output} already exists; continue it with --resume, or discard it with --fresh")

    # Absolute paths: `jobs.py` and cron may look at the job from another directory.
    input_info = {"path": str(table.path.resolve()), "size": table.size, "mtime": table.mtime}
    if not exists:
        cp = Checkpoint(job_id=new_job_id(), output=str(paths.output.resolve()), input=input_info,
                        stages=[s.name for s in stages.stages], config_fingerprint=fingerprint,
                        id_columns=options.id_columns, fields=stages.output_fields,
                        stages_file=str(Path(options.stages_file).resolve()))
        return cp, "new", False

    cp = read_checkpoint(paths.checkpoint)
    if cp.config_fingerprint != fingerprint:
        if not options.allow_config_change:
            raise ConfigError(f"the stages, prompts or --id-columns changed since this job started "
                              f"({paths.checkpoint}); rerun with --allow-config-change to continue anyway, "
                              "or use a new --output")
        log.warning("the configuration changed since this job started; continuing (--allow-config-change)")
        cp.config_fingerprint = fingerprint
        cp.stages = [s.name for s in stages.stages]
        cp.fields = stages.output_fields
    changed = (cp.input.get("size"), cp.input.get("mtime")) != (table.size, table.mtime)
    if changed:
        log.warning("the input changed since the checkpoint (size/mtime); IDs are content hashes, so new rows "
                    "will be processed and vanished rows ignored")
        cp.input = input_info
        cp.resume_at = None  # byte offsets into the old file mean nothing in the new one
        cp.counts_exact = False
    return cp, "retry_failed" if options.retry_failed else "resume", changed


def _confirm_fresh(options: RunOptions, paths: JobPaths) -> None:
    if options.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("--fresh deletes the existing output and checkpoint; add --yes to confirm "
                         "when not on a terminal")
    answer = input(f"Delete {paths.output} and {paths.checkpoint} and start over? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed; nothing was deleted")


def count_input(table: InputTable, id_columns: list[str]) -> tuple[int, int, int]:
    """(unique records, duplicate rows, unreadable rows) in one streaming pass."""
    seen = IdSet()
    ids = RecordIds(id_columns)
    unique = dupes = bad = 0
    for item in table.rows():
        if isinstance(item, BadRow):
            bad += 1
            continue
        record_id = ids(item.values)
        if record_id in seen:
            dupes += 1
        else:
            seen.add(record_id)
            unique += 1
    return unique, dupes, bad
