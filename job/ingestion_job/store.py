"""The DuckDB store: availability, gaps, runs and loaded data, written once per run.

* One transaction per run: a run killed half way leaves the file as it was before.
* Upserts are explicit ``INSERT ... ON CONFLICT (...) DO UPDATE SET ...`` from Arrow
  tables, deduplicated first (DuckDB lets the first duplicate in a batch win silently),
  and no secondary index sits on a column that gets rewritten (DuckDB 1.4's
  ``INSERT OR REPLACE`` skipped such columns and left 201,000 rows wrong in the system
  we replace).
* Integrity invariants gate the commit: ``present`` exactly when the probe saw the object,
  ``size``/``etag`` set exactly when present, a repaired gap has its sha256 and time.
* A run holds the file only to read its starting state and to commit (:meth:`DuckStore.release`,
  :meth:`DuckStore.acquire`); a second process waits up to ``lock_timeout`` for it, then gets one
  line naming the file and the holder, never a corrupt store.
* A run is recorded as ``running`` when it starts, with the instant its Job's deadline ends
  it. A run still ``running`` past that instant never finished (SIGKILL, OOM, deadline): the
  next run of the schedule records it as ``abandoned``, so the success rate counts it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import operator
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa

from ingestion_contract import GAP_CAUSES, RunSummary, by_cause

from . import failpoints, first_line
from .plan import UNPROBED, Held, series_name
from .rows import Load

SCHEMA_VERSION = 6
# Open gaps written before causes (schema 4) said 'absent upstream', 'repair failed' or
# 'deferred: <why>'; these statements give each its cause (a DeltaStore runs them on its
# working copy after reading the tables, so the next commit writes the causes to Delta).
CAUSES_OF_OLD_REASONS = [
    "UPDATE gaps SET reason = 'deferred', last_error = reason WHERE reason LIKE 'deferred: %'",
    "UPDATE gaps SET reason = 'late-upstream' WHERE reason = 'absent upstream'",
    """UPDATE gaps SET reason = CASE WHEN regexp_matches(coalesce(last_error, ''),
           'empty object|does not match the listed|does not match the checksum|empty checksum file') THEN 'verification-failed'
           ELSE 'fetch-failed' END WHERE reason = 'repair failed'""",
]

MIGRATIONS = {
    1: [
        """CREATE TABLE objects (
            schedule VARCHAR NOT NULL, symbol VARCHAR NOT NULL, date DATE NOT NULL,
            key VARCHAR NOT NULL, present BOOLEAN NOT NULL, size BIGINT, etag VARCHAR,
            last_modified TIMESTAMPTZ, first_seen_at TIMESTAMPTZ,
            PRIMARY KEY (schedule, symbol, date))""",
        """CREATE TABLE gaps (
            schedule VARCHAR NOT NULL, symbol VARCHAR NOT NULL, date DATE NOT NULL, key VARCHAR NOT NULL,
            status VARCHAR NOT NULL, reason VARCHAR, detected_at TIMESTAMPTZ NOT NULL,
            repaired_at TIMESTAMPTZ, attempts INTEGER NOT NULL, last_error VARCHAR, sha256 VARCHAR,
            bytes BIGINT, PRIMARY KEY (schedule, symbol, date))""",
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, schedule VARCHAR NOT NULL, namespace VARCHAR, trigger VARCHAR NOT NULL,
            scheduled_time TIMESTAMPTZ, job_name VARCHAR, attempt INTEGER NOT NULL,
            started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ NOT NULL, outcome VARCHAR NOT NULL,
            window_first DATE, window_last DATE, error VARCHAR, warnings VARCHAR)""",
        # ...and one column per counter of ingestion_contract.RunSummary, added by migrate().
    ],
    2: [  # a run is recorded when it starts (outcome 'running', no finished_at yet), with its deadline
        "ALTER TABLE runs ALTER COLUMN finished_at DROP NOT NULL",
        "ALTER TABLE runs ADD COLUMN deadline_at TIMESTAMPTZ",
    ],
    3: [  # a cell follows its object: what it was verified as (etag), and its provenance when that changed
        "ALTER TABLE gaps ADD COLUMN etag VARCHAR",
        "ALTER TABLE gaps ADD COLUMN previous_etag VARCHAR",
        "ALTER TABLE gaps ADD COLUMN previous_sha256 VARCHAR",
        "ALTER TABLE gaps ADD COLUMN changed_at TIMESTAMPTZ",
        "ALTER TABLE gaps ADD COLUMN changes INTEGER DEFAULT 0",
    ],
    4: CAUSES_OF_OLD_REASONS,  # an open gap's reason is its one cause (ingestion_contract.GAP_CAUSES)
    5: [  # a cell is (symbol, variant: one value of each dimension, date); the key gains variant
        # (DuckDB cannot change a primary key in place: each table is made anew and filled)
        """CREATE TABLE objects_v5 (
            schedule VARCHAR NOT NULL, symbol VARCHAR NOT NULL, variant VARCHAR NOT NULL DEFAULT '', date DATE NOT NULL,
            key VARCHAR NOT NULL, present BOOLEAN NOT NULL, size BIGINT, etag VARCHAR,
            last_modified TIMESTAMPTZ, first_seen_at TIMESTAMPTZ,
            PRIMARY KEY (schedule, symbol, variant, date))""",
        """INSERT INTO objects_v5 SELECT schedule, symbol, '', date, key, present, size, etag, last_modified, first_seen_at
           FROM objects""",
        "DROP TABLE objects",
        "ALTER TABLE objects_v5 RENAME TO objects",
        """CREATE TABLE gaps_v5 (
            schedule VARCHAR NOT NULL, symbol VARCHAR NOT NULL, variant VARCHAR NOT NULL DEFAULT '', date DATE NOT NULL,
            key VARCHAR NOT NULL, status VARCHAR NOT NULL, reason VARCHAR, detected_at TIMESTAMPTZ NOT NULL,
            repaired_at TIMESTAMPTZ, attempts INTEGER NOT NULL, last_error VARCHAR, sha256 VARCHAR,
            bytes BIGINT, etag VARCHAR, previous_etag VARCHAR, previous_sha256 VARCHAR, changed_at TIMESTAMPTZ,
            changes INTEGER DEFAULT 0, PRIMARY KEY (schedule, symbol, variant, date))""",
        """INSERT INTO gaps_v5 SELECT schedule, symbol, '', date, key, status, reason, detected_at, repaired_at, attempts,
           last_error, sha256, bytes, etag, previous_etag, previous_sha256, changed_at, changes FROM gaps""",
        "DROP TABLE gaps",
        "ALTER TABLE gaps_v5 RENAME TO gaps",
        # table loaded, when a run has made it, gains the column too (see DuckStore.migrate)
    ],
    6: [  # a cell is a day or a month (target.period): the key gains period
        """CREATE TABLE objects_v6 (
            schedule VARCHAR NOT NULL, symbol VARCHAR NOT NULL, variant VARCHAR NOT NULL DEFAULT '',
            period VARCHAR NOT NULL DEFAULT 'daily', date DATE NOT NULL,
            key VARCHAR NOT NULL, present BOOLEAN NOT NULL, size BIGINT, etag VARCHAR,
            last_modified TIMESTAMPTZ, first_seen_at TIMESTAMPTZ,
            PRIMARY KEY (schedule, symbol, variant, period, date))""",
        """INSERT INTO objects_v6 SELECT schedule, symbol, variant, 'daily', date, key, present, size, etag, last_modified,
           first_seen_at FROM objects""",
        "DROP TABLE objects",
        "ALTER TABLE objects_v6 RENAME TO objects",
        """CREATE TABLE gaps_v6 (
            schedule VARCHAR NOT NULL, symbol VARCHAR NOT NULL, variant VARCHAR NOT NULL DEFAULT '',
            period VARCHAR NOT NULL DEFAULT 'daily', date DATE NOT NULL,
            key VARCHAR NOT NULL, status VARCHAR NOT NULL, reason VARCHAR, detected_at TIMESTAMPTZ NOT NULL,
            repaired_at TIMESTAMPTZ, attempts INTEGER NOT NULL, last_error VARCHAR, sha256 VARCHAR,
            bytes BIGINT, etag VARCHAR, previous_etag VARCHAR, previous_sha256 VARCHAR, changed_at TIMESTAMPTZ,
            changes INTEGER DEFAULT 0, PRIMARY KEY (schedule, symbol, variant, period, date))""",
        """INSERT INTO gaps_v6 SELECT schedule, symbol, variant, 'daily', date, key, status, reason, detected_at, repaired_at,
           attempts, last_error, sha256, bytes, etag, previous_etag, previous_sha256, changed_at, changes FROM gaps""",
        "DROP TABLE gaps",
        "ALTER TABLE gaps_v6 RENAME TO gaps",
    ],
}
OUTCOMES = ("succeeded", "partial", "failed", "abandoned")  # a finished run's outcome; 'running' until then
ABANDONED = ("the run never recorded its end: killed (SIGKILL, OOM, its deadline) before its commit, "
             "or its store could not be written then")

