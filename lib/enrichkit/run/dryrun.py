"""`--dry-run`: validate everything, render the first prompt, estimate tokens, cost and time; call and write nothing."""

from __future__ import annotations

import datetime as dt
import sys
from typing import TextIO

from enrichkit.config.lifecycle import WARNED_STAGES, lifecycle_line
from enrichkit.config.plan import RunOptions, plan_job
from enrichkit.config.pricing import Pricing
from enrichkit.config.stages import StagesConfig
from enrichkit.errors import EXIT_OK
from enrichkit.providers.gemini import build_request
from enrichkit.run.progress import format_duration
from enrichkit.store.checkpoint import read_checkpoint
from enrichkit.tables.scan import PendingScan

# Guesses, printed as such: what an answer costs beyond its JSON, and how long a call takes.
OUTPUT_TOKENS_PER_FIELD = 20
THINKING_TOKENS = 600  # a thinking model's typical thoughts per answer when no budget or level caps them
THINKING_BY_LEVEL = {"minimal": 0, "low": 200, "medium": 600, "high": 1500}
SEARCH_QUERIES = 2  # queries a grounded 3.x answer typically runs
ASSUMED_LATENCY = 3.0  # seconds per LLM call (grounded calls are slower); the rate formula shows its weight
STALE_PRICES = 60  # days after which the price file's check is called old


def dry_run(options: RunOptions, out: TextIO | None = None, today: dt.date | None = None, *,
            stages: StagesConfig | None = None) -> int:
    """Say what the run would do (to `out`, else the stdout of the moment: never one bound at import).
    `today` (UTC) decides whether the price file's check is old; `stages`: given in Python instead of
    `options.stages_file`."""
    out = out or sys.stdout
    plan = plan_job(options, stages=stages)
    stages, pricing = plan.stages, plan.pricing
    walk = PendingScan(plan.table, plan.id_columns)
    first = None
    for item in walk:
        first = first or item.record
    counts = walk.counts
    pending = counts.records
    note = "no checkpoint yet: a new job"
    if plan.paths.checkpoint.exists():
        cp = read_checkpoint(plan.paths.checkpoint)
        pending = max(0, counts.records - cp.completed_count - cp.failed_count)
        note = (f"checkpoint {plan.paths.checkpoint}: {cp.completed_count} done, {cp.failed_count} failed "
                f"(status {cp.status}); --resume would do {pending}")
    if options.limit is not None:
        pending = min(pending, options.limit)
    def w(text: str) -> None:
        try:
            out.write(text)
        except BrokenPipeError:  # `--dry-run | head`: the reader has what it wanted; the checks all passed
            pass

    w(f"input: {plan.table.path} ({plan.table.describe_format()}), {counts.records} records, "
      f"{counts.duplicates} duplicate rows, {counts.unreadable} unreadable rows, "
      f"{counts.empty} empty rows\n")
    w(f"stages: {', '.join(f'{s.name} ({s.kind})' for s in stages.stages)}\n")
    w(f"output: {plan.paths.output} with columns {', '.join(plan.columns)}\n")
    w(f"{note}\n")
    llm = [s for s in stages.stages if s.kind == "llm"]
    tokens_in = tokens_out = 0
    cost = 0.0
    grounded = 0
    per_model: dict[str, list[int]] = {}
    values = dict(first.values) if first else {}
    assumptions: list[str] = [f"output guessed at {OUTPUT_TOKENS_PER_FIELD} tokens a field"]
    for stage in stages.stages:
        if stage.kind == "llm" and stage.prompt is not None:
            model = stages.model_for(stage, options.model)
            request = build_request(stage, stage.prompt.render(values), model, pricing.aliases)
            if stage is llm[0]:
                w(f"\nfirst prompt ({stage.name}, {model}, row {first.row if first else '-'}):\n"
                  f"{request.payload['prompt']}\n\n")
            t_in = request.input_tokens
            t_out = OUTPUT_TOKENS_PER_FIELD * len(stage.fields)
            thinking = _thinking_guess(stage.settings)
            if thinking:
                assumptions.append(f"{stage.name}: {thinking} thinking tokens an answer (billed as output)")
            charge = pricing.charge(model, prompt_tokens=t_in, output_tokens=t_out + thinking, grounded=stage.search,
                                    search_queries=SEARCH_QUERIES if stage.search else 0,
                                    flex=request.payload["flex"])
            if stage.search:
                grounded += 1
                price = pricing.lookup(model)
                unit = "prompt" if price is None or price.grounding == "prompt" else f"query ({SEARCH_QUERIES} a call)"
                assumptions.append(f"{stage.name}: a grounding fee per grounded {unit}")
            tally = per_model.setdefault(model, [0, 0])  # requests and input tokens a record, per model
            tally[0], tally[1] = tally[0] + 1, tally[1] + t_in
            tokens_in += t_in
            tokens_out += t_out + thinking
            cost += charge.tokens + charge.grounding
        values.update({f: f"<{f}>" for f in stage.output_fields})
    requests = pending * len(llm)
    # Each model is paced on its own (as the run's limiters are): in requests/s of the whole job, a model whose
    # stages ask n requests and t input tokens a record allows rpm / 60 / n and tpm / 60 / t records a second.
    limits = stages.limits(options.model, options.rpm, options.tpm)
    bounds = {"workers / latency": options.max_workers / ASSUMED_LATENCY}
    for model, (asked, asked_tokens) in per_model.items():
        rpm, tpm = limits.get(model, (None, None))
        named = f" ({model})" if len(per_model) > 1 else ""
        if rpm:
            bounds[f"rpm / 60{named}"] = float(rpm) / 60 / asked * len(llm)
        if tpm and asked_tokens:
            bounds[f"tpm / input tokens per request / 60{named}"] = float(tpm) / 60 / asked_tokens * len(llm)
    w(f"estimate for {pending} records: {requests} LLM requests ({pending * grounded} grounded), "
      f"~{pending * tokens_in:,} input + ~{pending * tokens_out:,} output tokens, ~${pending * cost:.2f} "
      f"({'; '.join(assumptions)})\n")
    if llm:
        for line in _price_lines(pricing, list(per_model), pending * cost, today or dt.datetime.now(dt.UTC).date()):
            w(line + "\n")
    if llm:
        name, rate = min(bounds.items(), key=lambda kv: kv[1])
        w(f"duration: ~{format_duration(requests / rate)} at {rate:.2f} requests/s, bound by {name} "
          f"({', '.join(f'{k} = {v:.2f}' for k, v in bounds.items())}; latency assumed {ASSUMED_LATENCY:.0f} s)\n")
    if options.batch:
        from enrichkit.batch.estimate import batch_lines

        w(batch_lines(plan, pending, dict(first.values) if first else {}))
    w("dry run: nothing was called and nothing was written\n")
    return EXIT_OK


