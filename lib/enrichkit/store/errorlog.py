"""The error log (`*.errors.jsonl`): one line per failed attempt (and per unreadable input row)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from enrichkit.redact import redact
from enrichkit.store.checkpoint import utc_now


class ErrorLog:
    """Append-only JSONL; each line is written whole and flushed. Written by the pipeline's main thread; the
    lock keeps a line whole against the close at exit."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.lock = threading.Lock()  # a line is written whole, even against a close from another thread

    def record(self, *, record_id: str | None, row: int | None, stage: str | None, attempt: int,
               error_type: str, message: str) -> dict[str, Any]:
        entry = {"at": utc_now(), "record_id": record_id, "row": row, "stage": stage, "attempt": attempt,
                 "error_type": error_type, "message": redact(message)[:2000]}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self.lock:
            if not self._file.closed:
                self._file.write(line)
                self._file.flush()
        return entry

    def close(self) -> None:
        with self.lock:
            self._file.close()