OBJECT_COLS = ["schedule", "symbol", "variant", "period", "date", "key", "present", "size", "etag", "last_modified", "first_seen_at"]
# when a cell's object was first listed: kept once the store has it, so a run need not read
# it back to write it again
OBJECT_KEEP = ("first_seen_at",)
GAP_COLS = ["schedule", "symbol", "variant", "period", "date", "key", "status", "reason", "detected_at", "repaired_at", "attempts",
            "last_error", "sha256", "bytes", "etag", "previous_etag", "previous_sha256", "changed_at", "changes"]
GAP_TIMES = ("detected_at", "repaired_at", "changed_at")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# The run's own columns, then one per counter of the run summary (added to older files on open).
RUN_COLS = ["run_id", "schedule", "namespace", "trigger", "scheduled_time", "job_name", "attempt", "started_at",
            "finished_at", "outcome", "window_first", "window_last", "error", "warnings", "deadline_at",
            *(name for name, _ in RunSummary.columns())]
KEY = ["schedule", "symbol", "variant", "period", "date"]
LOADED_KEY = ("schedule", "symbol", "variant", "period", "date")  # the columns of table loaded that name its cell
# a cell's series as the run names it (plan.series_name): the symbol, '@' and its variant if
# any, and '#' and its period if not daily
_SERIES = "CASE WHEN variant = '' THEN symbol ELSE symbol || '@' || variant END"
SERIES = f"{_SERIES} || CASE WHEN period = 'daily' THEN '' ELSE '#' || period END"
# in the report, a monthly cell's series says so: BTCUSDT@interval=1m (monthly)
LABEL = f"{_SERIES} || CASE WHEN period = 'daily' THEN '' ELSE ' (' || period || ')' END"
GAPS_BY_SERIES = f"(SELECT * REPLACE ({LABEL} AS symbol) FROM gaps)"
OBJECTS_BY_SERIES = f"(SELECT * REPLACE ({LABEL} AS symbol) FROM objects)"


