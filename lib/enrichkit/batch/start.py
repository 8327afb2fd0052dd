"""Starting a batch run: the ledger beside the output, the checks before the job's files are touched, the loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from enrichkit.batch.google import BatchClient
from enrichkit.batch.ledger import IN_FLIGHT, Chunk, Ledger, ledger_path
from enrichkit.batch.parts import BatchSettings, _display_prefix, list_pause
from enrichkit.batch.run import BatchRun
from enrichkit.config.plan import Plan
from enrichkit.errors import ConfigError, UsageError
from enrichkit.logs import log
from enrichkit.run.job import Job, Settings
from enrichkit.run.outcome import EndedRun
from enrichkit.run.progress import Progress
from enrichkit.run.stopping import StopSignal


def ledger_files(output: Path) -> list[Path]:
    """The ledger and what sits beside it (SQLite's WAL and shared memory, the request files)."""
    path = ledger_path(output)
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
            path.with_name(path.name.removesuffix(".sqlite") + ".files")]


def remove_ledger(output: Path) -> None:
    import shutil

    for path in ledger_files(output):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def before_open(plan: Plan, settings: Settings) -> None:
    """Before the job's files are opened: `--fresh` refuses while Google jobs of this job are in flight (exit 2),
    unless `--cancel-batches` is given, which cancels them first; a fresh job then starts a new ledger."""
    options = plan.options
    path = ledger_path(plan.paths.output)
    if not path.exists() or not (options.fresh or not (options.batch or options.cancel_batches)):
        return
    ledger = Ledger(path)
    try:
        flying = ledger.chunks(*IN_FLIGHT)
        if flying and not options.fresh:  # a synchronous run would ask (and pay for) what Google jobs hold
            raise UsageError(f"{len(flying)} Google batch job(s) of this job are still in flight "
                             f"({sum(c.lines for c in flying)} requests): a run without --batch would ask for "
                             "their records again (and pay twice). Collect them with --resume --batch, or add "
                             "--cancel-batches to cancel them")
        if flying and not options.cancel_batches:
            raise UsageError(f"{len(flying)} Google batch job(s) of this job are still in flight "
                             f"({sum(c.lines for c in flying)} requests, billed when they finish): --fresh would "
                             "lose their answers. Collect them with --resume, or add --cancel-batches to cancel them")
        if not flying:
            return
        client = _client(plan, settings)
        try:
            for chunk in flying:
                if chunk.state == "creating" and not chunk.batch_name:
                    _cancel_in_doubt(client, ledger.meta("job_id") or "", chunk, settings.batch_settle,
                                     options.batch_poll)
                if chunk.batch_name:
                    try:
                        client.cancel(chunk.batch_name)
                    except Exception as exc:  # noqa: BLE001 - an ended job needs no cancel
                        log.info("cancel of %s: %s", chunk.batch_name, str(exc)[:160])
                ledger.ingest(chunk.id, {}, "cancelled", "CANCELLED", chunk.stats, "cancelled")
        finally:
            client.close()
        log.warning("--fresh --cancel-batches: cancelled %d Google batch job(s) of the old job", len(flying))
    finally:
        ledger.close()


def _cancel_in_doubt(client: BatchClient, job_id: str, chunk: Chunk, settle: float, poll: float) -> None:
    """A create whose answer was lost may have made a job, listed late: looked for by display name until the
    list had its settle time, and cancelled when found (else the old job would run on, and be billed)."""
    prefix = _display_prefix(job_id, chunk)
    while True:
        try:
            found = [job for job in client.jobs() if job.display_name.startswith(prefix)]
        except Exception as exc:  # noqa: BLE001 - asked again after a pause
            log.info("list of batch jobs: %s", str(exc)[:160])
            found = None
        for job in found or []:
            try:
                client.cancel(job.name)
            except Exception as exc:  # noqa: BLE001 - an ended job needs no cancel
                log.info("cancel of %s: %s", job.name, str(exc)[:160])
        if found or (found is not None and time.time() - (chunk.creating_at or 0.0) >= settle):
            return
        time.sleep(list_pause(poll, settle))


def batch_run(plan: Plan, job: Job, settings: Settings, *, stop: StopSignal, progress: Progress,
              say: Callable[[str], None], chunk_lines: int = 5000, settle: float = 60.0,
              crash_at: Callable[[str], None] = lambda point: None,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep) -> EndedRun:
    """The job through the Batch API: open (or make) its ledger, run the loop, close."""
    options = plan.options
    if not plan.llm:
        raise UsageError("--batch sends LLM stages through the Gemini Batch API, and this job has none")
    path = ledger_path(plan.paths.output)
    ledger = Ledger(path)
    try:
        owner = ledger.meta("job_id")
        if owner is not None and owner != job.store.cp.job_id:
            flying = ledger.chunks(*IN_FLIGHT)
            if flying:
                raise ConfigError(f"{path} belongs to job {owner}, which has {len(flying)} Google batch job(s) in "
                                  "flight; run with --resume on that job's checkpoint, or --fresh --cancel-batches")
            ledger.close()
            remove_ledger(plan.paths.output)
            ledger = Ledger(path)
        client = _client(plan, settings)
        try:
            run = BatchRun(plan, job, ledger, client,
                           BatchSettings(poll=options.batch_poll, detach=options.batch_detach,
                                         cancel=options.cancel_batches and not options.fresh,
                                         chunk_lines=chunk_lines, settle=settle, crash_at=crash_at),
                           stop=stop, progress=progress, say=say, clock=clock, sleep=sleep)
            return run.run()
        finally:
            client.close()
    finally:
        ledger.close()


def _client(plan: Plan, settings: Settings) -> BatchClient:
    assert settings.api_key is not None
    return BatchClient(api_key=settings.api_key, base_url=settings.base_url, timeout=max(plan.options.timeout, 300))
