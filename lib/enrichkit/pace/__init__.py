"""Pacing and failure policy: `limiter` (the locked shell every worker asks), `schedule` (GCRA slots, pure),
`judge` (what a 429 says, pure), `quota` (the record and memory judge keeps), `breaker`, `retry`,
`classify` (what an error is), `deadline` (--timeout), `budget` (--max-cost)."""
