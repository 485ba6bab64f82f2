"""A source that throttles in bursts (issue 27, points 1-3), through the fault proxy in front
of the real S3 server: retries bounded by time ride a burst out at any phase, the run slows
itself down while it lasts, and a listing that gives up loses its own symbol only."""

from __future__ import annotations

import time

import pytest

from ingestion_dev.faultproxy import FaultProxy

from .conftest import context, days_ago, pushed, rows, run

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PHASES = {  # where the burst falls: (what the proxy matches, what it leaves alone)
    "listing": ("list-type=2", ""),
    "object": (".zip", ".CHECKSUM"),
    "sidecar": (".CHECKSUM", ""),
}


def burst_run(dataset, servers, tmp_path, phase: str, seconds: float, retry_after: str | None, fault: str = "throttle",
              cap: int | None = None):
    dataset.upload([(s, d) for s in SYMBOLS for d in days_ago(1, 2, 3, 4)])
    proxy = FaultProxy(servers.s3.endpoint)
    match, exclude = PHASES[phase]
    proxy.add(fault, "GET", match, for_seconds=seconds, retry_after=retry_after, exclude=exclude)
    spec = dataset.spec(SYMBOLS, lookback=3, endpoint=proxy.endpoint)
    if cap:
        spec["target"]["maxRequestsPerSecond"] = cap
    try:
        t0 = time.monotonic()
        res = run(context(spec), tmp_path / "s.duckdb", concurrency=8)
        took = time.monotonic() - t0
    finally:
        proxy.close()
    return res, took, proxy


@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("seconds,retry_after", [(3, None), (3, "1"), (10, None), (10, "2")])
def test_a_burst_of_throttling_at_any_phase_costs_time_not_a_cell(dataset, servers, tmp_path, phase, seconds, retry_after):
    res, took, proxy = burst_run(dataset, servers, tmp_path, phase, seconds, retry_after)
    s = res.summary
    assert (res.outcome, s["gaps_repaired"], s["repairs_failed"], s["listings_failed"]) == ("succeeded", 12, 0, 0), res.error
    assert s["throttled_responses"] >= 1 and s["throttled_responses"] == proxy.rules[0].hits
    assert s["wait_seconds"] > 0 and 0 < s["lowest_request_rate"]
    assert took >= seconds - 0.5  # it waited the burst out
    # the run's row and the pushed metrics say the same
    (throttled, waited, lowest), = rows(tmp_path / "s.duckdb", "SELECT throttled_responses, wait_seconds, lowest_request_rate FROM runs")
    assert (throttled, waited, lowest) == (s["throttled_responses"], s["wait_seconds"], s["lowest_request_rate"])
    assert pushed(servers.pushgateway, "demo")["ingestion_source_throttled_responses"] == s["throttled_responses"]


@pytest.mark.parametrize("phase,fault,retry_after", [("listing", "throttle", None), ("object", "slowdown", "5"),
                                                     ("sidecar", "throttle", None)])
def test_half_a_minute_of_throttling_costs_time_not_a_cell(dataset, servers, tmp_path, phase, fault, retry_after):
    res, took, proxy = burst_run(dataset, servers, tmp_path, phase, 30, retry_after, fault=fault)
    assert (res.outcome, res.summary["gaps_repaired"], res.summary["repairs_failed"]) == ("succeeded", 12, 0), res.error
    assert took >= 29.5
    print(f"\n30 s of {fault} at {phase} (Retry-After: {retry_after}): {took:.1f} s, {proxy.rules[0].hits} throttled answers, "
          f"lowest rate {res.summary['lowest_request_rate']:g}/s")


def test_throttling_slows_the_whole_run_down_and_it_speeds_up_again(dataset, servers, tmp_path):
    """Multiplicative decrease: during a 10 s burst the source sees far fewer requests a second
    than the run's cap, each answer halving the rate at most once a second; additive increase
    after it."""
    dataset.upload([(s, d) for s in SYMBOLS for d in days_ago(*range(1, 21))])
    proxy = FaultProxy(servers.s3.endpoint)
    spec = dataset.spec(SYMBOLS, lookback=19, endpoint=proxy.endpoint)
    spec["target"]["maxRequestsPerSecond"] = 40
    rule = proxy.add("throttle", "GET", ".zip", for_seconds=10, exclude=".CHECKSUM")
    try:
        res = run(context(spec), tmp_path / "s.duckdb", concurrency=8)
    finally:
        proxy.close()
    s = res.summary
    assert (res.outcome, s["gaps_repaired"]) == ("succeeded", 60)
    start = rule.started
    arrivals = sorted(t for ts in proxy.arrivals.values() for t in ts)
    late_in_burst = sum(1 for t in arrivals if start + 5 <= t < start + 10)
    print(f"\nburst of 10 s under a cap of 40/s: {late_in_burst} requests in its last 5 s, {rule.hits} throttled, "
          f"lowest rate {s['lowest_request_rate']:g}/s")
    assert late_in_burst <= 25  # a run at its cap would have sent 200
    assert s["lowest_request_rate"] <= 5


