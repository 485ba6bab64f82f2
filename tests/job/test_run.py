"""One probe-and-repair run against a real S3 server, a real Pushgateway, a real DuckDB file."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import duckdb
import pytest
import yaml


from .conftest import EXE, PRIVATE, PUBLIC, TODAY, context, days_ago, holding, kill_at_failpoint, pushed, rows, run, run_cli, scrape
from ingestion_dev.faultproxy import FaultProxy

SYMS = ["BTCUSDT", "ETHUSDT"]


def snapshot(db):
    return {t: rows(db, f"SELECT * FROM {t} ORDER BY ALL") for t in ("objects", "gaps")}


def test_first_run_records_availability_gaps_and_repairs(dataset, tmp_path):
    dataset.upload([(s, d) for s in SYMS for d in days_ago(1, 2, 4, 5, 6, 7, 8)])  # day 3 missing for both
    db = tmp_path / "s.duckdb"
    res = run(context(dataset.spec(SYMS)), db)
    assert res.outcome == "succeeded" and res.exit_code == 0
    # window: 8 days (lookback 7 + the newest) per symbol
    assert rows(db, "SELECT count(*), count(*) FILTER (WHERE present) FROM objects") == [(16, 14)]
    assert rows(db, "SELECT count(*) FROM objects WHERE present AND (size IS NULL OR etag IS NULL)") == [(0,)]
    open_gaps = rows(db, "SELECT symbol, date, reason FROM gaps WHERE status = 'open' ORDER BY symbol")
    assert [(s, d, r) for s, d, r in open_gaps] == [(s, TODAY - dt.timedelta(days=3), "late-upstream") for s in SYMS]
    assert rows(db, "SELECT count(*) FROM gaps WHERE status = 'repaired' AND sha256 IS NOT NULL AND attempts = 1") == [(14,)]
    (run_row,) = rows(db, "SELECT outcome, trigger, expected, present, missing, gaps_repaired, gaps_open, s3_errors FROM runs")
    assert run_row == ("succeeded", "manual", 16, 14, 2, 14, 2, 0)


def test_rerun_of_the_same_window_changes_nothing(dataset, tmp_path):
    dataset.upload([(s, d) for s in SYMS for d in days_ago(1, 2, 4)])
    db = tmp_path / "s.duckdb"
    spec = dataset.spec(SYMS, lookback=3, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    assert run(context(spec), db).outcome == "succeeded"
    before = snapshot(db)
    loaded = rows(db, "SELECT count(*) FROM loaded")
    res = run(context(spec), db)
    assert res.outcome == "succeeded" and res.summary["gaps_repaired"] == 0 and res.summary["bytes_fetched"] == 0
    # Measured by DuckDB's own count of rows its statements inserted or changed, not by values:
    # the first run wrote 8 objects (4 days x 2 symbols), 8 gaps (6 repaired, 2 absent) and 30
    # loaded rows; the rerun none (before it was counted, every objects row was rewritten).
    assert rows(db, "SELECT rows_written FROM runs ORDER BY started_at") == [(8 + 8 + 30,), (0,)]
    assert res.summary["rows_written"] == 0
    assert snapshot(db) == before
    assert rows(db, "SELECT count(*) FROM loaded") == loaded == [(6 * 5,)]  # 6 files x 5 rows, no duplicates
    assert rows(db, "SELECT count(*) FROM runs") == [(2,)]


def test_late_arrival_flips_from_missing_to_present_and_is_repaired(dataset, tmp_path):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1, 3)])
    db = tmp_path / "s.duckdb"
    spec = dataset.spec(["BTCUSDT"], lookback=2)
    run(context(spec), db)
    late = days_ago(2)[0]
    assert rows(db, "SELECT present, size FROM objects WHERE date = ?", late) == [(False, None)]
    dataset.upload([("BTCUSDT", late)])
    res = run(context(spec), db)
    assert res.summary["gaps_repaired"] == 1
    (present, size), = rows(db, "SELECT present, size FROM objects WHERE date = ?", late)
    assert present is True and size > 0
    assert rows(db, "SELECT status, attempts FROM gaps WHERE date = ?", late) == [("repaired", 1)]


def test_s3_requests_grow_with_symbols_not_dates(dataset, tmp_path):
    syms = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    dataset.upload([(s, d) for s in syms for d in days_ago(*range(1, 61))], checksum=False)
    spec = dataset.spec(syms, lookback=59, repair={"maxRepairsPerRun": 0, "load": "none"})
    spec["target"]["checksumSuffix"] = None
    short = run(context({**spec, "target": {**spec["target"], "lookbackDays": 9}}), tmp_path / "a.duckdb")
    long = run(context(spec), tmp_path / "b.duckdb")
    assert long.summary["expected"] == 3 * 60 and long.summary["present"] == 180
    # one bucket check + one listing per symbol, whatever the window length
    assert short.summary["expected"] == long.summary["expected"]  # new symbols backfill their whole history
    lists = rows(tmp_path / "b.duckdb", "SELECT s3_requests FROM runs")[0][0]
    assert lists == 1 + len(syms)


def test_bad_checksum_keeps_the_gap_open_with_the_reason(dataset, tmp_path):
    d = days_ago(1)[0]
    dataset.upload([("BTCUSDT", d)], checksum_body=b"0" * 64 + b"  wrong.zip\n")
    db = tmp_path / "s.duckdb"
    res = run(context(dataset.spec(["BTCUSDT"], lookback=0)), db)
    assert (res.outcome, res.exit_code, res.summary["repairs_failed"]) == ("partial", 3, 1)
    (status, reason, attempts, err), = rows(db, "SELECT status, reason, attempts, last_error FROM gaps")
    assert (status, reason, attempts) == ("open", "verification-failed", 1) and "does not match the checksum" in err
    run(context(dataset.spec(["BTCUSDT"], lookback=0)), db)
    assert rows(db, "SELECT attempts FROM gaps") == [(2,)]


def test_max_repairs_per_run_defers_the_rest(dataset, tmp_path):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1, 2, 3, 4, 5)])
    db = tmp_path / "s.duckdb"
    spec = dataset.spec(["BTCUSDT"], lookback=4, repair={"maxRepairsPerRun": 2, "load": "none"})
    res = run(context(spec), db)
    assert res.summary["gaps_repaired"] == 2
    assert rows(db, "SELECT count(*) FROM gaps WHERE reason = 'deferred' AND last_error LIKE 'deferred: maxRepairsPerRun=2%'") == [(3,)]
    run(context(spec), db)
    run(context(spec), db)
    assert rows(db, "SELECT count(*) FROM gaps WHERE status = 'repaired'") == [(5,)]


def test_discovery_lists_symbols_under_the_prefix(dataset, tmp_path):
    dataset.upload([(s, d) for s in ["XUSDT", "YUSDT", "ZUSDT"] for d in days_ago(1)])
    spec = dataset.spec([], lookback=0)
    spec["target"].pop("symbols")
    spec["target"]["discover"] = True
    res = run(context(spec), tmp_path / "s.duckdb")
    assert res.summary["symbols"] == 3 and res.summary["present"] == 3


def test_a_discovered_folder_with_no_object_of_the_template_is_no_symbol(dataset, servers, tmp_path):
    """Issue 24, point 3 (one part): a folder beside the symbols that holds only a readme was a
    symbol with a gap a day; it is skipped, and the symbols beside it are probed as before."""
    dataset.upload([(s, d) for s in ["XUSDT", "YUSDT"] for d in days_ago(1, 2)])
    folder = dataset.template.split("{symbol}", 1)[0]
    servers.s3.client().put_object(Bucket=PUBLIC, Key=f"{folder}NOTES/readme.txt", Body=b"not a symbol")
    spec = dataset.spec([], lookback=1)
    spec["target"].pop("symbols")
    spec["target"]["discover"] = True
    db = tmp_path / "s.duckdb"
    res = run(context(spec), db)
    assert (res.outcome, res.summary["symbols"], res.summary["expected"], res.summary["gaps_open"]) == ("succeeded", 2, 4, 0)
    assert rows(db, "SELECT DISTINCT symbol FROM objects ORDER BY symbol") == [("XUSDT",), ("YUSDT",)]
    assert rows(db, "SELECT count(*) FROM gaps WHERE status = 'open'") == [(0,)]


def test_missing_bucket_fails_at_once_with_one_line(dataset, servers, tmp_path):
    # authenticated: an anonymous caller is refused (403) before existence is revealed
    spec = dataset.spec(SYMS)
    spec["target"].update(bucket="no-such-bucket-here", anonymous=False)
    res = run(context(spec, credentials=(servers.s3.access_key, servers.s3.secret_key)), tmp_path / "s.duckdb")
    assert res.outcome == "failed" and res.exit_code == 1
    assert "the bucket does not exist (NoSuchBucket)" in res.error and "\n" not in res.error
    assert rows(tmp_path / "s.duckdb", "SELECT outcome, error FROM runs")[0][0] == "failed"
    assert rows(tmp_path / "s.duckdb", "SELECT count(*) FROM objects") == [(0,)]


def test_anonymous_access_to_a_private_bucket_is_refused(dataset, tmp_path):
    spec = dataset.spec(SYMS)
    spec["target"]["bucket"] = PRIVATE
    res = run(context(spec), tmp_path / "s.duckdb")
    assert res.outcome == "failed" and "access denied" in res.error.lower()


def test_credentials_arrive_through_the_contract(dataset, servers, tmp_path):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)], bucket=PRIVATE)
    spec = dataset.spec(["BTCUSDT"], lookback=0)
    spec["target"].update(bucket=PRIVATE, anonymous=False)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    assert run(context(spec, credentials=creds), tmp_path / "s.duckdb").summary["gaps_repaired"] == 1
    wrong = run(context(spec, credentials=(servers.s3.access_key, "wrong")), tmp_path / "t.duckdb")
    assert wrong.outcome == "failed" and "secret key is wrong" in wrong.error


def test_transient_errors_are_retried_and_counted(dataset, servers, tmp_path):
    dataset.upload([(s, d) for s in SYMS for d in days_ago(1, 2)])
    proxy = FaultProxy(servers.s3.endpoint)
    try:
        proxy.add("slowdown", "GET", "list-type=2", times=2)
        proxy.add("throttle", "GET", "list-type=2", times=1)
        proxy.add("error", "GET", ".zip", times=2)
        proxy.add("reset", "GET", ".CHECKSUM", times=1)
        res = run(context(dataset.spec(SYMS, lookback=1, endpoint=proxy.endpoint)), tmp_path / "s.duckdb")
    finally:
        proxy.close()
    assert res.outcome == "succeeded", res.error
    assert res.summary["gaps_repaired"] == 4
    errors = rows(tmp_path / "s.duckdb", "SELECT s3_errors FROM runs")[0][0]
    assert errors == 6  # every injected fault was seen, retried and counted


def test_second_writer_waits_a_bounded_time_then_gets_a_clear_error_naming_the_file(dataset, tmp_path):
    db = tmp_path / "s.duckdb"
    duckdb.connect(str(db)).close()
    with holding(db) as holder:
        t0 = time.monotonic()
        res = run(context(dataset.spec(SYMS)), db, lock_timeout=1.5)
        waited = time.monotonic() - t0
    assert res.outcome == "failed" and 1.5 <= waited < 10
    assert str(db) in res.error and "in use" in res.error and f"PID {holder.pid}" in res.error and "(waited 2s)" in res.error


def store_before_a_kill(dataset, tmp_path, name):
    """A store after one run over one published day, then three more days published: the work a
    run about to be killed would commit. Returns (schedule, db, spec, snapshot before)."""
    schedule = f"{name}-{dataset.prefix}"
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    db = tmp_path / "s.duckdb"
    spec = dataset.spec(["BTCUSDT"], lookback=5, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    run(context(spec, schedule=schedule), db)
    before = snapshot(db)
    dataset.upload([("BTCUSDT", d) for d in days_ago(2, 3, 4)])
    return schedule, db, spec, before


def test_sigkill_half_way_leaves_the_store_as_it_was_and_the_next_run_counts_it(dataset, servers, tmp_path):
    """A run killed mid-repair changes no data row; its ``running`` record is turned into
    ``abandoned`` by the first run after its deadline, and the pushed run count shows it."""
    schedule, db, spec, before = store_before_a_kill(dataset, tmp_path, "kill")
    proxy = FaultProxy(servers.s3.endpoint)
    proxy.add("delay", "GET", ".zip", times=100, seconds=30)  # repairs hang: the run is mid-way
    try:
        f = tmp_path / "spec.yaml"
        f.write_text(yaml.safe_dump({"metadata": {"name": schedule, "namespace": "data"},
                                     "spec": {**spec, "target": {**spec["target"], "endpoint": proxy.endpoint}}}))
        proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ingestion-job"), "run", "--spec", str(f),
                                 "--db", str(db)], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while proxy.rules[0].hits == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proxy.rules[0].hits > 0, "the run never reached the repair step"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proxy.close()
    assert snapshot(db) == before
    (killed, deadline_at), = rows(db, "SELECT run_id, deadline_at FROM runs WHERE outcome = 'running'")
    assert rows(db, "SELECT outcome, count(*) FROM runs GROUP BY ALL ORDER BY ALL") == [("running", 1), ("succeeded", 1)]
    # Before its deadline the killed run may still be alive somewhere: it is left alone.
    assert run(context(spec, schedule=schedule), db).summary["gaps_repaired"] == 3  # the next run picks up cleanly
    assert rows(db, f"SELECT outcome FROM runs WHERE run_id = '{killed}'") == [("running",)]
    # Past its deadline it cannot be: the next run records it as abandoned and counts it.
    later = deadline_at + dt.timedelta(minutes=1)
    assert run(context(spec, schedule=schedule), db, now=later).outcome == "succeeded"
    (outcome, error), = rows(db, f"SELECT outcome, error FROM runs WHERE run_id = '{killed}'")
    assert outcome == "abandoned" and "never recorded its end" in error
    pushed = {line.split(" ")[0]: line.split(" ")[1] for line in scrape(servers.pushgateway)
              if f'schedule="{schedule}"' in line and line.startswith("ingestion_runs_total")}
    assert {k.split('outcome="')[1].split('"')[0]: float(v) for k, v in pushed.items()} == {
        "succeeded": 3.0, "partial": 0.0, "failed": 0.0, "abandoned": 1.0}


def test_sigkill_inside_the_commit_leaves_the_store_as_it_was(dataset, tmp_path):
    """Killed inside the commit's transaction, after every data row of the run was written to
    it (the ``store.commit`` failpoint): DuckDB keeps an open transaction's rows in memory and
    writes them to its write-ahead log only at COMMIT, so the next open shows the store exactly
    as before, and the next run redoes the work."""
    schedule, db, spec, before = store_before_a_kill(dataset, tmp_path, "commitkill")
    loaded = rows(db, "SELECT count(*) FROM loaded")
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": schedule, "namespace": "data"}, "spec": spec}))
    kill_at_failpoint([EXE, "run", "--spec", str(f), "--db", str(db), "--as-of", TODAY.isoformat()], "store.commit")
    assert snapshot(db) == before and rows(db, "SELECT count(*) FROM loaded") == loaded
    assert rows(db, "SELECT outcome, count(*) FROM runs GROUP BY ALL ORDER BY ALL") == [("running", 1), ("succeeded", 1)]
    res = run(context(spec, schedule=schedule), db)
    assert res.outcome == "succeeded" and res.summary["gaps_repaired"] == 3
    assert rows(db, "SELECT count(*) FROM loaded") == [(loaded[0][0] + 3 * 5,)]


def test_metrics_are_pushed_with_the_grouping_key(dataset, servers, tmp_path):
    dataset.upload([(s, d) for s in SYMS for d in days_ago(1, 3)])
    spec = dataset.spec(SYMS, lookback=2)
    schedule = f"metrics-{dataset.prefix}"
    run(context(spec, schedule=schedule, namespace="data"), tmp_path / "s.duckdb")
    run(context(spec, schedule=schedule, namespace="data"), tmp_path / "s.duckdb")
    mine = [line for line in scrape(servers.pushgateway) if f'schedule="{schedule}"' in line]
    metric = {line.split("{")[0]: line for line in mine}
    for name in ("ingestion_run_duration_seconds", "ingestion_last_success_timestamp_seconds", "ingestion_objects_expected",
                 "ingestion_objects_present", "ingestion_objects_missing", "ingestion_gaps_open", "ingestion_gaps_repaired",
                 "ingestion_fetched_bytes", "ingestion_s3_requests", "ingestion_runs_total", "ingestion_run_success"):
        assert name in metric, name
    assert 'job="ingestion"' in metric["ingestion_objects_expected"] and 'namespace="data"' in metric["ingestion_objects_expected"]
    assert metric["ingestion_objects_missing"].endswith(" 2")
    # open gaps by cause, every cause pushed (0 included): day 2 of both symbols is past its publish delay
    gaps = {line.split('cause="')[1].split('"')[0]: line.rsplit(" ", 1)[1] for line in mine if line.startswith("ingestion_gaps_open{")}
    assert gaps == {"not-due": "0", "late-upstream": "2", "withdrawn": "0", "fetch-failed": "0", "verification-failed": "0",
                    "quarantined": "0", "deferred": "0"}
    runs_ok = next(line for line in mine if line.startswith("ingestion_runs_total") and 'outcome="succeeded"' in line)
    assert runs_ok.endswith(" 2")  # cumulative, from the store
    # what the Pushgateway serves of our families passes Prometheus' own lint (a counter named
    # *_total, units in names, help on every family)
    text = urllib.request.urlopen(servers.pushgateway + "/metrics", timeout=10).read().decode()
    ours = families(text, "ingestion_")
    assert "# TYPE ingestion_runs_total counter" in ours
    lint = subprocess.run(["promtool", "check", "metrics"], input=ours, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def families(exposition: str, prefix: str) -> str:
    """The metric families of a text exposition whose names start with ``prefix``: their
    HELP and TYPE lines and their samples."""
    def name(line: str) -> str:
        parts = line.split(" ")
        return parts[2] if line.startswith("#") and len(parts) > 2 else parts[0]
    return "".join(line + "\n" for line in exposition.splitlines() if name(line).startswith(prefix))


def test_unreachable_pushgateway_is_a_warning_not_a_failure(dataset, tmp_path):
    from ingestion_dev.workspace import free_ports

    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    spec = dataset.spec(["BTCUSDT"], lookback=0)
    spec["metrics"] = {"pushgatewayUrl": f"http://127.0.0.1:{free_ports(1)[0]}"}
    res = run(context(spec), tmp_path / "s.duckdb")
    assert res.outcome == "succeeded" and res.warnings
    (warnings, repaired), = rows(tmp_path / "s.duckdb", "SELECT warnings, gaps_repaired FROM runs")
    assert "unreachable" in warnings and repaired == 1


def test_a_retried_slot_updates_its_run_row(dataset, tmp_path):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    db = tmp_path / "s.duckdb"
    spec = dataset.spec(["BTCUSDT"], lookback=0)
    job = "demo-29400000"  # a CronJob tick's Job name: <cronjob>-<minutes since epoch>
    run(context(spec, job_name=job), db)
    run(context(spec, job_name=job), db)
    assert rows(db, "SELECT trigger, attempt, scheduled_time IS NOT NULL FROM runs") == [("scheduled", 2, True)]


def test_cli_run_and_report(dataset, tmp_path):
    dataset.upload([(s, d) for s in SYMS for d in days_ago(1, 3)])
    exe = os.path.join(os.path.dirname(sys.executable), "ingestion-job")
    out = run_cli(tmp_path, "cli-demo", dataset.spec(SYMS, lookback=2), "--db", str(tmp_path / "s.duckdb"))
    assert out.returncode == 0, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "event=run_finished outcome=succeeded" in last and "schedule=cli-demo" in last and "run_id=" in last
    table = subprocess.run([exe, "report", "--db", str(tmp_path / "s.duckdb")], capture_output=True, text=True).stdout
    assert "OPEN GAPS (2: late-upstream 2)" in table and "SUCCESS RATE (last 30 days): 100.0% (1 of 1 finished runs)" in table
    js = subprocess.run([exe, "report", "--db", str(tmp_path / "s.duckdb"), "--format", "json"], capture_output=True, text=True).stdout
    data = json.loads(js)
    assert {a["symbol"]: a["present"] for a in data["availability"]} == {"BTCUSDT": 2, "ETHUSDT": 2}
    missing = subprocess.run([exe, "run"], capture_output=True, text=True, env={k: v for k, v in os.environ.items() if not k.startswith("INGESTION_")})
    assert missing.returncode == 2 and "INGESTION_SPEC is missing" in missing.stderr


def test_a_committed_run_leaves_its_coverage_as_the_termination_message(dataset, tmp_path):
    """What the operator reads from the pod: the window's coverage, the open gaps (including one
    older than the window) and the oldest of them; a failed run leaves its one-line reason, and no
    coverage; a refused spec its field."""
    from ingestion_contract import TERMINATION_MESSAGE_ENV, Coverage, end_reason

    dataset.upload([(s, d) for s in SYMS for d in days_ago(1, 3)])
    message = tmp_path / "termination-log"
    spec = dataset.spec(SYMS, lookback=2)
    out = run_cli(tmp_path, "covered", spec, "--db", str(tmp_path / "s.duckdb"), env={**os.environ, TERMINATION_MESSAGE_ENV: str(message)})
    assert out.returncode == 0, out.stderr
    c = Coverage.decode(message.read_text())
    day2 = days_ago(2)[0].isoformat()
    assert c == Coverage(expected=6, present=4, missing=2, repaired=4, gaps_open=2, oldest_open_gap=day2,
                         bytes=c.bytes, outcome="succeeded", gaps_by_cause={"late-upstream": 2}) and c.bytes > 0
    message.unlink()
    bad = {**spec, "target": {**spec["target"], "bucket": "no-such-bucket"}}
    out = run_cli(tmp_path, "covered", bad, "--db", str(tmp_path / "s.duckdb"), env={**os.environ, TERMINATION_MESSAGE_ENV: str(message)})
    assert out.returncode == 1 and Coverage.decode(message.read_text()) is None
    outcome, reason = end_reason(message.read_text())
    last = out.stderr.strip().splitlines()[-1]
    assert outcome == "failed" and "no-such-bucket" in reason and reason in last, (reason, last)
    refused = {**spec, "timezone": "Mars/Base"}
    out = run_cli(tmp_path, "covered", refused, "--db", str(tmp_path / "s.duckdb"), env={**os.environ, TERMINATION_MESSAGE_ENV: str(message)})
    assert out.returncode == 2 and "timezone" in end_reason(message.read_text())[1]


@pytest.mark.parametrize("load", ["csv-zip"])
def test_loaded_rows_carry_symbol_and_date(dataset, tmp_path, load):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1, 2)])
    db = tmp_path / "s.duckdb"
    run(context(dataset.spec(["BTCUSDT"], lookback=1, repair={"maxRepairsPerRun": 10, "load": load})), db)
    assert rows(db, "SELECT symbol, count(*), count(DISTINCT date), min(open_time) > 0 FROM loaded GROUP BY symbol") == [("BTCUSDT", 10, 2, True)]


def test_csv_and_parquet_objects_load_idempotently(dataset, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    d1, d2 = days_ago(1, 2)
    for fmt in ("csv", "parquet"):
        template = f"{dataset.prefix}/{fmt}/{{symbol}}/{{symbol}}-{{date}}.{fmt}"
        for d in (d1, d2):
            if fmt == "csv":
                body = f"price,qty\n{d.day}.5,1\n{d.day}.75,2\n".encode()
            else:
                buf = io.BytesIO()
                pq.write_table(pa.table({"price": [float(d.day)], "qty": [3]}), buf)
                body = buf.getvalue()
            dataset.put("XUSDT", d, body, template)
        spec = dataset.spec(["XUSDT"], lookback=1, repair={"maxRepairsPerRun": 10, "load": fmt})
        spec["target"]["keyTemplate"] = template
        db = tmp_path / f"{fmt}.duckdb"
        for _ in range(2):  # the second run loads nothing again and duplicates nothing
            assert run(context(spec, schedule=f"load-{fmt}"), db).outcome == "succeeded"
        expected = 4 if fmt == "csv" else 2
        assert rows(db, "SELECT count(*), count(DISTINCT date), sum(qty) FROM loaded") == [(expected, 2, 6)]


@pytest.mark.parametrize("checksum_suffix", [".CHECKSUM", None], ids=["with-sidecar", "without-sidecar"])
def test_an_empty_object_is_never_verified(dataset, tmp_path, checksum_suffix):
    """A 0-byte object whose sidecar holds the sha256 of empty input (or that has no
    sidecar) matches its listing, but holds no data: its gap stays open, with the reason."""
    (d,) = days_ago(1)
    key = dataset.put("EMPTYUSDT", d, b"")
    spec = dataset.spec(["EMPTYUSDT"], lookback=0)
    spec["target"]["checksumSuffix"] = checksum_suffix
    db = tmp_path / "s.duckdb"
    res = run(context(spec), db)
    assert res.summary["gaps_repaired"] == 0 and res.summary["repairs_failed"] == 1
    ((status, last_error),) = rows(db, "SELECT status, last_error FROM gaps")
    assert status == "open" and "empty object" in last_error and key in last_error


def test_logs_are_one_line_per_event_and_none_per_request(dataset, tmp_path):
    """At INFO a run logs its events (started, probed, progress, finished), each with the
    schedule, namespace and run id, and no line per HTTP request."""
    syms = ["AUSDT", "BUSDT", "CUSDT"]
    dataset.upload([(s, d) for s in syms for d in days_ago(1, 2)])
    out = run_cli(tmp_path, "quiet", dataset.spec(syms, lookback=2), "--db", str(tmp_path / "s.duckdb"))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    stray = [line for line in lines if not (" event=" in line and "schedule=quiet" in line and "run_id=" in line)]
    assert not stray, stray
    events = [line.split(" event=", 1)[1].split()[0] for line in lines]
    assert events == ["run_started", "probed", "repair_progress", "run_finished"], events


def test_a_scheduled_slot_probes_the_window_of_its_own_day(dataset, tmp_path):
    """A slot scheduled three days ago and run (or retried) now probes the dates of that
    day, not of today: the window follows the scheduled time, not the wall clock."""
    slot = dt.datetime.combine(TODAY - dt.timedelta(days=3), dt.time(2), tzinfo=dt.timezone.utc)
    job = f"demo-{int(slot.timestamp()) // 60}"  # as the CronJob controller names a tick's Job
    db = tmp_path / "s.duckdb"
    run(context(dataset.spec(["BTCUSDT"], lookback=1), job_name=job), db)
    assert rows(db, "SELECT trigger, window_first, window_last FROM runs") == [
        ("scheduled", TODAY - dt.timedelta(days=5), TODAY - dt.timedelta(days=4))]


def test_as_of_reruns_a_past_day_and_dates_runs_a_range(dataset, tmp_path):
    dataset.upload([(s, d) for s in SYMS for d in days_ago(*range(8, 16))])
    spec = dataset.spec(SYMS, lookback=2)
    db = tmp_path / "s.duckdb"
    as_of = TODAY - dt.timedelta(days=10)
    out = run_cli(tmp_path, "by-hand", spec, "--db", str(db), "--as-of", as_of.isoformat())
    assert out.returncode == 0, out.stderr
    # lag 1, lookback 2: the window that day's run had (new symbols still backfill their history, as it would have)
    (first, last) = rows(db, "SELECT window_first, window_last FROM runs")[0]
    assert (first, last) == (as_of - dt.timedelta(days=3), as_of - dt.timedelta(days=1))

    db2 = tmp_path / "r.duckdb"
    frm, to = TODAY - dt.timedelta(days=14), TODAY - dt.timedelta(days=9)
    out = run_cli(tmp_path, "by-hand", spec, "--db", str(db2), "--dates", f"{frm}..{to}")
    assert out.returncode == 0, out.stderr
    assert rows(db2, "SELECT window_first, window_last, expected, present, gaps_repaired FROM runs") == [(frm, to, 12, 12, 12)]
    assert rows(db2, "SELECT min(date), max(date), count(*) FROM objects") == [(frm, to, 12)]

    bad = run_cli(tmp_path, "by-hand", spec, "--db", str(db2), "--dates", f"{to}..{frm}")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == f"error: --dates '{to}..{frm}': FROM is after TO"


def test_a_listing_of_several_pages_is_followed_to_its_end(dataset, servers, tmp_path):
    """2,200 keys under one symbol's prefix (1,100 days and their sidecars): ListObjectsV2 returns
    at most 1,000 per page, oldest dates first, so the newest days are only on the third page."""
    days = days_ago(*range(1, 1101))
    dataset.upload([("PAGEUSDT", d) for d in days])
    db = tmp_path / "s.duckdb"
    spec = dataset.spec(["PAGEUSDT"], lookback=1099, repair={"maxRepairsPerRun": 0, "load": "none"})
    res = run(context(spec, schedule="pages"), db)
    assert (res.summary["expected"], res.summary["present"], res.summary["missing"]) == (1100, 1100, 0)
    assert rows(db, "SELECT min(date), max(date), count(*) FILTER (WHERE present) FROM objects") == [(days[-1], days[0], 1100)]
    m = pushed(servers.pushgateway, "pages")
    # the bucket check (one key), then the symbol's 1,000 + 1,000 + 200 keys
    assert m['ingestion_s3_requests{operation="ListObjectsV2"}'] == 1 + 3
