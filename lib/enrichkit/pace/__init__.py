"""Pacing and failure policy: `limiter` (the locked shell every worker asks), `schedule` (GCRA slots, pure),
`judge` (what a 429 says, pure), `traffic` (what judge reads: the last windows' requests and answers),
`quota` (keeps that record and judge's memory), `breaker`, `retry`,
`classify` (what an error is), `deadline` (--timeout), `budget` (--max-cost)."""
