"""`--dry-run`: validate everything, render the first prompt, estimate tokens, cost and time; call and write nothing."""

from __future__ import annotations

import sys
from typing import TextIO

from enrichkit.checkpoint import read_checkpoint
from enrichkit.errors import EXIT_OK
from enrichkit.job import RunOptions, count_input, plan_job
from enrichkit.pricing import load_pricing
from enrichkit.progress import format_duration
from enrichkit.providers.gemini import full_prompt
from enrichkit.records import Record

# What an answer usually costs beyond its JSON: a guess, printed as such. Thinking models add more.
OUTPUT_TOKENS_PER_FIELD = 20
ASSUMED_LATENCY = 3.0  # seconds per LLM call (grounded calls are slower); the rate formula shows its weight


def dry_run(options: RunOptions, out: TextIO = sys.stdout) -> int:
    plan = plan_job(options)
    stages = plan.stages
    unique, dupes, bad = count_input(plan.table, plan.id_columns)
    first = next((r for r in plan.table.rows() if isinstance(r, Record)), None)
    pending = unique
    note = "no checkpoint yet: a new job"
    if plan.paths.checkpoint.exists():
        cp = read_checkpoint(plan.paths.checkpoint)
        pending = max(0, unique - cp.completed_count - cp.failed_count)
        note = (f"checkpoint {plan.paths.checkpoint}: {cp.completed_count} done, {cp.failed_count} failed "
                f"(status {cp.status}); --resume would do {pending}")
    if options.limit is not None:
        pending = min(pending, options.limit)
    w = out.write
    w(f"input: {plan.table.path} ({plan.table.kind[1:]}), {len(plan.table.columns)} columns, {unique} records, "
      f"{dupes} duplicate rows, {bad} unreadable rows\n")
    w(f"stages: {', '.join(f'{s.name} ({s.kind})' for s in stages.stages)}\n")
    w(f"output: {plan.paths.output} with columns {', '.join(plan.columns)}\n")
    w(f"{note}\n")
    pricing = load_pricing()
    llm = [s for s in stages.stages if s.kind == "llm"]
    tokens_in = tokens_out = 0
    cost = 0.0
    values = dict(first.values) if first else {}
    for stage in stages.stages:
        if stage.kind == "llm" and stage.prompt is not None:
            prompt = full_prompt(stage, stage.prompt.render(values))
            if stage is llm[0]:
                w(f"\nfirst prompt ({stage.name}, row {first.row if first else '-'}):\n{prompt}\n\n")
            model = stage.model or options.model or stages.model
            t_in, t_out = len(prompt) // 4 + 1, OUTPUT_TOKENS_PER_FIELD * len(stage.fields)
            tokens_in += t_in
            tokens_out += t_out
            cost += pricing.cost(model, t_in, t_out)
            if not pricing.known(model):
                w(f"note: no price for model {model!r} in data/pricing.toml; its cost counts as $0\n")
        values.update({f: f"<{f}>" for f in stage.fields})
    requests = pending * len(llm)
    rpm = options.rpm or stages.defaults.get("rpm")
    tpm = options.tpm or stages.defaults.get("tpm")
    per_request = (tokens_in + tokens_out) / len(llm) if llm else 0
    bounds = {"workers / latency": options.max_workers / ASSUMED_LATENCY}
    if rpm:
        bounds["rpm / 60"] = float(rpm) / 60
    if tpm and per_request:
        bounds["tpm / tokens per request / 60"] = float(tpm) / per_request / 60
    w(f"estimate for {pending} records: {requests} LLM requests, ~{pending * tokens_in:,} prompt + "
      f"~{pending * tokens_out:,} output tokens, ~${pending * cost:.2f} (output guessed at "
      f"{OUTPUT_TOKENS_PER_FIELD} tokens a field; thinking and search grounding cost extra)\n")
    if llm:
        name, rate = min(bounds.items(), key=lambda kv: kv[1])
        w(f"duration: ~{format_duration(requests / rate)} at {rate:.2f} requests/s, bound by {name} "
          f"({', '.join(f'{k} = {v:.2f}' for k, v in bounds.items())}; latency assumed {ASSUMED_LATENCY:.0f} s)\n")
    w("dry run: nothing was called and nothing was written\n")
    return EXIT_OK
