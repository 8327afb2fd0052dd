"""The batch ledger beside the output (`<stem>.batch.sqlite`): what this job asked Google to do, and what came back.

Every change is one transaction committed with `synchronous=FULL` (fsynced): an intent is on disk BEFORE the side
effect it authorises (an upload, a create, a cancel), and a result AFTER the side effect it records (a job's name,
an ingested output file). A crash between the two leaves an intent without its result; the run that opens the
ledger next finds it and settles it (see `enrichkit.batch.run`).

    chunks  one Google batch job's worth of requests, for one stage and model:
            planning -> planned -> uploaded -> creating -> submitted -> ingested | expired | failed | cancelled
    items   one request line: (stage, record, attempt) with its key, its chunk and its state:
            inflight -> answered | error | missing | expired | cancelled | failed_job
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, stage TEXT NOT NULL, model TEXT NOT NULL, state TEXT NOT NULL,
    lines INTEGER NOT NULL DEFAULT 0, create_tries INTEGER NOT NULL DEFAULT 0, display_name TEXT,
    file_name TEXT, batch_name TEXT, remote_state TEXT, stats TEXT, error TEXT,
    reserved_usd REAL NOT NULL DEFAULT 0, actual_usd REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, changed_at REAL NOT NULL, creating_at REAL, submitted_at REAL, cancel INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS items (
    stage TEXT NOT NULL, record_id TEXT NOT NULL, attempt INTEGER NOT NULL, key TEXT NOT NULL UNIQUE,
    chunk_id INTEGER NOT NULL, state TEXT NOT NULL, fields TEXT, usage TEXT, error_type TEXT, message TEXT,
    cost_usd REAL NOT NULL DEFAULT 0, PRIMARY KEY (stage, record_id, attempt));
CREATE INDEX IF NOT EXISTS items_chunk ON items (chunk_id);
"""

IN_FLIGHT = ("planned", "uploaded", "creating", "submitted")  # a chunk whose records Google may still answer


@dataclass(frozen=True)
class Chunk:
    id: int
    stage: str
    model: str
    state: str
    lines: int
    create_tries: int
    display_name: str | None
    file_name: str | None
    batch_name: str | None
    remote_state: str | None
    stats: dict[str, Any]
    error: str | None
    reserved_usd: float
    actual_usd: float
    created_at: float
    changed_at: float
    creating_at: float | None
    submitted_at: float | None
    cancel: bool


@dataclass(frozen=True)
class Item:
    stage: str
    record_id: str
    attempt: int
    key: str
    chunk_id: int
    state: str
    fields: dict[str, str] | None
    usage: dict[str, Any] | None
    error_type: str | None
    message: str | None
    cost_usd: float
    asked_at: float = 0.0  # when its chunk was planned (wall clock)


def item_key(stage: str, record_id: str, attempt: int) -> str:
    """A request line's key: unique per (stage, record, attempt), so a line can be billed once only."""
    return f"{stage}:{record_id}:{attempt}"