def sql_quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# key columns that came later (schemas 5 and 6), with what a row written before them means
LATER_KEYS = {"variant": "", "period": "daily"}


def keyed(column: str, alias: str = "") -> str:
    """``column`` in SQL (DuckDB's and Delta's) as a key: a row written before one of
    LATER_KEYS holds no value in it, which means its default."""
    if column in LATER_KEYS:
        return f"coalesce({alias}{column}, {sql_quote(LATER_KEYS[column])})"
    return f"{alias}{column}"


@dataclasses.dataclass(frozen=True)
class Expiry:
    """What a run's retention deletes (storage.retention): per variant, the first day a cell of
    it is kept from (a cell whose last day is before it is past retention); with ``history``
    its objects and verified gaps rows too, else its loaded rows and open gaps only."""

    kept_from: dict[str, dt.date]
    history: bool = False

    def where(self, schedule: str) -> str:
        """The rows of this schedule past retention, as one SQL predicate (DuckDB's and Delta's)."""
        variant, period = keyed("variant"), keyed("period")
        cells = " OR ".join(
            f"({variant} = {sql_quote(v)} AND (({period} = 'monthly' AND date < '{c.replace(day=1).isoformat()}') OR "
            f"({period} <> 'monthly' AND date < '{c.isoformat()}')))"
            for v, c in sorted(self.kept_from.items()))
        return f"schedule = {sql_quote(schedule)} AND ({cells or 'false'})"


class StoreError(RuntimeError):
    """The store cannot be opened or would be left inconsistent; one line, names the file."""


class IntegrityError(StoreError):
    pass


def open_backend(ctx, store_path: Path | None, lock_timeout: float = 0, on_wait=None, read_only: bool = False) -> "Store":
    """The store a run or a report of ``ctx``'s schedule uses: a DuckDB file (``store_path``),
    or the spec's object store as Delta tables."""
    if store_path is not None:
        return open_store(store_path, read_only=read_only, lock_timeout=lock_timeout, on_wait=on_wait)
    from .delta import DeltaStore

    cfg = ctx.spec.storage.object_store
    if cfg is None:
        raise StoreError("no store: the spec has neither storage.duckdb nor storage.objectStore")
    return DeltaStore(cfg, ctx.schedule, ctx.store_credentials, on_wait=on_wait)


def open_store(path: str | Path, read_only: bool = False, lock_timeout: float = 0,
               on_wait: Callable[[str], None] | None = None) -> "DuckStore":
    return DuckStore(Path(path), read_only, lock_timeout, on_wait)


class Store(Protocol):
    """What a run and a report use of a store, whichever it is: a DuckDB file
    (:class:`DuckStore`) or a schedule's Delta tables in object storage
    (:class:`~ingestion_job.delta.DeltaStore`, which keeps a DuckStore as its working copy)."""

    def locked(self) -> contextlib.AbstractContextManager: ...
    def release(self) -> None: ...
    def close(self) -> None: ...
    def maintain(self) -> list[dict]: ...
    def known_symbols(self, schedule: str, period: str = "daily") -> set[str]: ...
    def held(self, schedule: str, period: str = "daily") -> dict[tuple[str, dt.date], Held]: ...
    def probed_through(self, schedule: str, period: str = "daily") -> dict[str, dt.date]: ...
    def backlog(self, schedule: str, period: str = "daily") -> dict[str, list[dt.date]]: ...
    def gaps(self, schedule: str, period: str = "daily") -> dict[tuple[str, dt.date], dict]: ...
    def run_attempts(self, run_id: str) -> int: ...
    def run_counts(self, schedule: str) -> dict[str, int]: ...
    def oldest_open_gap(self, schedule: str) -> dt.date | None: ...
    def last_finished(self, schedule: str) -> dict[str, dt.datetime]: ...
    def report(self, schedule: str | None, days: int, now: dt.datetime) -> dict: ...
    def refuse_loads(self, loads: list[Load]) -> dict[tuple[str, dt.date], str]: ...
    def begin_run(self, run: dict, now: dt.datetime) -> list[str]: ...
    def check(self) -> None: ...
    def write_run(self, objects: list[dict], gaps: list[dict], run: dict, loads: list[Load] = (),
                  expiry: Expiry | None = None) -> int: ...
    def variants(self, schedule: str) -> set[str]: ...
    def write_run_record(self, run: dict) -> None: ...
    def add_warning(self, run_id: str, warning: str) -> None: ...


