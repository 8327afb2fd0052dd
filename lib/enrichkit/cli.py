"""`scripts/enrich.py`: argument parsing, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from enrichkit import __version__
from enrichkit.errors import EXIT_INTERRUPTED, EXIT_USAGE, EnrichError
from enrichkit.job import RunOptions
from enrichkit.logs import redact, setup_logging

EXAMPLES = """\
examples:
  # enrich a CSV through every stage of data/stages.toml, 10 workers
  python scripts/enrich.py --input data/sample.csv --output out/enriched.csv

  # after Ctrl+C, kill -9 or a reboot: continue where it stopped (also a fine cron line)
  python scripts/enrich.py --input data/sample.csv --output out/enriched.csv --resume

  # try again only the records that failed
  python scripts/enrich.py --input data/sample.csv --output out/enriched.csv --retry-failed

  # two stages, 20 workers, IDs from two columns, against the bundled stand-in
  python scripts/enrich.py --input data/sample.csv --output out/poc.csv --stages poc,domain \\
      --max-workers 20 --id-columns fund.title,poc.last_name --base-url http://127.0.0.1:8765

exit codes: 0 all enriched (or nothing left), 1 some records failed, 2 usage/config/input/auth error,
            3 another run holds this output, 4 --max-cost reached, 130 interrupted (all resumable)
"""


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line and exit 2, like every other usage error.
        sys.stderr.write(f"enrich: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="enrich.py",
        description="Enrich every record of a CSV/JSONL/XLSX file through Gemini prompts, HTTP calls or "
                    "Python functions. Resumable after Ctrl+C, kill -9 or a reboot; every input record "
                    "ends up in the output exactly once.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--input", required=True, metavar="PATH", help="CSV, JSONL or XLSX (by extension), streamed")
    io.add_argument("--output", required=True, metavar="PATH", help="output CSV, appended as records finish")
    io.add_argument("--stages-file", default="data/stages.toml", metavar="PATH",
                    help="stage definitions (TOML) (default: %(default)s)")
    io.add_argument("--stages", type=_csv_list, metavar="a,b", help="which stages to run, in file order (default: all)")
    io.add_argument("--id-columns", type=_csv_list, metavar="a,b",
                    help="columns hashed into the record ID (default: all input columns)")
    io.add_argument("--checkpoint", metavar="PATH", help="progress file (default: <output stem>.progress.json)")
    io.add_argument("--report", metavar="PATH", help="final report (default: <output stem>.report.json)")
    io.add_argument("--errors", metavar="PATH", help="error log (default: <output stem>.errors.jsonl)")

    job = p.add_argument_group("job control")
    job.add_argument("--resume", action="store_true",
                     help="continue the job in the checkpoint; with none, start a new one (one cron line)")
    job.add_argument("--retry-failed", action="store_true", help="run only the records the checkpoint lists as failed")
    job.add_argument("--fresh", action="store_true",
                     help="discard the existing checkpoint and output and start over (asks on a terminal)")
    job.add_argument("--yes", action="store_true", help="confirm --fresh without asking")
    job.add_argument("--allow-config-change", action="store_true",
                     help="resume even though the stages, prompts or --id-columns changed")
    job.add_argument("--limit", type=int, metavar="N", help="process at most N pending records in this run")
    job.add_argument("--dry-run", action="store_true",
                     help="validate, render the first prompt, estimate tokens, cost and time; call and write nothing")
    job.add_argument("--checkpoint-interval", type=int, default=10, metavar="N",
                     help="completed records between checkpoint writes (default: %(default)s)")
    job.add_argument("--max-cost", type=_positive_float, metavar="USD",
                     help="stop gracefully before spending more (exit 4, resumable)")

    api = p.add_argument_group("calls")
    api.add_argument("--max-workers", type=int, default=10, metavar="N", help="concurrent workers, 1..20 (default: 10)")
    api.add_argument("--rpm", type=_positive_float, metavar="N", help="requests per minute (overrides the stages file)")
    api.add_argument("--tpm", type=_positive_float, metavar="N", help="tokens per minute (overrides the stages file)")
    api.add_argument("--max-retries", type=int, default=3, metavar="N",
                     help="attempts after the first, per call, for transient errors (default: %(default)s)")
    api.add_argument("--timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                     help="per request (default: %(default)s)")
    api.add_argument("--max-outage", type=_positive_float, default=600.0, metavar="SECONDS",
                     help="stop (resumable) when the API has been down this long (default: %(default)s)")
    api.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="pause between a record's stages")
    api.add_argument("--base-url", metavar="URL", help="Gemini endpoint (also env GEMINI_BASE_URL; default: Google's)")
    api.add_argument("--model", metavar="NAME", help="default model for LLM stages (default: the stages file's)")
    api.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")

    out = p.add_argument_group("terminal")
    out.add_argument("-q", "--quiet", action="store_true", help="only errors and the final line on stderr")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more on stderr (-vv: HTTP too)")
    out.add_argument("--version", action="version", version=f"enrichkit {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (never raises for a user error)."""
    args = build_parser().parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        if args.dry_run:
            from enrichkit.dryrun import dry_run

            return dry_run(_options(args))
        from enrichkit.job import prepare_job
        from enrichkit.runner import run_job

        job = prepare_job(_options(args))
        return run_job(job)
    except EnrichError as exc:
        _debug_traceback()
        sys.stderr.write(f"enrich: error: {redact(str(exc))}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("enrich: interrupted before the run started; nothing was done\n")
        return EXIT_INTERRUPTED
    except OSError as exc:
        _debug_traceback()
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"enrich: error: {where}{exc.strerror or exc}\n")
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, not a traceback
        _debug_traceback()
        sys.stderr.write(f"enrich: internal error: {redact(repr(exc))[:300]} "
                         "(a bug: rerun with ENRICHKIT_DEBUG=1 for the traceback and report it)\n")
        return EXIT_USAGE


def _options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        input=args.input, output=args.output, stages_file=args.stages_file, stages=args.stages,
        max_workers=args.max_workers, checkpoint=args.checkpoint, checkpoint_interval=args.checkpoint_interval,
        resume=args.resume, retry_failed=args.retry_failed, fresh=args.fresh, yes=args.yes,
        id_columns=args.id_columns, limit=args.limit, delay=args.delay, rpm=args.rpm, tpm=args.tpm,
        max_retries=args.max_retries, timeout=args.timeout, max_outage=args.max_outage, max_cost=args.max_cost,
        base_url=args.base_url, model=args.model, no_cache=args.no_cache, report=args.report, errors=args.errors,
        allow_config_change=args.allow_config_change, quiet=args.quiet, verbose=args.verbose)


def _debug_traceback() -> None:
    if os.environ.get("ENRICHKIT_DEBUG"):
        traceback.print_exc()
