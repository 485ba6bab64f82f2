"""The DuckDB store on a real file: migrations, invariants, upserts."""

import datetime as dt

import pytest

from ingestion_job.store import SCHEMA_VERSION, IntegrityError, StoreError, open_store

D = dt.date(2026, 11, 22)
NOW = dt.datetime(2026, 11, 23, 2, tzinfo=dt.timezone.utc)


def obj(present, date=D, size=10):
    return {"schedule": "s", "symbol": "BTCUSDT", "date": date, "key": f"k/{date}", "present": present,
            "size": size if present else None, "etag": "e" if present else None,
            "last_modified": NOW if present else None, "first_seen_at": NOW if present else None}


def run_row(run_id="r1", outcome="succeeded"):
    return {"run_id": run_id, "schedule": "s", "namespace": "n", "trigger": "manual", "attempt": 1,
            "started_at": NOW, "finished_at": NOW, "outcome": outcome}


def test_migrates_to_current_version_and_refuses_newer(tmp_path):
    db = tmp_path / "s.duckdb"
    with open_store(db) as s:
        assert s.version() == SCHEMA_VERSION
        s.con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    with pytest.raises(StoreError, match="newer than this job"):
        open_store(db)


def test_a_file_from_before_causes_gets_one_cause_per_open_gap(tmp_path):
    """Schema 4 (issue 24, point 5): the reasons gaps were left with before causes become causes."""
    import duckdb

    from ingestion_job.store import MIGRATIONS

    db = tmp_path / "s.duckdb"
    with duckdb.connect(str(db)) as con:  # a file as schema 3 left it
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
        for v in (1, 2, 3):
            for stmt in MIGRATIONS[v]:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [v])
        old = [("absent upstream", None), ("repair failed", "k: GetObject ReadTimeout after 3 attempts in 9.1s"),
               ("repair failed", "k: sha256 ab does not match the checksum file's cd"), ("repair failed", "k: size 3 does not "
                                                                                       "match the listed 4"),
               ("deferred: maxRepairsPerRun=2 reached", None), ("quarantined", "k: not a zip file"), ("withdrawn", None)]
        for i, (reason, err) in enumerate(old):
            con.execute("INSERT INTO gaps (schedule, symbol, date, key, status, reason, detected_at, attempts, last_error) "
                        "VALUES ('s', 'BTC', ?, 'k', 'open', ?, ?, 1, ?)", [D - dt.timedelta(days=i), reason, NOW, err])
    with open_store(db) as s:
        assert s.version() == SCHEMA_VERSION
        got = s.con.execute("SELECT reason, last_error FROM gaps ORDER BY date DESC").fetchall()
    assert [r for r, _ in got] == ["late-upstream", "fetch-failed", "verification-failed", "verification-failed", "deferred",
                                   "quarantined", "withdrawn"]
    assert got[4][1] == "deferred: maxRepairsPerRun=2 reached" and got[1][1].startswith("k: GetObject ReadTimeout")



def test_a_file_from_before_dimensions_keys_its_cells_by_variant_too(tmp_path):
    """Schema 5 (issue 29): objects and gaps are made anew with the key (schedule, symbol,
    variant, date), every row kept with variant '' (no dimension); table loaded gains the
    column; a cell of a variant then sits beside the cell of no variant of the same date."""
    import duckdb

    from ingestion_job.store import MIGRATIONS

    db = tmp_path / "s.duckdb"
    with duckdb.connect(str(db)) as con:  # a file as schema 4 left it, with a run's rows
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
        for v in (1, 2, 3, 4):
            for stmt in MIGRATIONS[v]:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [v])
        con.execute("INSERT INTO objects VALUES ('s', 'BTC', ?, 'k', true, 10, 'e', ?, ?)", [D, NOW, NOW])
        con.execute("INSERT INTO gaps (schedule, symbol, date, key, status, reason, detected_at, repaired_at, attempts, sha256, "
                    "bytes, etag, changes) VALUES ('s', 'BTC', ?, 'k', 'repaired', NULL, ?, ?, 1, 'h', 10, 'e', 0)", [D, NOW, NOW])
        con.execute("CREATE TABLE loaded AS SELECT 's' AS schedule, 'BTC' AS symbol, ?::DATE AS date, 42 AS open_time", [D])
    with open_store(db) as s:
        assert s.version() == SCHEMA_VERSION
        assert s.con.execute("SELECT symbol, variant, present, size FROM objects").fetchall() == [("BTC", "", True, 10)]
        assert s.con.execute("SELECT symbol, variant, status, sha256, etag FROM gaps").fetchall() == [("BTC", "", "repaired", "h", "e")]
        assert s.con.execute("SELECT symbol, variant, open_time FROM loaded").fetchall() == [("BTC", "", 42)]
        pk = s.con.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = 'gaps' "
                           "AND constraint_type = 'PRIMARY KEY'").fetchone()[0]
        assert pk == ["schedule", "symbol", "variant", "period", "date"]  # schema 6 too (a day or a month)
        assert s.held("s") == {("BTC", D): s.held("s")[("BTC", D)]} and s.known_symbols("s") == {"BTC"}
        hour = {**obj(True), "symbol": "BTC", "variant": "interval=1h", "key": "k1h"}
        assert s.write_run([hour], [], run_row()) == 1  # beside the cell of no variant, not over it
        assert s.known_symbols("s") == {"BTC", "BTC@interval=1h"}
        assert s.probed_through("s") == {"BTC": D, "BTC@interval=1h": D}