class DuckStore:
    """The store as one DuckDB file (on a PVC), held only while a run reads its starting
    state and while it commits."""

    def __init__(self, path: Path, read_only: bool = False, lock_timeout: float = 0,
                 on_wait: Callable[[str], None] | None = None):
        """``lock_timeout``: seconds to wait while another process holds the file; ``on_wait``
        hears once, in one line, that this process is waiting and for whom."""
        self.path = path
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.on_wait = on_wait
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise StoreError(f"{path}: no such store (run the job first)")
        self.con = self._connect()
        self._schemas: dict[str, pa.Schema] = {}
        if not read_only:
            self.migrate()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        t0, told = time.monotonic(), False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as e:
                m = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", str(e))
                if not m and "lock" not in str(e).lower():
                    raise StoreError(f"{self.path}: cannot open the store: {first_line(e)}") from None
                holder = f" by {m.group(1)} (PID {m.group(2)})" if m else ""
                waited = time.monotonic() - t0
                if waited >= self.lock_timeout:
                    after = f" (waited {waited:.0f}s)" if self.lock_timeout else ""
                    raise StoreError(f"{self.path} is in use{holder}{after}: one writer at a time; wait for the other run "
                                     "or give this schedule its own file") from None
                if not told and self.on_wait:
                    self.on_wait(f"{self.path} is in use{holder}: waiting up to {self.lock_timeout:.0f}s")
                    told = True
                time.sleep(min(0.2, self.lock_timeout - waited))
            except duckdb.Error as e:
                raise StoreError(f"{self.path}: cannot open the store: {first_line(e)}") from None

    def release(self) -> None:
        """Let other processes use the file until :meth:`acquire` (a run does not hold it while it works)."""
        if self.con is not None:
            self.con.close()
            self.con = None

    def acquire(self) -> None:
        if self.con is None:
            self.con = self._connect()

    @contextlib.contextmanager
    def locked(self):
        """The file, held for the block only."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    def maintain(self) -> list[dict]:
        """Housekeeping a store does now and then (the Delta tables compact); a file has none.
        One dict per table it looked at; a failure is that table's ``error``, never raised."""
        return []

    def close(self) -> None:
        self.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # schema -------------------------------------------------------------------------------
    def version(self) -> int:
        exists = self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'").fetchone()[0]
        if not exists:
            return 0
        return self.con.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0

    def migrate(self) -> None:
        current = self.version()
        if current > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {current}, newer than this job's {SCHEMA_VERSION}; upgrade the job image")
        have = {r[0] for r in self.con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'").fetchall()}
        if current == SCHEMA_VERSION and all(name in have for name, _ in RunSummary.columns()):
            return  # nothing to do: the file is not touched
        with self.transaction():
            if current < SCHEMA_VERSION:
                self.con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
                for v in range(current + 1, SCHEMA_VERSION + 1):
                    for stmt in MIGRATIONS[v]:
                        self.con.execute(stmt)
                    if v == 5 and self._has_table("loaded"):
                        self.con.execute("ALTER TABLE loaded ADD COLUMN IF NOT EXISTS variant VARCHAR DEFAULT ''")
                    if v == 6 and self._has_table("loaded"):
                        self.con.execute("ALTER TABLE loaded ADD COLUMN IF NOT EXISTS period VARCHAR DEFAULT 'daily'")
                    self.con.execute("INSERT INTO schema_version VALUES (?, now())", [v])
            for name, sql_type in RunSummary.columns():  # a new counter is a new column, nothing more
                self.con.execute(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {name} {sql_type}")

    @contextlib.contextmanager
    def transaction(self):
        """All of the block's statements, or none of them."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
            self.con.execute("COMMIT")
        except BaseException as e:
            self.con.execute("ROLLBACK")
            if isinstance(e, duckdb.Error):  # one line naming the file, not DuckDB's multi-line text
                raise StoreError(f"{self.path}: the write was rolled back: {first_line(e)}") from None
            raise

    def _has_table(self, name: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])

    # reads (a cell's symbol is its series: plan.series_name) ------------------------------
    def known_symbols(self, schedule: str, period: str = "daily") -> set[str]:
        return {r[0] for r in self.con.execute(f"SELECT DISTINCT {SERIES} FROM objects WHERE schedule = ? AND period = ?",
                                               [schedule, period]).fetchall()}

    def check(self) -> None:
        """Nothing to check: the file's tables are the job's own (migrated when opened)."""

    def probed_through(self, schedule: str, period: str = "daily") -> dict[str, dt.date]:
        """Per symbol, the last date a run probed (its newest availability row)."""
        return dict(self.con.execute(f"SELECT {SERIES}, max(date) FROM objects WHERE schedule = ? AND period = ? GROUP BY ALL",
                                     [schedule, period]).fetchall())

    def backlog(self, schedule: str, period: str = "daily") -> dict[str, list[dt.date]]:
        """Per symbol, the cells a run has to look at again before its window: the catch-up
        cells earlier runs left unprobed (open, deferred), and those of a delisted symbol
        (expected again if it publishes again)."""
        rows = self.con.execute(f"SELECT {SERIES} AS series, date FROM gaps WHERE schedule = ? AND period = ? AND "
                                "(status = 'delisted' OR (status = 'open' AND reason = 'deferred' "
                                "AND starts_with(coalesce(last_error, ''), ?))) ORDER BY series, date",
                                [schedule, period, UNPROBED]).fetchall()
        out: dict[str, list[dt.date]] = {}
        for sym, d in rows:
            out.setdefault(sym, []).append(d)
        return out

    def held(self, schedule: str, period: str = "daily") -> dict[tuple[str, dt.date], Held]:
        """Cells the store holds verified (repaired gaps), with what each object was verified as."""
        rows = self.con.execute(f"SELECT {SERIES}, date, etag, bytes FROM gaps WHERE schedule = ? AND period = ? "
                                "AND status = 'repaired'", [schedule, period]).fetchall()
        return {(s, d): Held(etag, size) for s, d, etag, size in rows}

    def gaps(self, schedule: str, period: str = "daily") -> dict[tuple[str, dt.date], dict]:
        """The schedule's gap rows by cell. Times come as microseconds and become datetimes
        here, once per distinct instant (most rows share a few: the runs that wrote them),
        instead of once per row through DuckDB's pytz conversion (a run's largest read)."""
        times = [i for i, c in enumerate(GAP_COLS) if c in GAP_TIMES]
        cols = ", ".join(f"epoch_us({c})" if c in GAP_TIMES else c for c in GAP_COLS)
        rows = self.con.execute(f"SELECT {cols} FROM gaps WHERE schedule = ? AND period = ?", [schedule, period]).fetchall()
        seen: dict[int, dt.datetime] = {}

        def when(us):
            if us is None:
                return None
            t = seen.get(us)
            if t is None:
                t = seen[us] = EPOCH + dt.timedelta(microseconds=us)
            return t

        out = {}
        for r in rows:
            r = list(r)
            for i in times:
                r[i] = when(r[i])
            out[(series_name(r[1], r[2], r[3]), r[4])] = dict(zip(GAP_COLS, r))
        return out

    def run_attempts(self, run_id: str) -> int:
        row = self.con.execute("SELECT attempt FROM runs WHERE run_id = ?", [run_id]).fetchone()
        return row[0] if row else 0

    def run_counts(self, schedule: str) -> dict[str, int]:
        """Finished runs of the schedule by outcome (a run still running is not counted yet). A
        backfill's units are not the schedule's runs: they count toward neither its success
        rate nor its freshness."""
        return dict(self.con.execute("SELECT outcome, count(*) FROM runs WHERE schedule = ? AND outcome <> 'running' "
                                     "AND trigger <> 'backfill' GROUP BY outcome", [schedule]).fetchall())

    def oldest_open_gap(self, schedule: str) -> dt.date | None:
        return self.con.execute("SELECT min(date) FROM gaps WHERE schedule = ? AND status = 'open'", [schedule]).fetchone()[0]

    def last_finished(self, schedule: str) -> dict[str, dt.datetime]:
        """When the schedule's newest run of each outcome finished (backfill units aside)."""
        rows = self.con.execute("SELECT outcome, max(finished_at) FROM runs WHERE schedule = ? AND trigger <> 'backfill' "
                                "GROUP BY outcome", [schedule]).fetchall()
        return {o: t for o, t in rows if t is not None}

    # the one write of a run ---------------------------------------------------------------
    def report(self, schedule: str | None, days: int, now: dt.datetime) -> dict:
        """What ``ingestion-job report`` shows (of one schedule, or of all): availability per
        symbol, the open gaps (at most 200), the last 10 runs and the success rate of the
        finished runs started in the last ``days`` days."""
        con = self.con  # (a cell's symbol below is its series: the symbol and its variant)
        where, params = ("WHERE schedule = ?", [schedule]) if schedule else ("", [])
        # a delisted symbol's dates after its last object are not expected, though runs probed them before
        availability = con.execute(f"""
            SELECT schedule, symbol, count(*) AS expected, count(*) FILTER (WHERE present) AS present,
                   min(date) AS first_date, max(date) AS last_date
            FROM {OBJECTS_BY_SERIES} o {where} {' AND' if where else 'WHERE'} NOT EXISTS (
                SELECT 1 FROM {GAPS_BY_SERIES} g WHERE g.schedule = o.schedule AND g.symbol = o.symbol AND g.date = o.date
                AND g.status = 'delisted')
            GROUP BY schedule, symbol ORDER BY schedule, symbol""", params).fetchall()
        delisted = con.execute(f"""
            SELECT schedule, symbol, min(date) FROM {GAPS_BY_SERIES} {where + (' AND' if where else 'WHERE')} status = 'delisted'
            GROUP BY schedule, symbol ORDER BY schedule, symbol""", params).fetchall()
        # the dates no run has probed yet (an outage's catch-up left for later runs), as ranges
        unprobed = con.execute(f"""
            WITH u AS (SELECT schedule, symbol, date, date - CAST(row_number() OVER (PARTITION BY schedule, symbol ORDER BY date)
                                                            AS INTEGER) AS island
                       FROM {GAPS_BY_SERIES} {where + (' AND' if where else 'WHERE')} status = 'open' AND reason = 'deferred'
                       AND starts_with(coalesce(last_error, ''), ?))
            SELECT schedule, symbol, min(date), max(date), count(*) FROM u GROUP BY schedule, symbol, island
            ORDER BY schedule, symbol, min(date)""", params + [UNPROBED]).fetchall()
        # each variant (one value of each dimension): cells as availability counts them, open gaps
        variants = con.execute(f"""
            SELECT schedule, variant, count(*) FILTER (WHERE kind = 'o'), count(*) FILTER (WHERE kind = 'o' AND present),
                   count(*) FILTER (WHERE kind = 'g')
            FROM (SELECT schedule, variant, 'o' AS kind, present FROM objects o {where} {' AND' if where else 'WHERE'}
                  NOT EXISTS (SELECT 1 FROM gaps g WHERE g.schedule = o.schedule AND g.symbol = o.symbol
                              AND g.variant = o.variant AND g.period = o.period AND g.date = o.date AND g.status = 'delisted')
                  UNION ALL
                  SELECT schedule, variant, 'g', NULL FROM gaps {where + (' AND' if where else 'WHERE')} status = 'open')
            WHERE variant <> '' GROUP BY ALL ORDER BY ALL""", params * 2).fetchall()
        causes = con.execute(f"""
            SELECT reason, count(*) FROM {GAPS_BY_SERIES} {where + (' AND' if where else 'WHERE')} status = 'open' GROUP BY reason""",
                             params).fetchall()
        gaps = con.execute(f"""
            SELECT schedule, symbol, date, reason, attempts, last_error FROM {GAPS_BY_SERIES}
            {where + (' AND' if where else 'WHERE')} status = 'open' ORDER BY schedule, symbol, date LIMIT 200""",
                           params).fetchall()
        # target.archive: the gaps closed because the other period holds their days, per series
        other = con.execute(f"""
            SELECT schedule, symbol, status, reason, count(*), min(date), max(date) FROM {GAPS_BY_SERIES}
            {where + (' AND' if where else 'WHERE')} status IN ('covered', 'superseded') GROUP BY ALL ORDER BY ALL""",
                            params).fetchall()
        runs = con.execute(f"""
            SELECT run_id, trigger, started_at, finished_at, outcome, expected, missing, gaps_repaired, gaps_open, error, warnings
            FROM runs {where} ORDER BY started_at DESC LIMIT 10""", params).fetchall()
        changed = con.execute(f"""
            SELECT schedule, symbol, date, status, changes, changed_at, previous_sha256, sha256 FROM {GAPS_BY_SERIES}
            {where + (' AND' if where else 'WHERE')} changes > 0 ORDER BY changed_at DESC, schedule, symbol, date LIMIT 200""",
                              params).fetchall()
        since = now - dt.timedelta(days=days)
        ok, total = con.execute(f"""
            SELECT count(*) FILTER (WHERE outcome = 'succeeded'), count(*) FROM runs
            {where + (' AND' if where else 'WHERE')} started_at >= ? AND outcome <> 'running'""", params + [since]).fetchone()
        return {
            "availability": [dict(zip(["schedule", "symbol", "expected", "present", "first_date", "last_date"], r))
                             for r in availability],
            "open_gaps": [dict(zip(["schedule", "symbol", "date", "reason", "attempts", "last_error"], r)) for r in gaps],
            "open_gaps_by_cause": by_cause(dict(causes)),
            "variants": [dict(zip(["schedule", "variant", "expected", "present", "gaps_open"], r)) for r in variants],
            "delisted": [dict(zip(["schedule", "symbol", "since"], r)) for r in delisted],
            "never_probed": [dict(zip(["schedule", "symbol", "first", "last", "days"], r)) for r in unprobed],
            "other_period": [dict(zip(["schedule", "symbol", "status", "reason", "cells", "first", "last"], r)) for r in other],
            "recent_runs": [dict(zip(["run_id", "trigger", "started_at", "finished_at", "outcome", "expected", "missing",
                                      "repaired", "gaps_open", "error", "warnings"], r)) for r in runs],
            "changed_upstream": [dict(zip(["schedule", "symbol", "date", "status", "changes", "changed_at", "previous_sha256",
                                           "sha256"], r)) for r in changed],
            "success_rate": {"days": days, "succeeded": ok, "runs": total, "rate": round(ok / total, 4) if total else None},
        }

    def write_run(self, objects: list[dict], gaps: list[dict], run: dict, loads: list[Load] = (),
                  expiry: Expiry | None = None) -> int:
        """Everything a run learnt, in one transaction. ``loads`` are loaded into table
        ``loaded`` idempotently (the cell's rows are replaced); ``expiry``: the rows past the
        schedule's retention are deleted in the same transaction (counted in the run's
        ``rows_deleted``). Returns the rows of objects, gaps and loaded that DuckDB inserted or
        changed (also stored as the run's ``rows_written``): a row whose values are all
        unchanged is not rewritten."""
        check_invariants(objects, gaps)
        with self.transaction():
            written = self._upsert("objects", objects, OBJECT_COLS, KEY, keep=OBJECT_KEEP) + self._upsert("gaps", gaps, GAP_COLS, KEY)
            for load in loads:
                written += self._load(load.schedule, load.symbol, load.variant, load.period, load.date, load.staged.path)
            if expiry is not None:
                run["rows_deleted"] = self._expire(run["schedule"], expiry)
            failpoints.hit("store.commit")  # every data row written, the transaction still open
            run["rows_written"] = written
            self._upsert("runs", [run], RUN_COLS, ["run_id"])
        return written

    def _expire(self, schedule: str, expiry: Expiry) -> int:
        """Delete what is past retention (inside the caller's transaction); returns the rows."""
        where = expiry.where(schedule)
        deleted = 0
        if self._has_table("loaded"):
            deleted += self.con.execute(f"DELETE FROM loaded WHERE {where}").fetchone()[0]
        deleted += self.con.execute(f"DELETE FROM gaps WHERE {where}" + ("" if expiry.history else " AND status = 'open'")).fetchone()[0]
        if expiry.history:
            deleted += self.con.execute(f"DELETE FROM objects WHERE {where}").fetchone()[0]
        return deleted

    def variants(self, schedule: str) -> set[str]:
        """The variants the store holds cells of (the run's retention applies to each)."""
        return {r[0] for r in self.con.execute("SELECT DISTINCT variant FROM objects WHERE schedule = ? UNION "
                                               "SELECT DISTINCT variant FROM gaps WHERE schedule = ?", [schedule, schedule]).fetchall()}

    def write_run_record(self, run: dict) -> None:
        """A failed run still leaves its record (and nothing else)."""
        with self.transaction():
            self._upsert("runs", [run], RUN_COLS, ["run_id"])

    def begin_run(self, run: dict, now: dt.datetime) -> list[str]:
        """Record ``run`` as running, and every run of its schedule still ``running`` past its
        deadline as abandoned; returns the abandoned run ids."""
        with self.transaction():
            stale = [r[0] for r in self.con.execute(
                "SELECT run_id FROM runs WHERE schedule = ? AND outcome = 'running' AND deadline_at < ? AND run_id <> ?",
                [run["schedule"], now, run["run_id"]]).fetchall()]
            if stale:
                self.con.execute(f"UPDATE runs SET outcome = 'abandoned', error = ? WHERE run_id IN ({', '.join('?' * len(stale))})",
                                 [ABANDONED, *stale])
            self._upsert("runs", [run], RUN_COLS, ["run_id"])
        return stale

    def add_warning(self, run_id: str, warning: str) -> None:
        with self.transaction():
            self.con.execute("UPDATE runs SET warnings = concat_ws('; ', warnings, ?) WHERE run_id = ?", [warning, run_id])

    def _upsert(self, table: str, rows: list[dict], cols: list[str], key: list[str], keep: tuple[str, ...] = ()) -> int:
        if not rows:
            return 0
        if "variant" in key:  # a row of no dimension (of a daily cell) may leave them out
            rows = [r if "variant" in r and "period" in r else {"variant": "", "period": "daily", **r} for r in rows]
        of = operator.itemgetter(*key)
        dedup = list({of(r): r for r in rows}.values())  # last wins, explicitly
        arrow = pa.Table.from_pydict({c: [r.get(c) for r in dedup] for c in cols},  # by column: half of from_pylist's time
                                     schema=self._arrow_schema(table, cols))
        return self.upsert_arrow(table, arrow, key, keep)

    def upsert_arrow(self, table: str, arrow: pa.Table, key: list[str], keep: tuple[str, ...] = ()) -> int:
        """Bulk ``INSERT ... ON CONFLICT DO UPDATE`` from an Arrow table whose keys are unique
        (callers deduplicate). Must run inside the caller's transaction. A row whose values
        are all unchanged is left alone (no new row version); returns the rows DuckDB
        inserted or changed. A column of ``keep`` keeps the value a stored row has (its
        incoming value fills it only when empty) and never makes a row count as changed."""
        cols = arrow.column_names
        values = [c for c in cols if c not in key]
        self.con.register("_incoming", arrow)
        try:
            updates = ", ".join(f"{c} = coalesce({table}.{c}, excluded.{c})" if c in keep else f"{c} = excluded.{c}"
                                for c in values)
            changed = " OR ".join(f"{table}.{c} IS DISTINCT FROM excluded.{c}" for c in values if c not in keep) or "false"
            (n,) = self.con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _incoming "
                                    f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates} WHERE {changed}").fetchone()
            return n
        finally:
            self.con.unregister("_incoming")

    def _arrow_schema(self, table: str, cols: list[str]) -> pa.Schema:
        if table not in self._schemas:
            types = dict(self.con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                                          [table]).fetchall())
            mapping = {"VARCHAR": pa.string(), "BOOLEAN": pa.bool_(), "BIGINT": pa.int64(), "INTEGER": pa.int32(),
                       "DOUBLE": pa.float64(), "DATE": pa.date32(), "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC")}
            self._schemas[table] = pa.schema([(c, mapping[types[c]]) for c in cols])
        return self._schemas[table]

    def refuse_loads(self, loads: list[Load]) -> dict[tuple[str, dt.date], str]:
        """Staged files that would not fit table ``loaded`` ({(symbol, date): reason}), so that
        one odd cell is refused alone instead of failing the run's transaction. The table's
        columns are the existing ones, or the first staged file's when the table is new;
        a file fits when its columns are among them and every value casts to their types."""
        refused: dict[tuple[str, dt.date], str] = {}
        columns = dict(self.con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                        "WHERE table_name = 'loaded'").fetchall())
        for load in loads:
            cell, path = load.cell, load.staged.path
            have = dict(self.con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                                         [path]).fetchall())
            if not columns:
                columns = {"schedule": "VARCHAR", "symbol": "VARCHAR", "variant": "VARCHAR", "period": "VARCHAR", "date": "DATE",
                           **have}
                continue
            extra = [c for c in have if c not in columns]
            if extra:
                refused[cell] = (f"columns {', '.join(extra)} are not in table loaded "
                                 f"({', '.join(c for c in columns if c not in LOADED_KEY)})")
                continue
            for c, t in have.items():
                if t != columns[c]:
                    bad = self.con.execute(f'SELECT count(*) FROM read_parquet(?) WHERE "{c}" IS NOT NULL '
                                           f'AND TRY_CAST("{c}" AS {columns[c]}) IS NULL', [path]).fetchone()[0]
                    if bad:
                        refused[cell] = f"column {c}: {bad} value(s) of type {t} do not fit loaded's {columns[c]}"
                        break
        return refused

    def _load(self, schedule: str, symbol: str, variant: str, period: str, date: dt.date, path: str) -> int:
        src = ("SELECT ?::VARCHAR AS schedule, ?::VARCHAR AS symbol, ?::VARCHAR AS variant, ?::VARCHAR AS period, "
               "?::DATE AS date, * FROM read_parquet(?)")
        params = [schedule, symbol, variant, period, date, path]
        if not self._has_table("loaded"):
            self.con.execute(f"CREATE TABLE loaded AS {src} LIMIT 0", params)
        self.con.execute("DELETE FROM loaded WHERE schedule = ? AND symbol = ? AND variant = ? AND period = ? AND date = ?",
                         [schedule, symbol, variant, period, date])
        (n,) = self.con.execute(f"INSERT INTO loaded BY NAME {src}", params).fetchone()
        return n


