"""What the dashboard reads: the jobs under its folder by key, a job's details (errors, the latest
output rows, fill rates: `details`), and the secrets nothing it serves may contain.

A job's key is its job ID; when two checkpoints under the folder carry the same ID (a copied job),
or the ID is not a plain name (a hand-edited `a/b`), each gets a key with a short hash of its path.
A key is only ever looked up among the checkpoints found under the folder: nothing in a request is
turned into a path.

Job files are evidence, not commands (`jobfiles.distrust`): a checkpoint that is not a regular file
this user owns and only this user may write is listed as a broken entry and never read; a link is
not one of the folder's jobs. One checkpoint that cannot be read, for whatever reason, is a broken
entry of its own and never breaks the listing.

The listing of 10,000 jobs stays cheap: each checkpoint's entry is kept as the JSON it was sent as,
with the few fields that decide its state, and is built again only when the file changed, or its
state did (a run started or ended); a look at an unchanged stopped job costs two `lstat`s.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from enrichkit.errors import ConfigError
from enrichkit.jobs.listing import SKIP_DIRS, recency
from enrichkit.jobs.state import JobStatus, decide_state, load_status, read_job_summary
from enrichkit.redact import DEFAULT, Redactor
from enrichkit.store.jobfiles import CHECKPOINT_SUFFIX, distrust, is_run, owner_path, read_owner, read_regular

log = logging.getLogger("enrichkit.dashboard")
_SECRET_NAME = re.compile(r"^(GEMINI|GOOGLE)_\w*(KEY|TOKEN|SECRET)", re.IGNORECASE)
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")
_ENV_MAX = 64 * 1024


class Secrets:
    """Where the dashboard finds the API key values it masks in everything it sends (any GEMINI_*/GOOGLE_*
    key, token or secret, from the environment and from the `.env` of the server's folder and of each
    job's folder); `redactor` masks them, and whatever this process registered itself. `generation`
    grows whenever a new value is found (what was redacted before may need it)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.redactor = Redactor(also=DEFAULT)
        self.generation = 0
        self._lock = threading.Lock()
        self._read: set[Path] = set()
        self._values: set[str] = set()
        self._add(v for k, v in (os.environ if env is None else env).items() if _SECRET_NAME.match(k))

    def add_env_file(self, folder: Path) -> None:
        """Read `folder/.env` once (a job's key may live only there): a regular file, at most 64 KB."""
        with self._lock:
            if folder in self._read:
                return
            self._read.add(folder)
        try:
            data, _ = read_regular(folder / ".env", _ENV_MAX)
            found = dotenv_values(stream=io.StringIO(data.decode("utf-8")))
        except (OSError, UnicodeDecodeError, ValueError):
            return
        self._add(v for k, v in found.items() if _SECRET_NAME.match(k))

    def _add(self, values: Any) -> None:
        new = {v for v in values if v} - self._values
        if new:
            with self._lock:
                self._values |= new
                self.generation += 1
            self.redactor.add_all(new)


@dataclass
class Entry:
    """A checkpoint found under the folder: its job, or why it cannot be read (or is not trusted)."""

    key: str
    checkpoint: Path
    job: JobStatus | None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.job is None:
            return {"key": self.key, "checkpoint": str(self.checkpoint), "state": "unreadable", "error": self.error}
        return {"key": self.key, **self.job.to_json()}


_SERIALS = itertools.count()


@dataclass
class _Seen:
    """A checkpoint as the last listing saw it: what decides its state, and the JSON it was sent as.
    `serial` is new whenever the JSON is."""

    stamp: tuple[int, ...]
    job_id: str  # "" for a broken entry
    error: str
    status: str = ""
    pid: int = 0
    host: str = ""
    last_updated: str = ""
    stop_reason: str = ""
    lock: Path | None = None
    output: Path | None = None
    order: tuple[float, str] = (0.0, "")
    state: str = ""
    active_pid: int | None = None
    body: bytes = b""
    generation: int = -1
    owner: str = ""  # the lock owner file's path
    serial: int = field(default_factory=lambda: next(_SERIALS))


_OWNER_SUFFIX = ".lock.owner"


class FolderWalk:
    """The checkpoints (and lock owner files) under a folder, as `listing.find_checkpoints` finds them
    (hidden folders and package trees skipped, links not followed), listing again only the folders whose
    mtime changed since the last walk: a checkpoint is replaced by a rename, a run's owner file created
    and removed, each of which changes its folder's mtime. A folder changed within the last 2 s is listed
    again next time too (its mtime may not show a second change within the same clock tick)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self._dirs: dict[str, tuple[int, list[str], list[str]]] = {}
        self.owners: set[str] = set()
        self.folders: set[str] = set()

    def walk(self) -> list[str]:
        found: list[str] = []
        dirs: dict[str, tuple[int, list[str], list[str]]] = {}
        owners: set[str] = set()
        racy = time.time_ns() - 2_000_000_000
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                mtime = os.stat(folder).st_mtime_ns  # noqa: PTH116 - str paths: 30,000 folders a poll
            except OSError:
                continue
            cached = self._dirs.get(folder)
            if cached is not None and cached[0] == mtime:
                subs, files = cached[1], cached[2]
            else:
                subs, files = _list_folder(folder)
            dirs[folder] = (mtime if mtime < racy else -1, subs, files)
            for name in files:
                (owners.add if name.endswith(_OWNER_SUFFIX) else found.append)(f"{folder}/{name}")
            stack.extend(f"{folder}/{sub}" for sub in reversed(subs))
        self._dirs, self.owners, self.folders = dirs, owners, set(dirs)
        return found

    def has_owner(self, owner: str) -> bool:
        """Is there a lock owner file at `owner` (known from the walk when its folder was walked)?"""
        if owner.rpartition("/")[0] in self.folders:
            return owner in self.owners
        return os.path.lexists(owner)


def _list_folder(folder: str) -> tuple[list[str], list[str]]:
    subs: list[str] = []
    files: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if name not in SKIP_DIRS:
                        subs.append(name)
                elif name.endswith((CHECKPOINT_SUFFIX, _OWNER_SUFFIX)):
                    files.append(name)
    except OSError:
        pass
    return sorted(subs), sorted(files)


class Catalog:
    """The jobs under `root`. `listing()` answers the jobs page from what changed since the last look;
    `find` looks a key up where the last listing found it, and walks the folder again only for a key
    it does not know; a job found is read afresh."""

    def __init__(self, root: Path, secrets: Secrets) -> None:
        self.root = root.resolve()
        self.secrets = secrets
        self.walker = FolderWalk(self.root)
        self.etag = ""
        self._lock = threading.Lock()  # one listing at a time: it updates the cache
        self._seen: dict[str, _Seen] = {}
        self._keys: dict[str, str] = {}  # key -> checkpoint, as the last listing found them

    # --- the listing -----------------------------------------------------------------------------------

    def listing(self) -> list[tuple[str, str, _Seen]]:
        """(key, checkpoint, what was seen) for every job under the folder: newest first, then the
        broken entries."""
        with self._lock:
            seen: dict[str, _Seen] = {}
            host = socket.gethostname()
            for path in self.walker.walk():
                item = self._look(path, self._seen.get(path), host)
                if item is not None:
                    seen[path] = item
            self._seen = seen
            ids: dict[str, int] = {}
            for item in seen.values():
                if item.job_id:
                    ids[item.job_id] = ids.get(item.job_id, 0) + 1
            jobs = sorted(((p, s) for p, s in seen.items() if s.job_id), key=lambda ps: ps[1].order, reverse=True)
            broken = [(p, s) for p, s in seen.items() if not s.job_id]
            out = [(self._key(p, s.job_id, ids[s.job_id]), p, s) for p, s in jobs]
            out += [(f"unreadable-{self._hash(p)}", p, s) for p, s in broken]
            self._keys = {key: path for key, path, _ in out}
            serials = array("Q", (s.serial for _, _, s in out)).tobytes()
            keys = "\0".join(key for key, _, _ in out).encode()
            self.etag = '"' + hashlib.blake2b(serials + keys, digest_size=12).hexdigest() + '"'
            return out

    def listing_json(self) -> bytes:
        """`GET /api/jobs`: each job's kept JSON with its key put in front."""
        parts = []
        for key, _path, item in self.listing():
            parts.append(b'{"key": ' + json.dumps(key).encode() + b", " + item.body[1:])
        head = json.dumps(self.secrets.redactor.redact(str(self.root)), ensure_ascii=False).encode()
        return b'{"dir": ' + head + b', "jobs": [' + b", ".join(parts) + b"]}"

    def entries(self) -> list[Entry]:
        """Every job, newest first, then the broken entries (each read afresh)."""
        return [self._entry(Path(path), key) for key, path, _ in self.listing()]

    def _look(self, path: str, cached: _Seen | None, host: str) -> _Seen | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None  # gone since the walk
        if stat.S_ISLNK(st.st_mode):
            return None  # a link is not one of this folder's jobs (it may lead anywhere)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_uid, st.st_mode)
        if cached is not None and cached.stamp == stamp:
            if not cached.job_id:
                return cached
            if self._state(cached, host) == (cached.state, cached.active_pid) \
                    and cached.generation == self.secrets.generation:
                return cached
        why = distrust(st)
        if why is not None:
            return _Seen(stamp, "", f"not trusted: {why}", body=self._broken(path, f"not trusted: {why}"))
        checkpoint = Path(path)
        try:
            job = load_status(checkpoint, cp=read_job_summary(checkpoint))
            self._add_env(job)
            cp = job.cp
            item = _Seen(stamp, cp.job_id, "", cp.status, cp.pid, cp.host, cp.last_updated, cp.stop_reason,
                         job.paths.lock, job.paths.output, recency(job), job.state, job.active_pid,
                         generation=self.secrets.generation, owner=str(owner_path(job.paths.lock)))
            item.body = self._encode(job.to_json())
            return item
        except ConfigError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
        except Exception as exc:
            log.debug("dashboard: %s cannot be listed", path, exc_info=True)
            reason = f"corrupt checkpoint ({type(exc).__name__}: {exc})"
        return _Seen(stamp, "", reason, body=self._broken(path, reason))

    def _state(self, item: _Seen, host: str) -> tuple[str, int | None]:
        """The job's state now, from what was seen: a process is looked at only when the checkpoint
        says running or a lock owner file exists."""
        assert item.lock is not None and item.output is not None
        lock, output = item.lock, item.output
        if item.status != "running" and not self.walker.has_owner(item.owner):
            return decide_state(item, None, host, lambda pid, started_by: False)  # no process to look at
        return decide_state(item, read_owner(lock, trusted=True), host,
                            lambda pid, started_by: is_run(pid, started_by, lock, output))

    def _add_env(self, job: JobStatus) -> None:
        for folder in {job.paths.checkpoint.parent, Path(str(job.cp.options.get("cwd") or "."))}:
            self.secrets.add_env_file(folder)

    def _encode(self, data: dict[str, Any]) -> bytes:
        return json.dumps(self.secrets.redactor.redact_tree(data), ensure_ascii=False).encode()

    def _broken(self, path: str, reason: str) -> bytes:
        return self._encode({"checkpoint": path, "state": "unreadable", "error": reason})

    def _key(self, path: str, job_id: str, count: int) -> str:
        return job_id if count == 1 and _PLAIN_KEY.match(job_id) else f"{_slug(job_id)}-{self._hash(path)}"

    # --- one job ---------------------------------------------------------------------------------------

    def find(self, key: str) -> Entry | None:
        """The job of `key`, read afresh; None when no checkpoint under the folder has that key."""
        with self._lock:
            path = self._keys.get(key)
        if path is None or not self._names(path, key):
            self.listing()
            with self._lock:
                path = self._keys.get(key)
            if path is None:
                return None
        return self._entry(Path(path), key)

    def _names(self, path: str, key: str) -> bool:
        """Is `key` still the key of the checkpoint at `path`?"""
        with self._lock:
            item = self._seen.get(path)
        if item is None:
            return False
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if (st.st_ino, st.st_mtime_ns, st.st_size, st.st_uid, st.st_mode) == item.stamp:
            return True
        fresh = self._look(path, None, socket.gethostname())
        return fresh is not None and (key.startswith("unreadable-") != bool(fresh.job_id)) and (
            not fresh.job_id or key in (fresh.job_id, f"{_slug(fresh.job_id)}-{self._hash(path)}"))

    def _entry(self, path: Path, key: str) -> Entry:
        try:
            st = os.lstat(path)
            why = distrust(st)
            if why is not None:
                return Entry(key, path, None, f"not trusted: {why}")
            job = load_status(path, cp=read_job_summary(path))
            self._add_env(job)
            return Entry(key, path, job)
        except ConfigError as exc:
            return Entry(key, path, None, str(exc).removeprefix(f"{path}: "))
        except Exception as exc:  # noqa: BLE001 - a hand-edited checkpoint is a broken entry, never a 500
            return Entry(key, path, None, f"corrupt checkpoint ({type(exc).__name__}: {exc})")

    def _hash(self, path: str) -> str:
        return hashlib.sha256(os.path.relpath(path, self.root).encode()).hexdigest()[:8]


def _slug(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:-]+", "_", job_id)[:80] or "job"
