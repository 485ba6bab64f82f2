"""Runs that never lie, against the real S3 server, the real Pushgateway and real DuckDB files:
one bad cell fails alone, outcomes are true, throttling is survived, the time budget holds,
and the store can be read while a run works."""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import threading
import time
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ingestion_dev import sampledata

from .conftest import EXE, context, days_ago, holding, pushed, pushed_causes, rows, run, run_cli
from ingestion_dev.faultproxy import FaultProxy

LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} level=")


def kline_zip(symbol: str, date: dt.date, header: bool = True, columns: int = 12) -> bytes:
    """Binance's daily kline zip: with a header row (newer files) or without (older ones);
    ``columns`` < 12 makes a shape Binance never published."""
    with zipfile.ZipFile(io.BytesIO(sampledata.kline_zip(symbol, date))) as zf:
        name = zf.namelist()[0]
        lines = zf.read(name).decode().splitlines()
    lines = [",".join(line.split(",")[:columns]) for line in (lines if header else lines[1:])]
    return sampledata.zipped_csv(name.replace(".csv", ".zip"), "\n".join(lines) + "\n")


# 1. Failure isolation -------------------------------------------------------------------------
def test_one_bad_cell_of_each_kind_fails_alone_and_the_rest_is_committed(dataset, servers, tmp_path):
    d1, d2, d3, d4, d5 = days_ago(1, 2, 3, 4, 5)
    dataset.put("BTCUSDT", d1, kline_zip("BTCUSDT", d1, header=True))
    dataset.put("BTCUSDT", d2, kline_zip("BTCUSDT", d2, header=False))
    dataset.put("BTCUSDT", d3, kline_zip("BTCUSDT", d3, header=False, columns=11))
    dataset.put("BTCUSDT", d4, b"PK\x03\x04 this is no zip")
    dataset.upload([("BTCUSDT", d5)], checksum_body=b"0" * 64 + b"  x.zip\n")
    schedule = f"isolate-{dataset.prefix}"
    spec = dataset.spec(["BTCUSDT"], lookback=4, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    db = tmp_path / "s.duckdb"

    out = run_cli(tmp_path, schedule, spec, "--db", str(db))
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert all(LOG_LINE.match(line) for line in lines), "every stderr line is one log record"
    assert "event=run_partial repairs_failed=3" in lines[-1]
    # the two good shapes are loaded, typed alike
    assert rows(db, "SELECT count(*), count(DISTINCT date), typeof(any_value(open_time)), typeof(any_value(close)) FROM loaded") == [
        (10, 2, "BIGINT", "DOUBLE")]
    gaps = {d: (status, reason, attempts, err) for d, status, reason, attempts, err in
            rows(db, "SELECT date, status, reason, attempts, last_error FROM gaps")}
    assert {d: g[0] for d, g in gaps.items()} == {d1: "repaired", d2: "repaired", d3: "open", d4: "open", d5: "open"}
    # the object that is not what its checksum says failed to repair; the two verified objects
    # that do not hold their cell's data are quarantined (nothing of them loaded)
    causes = {d3: ("quarantined", "no header row and 11 columns"), d4: ("quarantined", "not a zip file"),
              d5: ("verification-failed", "does not match the checksum file")}
    for d, (why, cause) in causes.items():
        status, reason, attempts, err = gaps[d]
        assert (reason, attempts) == (why, 1) and cause in err and "\n" not in err
    assert rows(db, "SELECT outcome, repairs_failed, gaps_repaired FROM runs") == [("partial", 3, 2)]
    metrics = pushed(servers.pushgateway, schedule)
    assert metrics["ingestion_run_success"] == 0 and metrics["ingestion_repairs_failed"] == 3
    assert metrics['ingestion_runs_total{outcome="partial"}'] == 1 and metrics['ingestion_runs_total{outcome="succeeded"}'] == 0

    again = run_cli(tmp_path, schedule, spec, "--db", str(db))  # the bad cells are tried again; nothing else moves
    assert again.returncode == 3
    assert rows(db, "SELECT attempts FROM gaps WHERE status = 'open'") == [(2,), (2,), (2,)]
    assert rows(db, "SELECT count(*) FROM loaded") == [(10,)]


def test_an_object_that_does_not_hold_its_cells_data_is_quarantined_and_loads_nothing(dataset, servers, tmp_path):
    """Issue 24, point 2, on the real S3 server: a zip of another day's rows under the right
    name, a zip of two members and one named for another day are quarantined (their gap open
    with cause quarantined and the check that failed, nothing of them loaded), while a file
    with a byte-order mark and an odd header loads under the normal column names. The store,
    the run's summary, the pushed metrics and the report say the same."""
    d1, d2, d3, d4, d5 = days_ago(1, 2, 3, 4, 5)
    member = lambda d: f"BTCUSDT-1m-{d}.csv"  # noqa: E731

    def csv_of(d: dt.date) -> str:
        return zipfile.ZipFile(io.BytesIO(sampledata.kline_zip("BTCUSDT", d))).read(member(d)).decode()

    zip_of = sampledata.zipped
    header, rest = csv_of(d4).split("\n", 1)
    dataset.put("BTCUSDT", d1, kline_zip("BTCUSDT", d1))
    dataset.put("BTCUSDT", d2, zip_of({member(d2): csv_of(d2 - dt.timedelta(days=1))}))  # yesterday's rows
    dataset.put("BTCUSDT", d3, zip_of({member(d3): csv_of(d3), "extra.csv": csv_of(d3)}))
    dataset.put("BTCUSDT", d4, zip_of({member(d4): "\ufeff" + header.upper().replace(",", " , ") + "\n" + rest}))
    dataset.put("BTCUSDT", d5, zip_of({member(d5 - dt.timedelta(days=1)): csv_of(d5)}))
    schedule = f"quarantine-{dataset.prefix}"
    spec = dataset.spec(["BTCUSDT"], lookback=4, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    db = tmp_path / "s.duckdb"

    res = run(context(spec, schedule=schedule), db)
    assert (res.outcome, res.summary["gaps_repaired"], res.summary["repairs_failed"], res.summary["gaps_open"]) == \
        ("partial", 2, 3, 3)
    gaps = {d: (status, reason, err) for d, status, reason, err in rows(db, "SELECT date, status, reason, last_error FROM gaps")}
    assert {d: g[:2] for d, g in gaps.items()} == {d1: ("repaired", None), d4: ("repaired", None), d2: ("open", "quarantined"),
                                                   d3: ("open", "quarantined"), d5: ("open", "quarantined")}
    assert f"5 row(s) have an open_time outside {d2} (UTC)" in gaps[d2][2]
    assert f"the zip must hold exactly one .csv member, {member(d3)}; it holds {member(d3)}, extra.csv" in gaps[d3][2]
    assert f"it holds {member(d5 - dt.timedelta(days=1))}" in gaps[d5][2]
    assert rows(db, "SELECT date, count(*) FROM loaded GROUP BY date ORDER BY date") == [(d4, 5), (d1, 5)]
    assert [c for c, in rows(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'loaded'")
            if "open_time" in c] == ["open_time"]  # no '\ufeffOPEN_TIME' column
    metrics = pushed(servers.pushgateway, schedule)
    assert res.summary["repairs_quarantined"] == 3
    assert rows(db, "SELECT repairs_failed, repairs_quarantined, gaps_open FROM runs") == [(3, 3, 3)]
    assert (metrics["ingestion_repairs_failed"], metrics["ingestion_repairs_quarantined"], metrics["ingestion_gaps_repaired"],
            sum(pushed_causes(metrics).values()), pushed_causes(metrics)["quarantined"]) == (3, 3, 2, 3, 3)
    report = subprocess.run([EXE, "report", "--db", str(db), "--schedule", schedule], capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    assert "OPEN GAPS (3: quarantined 3)" in report.stdout and report.stdout.count("quarantined") == 4


def test_a_loaded_file_that_does_not_fit_the_table_is_refused_alone(dataset, tmp_path):
    template = f"{dataset.prefix}/pq/{{symbol}}/{{symbol}}-{{date}}.parquet"

    def parquet(**cols) -> bytes:
        buf = io.BytesIO()
        pq.write_table(pa.table(cols), buf)
        return buf.getvalue()

    d1, d2, d3, d4 = days_ago(1, 2, 3, 4)
    dataset.put("XUSDT", d1, parquet(price=[1.0], qty=[1]), template)
    spec = dataset.spec(["XUSDT"], lookback=3, repair={"maxRepairsPerRun": 10, "load": "parquet"})
    spec["target"]["keyTemplate"] = template
    db = tmp_path / "s.duckdb"
    assert run(context(spec, schedule="fit"), db).outcome == "succeeded"
    dataset.put("XUSDT", d2, parquet(price=[2.0], other=["x"]), template)
    dataset.put("XUSDT", d3, parquet(price=["abc"], qty=[3]), template)
    dataset.put("XUSDT", d4, parquet(price=[4.0], qty=[4]), template)
    res = run(context(spec, schedule="fit"), db)
    assert (res.outcome, res.exit_code, res.summary["repairs_failed"], res.summary["gaps_repaired"]) == ("partial", 3, 2, 1)
    assert rows(db, "SELECT date, price, qty FROM loaded ORDER BY date") == [(d4, 4.0, 4), (d1, 1.0, 1)]
    errors = dict(rows(db, "SELECT date, last_error FROM gaps WHERE status = 'open'"))
    assert rows(db, "SELECT DISTINCT reason FROM gaps WHERE status = 'open'") == [("quarantined",)]
    assert "load refused: columns other are not in table loaded (price, qty)" in errors[d2]
    assert "load refused: column price: 1 value(s) of type VARCHAR do not fit loaded's DOUBLE" in errors[d3]


# 2. Outcomes are true everywhere ---------------------------------------------------------------
def test_a_run_whose_commit_fails_pushes_a_failure_and_is_counted_by_a_later_run(dataset, servers, tmp_path, wait_for):
    schedule = f"commit-{dataset.prefix}"
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    spec = dataset.spec(["BTCUSDT"], lookback=3)
    db = tmp_path / "s.duckdb"
    assert run(context(spec, schedule=schedule), db).outcome == "succeeded"
    first = pushed(servers.pushgateway, schedule)
    dataset.upload([("BTCUSDT", d) for d in days_ago(2, 3)])
    proxy = FaultProxy(servers.s3.endpoint)
    gate = proxy.add("delay", "GET", ".zip", times=100, seconds=1.0)
    result = {}
    try:
        slow = {**spec, "target": {**spec["target"], "endpoint": proxy.endpoint}}
        worker = threading.Thread(target=lambda: result.update(res=run(context(slow, schedule=schedule), db, lock_timeout=1)))
        worker.start()
        wait_for(lambda: gate.hits > 0, 30, "the run to start repairing", interval=0.05)
        with holding(db) as holder:  # another writer takes the file while the run works
            worker.join(60)
    finally:
        proxy.close()
    res = result["res"]
    assert res.outcome == "failed" and res.exit_code == 1 and f"PID {holder.pid}" in res.error and "(waited 1s)" in res.error
    after = pushed(servers.pushgateway, schedule)
    assert after["ingestion_run_success"] == 0
    assert after["ingestion_last_failure_timestamp_seconds"] > first["ingestion_last_success_timestamp_seconds"]
    # counts come from the store, so they never go down; this run is not in them yet
    assert after['ingestion_runs_total{outcome="succeeded"}'] == first['ingestion_runs_total{outcome="succeeded"}'] == 1
    (run_id, deadline_at), = rows(db, "SELECT run_id, deadline_at FROM runs WHERE outcome = 'running'")
    assert rows(db, "SELECT count(*) FROM gaps WHERE status = 'repaired'") == [(1,)]  # nothing of it was committed
    # the first run past its deadline records it, and the pushed count shows it
    assert run(context(spec, schedule=schedule), db, now=deadline_at + dt.timedelta(seconds=1)).outcome == "succeeded"
    assert rows(db, "SELECT outcome FROM runs WHERE run_id = ?", run_id) == [("abandoned",)]
    assert pushed(servers.pushgateway, schedule)['ingestion_runs_total{outcome="abandoned"}'] == 1


def test_a_run_waits_for_a_writer_that_lets_go(dataset, tmp_path, caplog):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    db = tmp_path / "s.duckdb"
    with holding(db, seconds=1.5) as holder:
        res = run(context(dataset.spec(["BTCUSDT"], lookback=0)), db, lock_timeout=30)
    assert res.outcome == "succeeded", res.error
    assert any("event=store_wait" in r.message and f"PID {holder.pid}" in r.message for r in caplog.records)


# 3. Throttling is survived -------------------------------------------------------------------
def test_every_key_throttled_twice_still_repairs_everything(dataset, servers, tmp_path):
    cells = [(s, d) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT") for d in days_ago(1, 2, 3, 4, 5, 6)]
    dataset.upload(cells)
    proxy = FaultProxy(servers.s3.endpoint)
    proxy.add("slowdown", "GET", ".zip", times=2, per_path=True)  # each object and each sidecar, twice
    try:
        spec = dataset.spec(["BTCUSDT", "ETHUSDT", "SOLUSDT"], lookback=5, endpoint=proxy.endpoint)
        res = run(context(spec), tmp_path / "s.duckdb", concurrency=16)
    finally:
        proxy.close()
    assert res.outcome == "succeeded" and res.summary["gaps_repaired"] == 18 and res.summary["repairs_failed"] == 0
    assert res.summary["s3_errors"] == 18 * 2 * 2


def test_retry_after_is_honoured(dataset, servers, tmp_path):
    d = days_ago(1)[0]
    dataset.upload([("BTCUSDT", d)])
    key = dataset.template.format(symbol="BTCUSDT", date=d.isoformat())
    proxy = FaultProxy(servers.s3.endpoint)
    proxy.add("throttle", "GET", key.rsplit("/", 1)[1], times=1, per_path=True, retry_after="2")
    try:
        res = run(context(dataset.spec(["BTCUSDT"], lookback=0, endpoint=proxy.endpoint)), tmp_path / "s.duckdb")
        arrivals = proxy.times_of(key.rsplit("/", 1)[1])
    finally:
        proxy.close()
    assert res.outcome == "succeeded"
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 1.9  # waited as told, not the ~0.1 s backoff


def test_a_request_that_runs_out_of_its_retry_budget_fails_its_cell_alone_saying_how_long(dataset, servers, tmp_path):
    """Retries are bounded by time (target.retryBudgetSeconds), not by a count: a key throttled
    for longer than its budget fails its cell alone, naming the attempts, the time and the budget."""
    dataset.upload([("BTCUSDT", d) for d in days_ago(1, 2, 3)])
    bad = dataset.template.format(symbol="BTCUSDT", date=days_ago(2)[0].isoformat()).rsplit("/", 1)[1]
    proxy = FaultProxy(servers.s3.endpoint)
    proxy.add("slowdown", "GET", bad, times=1000, per_path=True, retry_after="0")
    proxy.add("slowdown", "GET", ".zip", times=3, per_path=True, retry_after="0")  # the others: a burst elsewhere
    spec = dataset.spec(["BTCUSDT"], lookback=2, endpoint=proxy.endpoint)
    spec["target"]["retryBudgetSeconds"] = 4
    try:
        res = run(context(spec), tmp_path / "s.duckdb")
    finally:
        proxy.close()
    assert (res.outcome, res.summary["gaps_repaired"], res.summary["repairs_failed"]) == ("partial", 2, 1)
    (err,), = rows(tmp_path / "s.duckdb", "SELECT last_error FROM gaps WHERE status = 'open'")
    found = re.search(r"GetObject SlowDown after (\d+) attempts in (\d+\.\d)s: its retry budget "
                      r"\(target.retryBudgetSeconds=4\) is spent$", err)
    assert found and int(found.group(1)) >= 2 and 0.5 <= float(found.group(2)) <= 4.0, err


def test_the_run_keeps_to_its_time_budget_and_defers_the_rest(dataset, servers, tmp_path):
    dataset.upload([("BTCUSDT", d) for d in days_ago(*range(1, 11))])
    proxy = FaultProxy(servers.s3.endpoint)
    proxy.add("delay", "GET", ".zip", times=1000, seconds=1.5)
    spec = dataset.spec(["BTCUSDT"], lookback=9, endpoint=proxy.endpoint)
    spec["activeDeadlineSeconds"] = 8  # a budget of 4 s: 8 s less a reserve of half
    db = tmp_path / "s.duckdb"
    try:
        t0 = time.monotonic()
        res = run(context(spec), db, concurrency=2)
        took = time.monotonic() - t0
    finally:
        proxy.close()
    assert res.outcome == "succeeded" and took < 8
    s = res.summary
    assert s["gaps_repaired"] >= 1 and s["repairs_deferred"] >= 5 and s["gaps_repaired"] + s["repairs_deferred"] == 10
    reasons = set(rows(db, "SELECT reason, last_error FROM gaps WHERE status = 'open'"))
    assert reasons == {("deferred", "deferred: the run's time budget (4s of activeDeadlineSeconds) ran out")}
    assert rows(db, "SELECT count(*) FROM gaps WHERE status = 'open' AND attempts = 0") == [(s["repairs_deferred"],)]


# 7. Reading while writing --------------------------------------------------------------------
def test_report_reads_the_store_while_a_run_is_repairing(dataset, servers, tmp_path, wait_for):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    spec = dataset.spec(["BTCUSDT"], lookback=3)
    db = tmp_path / "s.duckdb"
    assert run(context(spec), db).outcome == "succeeded"
    dataset.upload([("BTCUSDT", d) for d in days_ago(2, 3)])
    proxy = FaultProxy(servers.s3.endpoint)
    gate = proxy.add("delay", "GET", ".zip", times=100, seconds=30)
    f = tmp_path / "slow.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": "demo", "namespace": "data"},
                                 "spec": {**spec, "target": {**spec["target"], "endpoint": proxy.endpoint}}}))
    busy = subprocess.Popen([EXE, "run", "--spec", str(f), "--db", str(db)], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: gate.hits > 0, 30, "the run to start repairing", interval=0.05)
        t0 = time.monotonic()
        out = subprocess.run([EXE, "report", "--db", str(db)], capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
    finally:
        busy.kill()
        busy.wait()
        proxy.close()
    assert out.returncode == 0 and took < 10, out.stderr
    assert "running" in out.stdout and "SUCCESS RATE (last 30 days): 100.0% (1 of 1 finished runs)" in out.stdout


def test_report_waits_for_a_commit_and_says_so(dataset, tmp_path):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    db = tmp_path / "s.duckdb"
    run(context(dataset.spec(["BTCUSDT"], lookback=0)), db)
    with holding(db, seconds=1.5) as holder:
        waited = subprocess.run([EXE, "report", "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert waited.returncode == 0 and "AVAILABILITY" in waited.stdout
    assert "is in use by" in waited.stderr and f"(PID {holder.pid}): waiting up to 30s" in waited.stderr
    with holding(db) as holder:
        gave_up = subprocess.run([EXE, "report", "--db", str(db), "--lock-timeout", "0.5"], capture_output=True, text=True, timeout=60)
    assert gave_up.returncode == 2 and gave_up.stderr.strip().splitlines()[-1].startswith(f"error: {db} is in use by")


@pytest.mark.parametrize("wide", [False, True], ids=["wrapped", "wide"])
def test_report_shows_last_error_whole(dataset, tmp_path, wide):
    d = days_ago(1)[0]
    dataset.upload([("BTCUSDT", d)], checksum_body=b"0" * 64 + b"  x.zip\n")
    db = tmp_path / "s.duckdb"
    run(context(dataset.spec(["BTCUSDT"], lookback=0)), db)
    (err,), = rows(db, "SELECT last_error FROM gaps")
    assert len(err) > 150
    out = subprocess.run([EXE, "report", "--db", str(db), *(["--wide"] if wide else [])], capture_output=True, text=True,
                         env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"}, timeout=60).stdout
    header, *lines = [line for line in out.split("OPEN GAPS")[1].split("RECENT RUNS")[0].splitlines()[1:] if line.strip()]
    col = header.index("LAST ERROR")
    if wide:
        assert len(lines) == 1 and lines[0][col:] == err
    else:
        assert len(lines) > 1 and max(len(line) for line in lines) <= 100
        assert "".join(line[col:] for line in lines).replace(" ", "") == err.replace(" ", "")  # wrapped, never cut


def test_a_read_timeout_is_retried_and_a_hung_key_fails_alone_naming_its_attempts(dataset, servers):
    """Timeouts through the real S3 server: the fault proxy holds answers past the client's read
    timeout. One slow answer is retried and the object arrives; a key that always hangs fails
    alone, saying it timed out and how many attempts it made."""
    from ingestion_contract.spec import parse_job_spec
    from ingestion_job.source import ObjectError, S3Source

    dataset.upload([("BTCUSDT", d) for d in days_ago(1, 2)])
    proxy = FaultProxy(servers.s3.endpoint)
    try:
        spec = dataset.spec(["BTCUSDT"], endpoint=proxy.endpoint)
        target = parse_job_spec(spec).target
        source = S3Source(target, read_timeout=0.5, max_attempts=3, request_seconds=30)
        listed = source.list_symbol("BTCUSDT")
        slow, hung = (listed[d] for d in days_ago(1, 2))
        proxy.add("delay", "GET", slow.key, times=1, seconds=1.5)  # the first attempt times out
        body, digest = source.fetch(slow)
        assert len(body) == slow.size and source.stats.errors[("GetObject", "ReadTimeout")] == 1
        proxy.add("delay", "GET", hung.key.split("/")[-1], times=10, seconds=1.5)
        with pytest.raises(ObjectError, match=r"GetObject ReadTimeout after 3 attempts in \d+\.\ds$"):
            source.fetch(hung)
        assert source.stats.errors[("GetObject", "ReadTimeout")] == 1 + 3
    finally:
        proxy.close()


def test_max_requests_per_second_caps_what_the_source_sees(dataset, servers, tmp_path, caplog):
    """`target.maxRequestsPerSecond` spaces every request (listing, objects, sidecars) across
    the run's 16 threads: the source sees them at most that often, and the run says how long
    it waited for its slots."""
    cells = [(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2, 3, 4, 5)]
    dataset.upload(cells)
    proxy = FaultProxy(servers.s3.endpoint)  # it records when each request arrives
    proxy.add("slowdown", "GET", ".zip", times=1, per_path=True)  # each object's and sidecar's first GET: retries to pace too
    try:
        spec = dataset.spec(["BTCUSDT", "ETHUSDT"], lookback=4, endpoint=proxy.endpoint)
        spec["target"]["maxRequestsPerSecond"] = 10
        with caplog.at_level("INFO", logger="ingestion_job"):
            res = run(context(spec), tmp_path / "s.duckdb", concurrency=16)
        arrivals = proxy.times_of("")
    finally:
        proxy.close()
    assert res.outcome == "succeeded" and res.summary["gaps_repaired"] == 10
    n = res.summary["s3_requests"]
    assert len(arrivals) == n and n >= 43  # 1 bucket check + 2 listings + 10 objects and 10 sidecars, twice each
    assert res.summary["s3_errors"] == 20
    # evenly spaced at 0.1 s, so any 11 consecutive arrivals span at least 1 s (less the
    # jitter of the proxy's clock against ours)
    assert min(b - a for a, b in zip(arrivals, arrivals[10:])) >= 0.95, arrivals
    assert arrivals[-1] - arrivals[0] >= (n - 1) / 10 - 0.05
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=run_finished")]
    waited = float(re.search(r" max_requests_per_second=10 rate_wait_seconds=([0-9.]+)", line).group(1))
    assert waited > 1.0  # 16 threads queued for 0.1 s slots
