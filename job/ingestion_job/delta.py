"""Object-storage mode: the store's tables as Delta Lake tables in an S3 bucket (delta-rs).

Layout under ``s3://<bucket>/<prefix>``: four Delta tables, ``objects``, ``gaps``, ``runs``
and ``loaded``, each partitioned by ``schedule`` (schedules never touch each other's files);
``objects``, ``gaps`` and ``loaded`` also by ``part``, one of 8 buckets of the
symbol (:func:`part_of`). A commit names the parts it touches, so writers of disjoint parts
of one schedule (a backfill's shards) commit side by side without conflict, and writers of
a shared part (every run writes ``runs``) redo a lost commit on the winner's version.
Any engine that reads Delta reads them: DuckDB (``delta_scan`` or Arrow), Polars, Spark,
Trino; each version is kept until ``vacuum`` removes it, so one can time-travel to the
version before a run.

A run works on a local DuckDB file, hydrated from its schedule's partition of each table
when the store opens (the same code as DuckDB mode answers every question). Whenever the
local store commits (a run's start, a warning, its end), the rows that changed since the
last sync, and only those, are merged into the Delta tables (``MERGE`` on the table's key:
update when matched, insert when not), in the order ``loaded``, ``objects``, ``gaps``,
``runs``:

* Each table's commit is atomic (one Delta log entry, written with a conditional PUT). A
  run killed between two tables leaves each table at a committed version; the next run
  finds the gaps of the lost commits still open and does that work again (every merge is
  idempotent).
* Concurrent writers (shards of a backfill, two schedules) are safe: a commit that lost the
  race to another fails with delta-rs's ``CommitFailedError`` instead of overwriting it, and
  is redone on the new version with backoff and jitter (:data:`COMMIT_ATTEMPTS`).
* The S3 server must honour conditional writes (``If-None-Match``); delta-rs is told so
  with ``conditional_put=etag``, and ``tests/job/test_delta.py`` proves ours does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from ingestion_contract import first_line
# symbol buckets (CRC-32, stable across processes and releases); a backfill's shards take
# disjoint sets of parts
from ingestion_contract.backfill import part_of
from ingestion_contract.spec import ObjectStoreStorage

from . import failpoints
from .plan import Held, split_series
from .rows import Load
from .store import CAUSES_OF_OLD_REASONS, KEY, LATER_KEYS, DuckStore, Expiry, StoreError, keyed, sql_quote

# table: its merge key (every table is also partitioned by schedule; those with a symbol by part)
TABLES = {"objects": KEY, "gaps": KEY, "runs": ["run_id"]}


def _type_name(t) -> str:
    """A Delta type as a person reads it (``PrimitiveType("integer")`` -> ``integer``)."""
    return getattr(t, "type", None) or str(t)


def with_part(rows: pa.Table) -> pa.Table:
    """``rows`` with the ``part`` column when they have a symbol."""
    if "symbol" not in rows.column_names:
        return rows
    symbols = pa.compute.dictionary_encode(rows["symbol"].combine_chunks())
    parts = pa.array([part_of(s) for s in symbols.dictionary.to_pylist()], pa.int32())
    return rows.append_column("part", parts.take(symbols.indices))


COMMIT_ATTEMPTS = 40  # a commit that loses a race is redone on the new version, up to this many times
COMMIT_BACKOFF = (0.05, 5.0)  # seconds: full jitter between 0 and min(cap, base * 2**attempt)
LOAD_CELLS_PER_COMMIT = 500  # loaded: one replace-where commit per this many cells
LEASE_SECONDS = 600  # a housekeeping lease older than this was left by a writer that died holding it


def storage_options(cfg: ObjectStoreStorage, credentials: tuple[str, str] | None) -> dict[str, str]:
    """delta-rs's S3 settings for ``cfg``: conditional PUTs make concurrent commits safe
    without a lock service (DynamoDB)."""
    opts = {"AWS_REGION": cfg.region, "conditional_put": "etag"}
    if cfg.endpoint:
        opts["AWS_ENDPOINT_URL"] = cfg.endpoint
        if cfg.endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    if credentials:
        opts["AWS_ACCESS_KEY_ID"], opts["AWS_SECRET_ACCESS_KEY"] = credentials
    else:
        opts["AWS_SKIP_SIGNATURE"] = "true"
    return opts




class DeltaStore:
    """A schedule's partition of the Delta tables, through a working copy: a DuckStore in a
    temporary file of this process (``local``), filled from the tables at the open, which
    answers every read; each write goes to it, then whatever changed is committed to Delta."""

    def __init__(self, cfg: ObjectStoreStorage, schedule: str, credentials: tuple[str, str] | None = None,
                 on_wait: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.on_wait = on_wait
        self.schedule = schedule
        self.credentials = credentials
        self.base_uri = f"s3://{cfg.bucket}/{cfg.prefix.strip('/')}".rstrip("/")
        self.options = storage_options(cfg, credentials)
        self._synced: dict[str, pa.Table] = {}
        # per table: whether it is partitioned by part (tables created before parts are not,
        # and keep working as they are; a table created from now on is)
        self._parted: dict[str, bool] = {}
        # tables the open found absent: the first commit creates them all at once, without
        # looking again; and the handles of tables created that way, for their first commit
        self._missing: set[str] = set()
        self._created: dict[str, object] = {}
        self.problem: str | None = None  # a table that does not match what the job expects (see check)
        self._tmp = tempfile.TemporaryDirectory(prefix="ingestion-delta-")
        self.local = DuckStore(Path(self._tmp.name) / "state.duckdb", on_wait=on_wait)
        self.local.con.execute("SET TimeZone = 'UTC'")
        self._hydrate()

    def where(self) -> str:
        return self.base_uri + "/"

    def check(self) -> None:
        """Refuse to go on with a table that does not match what the job expects (another
        engine changed a column's type, or made one NOT NULL that the job leaves empty). Called
        once the run is recorded, so the failure is recorded too."""
        if self.problem:
            raise StoreError(f"{self.where()}: {self.problem}")

    def table_schema(self, table: str) -> pa.Schema:
        """The columns of ``table`` as the job writes them, ``part`` included: those the job
        never leaves empty (NOT NULL in the working copy) are non-nullable, so a Delta writer
        of another engine that would leave one empty is refused at its own commit."""
        con = self.local.con
        empty = with_part(con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table())
        required = {c for c, n in con.execute("SELECT column_name, is_nullable FROM information_schema.columns "
                                              "WHERE table_name = ?", [table]).fetchall() if n == "NO"} | {"part"}
        return pa.schema([f.with_nullable(f.name not in required) for f in empty.schema])

    def mismatch(self, table: str, dt_) -> str | None:
        """What in the Delta table ``table`` the job cannot work with, in one line, or None.
        A column the job does not know, or one it will add (a newer release's), is fine; one
        the job writes must have the job's type, and may be NOT NULL only if the job always
        fills it."""
        from deltalake import Schema

        want = {f.name: f for f in Schema.from_arrow(self.table_schema(table)).fields}
        for f in dt_.schema().fields:
            w = want.get(f.name)
            if w is None:
                continue
            if str(f.type) != str(w.type):
                return (f"table {table}: column {f.name} is {_type_name(f.type)}, the job writes {_type_name(w.type)}"
                        " (changed by another writer?)")
            if not f.nullable and w.nullable:
                return f"table {table}: column {f.name} is NOT NULL, but the job leaves it empty in some rows"
        return None

    def uri(self, table: str) -> str:
        return f"{self.base_uri}/{table}"

    # read: this schedule's partition of each table -------------------------------------------
    def delta_table(self, table: str):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri(table), storage_options=self.options)
        except TableNotFoundError:
            return None
        except Exception as e:  # delta-rs raises OSError / DeltaError subclasses with multi-line text
            raise self._error(f"read table {table}", e) from None

    def _hydrate(self) -> None:
        for table in TABLES:
            dt_ = self.delta_table(table)
            if dt_ is None:
                self._missing.add(table)
            else:
                self._parted[table] = "part" in dt_.metadata().partition_columns
                problem = self.mismatch(table, dt_)
                if problem is None:
                    try:
                        rows = dt_.to_pyarrow_table(filters=[("schedule", "=", self.schedule)])
                    except Exception as e:
                        raise self._error(f"read table {table}", e) from None
                    try:
                        self.insert_local(table, rows)
                    except duckdb.Error as e:  # e.g. a row another engine left without a value the job needs
                        problem = f"table {table}: rows the job cannot read: {first_line(e)}"
                if problem and table == "runs":  # nowhere to record the run either
                    raise StoreError(f"{self.where()}: {problem}; the run's record cannot be written either")
                self.problem = self.problem or problem
            self._synced_now(table)
        for stmt in CAUSES_OF_OLD_REASONS:  # after the snapshot: the next commit writes them to Delta
            self.local.con.execute(stmt)
        loaded = self.delta_table("loaded")
        if loaded is None:
            self._missing.add("loaded")
        else:  # its columns only: refuse_loads checks new files against them
            self._parted["loaded"] = "part" in loaded.metadata().partition_columns
            schema = pa.schema(loaded.schema().to_arrow())
            schema = schema.remove(schema.get_field_index("part")) if "part" in schema.names else schema
            self.local.con.register("_empty", schema.empty_table())
            try:
                self.local.con.execute("CREATE TABLE loaded AS SELECT * FROM _empty")
                # a table written before dimensions or periods lacks their columns: the first load adds them to Delta
                for column, default in LATER_KEYS.items():
                    self.local.con.execute(f"ALTER TABLE loaded ADD COLUMN IF NOT EXISTS {column} VARCHAR DEFAULT {sql_quote(default)}")
            finally:
                self.local.con.unregister("_empty")

    def insert_local(self, table: str, rows: pa.Table, keep_existing: bool = False) -> int:
        """Add ``rows`` to the working copy's ``table`` (its columns that the table has); with
        ``keep_existing``, a row whose key is already there is skipped. Returns the rows added."""
        for column, default in LATER_KEYS.items():  # written before dimensions or periods: no value means the default
            if column in rows.column_names:
                i = rows.column_names.index(column)
                rows = rows.set_column(i, column, pa.compute.fill_null(rows[column], default))
        self.local.con.register("_incoming", rows)
        try:
            cols = {r[0] for r in self.local.con.execute(f"DESCRIBE {table}").fetchall()}
            pick = ", ".join(f'"{c}"' for c in rows.column_names if c in cols)
            verb = "INSERT OR IGNORE" if keep_existing else "INSERT"
            return self.local.con.execute(f"{verb} INTO {table} BY NAME SELECT {pick} FROM _incoming").fetchall()[0][0]
        finally:
            self.local.con.unregister("_incoming")

    # read: the working copy ------------------------------------------------------------------
    def known_symbols(self, schedule: str, period: str = "daily") -> set[str]:
        return self.local.known_symbols(schedule, period)

    def held(self, schedule: str, period: str = "daily") -> dict[tuple[str, dt.date], Held]:
        return self.local.held(schedule, period)

    def probed_through(self, schedule: str, period: str = "daily") -> dict[str, dt.date]:
        return self.local.probed_through(schedule, period)

    def backlog(self, schedule: str, period: str = "daily") -> dict[str, list[dt.date]]:
        return self.local.backlog(schedule, period)

    def gaps(self, schedule: str, period: str = "daily") -> dict[tuple[str, dt.date], dict]:
        return self.local.gaps(schedule, period)

    def run_attempts(self, run_id: str) -> int:
        return self.local.run_attempts(run_id)

    def run_counts(self, schedule: str) -> dict[str, int]:
        return self.local.run_counts(schedule)

    def oldest_open_gap(self, schedule: str) -> dt.date | None:
        return self.local.oldest_open_gap(schedule)

    def last_finished(self, schedule: str) -> dict[str, dt.datetime]:
        return self.local.last_finished(schedule)

    def report(self, schedule: str | None, days: int, now: dt.datetime) -> dict:
        return self.local.report(schedule, days, now)

    def refuse_loads(self, loads: list[Load]) -> dict[tuple[str, dt.date], str]:
        return self.local.refuse_loads(loads)

    # write: whatever changed locally since the last sync --------------------------------------
    def variants(self, schedule: str) -> set[str]:
        return self.local.variants(schedule)

    def write_run(self, objects, gaps, run, loads=(), expiry: Expiry | None = None) -> int:
        written = self.local.write_run(objects, gaps, run, loads, expiry)
        self.sync_loaded([(*load.cell, load.period) for load in loads])
        gone = self.expire("loaded", expiry)  # the working copy holds no loaded rows: Delta counts them
        if gone:
            run["rows_deleted"] = run.get("rows_deleted", 0) + gone
            self.local.con.execute("UPDATE runs SET rows_deleted = ? WHERE run_id = ?", [run["rows_deleted"], run["run_id"]])
        self.sync("objects")
        failpoints.hit("delta.commit")  # objects committed to Delta, gaps and runs not yet
        self.sync("gaps")
        self.expire("gaps", expiry)
        self.expire("objects", expiry)
        self.sync("runs")
        return written

    def expire(self, table: str, expiry: Expiry | None) -> int:
        """One delete commit of ``table``'s rows past retention (what the working copy deleted),
        when there are any: loaded and open gaps always, objects and every gap with history.
        A killed run leaves each table at a committed version; the next run deletes the rest
        (deleting is idempotent). Vacuum is housekeeping's, as for every commit. Returns the rows
        the commit deleted."""
        if expiry is None or (table == "objects" and not expiry.history) or table in self._missing:
            return 0
        where = expiry.where(self.schedule) + ("" if expiry.history or table != "gaps" else " AND status = 'open'")
        dt_ = self.delta_table(table)
        if dt_ is None:
            return 0
        def delete(d):
            have = {f.name for f in d.schema().fields}
            if any(c not in have for c in LATER_KEYS):  # a table written before them: the predicate names them
                self._add_columns(d, pa.schema([(c, pa.string()) for c in LATER_KEYS]))
            return d.delete(where)

        try:
            metrics = self._commit(table, delete, None) or {}
        finally:
            if table in TABLES:
                self._synced_now(table)
        return int(metrics.get("num_deleted_rows") or 0)

    def write_run_record(self, run: dict) -> None:
        self.local.write_run_record(run)
        self.sync("runs")

    def begin_run(self, run: dict, now: dt.datetime) -> list[str]:
        stale = self.local.begin_run(run, now)
        self.sync("runs")
        return stale

    def add_warning(self, run_id: str, warning: str) -> None:
        self.local.add_warning(run_id, warning)
        self.sync("runs")

    def _synced_now(self, table: str, rows: pa.Table | None = None) -> None:
        """Remember ``table`` as the Delta tables now hold it: an Arrow snapshot (``rows``, or
        the working copy's table) that the next sync compares against."""
        if rows is None:
            rows = self.local.con.sql(f"SELECT * FROM {table}").to_arrow_table()
        self._synced[table] = rows
        self.local.con.register(f"_synced_{table}", rows)

    def sync(self, table: str) -> None:
        """Commit the rows of ``table`` that changed since the last sync: a ``MERGE`` on the
        key; or, when the table holds no file in the region they fall in (this schedule, their
        parts: a first run), a replace-where of that empty region, which costs what writing
        the files does. Both read the region, so a writer that committed into it meanwhile
        makes this commit fail and be redone (as a merge): nothing is doubled."""
        from deltalake import write_deltalake

        first = not self._synced[table].num_rows
        if first:  # nothing synced yet (a first run): every row is new, no need to compare
            changed = self.local.con.sql(f"SELECT * FROM {table}").to_arrow_table()
        else:
            changed = self.local.con.sql(f"SELECT * FROM {table} EXCEPT SELECT * FROM _synced_{table}").to_arrow_table()
        synced = changed if first else None
        if changed.num_rows:
            if self._parted.get(table, True):
                changed = with_part(changed)
            parts = sorted(set(changed["part"].to_pylist())) if "part" in changed.column_names else None
            on = " AND ".join([self._region(parts, "t."), *(f"{keyed(k, 't.')} = s.{k}" for k in TABLES[table])])

            def commit(dt_):
                self._add_columns(dt_, changed.schema)
                if not self.files_in(dt_, parts):
                    return write_deltalake(dt_, changed, mode="overwrite", predicate=self._region(parts))
                # not merge_schema=True: delta-rs 1.6 then fails the rows it carries over of a table
                # with NOT NULL columns ("Invalid data found"); new columns are added first instead
                return (dt_.merge(changed, on, source_alias="s", target_alias="t")
                        .when_matched_update_all().when_not_matched_insert_all().execute())

            self._commit(table, commit, changed)
        self._synced_now(table, synced)

    @staticmethod
    def _add_columns(dt_, schema: pa.Schema) -> None:
        """Add the columns of ``schema`` that the table lacks (a newer release's), nullable (the
        rows it holds have none), in a commit of their own."""
        from deltalake import Schema

        have = {f.name for f in dt_.schema().fields}
        new = [f.with_nullable(True) for f in schema if f.name not in have]
        if new:
            dt_.alter.add_columns(Schema.from_arrow(pa.schema(new)).fields)

    def _region(self, parts: list[int] | None, alias: str = "") -> str:
        """The predicate of this schedule's rows (in ``parts``, unless None): what a commit
        reads and writes, and so what a concurrent commit conflicts with."""
        region = f"{alias}schedule = {sql_quote(self.schedule)}"
        if parts is not None:
            region += f" AND {alias}part IN ({', '.join(map(str, parts))})"
        return region

    def files_in(self, dt_, parts: list[int] | None) -> int:
        """Data files of this schedule (in ``parts``, unless None) in the table's version."""
        actions = pa.table(dt_.get_add_actions(flatten=True))
        mine = pa.compute.equal(actions["partition.schedule"], self.schedule)
        if parts is not None:
            mine = pa.compute.and_(mine, pa.compute.is_in(actions["partition.part"], pa.array(parts, pa.int32())))
        return pa.compute.sum(mine).as_py() or 0

    def sync_loaded(self, cells: list[tuple[str, dt.date, str]]) -> None:
        """Replace each loaded cell's rows: one replace-where commit per chunk of cells."""
        from deltalake import write_deltalake

        for i in range(0, len(cells), LOAD_CELLS_PER_COMMIT):
            chunk = cells[i:i + LOAD_CELLS_PER_COMMIT]
            split = [(*split_series(series), period, d) for series, d, period in chunk]
            self.local.con.execute("CREATE OR REPLACE TEMP TABLE _cells (symbol VARCHAR, variant VARCHAR, period VARCHAR, date DATE)")
            self.local.con.executemany("INSERT INTO _cells VALUES (?, ?, ?, ?)", split)
            rows = self.local.con.sql("SELECT l.* FROM loaded l JOIN _cells c USING (symbol, variant, period, date) "
                                      "WHERE l.schedule = ?", params=[self.schedule]).to_arrow_table()
            parts = None
            if self._parted.get("loaded", True):
                rows = with_part(rows)
                parts = sorted({part_of(symbol) for symbol, *_ in split})
            cell = " OR ".join(f"(symbol = {sql_quote(symbol)} AND {keyed('variant')} = {sql_quote(variant)} AND "
                               f"{keyed('period')} = {sql_quote(period)} AND date = '{d.isoformat()}')"
                               for symbol, variant, period, d in split)
            where = f"{self._region(parts)} AND ({cell})"

            def replace(dt_, rows=rows, where=where):
                self._add_columns(dt_, rows.schema)  # variant, in a table loaded before dimensions
                return write_deltalake(dt_, rows, mode="overwrite", predicate=where)

            self._commit("loaded", replace, rows)

    def _commit(self, table: str, op, rows: pa.Table | None) -> None:
        """Run ``op`` on the table's newest version; a lost race (CommitFailedError) is redone.
        A table that does not exist yet is created with the columns of ``rows``."""
        from deltalake.exceptions import CommitFailedError

        for attempt in range(COMMIT_ATTEMPTS):
            try:
                dt_ = self._created.pop(table, None) if attempt == 0 else None
                if dt_ is None and table not in self._missing:
                    dt_ = self.delta_table(table)
                if dt_ is None:
                    failpoints.hit("delta.create")
                    dt_ = self._create_missing(table, rows.schema)
                failpoints.hit("delta.merge")  # the version read, the commit not yet written
                failpoints.hit(f"delta.merge:{table}")
                return op(dt_)
            except CommitFailedError as e:
                if attempt + 1 == COMMIT_ATTEMPTS:
                    raise self._error(f"commit to table {table} lost {COMMIT_ATTEMPTS} races in a row", e) from None
                if self.on_wait and attempt == 0:
                    self.on_wait(f"{self.uri(table)}: a concurrent writer committed first; redoing the commit on its version")
                time.sleep(random.uniform(0, min(COMMIT_BACKOFF[1], COMMIT_BACKOFF[0] * 2 ** attempt)))
            except StoreError:
                raise
            except Exception as e:
                raise self._error(f"commit to table {table}", e) from None

    def _create_missing(self, table: str, schema: pa.Schema):
        """Create ``table`` (columns ``schema``) and, at the same time, the other tables of
        ``TABLES`` the open found absent (a first run's commits need them all), each in a
        thread of its own. Returns ``table``'s handle; the others' wait for their first commit.

        Empty, then committed to like any other: not with the rows, since delta-rs turns a
        lost race to create into a blind append at the next version, which would double rows
        two creators both carry. A creator that loses the race gets CommitFailedError and opens
        the table the winner made."""
        from deltalake import DeltaTable

        def schema_of(t: str) -> pa.Schema:
            if t in TABLES:
                return self.table_schema(t)
            keys = {"schedule", "symbol", "variant", "period", "date", "part"}  # loaded: its rows' columns; its key never empty
            return pa.schema([f.with_nullable(f.name not in keys) for f in schema])

        wanted = {t: schema_of(t) for t in sorted(self._missing & set(TABLES) | {table})}

        def create(t: str):
            try:
                return DeltaTable.create(self.uri(t), wanted[t], mode="ignore", configuration=self.table_properties(),
                                         partition_by=["schedule", "part"] if "part" in wanted[t].names else ["schedule"],
                                         storage_options=self.options)
            except Exception:
                found = self.delta_table(t)
                if found is None:
                    raise
                return found

        with concurrent.futures.ThreadPoolExecutor(len(wanted)) as pool:  # delta-rs waits on S3 without the GIL
            handles = dict(zip(wanted, pool.map(create, wanted)))
        self._missing -= set(wanted)
        self._created.update({t: h for t, h in handles.items() if t != table})
        return handles[table]

    def table_properties(self) -> dict[str, str]:
        """Delta table properties from the spec's maintenance policy: a checkpoint every
        ``checkpointInterval`` commits, written by the committing writer (delta-rs's
        post-commit hook), which also deletes log entries past ``delta.logRetentionDuration``
        (30 days by default)."""
        return {"delta.checkpointInterval": str(self.cfg.maintenance.checkpoint_interval)}

    def maintain(self) -> list[dict]:
        """Housekeeping the spec's policy asks for now, table by table: the table properties
        set if the table has none; and when this schedule's partition holds ``compactAfterFiles``
        files or more, a compaction of that partition (Delta OPTIMIZE, a commit like any
        other), a checkpoint, and a vacuum of the files no version uses any more, removed
        over ``vacuumRetentionHours`` ago. Most runs find nothing to do. Returns one dict per
        table; a table whose housekeeping failed has its ``error`` (the others are still done)."""
        m = self.cfg.maintenance
        done = []
        for table in (*TABLES, "loaded"):
            t0 = time.monotonic()
            row = {"table": table, "files": 0, "compacted": False, "vacuumed": 0}
            try:
                dt_ = self.delta_table(table)
                if dt_ is None:
                    continue
                row["files"] = self.files_in(dt_, None)
                # set once: a table shared by schedules with other settings must not flip-flop
                if any(k not in dt_.metadata().configuration for k in self.table_properties()):
                    self._commit(table, lambda d: d.alter.set_table_properties(self.table_properties()), None)
                if m.compact_after_files and row["files"] >= m.compact_after_files:
                    with self.housekeeping_lease(table) as held:
                        if not held:  # another writer is compacting this partition right now
                            row["skipped"] = "another writer holds the housekeeping lease"
                        elif self.files_in(self.delta_table(table), None) >= m.compact_after_files:  # not done meanwhile
                            self._commit(table, lambda d: d.optimize.compact(partition_filters=[("schedule", "=", self.schedule)]), None)
                            dt_ = self.delta_table(table)
                            dt_.create_checkpoint()
                            row["compacted"] = True
                            row["vacuumed"] = len(dt_.vacuum(retention_hours=m.vacuum_retention_hours, dry_run=False,
                                                              enforce_retention_duration=False))
                            row["files_after"] = self.files_in(dt_, None)
            except StoreError as e:
                row["error"] = str(e)
            except Exception as e:
                row["error"] = str(self._error(f"maintenance of table {table}", e))
            row["duration_ms"] = round((time.monotonic() - t0) * 1000)
            done.append(row)
        return done

    @contextlib.contextmanager
    def housekeeping_lease(self, table: str):
        """Yields whether this writer now holds the lease on compacting ``table``'s partition of
        this schedule: an object created with a conditional PUT (``If-None-Match: *``), taken
        over once expired (``If-Match`` its ETag), deleted when done.

        Needed because delta-rs (1.6.6) commits two OPTIMIZEs planned on the same version both,
        each adding the compacted rows: every row of the partition twice. (An OPTIMIZE and a
        merge do conflict, and the loser is redone.) Writers that only merge never take it."""
        from botocore.exceptions import ClientError

        from .s3 import client

        s3 = client(self.cfg.endpoint, self.cfg.region, self.credentials)
        key = f"{self.cfg.prefix.strip('/') + '/' if self.cfg.prefix.strip('/') else ''}_housekeeping/{table}/{self.schedule}.lease"
        body = json.dumps({"holder": uuid.uuid4().hex, "expires": time.time() + LEASE_SECONDS}).encode()

        def put(**condition) -> str | None:
            try:
                return s3.put_object(Bucket=self.cfg.bucket, Key=key, Body=body, **condition)["ETag"]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or \
                        e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                    return None
                raise

        try:
            etag = put(IfNoneMatch="*")
            if etag is None:  # held: take it over only once it expired (a writer killed while holding it)
                held = s3.get_object(Bucket=self.cfg.bucket, Key=key)
                if json.loads(held["Body"].read() or b"{}").get("expires", 0) < time.time():
                    etag = put(IfMatch=held["ETag"])
        except ClientError as e:
            raise self._error(f"housekeeping lease {key}", e) from None
        try:
            yield etag is not None
        finally:
            if etag is not None:
                try:
                    s3.delete_object(Bucket=self.cfg.bucket, Key=key)
                except ClientError:
                    pass  # it expires

    def _error(self, what: str, e: BaseException) -> StoreError:
        return StoreError(f"{self.where()}: {what}: {first_line(e)}")

    # the working copy is this process's own file: nothing to take or let go of until close,
    # and other writers never wait for this one ------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        yield self

    def release(self) -> None:
        pass

    def close(self) -> None:
        self.local.close()
        self._tmp.cleanup()
