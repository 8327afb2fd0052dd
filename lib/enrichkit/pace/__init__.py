"""Pacing and failure policy: limiter, quota windows, breaker, retry, error classes, deadlines, budgets."""
