"""Batch mode (`--batch`): each LLM stage's requests through the Gemini Batch API, exactly once across kill -9.

`ledger` (the durable record of what was asked of Google), `google` (the Files and Batch APIs through
google-genai, and a request as a batch line), `run` (the loop: settle, poll, sweep, submit).
"""
