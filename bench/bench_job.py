"""Benchmarks of the probe-and-repair job against a local S3 server (SeaweedFS).

    .venv/bin/python bench/bench_job.py                      # 708 symbols x 365 days (as the issue asks)
    .venv/bin/python bench/bench_job.py --symbols 50 --days 60   # a quick look

Prints a table: S3 requests and wall time of a list-based probe against one HEAD per
object at equal concurrency; a 1,000,000-row availability upsert into DuckDB; repairs per
second (GET + size + sha256 sidecar check). Targets: list <= 1/50 of the baseline's
requests and >= 20x faster; the upsert under 3 s.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestion_dev import sampledata  # noqa: E402
from ingestion_dev.processes import ProcessGroup  # noqa: E402
from ingestion_dev.services import start_seaweed  # noqa: E402
from ingestion_contract.spec import Target  # noqa: E402
from ingestion_job import s3 as s3setup  # noqa: E402
from ingestion_job.plan import KeyTemplate  # noqa: E402
from ingestion_job.source import S3Source  # noqa: E402
from ingestion_job.store import KEY, open_store  # noqa: E402

BUCKET = "bench-vision"


def upload_tiny(s3, symbols, dates, workers=32):
    t = KeyTemplate(sampledata.KEY_TEMPLATE)
    s3.create_bucket(Bucket=BUCKET)
    cells = [(s, d) for s in symbols for d in dates]

    def put(cell):
        s3.put_object(Bucket=BUCKET, Key=t.key(*cell), Body=b"x")

    with cf.ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, cells, chunksize=64))
    return len(cells)


def target(endpoint, checksum_suffix=None):
    return Target(endpoint=endpoint, region="us-east-1", bucket=BUCKET, anonymous=True,
                  key_template=sampledata.KEY_TEMPLATE, checksum_suffix=checksum_suffix)


def bench_list(endpoint, symbols, concurrency):
    src = S3Source(target(endpoint), concurrency=concurrency)
    t0 = time.perf_counter()
    listed, _ = src.list_all(symbols)
    wall = time.perf_counter() - t0
    return sum(len(v) for v in listed.values()), src.stats.total_requests, wall


def bench_head(endpoint, symbols, dates, concurrency):
    """The baseline: one boto3 HeadObject per (symbol, date), as the system we replace did."""
    from botocore.exceptions import ClientError

    client = s3setup.client(endpoint, "us-east-1", anonymous=True, max_connections=max(concurrency, 10))
    attempts = []
    client.meta.events.register("needs-retry.s3", lambda **kw: attempts.append(1))  # every HTTP attempt
    t = KeyTemplate(sampledata.KEY_TEMPLATE)

    def head(cell):
        try:
            client.head_object(Bucket=BUCKET, Key=t.key(*cell))
            return 1
        except ClientError:
            return 0

    cells = [(s, d) for s in symbols for d in dates]
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        found = sum(pool.map(head, cells, chunksize=256))
    return found, len(attempts), time.perf_counter() - t0


def bench_upsert(n, tmp):
    syms = [f"S{i:04d}" for i in range(1000)]
    days = n // len(syms)
    start = dt.date(2020, 1, 1)
    sym_col = [s for s in syms for _ in range(days)]
    date_col = [start + dt.timedelta(days=i) for _ in syms for i in range(days)]
    now = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)
    table = pa.table({
        "schedule": pa.array(["bench"] * len(sym_col)), "symbol": pa.array(sym_col), "variant": pa.array([""] * len(sym_col)),
        "date": pa.array(date_col, pa.date32()),
        "key": pa.array([f"k/{s}/{d}" for s, d in zip(sym_col, date_col)]), "present": pa.array([True] * len(sym_col)),
        "size": pa.array([100] * len(sym_col), pa.int64()), "etag": pa.array(["e"] * len(sym_col)),
        "last_modified": pa.array([now] * len(sym_col), pa.timestamp("us", tz="UTC")),
        "first_seen_at": pa.array([now] * len(sym_col), pa.timestamp("us", tz="UTC")),
    })
    store = open_store(Path(tmp) / "bench.duckdb")
    timings = []
    changed = table.set_column(table.schema.get_field_index("size"), "size", pa.array([101] * len(sym_col), pa.int64()))
    # insert; the same rows again (all conflict, none changed: nothing rewritten); every row changed
    for label, batch in (("insert", table), ("unchanged", table), ("update", changed)):
        t0 = time.perf_counter()
        store.con.execute("BEGIN TRANSACTION")
        written = store.upsert_arrow("objects", batch, KEY)
        store.con.execute("COMMIT")
        timings.append((label, time.perf_counter() - t0, written))
    rows = store.con.execute("SELECT count(*) FROM objects").fetchone()[0]
    store.close()
    return rows, timings


def bench_whole_run(endpoint, symbols, dates, concurrency, tmp, repeat=3):
    """A whole run of the job (no repairs: maxRepairsPerRun 0) against its floor measured in the
    same process: the listing of the same prefixes plus one Arrow upsert of the rows the run
    committed (objects and gaps) into a fresh file, and, for the rerun, into a file that holds
    them already (nothing new: nothing written). Each is measured ``repeat`` times, run and
    floor in turn, into fresh files; the medians are compared. Returns rows of (label, run s,
    floor s, rows written)."""
    import json
    import statistics

    import ingestion_contract as contract
    from ingestion_job.run import run as run_job

    spec = {"schedule": "0 2 * * *", "target": {
        "endpoint": endpoint, "bucket": BUCKET, "anonymous": True, "keyTemplate": sampledata.KEY_TEMPLATE,
        "symbols": symbols, "lagDays": 1, "lookbackDays": len(dates) - 1},
        "repair": {"maxRepairsPerRun": 0}, "storage": {"duckdb": {"claimName": "bench"}}}
    ctx = contract.read_environment({contract.SPEC_ENV: json.dumps(spec), contract.SCHEDULE_ENV: "bench",
                                     contract.NAMESPACE_ENV: "bench"})
    as_of = dates[-1] + dt.timedelta(days=1)
    times: dict[str, list] = {"first run": [], "rerun, nothing new": []}
    written = {}
    for i in range(repeat):
        db, floor_db = Path(tmp) / f"whole-{i}.duckdb", Path(tmp) / f"floor-{i}.duckdb"
        for label in times:
            t0 = time.perf_counter()
            res = run_job(ctx, db, as_of=as_of, concurrency=concurrency, lock_timeout=5)
            took = time.perf_counter() - t0
            assert res.outcome == "succeeded" and res.summary.expected == len(symbols) * len(dates), res
            written[label] = res.summary.rows_written
            # the floor: the same listing, one upsert of the same rows
            src = S3Source(target(endpoint), concurrency=concurrency)
            store = open_store(db, read_only=True)
            rows = {t: store.con.sql(f"SELECT * FROM {t}").to_arrow_table() for t in ("objects", "gaps")}
            store.close()
            t0 = time.perf_counter()
            src.list_all(symbols)
            floor = open_store(floor_db)
            floor.con.execute("BEGIN TRANSACTION")
            for t, arrow in rows.items():
                floor.upsert_arrow(t, arrow, KEY)
            floor.con.execute("COMMIT")
            floor.close()
            times[label].append((took, time.perf_counter() - t0))
    return [(label, statistics.median(r for r, _ in t), statistics.median(f for _, f in t), written[label])
            for label, t in times.items()]


def bench_repairs(s3, endpoint, n, concurrency):
    today = dt.date(2026, 11, 22)
    cells = [(f"R{i % 20:02d}USDT", today - dt.timedelta(days=i // 20)) for i in range(n)]
    sampledata.upload(s3, BUCKET, cells, rows=1440)  # a full day of 1m klines per file
    src = S3Source(target(endpoint, ".CHECKSUM"), concurrency=concurrency)
    listed, _ = src.list_all(sorted({c[0] for c in cells}))
    todo = [listed[s][d] for s, d in cells]
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(src.fetch, todo))
    wall = time.perf_counter() - t0
    return n, wall, src.stats.bytes_fetched


def print_whole(a, whole) -> None:
    n = min(a.run_symbols, a.symbols)
    for label, took, floor, written in whole:
        print(f"| whole run, {n} symbols x {a.days} days ({n * a.days:,} cells, no repairs), {label} | - | "
              f"{took:.2f} s vs floor {floor:.2f} s (medians of 3) | {took / floor:.2f}x of the floor (target <= 1.5x); "
              f"{written:,} rows written |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--symbols", type=int, default=708)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--upsert-rows", type=int, default=1_000_000)
    p.add_argument("--repairs", type=int, default=400)
    p.add_argument("--run-symbols", type=int, default=200, help="symbols of the whole-run benchmark (its days: --days)")
    p.add_argument("--whole-run-only", action="store_true", help="only the whole run against its floor")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        group = ProcessGroup(Path(tmp))
        try:
            server = start_seaweed(group, [BUCKET])
            s3 = server.client(max_pool_connections=32)
            symbols = [f"B{i:04d}USDT" for i in range(a.symbols)]
            dates = [dt.date(2025, 1, 1) + dt.timedelta(days=i) for i in range(a.days)]
            t0 = time.perf_counter()
            n = upload_tiny(s3, symbols, dates)
            print(f"setup: uploaded {n:,} objects in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            whole = bench_whole_run(server.endpoint, symbols[:a.run_symbols], dates, a.concurrency, tmp)
            if a.whole_run_only:
                group.down(log=lambda m: None)
                print_whole(a, whole)
                return
            l_found, l_req, l_wall = bench_list(server.endpoint, symbols, a.concurrency)
            h_found, h_req, h_wall = bench_head(server.endpoint, symbols, dates, a.concurrency)
            assert l_found == h_found == n, (l_found, h_found, n)
            rows, upserts = bench_upsert(a.upsert_rows, tmp)
            r_n, r_wall, r_bytes = bench_repairs(s3, server.endpoint, a.repairs, a.concurrency)
        finally:
            group.down(log=lambda m: None)
    print(f"\n{a.symbols} symbols x {a.days} days = {n:,} objects, concurrency {a.concurrency}, SeaweedFS on 127.0.0.1\n")
    print("| benchmark | requests | wall time | result |")
    print("|---|---|---|---|")
    print(f"| probe, one HEAD per object (baseline) | {h_req:,} | {h_wall:.1f} s | {h_found:,} found |")
    print(f"| probe, list by symbol prefix (ours) | {l_req:,} | {l_wall:.1f} s | {l_found:,} found |")
    print(f"| ratio (baseline / ours) | {h_req / l_req:.0f}x fewer | {h_wall / l_wall:.0f}x faster | target >= 50x, >= 20x |")
    print_whole(a, whole)
    for label, secs, written in upserts:
        print(f"| DuckDB upsert of {rows:,} rows ({label}) | - | {secs:.2f} s | {written:,} rows written; target < 3 s |")
    print(f"| repairs (GET + size + sha256 sidecar), 1440-row zips | {r_n * 2:,} | {r_wall:.1f} s | {r_n / r_wall:.0f} repairs/s, {r_bytes / r_wall / 1e6:.1f} MB/s |")


if __name__ == "__main__":
    main()