def test_missing_flips_to_present_on_upsert(tmp_path):
    # The system we replace lost 201,000 such flips to INSERT OR REPLACE with secondary indexes.
    with open_store(tmp_path / "s.duckdb") as s:
        s.write_run([obj(False)], [], run_row("r1"))
        s.write_run([obj(True, size=123)], [], run_row("r2"))
        assert s.con.execute("SELECT present, size, etag FROM objects").fetchall() == [(True, 123, "e")]


def test_only_inserted_or_changed_rows_are_written(tmp_path):
    """DuckDB's own count of rows each commit inserted or changed: an unchanged row is not rewritten."""
    with open_store(tmp_path / "s.duckdb") as s:
        assert s.write_run([obj(True), obj(False, date=D - dt.timedelta(days=1))], [], run_row("r1")) == 2
        assert s.write_run([obj(True), obj(False, date=D - dt.timedelta(days=1))], [], run_row("r2")) == 0
        assert s.write_run([obj(True, size=11), obj(False, date=D - dt.timedelta(days=1))], [], run_row("r3")) == 1
        assert s.con.execute("SELECT run_id, rows_written FROM runs ORDER BY run_id").fetchall() == [("r1", 2), ("r2", 0), ("r3", 1)]


def test_first_seen_is_kept_once_the_store_has_it(tmp_path):
    """A run writes first_seen_at = now for every listed cell; the store keeps the one it holds
    (and never counts that as a change), and fills it when it had none."""
    later = NOW + dt.timedelta(days=3)
    with open_store(tmp_path / "s.duckdb") as s:
        s.write_run([obj(False), obj(True, date=D - dt.timedelta(days=1))], [], run_row("r1"))
        again = [{**obj(True), "first_seen_at": later}, {**obj(True, date=D - dt.timedelta(days=1)), "first_seen_at": later}]
        assert s.write_run(again, [], run_row("r2")) == 1  # only the cell that appeared
        assert s.con.execute("SELECT date, first_seen_at FROM objects ORDER BY date").fetchall() == [
            (D - dt.timedelta(days=1), NOW), (D, later)]
        gone = {**obj(False, date=D - dt.timedelta(days=1))}
        s.write_run([gone], [], run_row("r3"))
        assert s.con.execute("SELECT present, first_seen_at FROM objects WHERE date = ?", [D - dt.timedelta(days=1)]).fetchall() == [
            (False, NOW)]


def test_duplicates_in_one_batch_keep_the_last_explicitly(tmp_path):
    with open_store(tmp_path / "s.duckdb") as s:
        s.write_run([obj(False), obj(True, size=7)], [], run_row())
        assert s.con.execute("SELECT count(*), max(size) FROM objects").fetchall() == [(1, 7)]


@pytest.mark.parametrize("bad,msg", [
    ({**obj(True), "size": None}, "size/etag must be set exactly when present"),
    ({**obj(False), "size": 5}, "size/etag must be set exactly when present"),
    ({**obj(True), "size": -1}, "negative size"),
])
def test_invariants_gate_the_write(tmp_path, bad, msg):
    with open_store(tmp_path / "s.duckdb") as s:
        with pytest.raises(IntegrityError, match=msg):
            s.write_run([bad], [], run_row())
        assert s.con.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_repaired_gap_needs_its_evidence(tmp_path):
    gap = {"schedule": "s", "symbol": "BTCUSDT", "date": D, "key": "k", "status": "repaired", "reason": None,
           "detected_at": NOW, "repaired_at": NOW, "attempts": 1, "last_error": None, "sha256": None, "bytes": 1}
    with open_store(tmp_path / "s.duckdb") as s, pytest.raises(IntegrityError, match="repaired exactly when"):
        s.write_run([], [gap], run_row())


def test_an_open_gap_has_one_cause_of_the_list(tmp_path):
    gap = {"schedule": "s", "symbol": "BTCUSDT", "date": D, "key": "k", "status": "open", "reason": "absent upstream",
           "detected_at": NOW, "repaired_at": None, "attempts": 0, "last_error": None, "sha256": None, "bytes": None}
    with open_store(tmp_path / "s.duckdb") as s:
        with pytest.raises(IntegrityError, match="one cause of not-due, late-upstream.*not 'absent upstream'"):
            s.write_run([], [gap], run_row())
        s.write_run([], [{**gap, "reason": "late-upstream"}], run_row())


def test_read_only_open_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "absent.duckdb", read_only=True)
