"""`--dry-run --batch`: per LLM stage, the requests, the Google batch jobs, and the cost at the standard, flex and
batch prices (tokens and grounding apart), with the time bound Google gives (up to 24 h per LLM stage)."""

from __future__ import annotations

import math
import os

from enrichkit.config.plan import Plan
from enrichkit.providers.gemini import build_request

OUTPUT_TOKENS_PER_FIELD = 20  # as the synchronous estimate guesses (enrichkit.run.dryrun)
SEARCH_QUERIES = 2


def batch_lines(plan: Plan, pending: int, first: dict[str, str]) -> str:
    stages, pricing, options = plan.stages, plan.pricing, plan.options
    chunk = max(1, int(float(os.environ.get("ENRICHKIT_BATCH_CHUNK") or 5000)))
    values = dict(first)
    lines = ["\nbatch mode (--batch): each LLM stage's requests as Google batch jobs; python/http stages locally\n"]
    waves = 0
    for stage in stages.stages:
        if stage.kind == "llm" and stage.prompt is not None:
            model = stages.model_for(stage, options.model)
            request = build_request(stage, stage.prompt.render(values), model, pricing.aliases)
            batched = stage.raw.get("batch", True) is not False
            out = OUTPUT_TOKENS_PER_FIELD * len(stage.fields)
            costs = {}
            for name, flex, batch in (("standard", False, False), ("flex", True, False), ("batch", False, True)):
                charge = pricing.charge(model, prompt_tokens=request.input_tokens, output_tokens=out,
                                        grounded=stage.search, search_queries=SEARCH_QUERIES if stage.search else 0,
                                        flex=flex, batch=batch)
                costs[name] = (charge.tokens * pending, charge.grounding * pending)
            jobs = math.ceil(pending / chunk) if batched else 0
            waves += bool(batched and pending)
            saving = 1 - sum(costs["batch"]) / sum(costs["standard"]) if sum(costs["standard"]) else 0.0
            lines.append(
                f"  {stage.name} ({model}): {pending} requests in {jobs} batch job(s) of up to {chunk}"
                + ("" if batched else " (batch = false: synchronous)") + "; cost "
                + ", ".join(f"{name} ${t + g:.2f} (tokens ${t:.2f} + grounding ${g:.2f})"
                            for name, (t, g) in costs.items())
                + f"; batch saves {saving:.0%}" + (" (the grounding fee is not discounted)" if stage.search else "")
                + "\n")
        values.update({f: f"<{f}>" for f in stage.output_fields})
    lines.append(f"  time: up to 24 h per LLM stage (Google's target), so up to {24 * waves} h for {waves} batched "
                 "stage(s) in sequence; often much less\n")
    return "".join(lines)