def _price_lines(pricing: Pricing, models: list[str], estimate: float, today: dt.date) -> list[str]:
    """When the prices were checked (old after STALE_PRICES days), announced changes, and Tier 1's spend cap."""
    lines = []
    if pricing.checked is None:
        lines.append("prices: the price file does not say when it was checked against "
                     "https://ai.google.dev/gemini-api/docs/pricing; check it before trusting this estimate")
    else:
        age = (today - pricing.checked).days
        lines.append(f"prices: checked against Google's pricing page on {pricing.checked.isoformat()} ({age} days ago)")
        if age > STALE_PRICES:
            lines.append(f"warning: the prices were checked {age} days ago (over {STALE_PRICES}): check "
                         "https://ai.google.dev/gemini-api/docs/pricing and edit pricing.toml before trusting a "
                         "budget")
    for model in models:
        facts = pricing.facts_of(model)
        if facts.stage in WARNED_STAGES:
            lines.append("warning: " + lifecycle_line(model, {"stage": facts.stage, "replacement": facts.replacement,
                                                               "retires": facts.retires}))
        for change in pricing.changes(model):
            if change.since is not None and change.since > today:
                lines.append(f"prices: {model} costs ${change.input:.2f} / ${change.output:.2f} per 1M tokens from "
                             f"{change.since.isoformat()} (answers are priced on the day they are answered)")
    cap = pricing.tier1_cap
    if cap is not None and estimate > cap:
        lines.append(f"note: the estimate (~${estimate:.2f}) passes Tier 1's monthly spend cap (${cap:,.0f}): "
                     "on Tier 1 the API stops answering (429, spend cap) when the month's spending reaches it; see "
                     "https://ai.google.dev/gemini-api/docs/billing, or spread the job over months with --max-cost")
    return lines


def _thinking_guess(settings: dict[str, object]) -> int:
    """Thinking tokens an answer is guessed to bill (as output), from the stage's budget or level."""
    budget = settings.get("thinking_budget")
    if isinstance(budget, int) and budget >= 0:
        return min(budget, THINKING_TOKENS)
    level = settings.get("thinking_level")
    return THINKING_BY_LEVEL.get(str(level), THINKING_TOKENS) if level else THINKING_TOKENS
