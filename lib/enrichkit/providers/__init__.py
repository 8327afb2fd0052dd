"""Stage executors: one module per kind of stage (Gemini, HTTP, Python function)."""
