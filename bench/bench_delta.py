"""Benchmarks of object-store mode (Delta Lake tables on S3) against a local S3 server (SeaweedFS).

    .venv/bin/python bench/bench_delta.py                         # both parts, the sizes issue 13 asks for
    .venv/bin/python bench/bench_delta.py --part first            # 708 x 365 first run, and reruns
    .venv/bin/python bench/bench_delta.py --part year --days 60   # a quick look at the daily-runs part

Part ``first``: a first run of 708 symbols x 365 days (258,420 cells, 1 % of them missing)
commits its rows (objects, gaps, its run) through ``DeltaStore``, the job's own code, and
the same rows are written as plain Parquet files (pyarrow, one file per table) to the same
server, in the same process, five rounds each after a warm-up. Target: Delta within 2x of Parquet. Then
steady-state reruns: one with a new day (708 new cells) and one with nothing new, with the
bytes each one PUT to the bucket.

Part ``year``: 365 daily runs of 700 symbols, each one as a run makes it (open the store,
which reads the schedule's partition; record the run; commit a new day's 700 cells; do the
housekeeping the policy asks for), once with the default policy and once with housekeeping
off (its first 120 days: its runs slow down as files pile up). Every 30 days it times what readers do: the run's own hydrate, a full read of
``objects`` into Arrow, and a DuckDB count per symbol over it; and counts the files and log
entries. Target: reads stay fast (flat with the default policy).

Prints markdown tables (bench/results-delta.md holds a run's output).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestion_contract.spec import Maintenance, ObjectStoreStorage  # noqa: E402
from ingestion_contract.summary import RunSummary  # noqa: E402
from ingestion_dev.processes import ProcessGroup  # noqa: E402
from ingestion_dev.services import start_seaweed  # noqa: E402
from ingestion_job.delta import TABLES, DeltaStore  # noqa: E402
from ingestion_job.store import RUN_COLS  # noqa: E402

BUCKET = "bench-lake"
SCHEDULE = "binance-um-1m"
UTC = dt.timezone.utc
FIRST_DAY = dt.date(2025, 1, 1)


def symbols(n: int) -> list[str]:
    return [f"S{i:04d}USDT" for i in range(n)]


def objects_rows(syms, days, seen: dt.datetime, missing_every: int = 100):
    """A run's availability rows: every cell, 1 in ``missing_every`` absent."""
    rows, gaps = [], []
    for i, (s, d) in enumerate((s, d) for s in syms for d in days):
        key = f"data/futures/um/daily/klines/{s}/1m/{s}-1m-{d}.zip"
        present = i % missing_every != 0
        rows.append({"schedule": SCHEDULE, "symbol": s, "date": d, "key": key, "present": present,
                     "size": 58_000 if present else None, "etag": f"{i:032x}" if present else None,
                     "last_modified": seen if present else None, "first_seen_at": seen if present else None})
        if not present:
            gaps.append({"schedule": SCHEDULE, "symbol": s, "date": d, "key": key, "status": "open",
                         "reason": "late-upstream", "detected_at": seen, "repaired_at": None, "attempts": 0,
                         "last_error": None, "sha256": None, "bytes": None})
    return rows, gaps


def run_row(n: int, started: dt.datetime, outcome: str) -> dict:
    row = dict.fromkeys(RUN_COLS)
    row.update({"run_id": f"data/{SCHEDULE}@bench-{n}", "schedule": SCHEDULE, "namespace": "data", "trigger": "schedule",
                "attempt": 1, "started_at": started, "outcome": outcome,
                "finished_at": None if outcome == "running" else started + dt.timedelta(seconds=30),
                "deadline_at": started + dt.timedelta(hours=1)})
    row.update({name: 0 for name, _ in RunSummary.columns()})
    return row


def bucket_bytes(s3, prefix: str) -> tuple[int, int]:
    n = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for o in page.get("Contents") or []:
            n, size = n + 1, size + o["Size"]
    return n, size


