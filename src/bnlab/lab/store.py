"""The run store: one SQLite file (``runs.sqlite``) in the output folder.

Tables::

    runs(experiment, variant, seed, config_hash,   -- the key (variant = base name)
         label,            -- variant name with its grid suffix, e.g. "bn[learning_rate=0.01]"
         status,           -- 'running' | 'completed' | 'failed'
         result,           -- RunResult JSON (NULL while running)
         error,            -- traceback of a failed run
         seconds, started, finished,               -- timings (ISO 8601 UTC for the times)
         weights,          -- final weights file, relative to the folder (NULL if none)
         versions,         -- JSON {"bnlab", "torch", "numpy", "python"}
         schema_version)
    experiments(id, name, resolved, created)       -- each resolved experiment started here

The file runs in WAL mode with ``synchronous=FULL`` and every write is one
transaction, so a killed process (even ``kill -9``) leaves either the old or the new
row, never a broken file. A run is stored as ``running`` when it is handed to a
worker and replaced by its result when it finishes; ``running`` rows left behind by
a killed study are simply run again.

Resume: a run is reused when a ``completed`` row has the same experiment, variant,
seed and config hash (the hash covers data, model, and training settings), so a
changed setting makes new runs instead of reusing stale ones.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnlab.lab.errors import LabError, StoreError
from bnlab.lab.results import SCHEMA_VERSION, RunResult, now_iso

__all__ = ["STORE_FILE", "Store", "StoredRun"]

STORE_FILE = "runs.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    experiment     TEXT    NOT NULL,
    variant        TEXT    NOT NULL,
    seed           INTEGER NOT NULL,
    config_hash    TEXT    NOT NULL,
    label          TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    result         TEXT,
    error          TEXT,
    seconds        REAL,
    started        TEXT,
    finished       TEXT,
    weights        TEXT,
    versions       TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    PRIMARY KEY (experiment, variant, seed, config_hash)
);
CREATE TABLE IF NOT EXISTS experiments (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT NOT NULL,
    resolved TEXT NOT NULL,
    created  TEXT NOT NULL
);
"""

RunKey = tuple[str, str, int, str]  # (experiment, variant, seed, config_hash)


@dataclass(frozen=True)
class StoredRun:
    """One row of the ``runs`` table."""

    experiment: str
    variant: str
    seed: int
    config_hash: str
    label: str
    status: str
    result: RunResult | None
    seconds: float | None
    started: str | None
    finished: str | None
    weights: str | None
    versions: Mapping[str, str]


_VARIANT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "base": str,
    "description": str,
    "config_hash": str,
    "grid": dict,
    "data": dict,
    "train": dict,
    "layers": list,
    "input_shape": (list, type(None)),
}


def _resolved_problem(resolved: Any) -> str | None:
    """What is wrong with a resolved experiment read back from the store, or None.

    Checks the structure the readers rely on (names, seeds, each variant's fields and
    their types); the layers themselves are validated again when a model is built.
    """
    if not isinstance(resolved, dict):
        return "not a JSON object"
    if not isinstance(resolved.get("name"), str):
        return "no experiment name"
    seeds = resolved.get("seeds")
    if not isinstance(seeds, list) or not all(type(s) is int for s in seeds):
        return "seeds is not a list of integers"
    variants = resolved.get("variants")
    if not isinstance(variants, list) or not variants:
        return "no variants"
    for i, v in enumerate(variants):
        if not isinstance(v, dict):
            return f"variant {i} is not an object"
        for key, kind in _VARIANT_FIELDS.items():
            if not isinstance(v.get(key), kind):
                return f"variant {i} has no valid {key!r}"
        if not isinstance(v["data"].get("name"), str):
            return f"variant {i} names no dataset"
        shape = v["input_shape"]
        if shape is not None and not all(type(d) is int and d >= 1 for d in shape):
            return f"variant {i} has input_shape {shape!r}"
    return None