def test_a_listing_that_gives_up_leaves_its_symbol_unknown_and_the_others_go_on(dataset, servers, tmp_path):
    """A symbol whose listing is throttled past its retry budget: its cells are unknown for the
    run (nothing of them changes in the store), the other symbols are recorded and repaired,
    and the run is partial, naming the listing."""
    dataset.upload([(s, d) for s in SYMBOLS for d in days_ago(1, 2, 3)])
    db = tmp_path / "s.duckdb"
    spec = dataset.spec(SYMBOLS, lookback=2)
    run(context(spec), db)  # everything held
    before = rows(db, "SELECT symbol, date, present, etag FROM objects WHERE symbol = 'ETHUSDT' ORDER BY date")
    gaps_before = rows(db, "SELECT symbol, date, status, reason FROM gaps WHERE symbol = 'ETHUSDT' ORDER BY date")
    dataset.upload([(s, d) for s in SYMBOLS for d in days_ago(0)])  # new dates for the next run to find
    proxy = FaultProxy(servers.s3.endpoint)
    proxy.add("throttle", "GET", "ETHUSDT-1m-&max-keys", for_seconds=60)  # ETHUSDT's listing only
    spec = dataset.spec(SYMBOLS, lookback=2, endpoint=proxy.endpoint)
    spec["target"]["retryBudgetSeconds"] = 3
    spec["target"]["lagDays"] = 0
    try:
        res = run(context(spec), db)
    finally:
        proxy.close()
    s = res.summary
    assert res.outcome == "partial" and s["listings_failed"] == 1 and s["symbols"] == 2, (res.outcome, res.error)
    assert res.reason.startswith("the listing of 1 symbol(s) failed (ETHUSDT; their cells are unknown for this run): "), res.reason
    assert "its retry budget (target.retryBudgetSeconds=3) is spent" in res.reason
    assert rows(db, "SELECT symbol, date, present, etag FROM objects WHERE symbol = 'ETHUSDT' ORDER BY date") == before
    assert rows(db, "SELECT symbol, date, status, reason FROM gaps WHERE symbol = 'ETHUSDT' ORDER BY date") == gaps_before
    # the others were probed and repaired, today included
    assert rows(db, "SELECT count(*) FROM objects WHERE symbol <> 'ETHUSDT' AND present") == [(2 * 4,)]
    assert rows(db, "SELECT outcome, listings_failed FROM runs ORDER BY started_at DESC LIMIT 1") == [("partial", 1)]
    assert pushed(servers.pushgateway, "demo")["ingestion_listings_failed"] == 1


def test_a_byte_cap_paces_the_downloads(dataset, servers, tmp_path):
    """target.maxBytesPerSecond (an upstream's byte budget, rendered): each request waits until
    the bytes received before it have had their time, so the run's download rate stays at the
    cap, however many requests it keeps in flight."""
    dataset.upload([(s, d) for s in SYMBOLS for d in days_ago(1, 2, 3, 4)])
    spec = dataset.spec(SYMBOLS, lookback=3)
    fast = run(context(spec), tmp_path / "fast.duckdb", concurrency=8)
    total = fast.summary["bytes_fetched"]
    assert fast.outcome == "succeeded" and fast.summary["gaps_repaired"] == 12 and total > 0
    spec["target"]["maxBytesPerSecond"] = max(1, total // 3)  # about three seconds' worth
    t0 = time.monotonic()
    capped = run(context(spec), tmp_path / "capped.duckdb", concurrency=8)
    took = time.monotonic() - t0
    assert (capped.outcome, capped.summary["gaps_repaired"], capped.summary["bytes_fetched"]) == ("succeeded", 12, total)
    # every request after the first waits for the bytes before it: at least the last one's time short of 3 s
    assert took >= 2.0, took  # (listing pages and sidecars count too: the objects alone are three seconds' worth)
    assert capped.summary["wait_seconds"] > 0
    print(f"\n{total:,} bytes: {took:.1f} s under a cap of {total // 3:,} bytes/s")