class Lake:
    def __init__(self, server, prefix: str, maintenance: Maintenance = Maintenance()):
        self.server = server
        self.cfg = ObjectStoreStorage(bucket=BUCKET, prefix=prefix, endpoint=server.endpoint, maintenance=maintenance)
        self.creds = (server.access_key, server.secret_key)

    def open(self) -> DeltaStore:
        return DeltaStore(self.cfg, SCHEDULE, self.creds)


def commit_delta(store: DeltaStore, objects, gaps, run) -> float:
    """The run's commit as write_run makes it, timed from the local rows to the last Delta
    commit: the local upsert is the same in both modes and not counted."""
    store.local.write_run(objects, gaps, run)
    t0 = time.perf_counter()
    for table in TABLES:
        store.sync(table)
    return time.perf_counter() - t0


def commit_parquet(store: DeltaStore, fs, prefix: str) -> float:
    """The same rows (the working copy's tables, as Arrow) as one Parquet file per table."""
    t0 = time.perf_counter()
    for table in TABLES:
        rows = store.local.con.sql(f"SELECT * FROM {table}").to_arrow_table()
        pq.write_table(rows, f"{BUCKET}/{prefix}/{table}.parquet", filesystem=fs)
    return time.perf_counter() - t0


def part_first(server, n_symbols: int, n_days: int, rounds: int) -> list[str]:
    syms, days = symbols(n_symbols), [FIRST_DAY + dt.timedelta(d) for d in range(n_days)]
    seen = dt.datetime(2026, 1, 1, tzinfo=UTC)
    objects, gaps = objects_rows(syms, days, seen)
    fs = pafs.S3FileSystem(endpoint_override=server.endpoint, access_key=server.access_key,
                           secret_key=server.secret_key, scheme="http", region="us-east-1")
    s3 = server.client()
    out = [f"### First run: {n_symbols} symbols x {n_days} days = {len(objects):,} cells ({len(gaps):,} missing)", "",
           "| round | Delta commit (new tables) | plain Parquet, one file per table | ratio | Delta commit (new schedule, tables exist) |",
           "|---|---|---|---|---|"]
    # warm-up, not counted: the first S3 write of pyarrow and of delta-rs in a process
    warm = Lake(server, "warm-up").open()
    warm.local.write_run(objects[:10], [], run_row(0, seen, "succeeded"))
    commit_parquet(warm, fs, "warm-up-plain")
    commit_delta(warm, [], [], run_row(0, seen, "succeeded"))
    warm.close()
    ratios = []
    for r in range(rounds):
        # Parquet first, then Delta on fresh tables, then a second schedule's first run into them
        lake = Lake(server, f"first-{r}")
        store = lake.open()
        store.local.write_run(objects, gaps, run_row(0, seen, "succeeded"))
        parquet = commit_parquet(store, fs, f"plain-{r}")
        store.close()
        store = lake.open()
        delta = commit_delta(store, objects, gaps, run_row(0, seen, "succeeded"))
        store.close()
        other = DeltaStore(lake.cfg, SCHEDULE + "-b", lake.creds)
        rows_b = [{**o, "schedule": SCHEDULE + "-b"} for o in objects]
        gaps_b = [{**g, "schedule": SCHEDULE + "-b"} for g in gaps]
        existing = commit_delta(other, rows_b, gaps_b, {**run_row(0, seen, "succeeded"), "schedule": SCHEDULE + "-b",
                                                        "run_id": "b-0"})
        other.close()
        ratios.append(delta / parquet)
        out.append(f"| {r + 1} | {delta:.3f} s | {parquet:.3f} s | {delta / parquet:.2f}x | {existing:.3f} s |")
    out.append(f"| median | | | **{statistics.median(ratios):.2f}x** | target <= 2x |")

    # steady state: the next day (708 new cells), then a rerun with nothing new
    lake = Lake(server, "first-0")
    out += ["", "### Reruns of the first round's schedule", "",
            "| rerun | rows merged | bytes PUT to the bucket | files PUT | table size | commit |", "|---|---|---|---|---|---|"]
    total = bucket_bytes(s3, "first-0/")[1]
    for label, new_days in ((f"a new day ({len(syms)} new cells)", [days[-1] + dt.timedelta(1)]), ("nothing new", [])):
        before = bucket_bytes(s3, "first-0/")
        store = lake.open()
        new_objects, new_gaps = objects_rows(syms, new_days, seen) if new_days else ([], [])
        t = commit_delta(store, new_objects, new_gaps, run_row(1 if new_days else 2, seen, "succeeded"))
        store.close()
        after = bucket_bytes(s3, "first-0/")
        out.append(f"| {label} | {len(new_objects) + len(new_gaps) + 1:,} | {after[1] - before[1]:,} | "
                   f"{after[0] - before[0]} | {total:,} | {t:.3f} s |")
    return out


