"""Stage executors behind one seam, `base.Provider` (`prepare`, `call`; `with_model`, `check_models` and `close`
with defaults in `base.BaseProvider`; what crosses it: `Request`, `Answer`, `Usage`): Gemini (`gemini`, reading
its answers in `gemini_reply`, grounding sources in `sources`, its clients built in `genai_client`), HTTP
(`http`, per-thread `sessions`), Python functions (`function`).
"""
