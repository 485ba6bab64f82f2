"""Throttling benchmark: one run repairing 40 cells while every key is throttled twice.

    .venv/bin/python bench/bench_throttle.py                 # 40 repairs (10 symbols x 4 days)
    .venv/bin/python bench/bench_throttle.py --symbols 2     # a quick look

Both runs go through the same fault proxy in front of a local SeaweedFS, so the only
difference is the faults: the baseline has none; the throttled run gets a 503 SlowDown for
the first two requests of every object and of every checksum sidecar (160 faults for 40
repairs). Goal: every repair succeeds in one run (each request has its own retry budget, so
throttling elsewhere cannot use it up). Two of every three answers throttling, the run's
pace (AIMD) keeps its rate near its floor, about a request a second: the run is slow by
design, which is why this table is small. Prints a table.

    .venv/bin/python bench/bench_throttle.py --bursts        # + the burst table (~6 min)
    .venv/bin/python bench/bench_throttle.py --shared        # + the shared-budget table (~1 min)

``--bursts``: one run of 40 repairs (10 symbols x 4 days) per burst of 429 TooManyRequests
(503 SlowDown for objects) lasting 3, 10 or 30 s, at listing, at the objects or at their
sidecars, with and without ``Retry-After: 2``. Goal: every cell repaired in one run.

``--shared``: one upstream of 20 requests a second split as the operator splits it
(``shares.py``: 70 % for three schedules, 5, 5 and 4; the backfills' 6 for a backfill of two
shards, 3 each); the five runs, each at its share, go at once through one proxy that notes
every request's arrival. Goal: together they stay within 20 a second (a token bucket of rate
20 and a burst of one second's worth). The end-to-end version, with the operator rendering
the shares into real CronJobs and Jobs, is tests/cluster/test_upstream_budget.py.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ingestion_contract as contract  # noqa: E402
from ingestion_dev import sampledata  # noqa: E402
from ingestion_dev.faultproxy import FaultProxy, busiest, over_budget  # noqa: E402
from ingestion_dev.processes import ProcessGroup  # noqa: E402
from ingestion_dev.services import start_seaweed  # noqa: E402
from ingestion_job.run import run  # noqa: E402
from ingestion_operator import shares  # noqa: E402

BUCKET = "bench-throttle"


def one_run(endpoint: str, symbols: list[str], days: int, db: Path, concurrency: int, cap: int | None = None,
            template: str = sampledata.KEY_TEMPLATE):
    spec = sampledata.spec(endpoint, BUCKET, symbols, days - 1)
    spec["repair"]["maxRepairsPerRun"] = len(symbols) * days
    spec["target"]["keyTemplate"] = template
    if cap:
        spec["target"]["maxRequestsPerSecond"] = cap
    env = {contract.SPEC_ENV: contract.encode_job_spec(contract.job_spec(spec)), contract.SCHEDULE_ENV: "bench",
           contract.NAMESPACE_ENV: "bench"}
    t0 = time.perf_counter()
    result = run(contract.read_environment(env), db, concurrency=concurrency)
    return result, time.perf_counter() - t0


PHASES = {  # where a burst falls: (what the proxy matches, what it leaves alone, the fault)
    "listing": ("list-type=2", "", "throttle"),
    "objects": (".zip", ".CHECKSUM", "slowdown"),
    "sidecars": (".CHECKSUM", "", "throttle"),
}


def burst_table(server, tmp: Path, concurrency: int) -> tuple[list[str], bool]:
    symbols, days = [f"U{i:03d}USDT" for i in range(10)], 4
    today = dt.datetime.now(dt.timezone.utc).date()
    rows, ok = [], True
    for n, (phase, seconds, retry_after) in enumerate(
            (p, sec, ra) for p in PHASES for sec in (3, 10, 30) for ra in (None, "2")):
        template = f"burst{n}/{sampledata.KEY_TEMPLATE}"
        sampledata.upload(server.client(), BUCKET, [(s, today - dt.timedelta(days=1 + i)) for s in symbols for i in range(days)],
                          template=template)
        proxy = FaultProxy(server.endpoint)
        match, exclude, fault = PHASES[phase]
        rule = proxy.add(fault, "GET", match, for_seconds=seconds, retry_after=retry_after, exclude=exclude)
        try:
            res, wall = one_run(proxy.endpoint, symbols, days, tmp / f"burst{n}.duckdb", concurrency, template=template)
        finally:
            proxy.close()
        s = res.summary
        good = res.outcome == "succeeded" and s["gaps_repaired"] == len(symbols) * days
        ok &= good
        rows.append(f"| {seconds} s of {'429' if fault == 'throttle' else '503 SlowDown'} at {phase} | "
                    f"{'Retry-After: ' + retry_after if retry_after else 'none'} | {res.outcome} | {s['gaps_repaired']} | "
                    f"{s['repairs_failed']} | {rule.hits:,} | {s['wait_seconds']:.1f} s | {s['lowest_request_rate']:g}/s | {wall:.1f} s |")
    head = ["| burst | Retry-After | outcome | repaired | failed | throttled answers | waited | lowest rate | wall time |",
            "|---|---|---|---|---|---|---|---|---|"]
    return head + rows, ok


def _sharer(args):
    name, endpoint, symbols, days, db, cap, template = args
    res, wall = one_run(endpoint, symbols, days, Path(db), 8, cap=cap, template=template)
    return name, res.outcome, res.summary["gaps_repaired"], wall


def shared_table(server, tmp: Path, budget: int = 20) -> tuple[list[str], bool]:
    from ingestion_contract.upstream import UpstreamSpec

    upstream = UpstreamSpec(bucket=BUCKET, endpoint=server.endpoint, max_requests_per_second=budget)
    sched = shares.split_evenly(upstream.scheduled_requests_per_second, {"a": None, "b": None, "c": None})
    backfill = shares.backfill_take(upstream, None, 2, [])
    caps = {**sched, "backfill-0": backfill // 2, "backfill-1": backfill // 2}
    symbols, days = [f"S{i:03d}USDT" for i in range(8)], 6
    today = dt.datetime.now(dt.timezone.utc).date()
    proxy = FaultProxy(server.endpoint)
    jobs = []
    for name, cap in caps.items():
        template = f"shared-{name}/{sampledata.KEY_TEMPLATE}"
        sampledata.upload(server.client(), BUCKET, [(s, today - dt.timedelta(days=1 + i)) for s in symbols for i in range(days)],
                          template=template)
        jobs.append((name, proxy.endpoint, symbols, days, str(tmp / f"{name}.duckdb"), cap, template))
    try:
        with cf.ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_sharer, jobs))
    finally:
        proxy.close()
    arrivals = proxy.times_of("")
    per = {name: sorted(t for p, ts in proxy.arrivals.items() if p.split("/")[2:3] == [f"shared-{name}"] for t in ts)
           for name in caps}
    start, end = max(v[0] for v in per.values()), min(v[-1] for v in per.values())
    together = sum(1 for t in arrivals if start <= t <= end) / (end - start) if end > start else 0.0
    worst = over_budget(arrivals, budget, budget)
    rows = ["| sharer | share | outcome | repaired | its requests | its rate | wall time |", "|---|---|---|---|---|---|---|"]
    for name, outcome, repaired, wall in done:
        v = per[name]
        rows.append(f"| {name} | {caps[name]}/s | {outcome} | {repaired} | {len(v)} | {len(v) / (v[-1] - v[0]):.1f}/s | {wall:.1f} s |")
    rows += ["", f"All five at once for {end - start:.1f} s at {together:.1f} requests/s together; {len(arrivals):,} requests "
             f"in {arrivals[-1] - arrivals[0]:.1f} s; busiest second {busiest(arrivals, 1.0)}, busiest 5 s "
             f"{busiest(arrivals, 5.0)} (budget {budget}/s: at most {2 * budget} and {6 * budget}); "
             + ("never over a token bucket of rate and burst " + str(budget) if worst is None
                else f"OVER: {worst[0]} requests in {worst[1]:.2f} s")]
    ok = worst is None and all(o == "succeeded" and r == len(symbols) * days for _, o, r, _ in done)
    return rows, ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--bursts", action="store_true", help="also the burst table: 18 runs (~6 min)")
    p.add_argument("--shared", action="store_true", help="also the shared-budget table: five runs at once (~1 min)")
    a = p.parse_args()
    symbols = [f"T{i:03d}USDT" for i in range(a.symbols)]
    today = dt.datetime.now(dt.timezone.utc).date()
    dates = [today - dt.timedelta(days=1 + i) for i in range(a.days)]  # lag 1, lookback days-1
    results, tables = [], []
    ok = True
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
            if a.bursts:
                rows, good = burst_table(server, Path(tmp), a.concurrency)
                tables.append(("Bursts: one run of 40 repairs per burst, concurrency " + str(a.concurrency), rows, good))
            if a.shared:
                rows, good = shared_table(server, Path(tmp))
                tables.append(("One upstream of 20 requests a second, five runs at their shares at once", rows, good))
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
    for title, rows, good in tables:
        print(f"\n{title}\n")
        print("\n".join(rows))
        print("goal:", "met" if good else "NOT MET")
        ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