def read_times(lake: Lake) -> dict:
    t0 = time.perf_counter()
    store = lake.open()
    hydrate = time.perf_counter() - t0
    objects = store.delta_table("objects")
    files = len(objects.file_uris())
    log = objects.version() + 1
    store.close()
    t0 = time.perf_counter()
    from deltalake import DeltaTable

    table = DeltaTable(store.uri("objects"), storage_options=store.options).to_pyarrow_table()
    full = time.perf_counter() - t0
    con = duckdb.connect()
    con.register("objects", table)
    t0 = time.perf_counter()
    con.execute("SELECT symbol, count(*) FILTER (WHERE present) FROM objects GROUP BY ALL").fetchall()
    query = time.perf_counter() - t0
    return {"hydrate": hydrate, "full": full, "query": query, "files": files, "versions": log, "rows": table.num_rows}


def part_year(server, n_symbols: int, n_days: int, every: int, off_days: int) -> list[str]:
    syms = symbols(n_symbols)
    out = [f"### {n_days} daily runs of {n_symbols} symbols", "",
           "| policy | day | rows | objects files | log entries | run (open + commit + housekeeping) | hydrate | full read | DuckDB per-symbol count |",
           "|---|---|---|---|---|---|---|---|---|"]
    for label, policy, days in (("default (compactAfterFiles 32)", Maintenance(), n_days),
                                ("housekeeping off", Maintenance(compact_after_files=0), min(off_days, n_days))):
        lake = Lake(server, f"year-{policy.compact_after_files}", policy)
        run_times = []
        for day in range(days):
            d = FIRST_DAY + dt.timedelta(day)
            started = dt.datetime.combine(d + dt.timedelta(1), dt.time(2), UTC)
            t0 = time.perf_counter()
            store = lake.open()
            store.begin_run(run_row(day, started, "running"), started)
            objects, gaps = objects_rows(syms, [d], started)
            store.write_run(objects, gaps, run_row(day, started, "succeeded"))
            store.maintain()
            store.close()
            run_times.append(time.perf_counter() - t0)
            if (day + 1) % every == 0 or day + 1 == days:
                r = read_times(lake)
                window = run_times[-every:]
                out.append(f"| {label} | {day + 1} | {r['rows']:,} | {r['files']} | {r['versions']} | "
                           f"{statistics.median(window):.2f} s (median of the last {len(window)}) | {r['hydrate']:.2f} s | "
                           f"{r['full']:.2f} s | {r['query'] * 1000:.0f} ms |")
                print(out[-1], file=sys.stderr, flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["first", "year", "all"], default="all")
    p.add_argument("--symbols", type=int, default=708, help="symbols of the first-run part (the year part uses 700)")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--every", type=int, default=30, help="year part: measure reads every this many days")
    p.add_argument("--off-days", type=int, default=120,
                   help="year part: days of the housekeeping-off comparison (its runs slow down as its files pile up)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        group = ProcessGroup(Path(tmp))
        try:
            server = start_seaweed(group, [])
            server.client().create_bucket(Bucket=BUCKET)
            out = [f"SeaweedFS on 127.0.0.1, deltalake (delta-rs), {time.strftime('%Y-%m-%d')}", ""]
            if args.part in ("first", "all"):
                out += part_first(server, args.symbols, args.days, args.rounds) + [""]
            if args.part in ("year", "all"):
                out += part_year(server, 700 if args.symbols == 708 else args.symbols, args.days, args.every, args.off_days)
            print("\n".join(out))
        finally:
            group.down(log=lambda *a: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
