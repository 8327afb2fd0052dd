"""Stage executors behind one seam (`base.Provider`: `prepare`, `call`): Gemini (`gemini`, reading its answers
in `gemini_reply`, grounding sources in `sources`), HTTP (`http`, per-thread `sessions`), Python functions (`function`).
"""