class Store:
    """The SQLite run store of one output folder (see the module docstring).

    Use as a context manager, or call `close`. Only one process writes (the one running
    the study); workers hand their results back to it.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        with self._errors("opening it"):
            self._db = self._connect()
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LabError(
                    f"{self.path}: store schema version {version} is newer than this bnlab's "
                    f"({SCHEMA_VERSION}); upgrade bnlab or use another --out folder"
                )
            if readonly:
                tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
                if not {"runs", "experiments"} <= tables:
                    raise sqlite3.DatabaseError("no runs and experiments tables")
                return
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        """Read-write, or read-only (``mode=ro``: a read-only folder or file is fine)."""
        if not self.readonly:
            return sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA user_version").fetchone()
            return db
        except sqlite3.OperationalError:
            # WAL needs a shared-memory file next to the database; where the folder is
            # read-only and none exists, read the file as it is (no writer can be there).
            return sqlite3.connect(
                uri + "&immutable=1", uri=True, isolation_level=None, timeout=30.0
            )

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """SQLite's failures as one-line `StoreError`s that say what to do."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise StoreError.from_sqlite(self.path, doing, e) from None

    @classmethod
    def in_folder(cls, out_dir: str | Path, *, create: bool = True) -> Store:
        """The store of `out_dir`: created with the folder when `create`, else opened read-only.

        Raises:
            LabError: no store (with ``create=False``); StoreError: a zero-length store
                next to weights files (the runs' records were lost: resuming would
                retrain runs whose weights exist), or a corrupted or unusable store.
        """
        out = Path(out_dir)
        path = out / STORE_FILE
        if not create and not path.is_file():
            raise LabError(f"{out}: no {STORE_FILE} here; give the --out folder of a `bnlab run`")
        if path.is_file() and path.stat().st_size == 0:
            weights = list((out / "weights").glob("*.safetensors"))
            if weights or not create:
                raise StoreError(
                    f"{path} is empty (0 bytes) but the folder holds {len(weights)} weights "
                    "files: the records of its runs are lost; restore runs.sqlite from a "
                    "backup, or run the study into another --out folder"
                )
        if not create:
            return cls(path, readonly=True)
        out.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back itself (disk full)
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ----------------------------------------------------------------- experiments

    def add_experiment(self, resolved: Mapping[str, Any]) -> None:
        """Record that a study with this resolved experiment started (it becomes the latest)."""
        with self._errors("recording the experiment"), self._transaction():
            self._db.execute(
                "INSERT INTO experiments (name, resolved, created) VALUES (?, ?, ?)",
                (resolved["name"], json.dumps(resolved, sort_keys=True), now_iso()),
            )

    def latest_experiment(self) -> dict[str, Any] | None:
        """The resolved experiment most recently started in this folder, or None."""
        with self._errors("reading the experiment"):
            row = self._db.execute(
                "SELECT resolved FROM experiments ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        try:
            resolved = json.loads(row[0])
        except (TypeError, ValueError):
            resolved = None
        problem = _resolved_problem(resolved)
        if problem:
            raise StoreError(
                f"{self.path}: the resolved experiment in the store is damaged ({problem}); "
                "run the study again into another --out folder"
            )
        return resolved

    # ----------------------------------------------------------------- runs

    def completed_keys(self) -> set[RunKey]:
        """Keys of every completed run."""
        with self._errors("reading the runs"):
            rows = self._db.execute(
                "SELECT experiment, variant, seed, config_hash FROM runs WHERE status = 'completed'"
            )
            return {(e, v, int(s), h) for e, v, s, h in rows}

    def mark_running(self, key: RunKey, label: str, versions: Mapping[str, str]) -> None:
        """Store a run as handed to a worker (replacing a stale or failed row)."""
        with self._errors("storing a started run"), self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO runs (experiment, variant, seed, config_hash, label, "
                "status, started, versions, schema_version) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (*key, label, now_iso(), json.dumps(versions), SCHEMA_VERSION),
            )

    def record(
        self,
        key: RunKey,
        label: str,
        result: RunResult,
        *,
        weights: str | None,
        versions: Mapping[str, str],
    ) -> None:
        """Store a finished run (completed or failed) in one transaction."""
        with self._errors("storing a finished run"):
            payload = json.dumps(result.to_dict(), allow_nan=False)
            with self._transaction():
                row = self._db.execute(
                    "SELECT started FROM runs WHERE experiment=? AND variant=? AND seed=? AND config_hash=?",
                    key,
                ).fetchone()
                self._db.execute(
                    "INSERT OR REPLACE INTO runs (experiment, variant, seed, config_hash, label, status, "
                    "result, error, seconds, started, finished, weights, versions, schema_version) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        *key,
                        label,
                        result.status,
                        payload,
                        result.error,
                        result.seconds,
                        row[0] if row else None,
                        now_iso(),
                        weights,
                        json.dumps(versions),
                        SCHEMA_VERSION,
                    ),
                )

    def drop_running(self) -> int:
        """Delete rows still marked running (runs in flight when a study stopped); their count."""
        with self._errors("dropping the runs in flight"), self._transaction():
            return self._db.execute("DELETE FROM runs WHERE status = 'running'").rowcount

    def runs(self, *, status: str | None = None, key: RunKey | None = None) -> list[StoredRun]:
        """Rows (optionally of one status, or the one with `key`), oldest first."""
        with self._errors("reading the runs"):
            query = (
                "SELECT experiment, variant, seed, config_hash, label, status, result, seconds, "
                "started, finished, weights, versions FROM runs"
            )
            where, params = [], []
            if status is not None:
                where.append("status = ?")
                params.append(status)
            if key is not None:
                where.append("experiment = ? AND variant = ? AND seed = ? AND config_hash = ?")
                params.extend(key)
            if where:
                query += " WHERE " + " AND ".join(where)
            out = []
            for row in self._db.execute(query + " ORDER BY rowid", params):
                e, v, s, h, label, st, result, seconds, started, finished, weights, vers = row
                out.append(
                    StoredRun(
                        experiment=e,
                        variant=v,
                        seed=int(s),
                        config_hash=h,
                        label=label,
                        status=st,
                        result=RunResult.from_dict(json.loads(result)) if result else None,
                        seconds=seconds,
                        started=started,
                        finished=finished,
                        weights=weights,
                        versions=json.loads(vers),
                    )
                )
            return out

    def get(self, key: RunKey) -> StoredRun | None:
        """The row with this key, or None."""
        rows = self.runs(key=key)
        return rows[0] if rows else None

    def integrity_ok(self) -> bool:
        """SQLite's own integrity check passes."""
        with self._errors("checking the store"):
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