P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[Ledger, P], R]) -> Callable[Concatenate[Ledger, P], R]:
    @functools.wraps(method)
    def call(self: Ledger, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.lock:
            return method(self, *args, **kwargs)
    return call


class Ledger:
    """One connection: written by the run's main thread only, read also by the workers that walk records (every
    use holds `lock`)."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = path
        self.clock = clock
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # WAL + FULL: each commit is fsynced before it returns
        self.db.executescript(SCHEMA)

    @_locked
    def close(self) -> None:
        self.db.close()

    # --- transactions -------------------------------------------------------------------------------------

    def _txn(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                db.execute(sql, args)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @_locked
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_locked
    def set_meta(self, key: str, value: str) -> None:
        self._txn([("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))])

    # --- chunks -------------------------------------------------------------------------------------------

    @_locked
    def new_chunk(self, stage: str, model: str, reserved: float) -> int:
        """A chunk being planned (its request file is written next; its items come with `plan`)."""
        now = self.clock()
        with_id = self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM chunks").fetchone()[0]
        self._txn([("INSERT INTO chunks (id, stage, model, state, reserved_usd, created_at, changed_at) "
                    "VALUES (?, ?, ?, 'planning', ?, ?, ?)", (with_id, stage, model, reserved, now, now))])
        return int(with_id)

    @_locked
    def plan(self, chunk_id: int, items: list[tuple[str, str, int]]) -> None:
        """The chunk's request file is on disk: its items are in flight from now on (one transaction)."""
        now = self.clock()
        self._txn([*((("INSERT INTO items (stage, record_id, attempt, key, chunk_id, state) "
                       "VALUES (?, ?, ?, ?, ?, 'inflight')", (s, r, a, item_key(s, r, a), chunk_id))
                      for s, r, a in items)),
                   ("UPDATE chunks SET state = 'planned', lines = ?, changed_at = ? WHERE id = ?",
                    (len(items), now, chunk_id))])

    @_locked
    def set_chunk(self, /, chunk_id: int, **changes: Any) -> None:
        changes["changed_at"] = self.clock()
        if "stats" in changes:
            changes["stats"] = json.dumps(changes["stats"])
        columns = ", ".join(f"{name} = ?" for name in changes)
        self._txn([(f"UPDATE chunks SET {columns} WHERE id = ?", (*changes.values(), chunk_id))])

    @_locked
    def drop_chunk(self, chunk_id: int) -> None:
        """A chunk left in `planning` by a crash: its items were never in flight."""
        self._txn([("DELETE FROM items WHERE chunk_id = ?", (chunk_id,)), ("DELETE FROM chunks WHERE id = ?",
                                                                           (chunk_id,))])

    @_locked
    def chunks(self, *states: str) -> list[Chunk]:
        sql = "SELECT * FROM chunks" + (f" WHERE state IN ({','.join('?' * len(states))})" if states else "")
        return [_chunk(row) for row in self.db.execute(sql + " ORDER BY id", states)]

    @_locked
    def chunk(self, chunk_id: int) -> Chunk:
        return _chunk(self.db.execute("SELECT * FROM chunks WHERE id = ?", (chunk_id,)).fetchone())

    # --- items --------------------------------------------------------------------------------------------

    @_locked
    def items_of(self, chunk_id: int) -> list[Item]:
        return [_item(row) for row in self.db.execute("SELECT * FROM items WHERE chunk_id = ? ORDER BY key",
                                                      (chunk_id,))]

    @_locked
    def attempts(self, stage: str, record_id: str) -> list[Item]:
        return [_item(row[:-1], row[-1]) for row in self.db.execute(
            "SELECT items.*, chunks.created_at FROM items JOIN chunks ON chunks.id = items.chunk_id "
            "WHERE items.stage = ? AND items.record_id = ? ORDER BY items.attempt", (stage, record_id))]

    @_locked
    def ingest(self, chunk_id: int, results: dict[str, tuple[str, dict[str, Any]]], chunk_state: str,
               remote_state: str, stats: dict[str, Any], left_as: str) -> None:
        """A chunk's output, in one transaction: each key's result (state, columns), the lines with none left as
        `left_as` (missing, expired, cancelled...), the chunk's final state and what it cost."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        actual = 0.0
        for key, (state, cols) in results.items():
            actual += float(cols.get("cost_usd") or 0.0)
            statements.append(("UPDATE items SET state = ?, fields = ?, usage = ?, error_type = ?, message = ?, "
                               "cost_usd = ? WHERE key = ? AND chunk_id = ? AND state = 'inflight'",
                               (state, _dump(cols.get("fields")), _dump(cols.get("usage")), cols.get("error_type"),
                                cols.get("message"), float(cols.get("cost_usd") or 0.0), key, chunk_id)))
        statements.append(("UPDATE items SET state = ? WHERE chunk_id = ? AND state = 'inflight'",
                           (left_as, chunk_id)))
        statements.append(("UPDATE chunks SET state = ?, remote_state = ?, stats = ?, actual_usd = ?, "
                           "changed_at = ? WHERE id = ?",
                           (chunk_state, remote_state, json.dumps(stats), actual, self.clock(), chunk_id)))
        self._txn(statements)

    @_locked
    def spent(self) -> float:
        return float(self.db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM items").fetchone()[0])

    @_locked
    def spent_on(self, records: Callable[[str], bool]) -> float:
        """What the answers of the records `records` says yes to cost (those the job's cost already counts)."""
        rows = self.db.execute("SELECT record_id, SUM(cost_usd) FROM items WHERE cost_usd != 0 GROUP BY record_id")
        return float(sum(cost for record_id, cost in rows if records(record_id)))

    @_locked
    def reserved(self) -> float:
        states = ",".join("?" * len(IN_FLIGHT))
        return float(self.db.execute(f"SELECT COALESCE(SUM(reserved_usd), 0) FROM chunks WHERE state IN ({states})",
                                     IN_FLIGHT).fetchone()[0])

    @_locked
    def summary(self) -> dict[str, Any]:
        """For the checkpoint, the report and `jobs.py status`: the Google jobs and the records they hold."""
        jobs = [{"chunk": c.id, "stage": c.stage, "model": c.model, "state": c.state, "display_name": c.display_name,
                 "name": c.batch_name, "batch_name": c.batch_name, "google_state": c.remote_state, "lines": c.lines,
                 "stats": c.stats, "created_at": c.submitted_at, "cost_usd": round(c.actual_usd, 6)}
                for c in self.chunks()]
        flying = [j for j in jobs if j["state"] in IN_FLIGHT]
        tokens, grounding, standard = self.db.execute(
            "SELECT COALESCE(SUM(json_extract(usage, '$.token_cost_usd')), 0), "
            "COALESCE(SUM(json_extract(usage, '$.grounding_cost_usd')), 0), "
            "COALESCE(SUM(json_extract(usage, '$.standard_token_usd')), 0) FROM items WHERE usage IS NOT NULL"
        ).fetchone()
        return {"jobs_in_flight": len(flying), "records_in_flight": sum(j["lines"] for j in flying),
                "jobs_total": len(jobs), "spent_usd": round(self.spent(), 6), "reserved_usd": round(self.reserved(), 6),
                # What Google's answers cost at the batch rate, tokens and grounding apart, and the same tokens at
                # the standard rate (the grounding fee and cached tokens are not discounted).
                "cost": {"tokens_usd": round(tokens, 6), "grounding_usd": round(grounding, 6),
                         "tokens_at_standard_usd": round(standard, 6), "saved_usd": round(standard - tokens, 6)},
                "jobs": jobs[-50:]}


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _chunk(row: Any) -> Chunk:
    (cid, stage, model, state, lines, tries, display, file_name, batch_name, remote, stats, error, reserved, actual,
     created, changed, creating, submitted, cancel) = row
    return Chunk(cid, stage, model, state, lines, tries, display, file_name, batch_name, remote,
                 json.loads(stats) if stats else {}, error, reserved, actual, created, changed, creating, submitted,
                 bool(cancel))


def _item(row: Any, asked_at: float = 0.0) -> Item:
    stage, record_id, attempt, key, chunk_id, state, fields, usage, error_type, message, cost = row
    return Item(stage, record_id, attempt, key, chunk_id, state, json.loads(fields) if fields else None,
                json.loads(usage) if usage else None, error_type, message, cost, asked_at)


def ledger_path(output: Path) -> Path:
    """`<stem>.batch.sqlite` beside the output."""
    return output.with_name(f"{output.stem}.batch.sqlite")