def check_invariants(objects: list[dict], gaps: list[dict]) -> None:
    """Refuse to write what cannot be true; names the first offending row."""
    def where(table: str, r: dict) -> str:  # named only for the row that fails (a run checks 100,000s)
        return f"{table} {r['schedule']}/{series_name(r['symbol'], r.get('variant') or '')}/{r['date']}"

    for o in objects:
        if o["present"] != (o["size"] is not None) or o["present"] != (o["etag"] is not None):
            raise IntegrityError(f"{where('objects', o)}: size/etag must be set exactly when present (present={o['present']}, "
                                 f"size={o['size']})")
        if o["present"] and o["size"] < 0:
            raise IntegrityError(f"{where('objects', o)}: negative size {o['size']}")
    for g in gaps:
        if g["status"] == "open" and g["reason"] in GAP_CAUSES and g["repaired_at"] is None:
            continue  # the common case, checked in one line
        where_ = where("gaps", g)
        if g["status"] not in ("open", "repaired", "delisted", "covered", "superseded"):
            raise IntegrityError(f"{where_}: unknown status {g['status']!r}")
        if (g["status"] == "repaired") != (g["repaired_at"] is not None and g["sha256"] is not None):
            raise IntegrityError(f"{where_}: a gap is repaired exactly when it has repaired_at and sha256")
        if g["status"] == "open" and g["reason"] not in GAP_CAUSES:
            raise IntegrityError(f"{where_}: an open gap's reason must be one cause of {', '.join(GAP_CAUSES)}, not {g['reason']!r}")
