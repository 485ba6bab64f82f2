"""A probe of symbols x intervals x days in Binance Vision's klines layout (daily files and
monthly archives) against a local S3 server (SeaweedFS): its requests grow with symbols x
intervals (one paginated listing per series and period), never with days or months.

    .venv/bin/python bench/bench_dimensions.py                          # 100 symbols x 3 intervals x 365 days
    .venv/bin/python bench/bench_dimensions.py --symbols 5 --days 40    # a quick look

Each row is one whole run of the job (maxRepairsPerRun 0: it lists, plans and commits every
cell's availability; it fetches nothing) into a fresh DuckDB file. The script asserts each
run's requests: 1 bucket check + one listing page per series and period (the daily files of a
series fit one page up to 500 days with their sidecars).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ingestion_contract as contract  # noqa: E402
from ingestion_contract.periods import archive_boundary, period_starts  # noqa: E402
from ingestion_dev import sampledata  # noqa: E402
from ingestion_dev.processes import ProcessGroup  # noqa: E402
from ingestion_dev.services import start_seaweed  # noqa: E402
from ingestion_job.run import run as run_job  # noqa: E402

BUCKET = "bench-klines"
INTERVALS = ["1m", "1h", "1d"]
LAST = dt.date(2026, 10, 31)  # the newest date a run expects (its as-of is the day after)
DAILY_DAYS = 90


def upload_tiny(s3, symbols: list[str], intervals: list[str], days: list[dt.date], months: list[dt.date],
                workers: int = 32) -> int:
    """A one-byte object and its one-byte sidecar per daily file and per monthly archive."""
    s3.create_bucket(Bucket=BUCKET)
    keys = [sampledata.KLINES_DAILY.format(symbol=s, interval=i, date=d.isoformat()) for s in symbols for i in intervals
            for d in days]
    keys += [sampledata.KLINES_MONTHLY.format(symbol=s, interval=i, month=m.strftime("%Y-%m")) for s in symbols
             for i in intervals for m in months]

    def put(key):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        s3.put_object(Bucket=BUCKET, Key=key + ".CHECKSUM", Body=b"x")

    with cf.ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, keys, chunksize=64))
    return len(keys)


def one_run(endpoint: str, tmp: Path, label: str, symbols: list[str], intervals: list[str], since: dt.date | None = None,
            archive: bool = False) -> tuple:
    """A new schedule's first run: every symbol's whole history (from ``since`` with a range)."""
    target = {"endpoint": endpoint, "bucket": BUCKET, "anonymous": True, "keyTemplate": sampledata.KLINES_DAILY,
              "checksumSuffix": ".CHECKSUM", "dimensions": {"interval": intervals}, "lagDays": 1, "lookbackDays": 29}
    if since is None:
        target["symbols"] = symbols
    else:
        target["symbolRanges"] = [{"name": s, "from": since.isoformat()} for s in symbols]
    if archive:
        target["archive"] = {"keyTemplate": sampledata.KLINES_MONTHLY, "dailyDays": DAILY_DAYS}
    spec = {"schedule": "0 2 * * *", "target": target, "repair": {"maxRepairsPerRun": 0},
            "storage": {"duckdb": {"claimName": "bench"}}}
    ctx = contract.read_environment({contract.SPEC_ENV: json.dumps(spec), contract.SCHEDULE_ENV: label.replace(" ", "-"),
                                     contract.NAMESPACE_ENV: "bench"})
    t0 = time.perf_counter()
    res = run_job(ctx, tmp / f"{label.replace(' ', '-')}.duckdb", as_of=LAST + dt.timedelta(days=1), concurrency=16)
    wall = time.perf_counter() - t0
    assert res.outcome == "succeeded", res.error
    series = len(symbols) * len(intervals)
    listings = series * (2 if archive else 1)
    requests = res.summary.s3_requests
    assert requests == 1 + listings, (label, requests, listings)
    return label, len(symbols), len(intervals), res.summary.expected, res.summary.present, requests, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--symbols", type=int, default=100)
    p.add_argument("--days", type=int, default=365, help="days of daily files, ending on the run's newest date")
    a = p.parse_args()
    symbols = [f"K{i:03d}USDT" for i in range(a.symbols)]
    days = [LAST - dt.timedelta(days=n) for n in range(a.days)][::-1]
    months = period_starts(days[0], LAST, "monthly")  # every month that is over in those days
    half = symbols[:max(1, a.symbols // 2)]
    boundary = archive_boundary(LAST, DAILY_DAYS)
    with tempfile.TemporaryDirectory() as tmp:
        group = ProcessGroup(Path(tmp))
        try:
            server = start_seaweed(group, [BUCKET])
            t0 = time.perf_counter()
            n = upload_tiny(server.client(max_pool_connections=32), symbols, INTERVALS, days, months)
            print(f"setup: uploaded {n:,} objects and their sidecars in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            rows = [
                one_run(server.endpoint, Path(tmp), f"every day ({a.days} days)", symbols, INTERVALS),
                one_run(server.endpoint, Path(tmp), "the last 30 days (symbolRanges from)", symbols, INTERVALS,
                        since=LAST - dt.timedelta(days=29)),
                one_run(server.endpoint, Path(tmp), "half the symbols", half, INTERVALS),
                one_run(server.endpoint, Path(tmp), "one interval", symbols, INTERVALS[-1:]),
                one_run(server.endpoint, Path(tmp), f"daily files from {boundary}, archives before (target.archive)",
                        symbols, INTERVALS, archive=True),
            ]
        finally:
            group.down(log=lambda m: None)
    print(f"\n{a.symbols} symbols x {len(INTERVALS)} intervals x {a.days} days of daily files "
          f"({a.symbols * len(INTERVALS) * a.days:,}) and {len(months)} monthly archives each, with sidecars; "
          f"SeaweedFS on 127.0.0.1\n")
    print("| run (a new schedule, no repairs) | symbols | intervals | cells expected | present | requests | wall time |")
    print("|---|---|---|---|---|---|---|")
    for label, s, i, expected, present, requests, wall in rows:
        print(f"| {label} | {s} | {i} | {expected:,} | {present:,} | {requests} | {wall:.1f} s |")
    print(f"\nrequests: 1 bucket check + 1 listing per symbol x interval (x 2 with target.archive); the same for 30 "
          f"days as for {a.days}")


if __name__ == "__main__":
    main()
