"""Retention (storage.retention) against the real S3 server: a run deletes, in its commit, the
loaded rows and open gaps of cells past their dimension value's retention (their objects and
gaps rows too with history), never expects them again, counts what it deleted, and a second run
deletes nothing more; in DuckDB and in Delta mode."""

from __future__ import annotations

import pytest

from ingestion_dev import sampledata

from .conftest import EXE, PRIVATE, PUBLIC, TODAY, context, days_ago, kill_at_failpoint, pushed, rows, run, table_reader


@pytest.mark.parametrize("mode", ["duckdb", "delta"])
def test_retention_deletes_what_is_past_it_in_the_commit_and_never_expects_it_again(dataset, servers, tmp_path, mode):
    template = f"{dataset.prefix}/{sampledata.KLINES_DAILY}"
    days = days_ago(*range(1, 11))  # yesterday back to ten days ago
    # BTCUSDT's 1m and 1h klines of the ten days, but the 1m file of nine days ago (an open gap)
    cells = [("BTCUSDT", d, i) for d in days for i in ("1m", "1h") if (d, i) != (days[8], "1m")]
    sampledata.upload(servers.s3.client(), PUBLIC, cells, template=template)
    spec = dataset.spec(["BTCUSDT"], lookback=9, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    spec["target"].update(keyTemplate=template, dimensions={"interval": ["1m", "1h"]})
    db = tmp_path / "s.duckdb" if mode == "duckdb" else None
    if mode == "delta":
        spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": f"{dataset.prefix}-lake/", "endpoint": servers.s3.endpoint}}
    creds = (servers.s3.access_key, servers.s3.secret_key)

    q = table_reader(servers, db, f"{dataset.prefix}-lake/")

    first = run(context(spec, store_credentials=creds), db)
    assert first.summary["gaps_repaired"] == 19 and first.gaps_by_cause["late-upstream"] == 1
    assert q("loaded", "SELECT variant, count(*) FROM t GROUP BY ALL ORDER BY ALL") == [("interval=1h", 50), ("interval=1m", 45)]

    # 1m kept 4 days (the run's last date, yesterday, and the three before), 1h forever; a
    # window of 3 days; ETHUSDT new, with ten days upstream
    sampledata.upload(servers.s3.client(), PUBLIC, [("ETHUSDT", d, i) for d in days for i in ("1m", "1h")], template=template)
    spec["target"].update(symbols=["BTCUSDT", "ETHUSDT"], lookbackDays=2)
    spec["storage"]["retention"] = {"dimensions": {"interval": {"1m": "4d"}}}
    kept_from = days[3]  # four days ago
    second = run(context(spec, store_credentials=creds), db)
    assert second.outcome == "succeeded", second.error
    # BTCUSDT's 1m days before it: five loaded (25 rows), and the open gap of nine days ago, deleted
    assert second.summary["rows_deleted"] == 5 * 5 + 1
    assert q("loaded", "SELECT variant, min(date), count(*) FROM t WHERE symbol = 'BTCUSDT' GROUP BY ALL ORDER BY ALL") == [
        ("interval=1h", days[-1], 50), ("interval=1m", kept_from, 20)]
    # not expected again, not counted missing: ETHUSDT's whole 1h history, its 1m only from kept_from
    assert q("objects", "SELECT variant, min(date) FROM t WHERE symbol = 'ETHUSDT' GROUP BY ALL ORDER BY ALL") == [
        ("interval=1h", days[-1]), ("interval=1m", kept_from)]
    assert second.summary["expected"] == 2 * 3 + 10 + 4 and second.gaps_by_cause["late-upstream"] == 0
    assert q("gaps", "SELECT count(*) FROM t WHERE status = 'open'") == [(0,)]
    # without history, the record of what was verified stays
    assert q("gaps", f"SELECT count(*) FROM t WHERE symbol = 'BTCUSDT' AND variant = 'interval=1m' AND date < '{kept_from}'") == [(5,)]
    if mode == "duckdb":
        assert rows(db, "SELECT rows_deleted FROM runs ORDER BY started_at") == [(0,), (26,)]
    assert pushed(servers.pushgateway, "demo")["ingestion_rows_deleted"] == 26

    again = run(context(spec, store_credentials=creds), db)
    assert again.summary["rows_deleted"] == 0 and again.summary["gaps_repaired"] == 0  # deleting is idempotent

    spec["storage"]["retention"]["history"] = True  # the rest of what is past retention: objects and gaps rows
    third = run(context(spec, store_credentials=creds), db)
    assert third.summary["rows_deleted"] == 6 + 5  # BTCUSDT's six objects rows and five repaired gaps of 1m
    for table in ("objects", "gaps", "loaded"):
        assert q(table, f"SELECT count(*) FROM t WHERE variant = 'interval=1m' AND date < '{kept_from}'") == [(0,)], table
    assert q("objects", "SELECT count(*) FROM t WHERE variant = 'interval=1h'") == [(20,)]


def test_a_killed_commit_leaves_all_or_nothing_of_a_deletion(dataset, servers, tmp_path):
    """SIGKILL inside the commit (the store.commit failpoint: after the deletions, before the
    transaction ends): the file is as it was; the next run deletes it all."""
    import yaml

    template = f"{dataset.prefix}/{sampledata.KLINES_DAILY}"
    days = days_ago(*range(1, 8))
    sampledata.upload(servers.s3.client(), PUBLIC, [("BTCUSDT", d, "1m") for d in days], template=template)
    spec = dataset.spec(["BTCUSDT"], lookback=6, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    spec["target"].update(keyTemplate=template, dimensions={"interval": ["1m"]})
    db = tmp_path / "s.duckdb"
    assert run(context(spec), db).summary["gaps_repaired"] == 7
    spec["target"]["lookbackDays"] = 1
    spec["storage"]["retention"] = {"default": "3d"}
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": "demo", "namespace": "data"}, "spec": spec}))
    kill_at_failpoint([EXE, "run", "--spec", str(f), "--db", str(db), "--as-of", TODAY.isoformat()], "store.commit")
    assert rows(db, "SELECT count(*) FROM loaded") == [(35,)]  # nothing of it deleted
    res = run(context(spec), db)
    # kept 3 days from yesterday: the four days before them, 5 rows each
    assert res.summary["rows_deleted"] == 4 * 5 and rows(db, "SELECT count(*) FROM loaded") == [(15,)]
