"""Throttling benchmark: one run repairing 500 cells while every key is throttled twice.

    .venv/bin/python bench/bench_throttle.py                 # 500 repairs (50 symbols x 10 days)
    .venv/bin/python bench/bench_throttle.py --symbols 10    # a quick look

Both runs go through the same fault proxy in front of a local SeaweedFS, so the only
difference is the faults: the baseline has none; the throttled run gets a 503 SlowDown for
the first two requests of every object and of every checksum sidecar (2,000 faults for 500
repairs). Goal: every repair succeeds in one run (each request has its own retry budget, so
a burst of throttling elsewhere cannot use it up). Prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ingestion_contract as contract  # noqa: E402
from ingestion_dev import sampledata  # noqa: E402
from ingestion_dev.faultproxy import FaultProxy  # noqa: E402
from ingestion_dev.processes import ProcessGroup  # noqa: E402
from ingestion_dev.services import start_seaweed  # noqa: E402
from ingestion_job.run import run  # noqa: E402

BUCKET = "bench-throttle"


def one_run(endpoint: str, symbols: list[str], days: int, db: Path, concurrency: int):
    spec = sampledata.spec(endpoint, BUCKET, symbols, days - 1)
    spec["repair"]["maxRepairsPerRun"] = len(symbols) * days
    env = {contract.SPEC_ENV: contract.encode_job_spec(contract.job_spec(spec)), contract.SCHEDULE_ENV: "bench",
           contract.NAMESPACE_ENV: "bench"}
    t0 = time.perf_counter()
    result = run(contract.read_environment(env), db, concurrency=concurrency)
    return result, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    symbols = [f"T{i:03d}USDT" for i in range(a.symbols)]
    today = dt.datetime.now(dt.timezone.utc).date()
    dates = [today - dt.timedelta(days=1 + i) for i in range(a.days)]  # lag 1, lookback days-1
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        group = ProcessGroup(Path(tmp))
        try:
            server = start_seaweed(group, [BUCKET])
            s3 = server.client(max_pool_connections=32)
            sampledata.upload(s3, BUCKET, [(s, d) for s in symbols for d in dates])
            for label, faults in (("no faults (baseline)", False), ("every key throttled twice", True)):
                proxy = FaultProxy(server.endpoint)
                if faults:
                    proxy.add("slowdown", "GET", ".zip", times=2, per_path=True)
                try:
                    res, wall = one_run(proxy.endpoint, symbols, a.days, Path(tmp) / f"{faults}.duckdb", a.concurrency)
                finally:
                    proxy.close()
                results.append((label, res, wall))
        finally:
            group.down(log=lambda m: None)
    n = a.symbols * a.days
    print(f"\n{n} repairs ({a.symbols} symbols x {a.days} days), concurrency {a.concurrency}, SeaweedFS behind the fault proxy\n")
    print("| run | outcome | repaired | failed | S3 requests | S3 errors | wall time |")
    print("|---|---|---|---|---|---|---|")
    for label, res, wall in results:
        s = res.summary
        print(f"| {label} | {res.outcome} | {s['gaps_repaired']} | {s['repairs_failed']} | {s['s3_requests']:,} | "
              f"{s['s3_errors']:,} | {wall:.1f} s |")
    base, throttled = results[0][2], results[1][2]
    print(f"\nthrottled / baseline: {throttled / base:.1f}x the time")
    ok = all(res.outcome == "succeeded" and res.summary["gaps_repaired"] == n for _, res, _ in results)
    print("goal (every repair succeeds in one run):", "met" if ok else "NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
