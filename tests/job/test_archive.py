"""One schedule over a dataset's whole history (target.archive), against the real S3 server in
Binance Vision's own layout: the last dailyDays days as daily files, every month before them as
its monthly archive; a day is held when either is verified, and the gap of the other is closed
(covered), or handed to its month (superseded) when the boundary moves on."""

from __future__ import annotations

import datetime as dt

import pytest

from ingestion_dev import sampledata

from .conftest import PRIVATE, PUBLIC, TODAY, context, run, table_reader

SYMS = ["BTCUSDT", "ETHUSDT"]
INTERVALS = ["1h", "1d"]
ONE = dt.timedelta(days=1)


def month_before(m: dt.date) -> dt.date:
    return (m.replace(day=1) - ONE).replace(day=1)


def days_of(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def month_days(m: dt.date) -> list[dt.date]:
    return days_of(m, (m.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - ONE)


def layout_spec(dataset, daily_days: int) -> dict:
    spec = dataset.spec(SYMS, lookback=3, repair={"maxRepairsPerRun": 1000, "load": "csv-zip",
                                                   "expectRowsFromInterval": True})
    spec["target"].update(keyTemplate=f"{dataset.prefix}/{sampledata.KLINES_DAILY}", dimensions={"interval": INTERVALS},
                          archive={"keyTemplate": f"{dataset.prefix}/{sampledata.KLINES_MONTHLY}", "dailyDays": daily_days})
    return spec


@pytest.mark.parametrize("mode", ["duckdb", "delta"])
def test_one_schedule_mirrors_monthly_archives_then_daily_files_and_a_day_is_held_by_either(dataset, servers, tmp_path,
                                                                                            mode):
    last = TODAY - ONE
    current = last.replace(day=1)
    previous = month_before(current)  # daily files in the first run; its archive in the second
    m2 = month_before(previous)
    m1 = month_before(m2)
    # dailyDays reaching back into the previous month: the boundary is its first day
    spec = layout_spec(dataset, last.day + 5)
    daily = days_of(previous, last)
    holes = {("BTCUSDT", previous, "1d"), ("ETHUSDT", previous + 2 * ONE, "1h")}
    s3 = servers.s3.client()
    sampledata.upload(s3, PUBLIC, [(s, m, i) for s in SYMS for m in (m1, m2) for i in INTERVALS], rows=24 * 31,
                      template=spec["target"]["archive"]["keyTemplate"])
    # BTCUSDT's 1h daily files of m2 are published too: its archive holds those days, so they are
    # never expected (nor listed as cells of their own)
    sampledata.upload(s3, PUBLIC, [(s, d, i) for s in SYMS for d in daily for i in INTERVALS if (s, d, i) not in holes]
                      + [("BTCUSDT", d, "1h") for d in month_days(m2)], rows=24, template=spec["target"]["keyTemplate"])
    db = tmp_path / "s.duckdb" if mode == "duckdb" else None
    lake = f"{dataset.prefix}-lake/"
    if mode == "delta":
        spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": lake, "endpoint": servers.s3.endpoint}}
    creds = (servers.s3.access_key, servers.s3.secret_key)
    q = table_reader(servers, db, lake)

    # 1. A new symbol's history: its archives m1 and m2, then its daily files from the boundary.
    first = run(context(spec, store_credentials=creds), db)
    assert first.outcome == "succeeded", first.error
    n = 4 * (2 + len(daily))  # 2 symbols x 2 intervals x (2 months + the days from the boundary)
    s = first.summary
    assert (s["expected"], s["present"], s["missing"], s["gaps_repaired"], s["gaps_open"]) == (n, n - 2, 2, n - 2, 2)
    assert s["s3_requests"] == 1 + 8 + 2 * (n - 2)  # a listing per series and period; a GET and a sidecar each
    assert first.gaps_by_cause["late-upstream"] == 2
    assert sorted(q("objects", "SELECT period, min(date), max(date), count(*) FROM t GROUP BY ALL")) == [
        ("daily", previous, last, 4 * len(daily)), ("monthly", m1, m2, 8)]
    loaded = dict(q("loaded", "SELECT period || ' ' || variant, count(*) FROM t GROUP BY ALL"))
    assert loaded == {"monthly interval=1h": 2 * 24 * (len(month_days(m1)) + len(month_days(m2))),
                      "monthly interval=1d": 2 * (len(month_days(m1)) + len(month_days(m2))),
                      "daily interval=1h": 24 * (2 * len(daily) - 1), "daily interval=1d": 2 * len(daily) - 1}

    # 2. The boundary moves on a month (a smaller dailyDays does what the calendar does): the
    # previous month is expected as archives now. BTCUSDT's 1d archive of it is published and
    # holds the day its daily file never came for; the others are not published, so a month
    # whose every day is verified as a daily file is held by them, and ETHUSDT's 1h month (a day
    # missing) is the one open gap, its day's gap handed to it.
    spec = {**spec, "target": {**spec["target"], "archive": {**spec["target"]["archive"], "dailyDays": last.day}}}
    sampledata.upload(s3, PUBLIC, [("BTCUSDT", previous, "1d")], rows=31, template=spec["target"]["archive"]["keyTemplate"])
    second = run(context(spec, store_credentials=creds), db)
    assert second.outcome == "succeeded", second.error
    k = len([d for d in days_of(last - 3 * ONE, last) if d >= current])  # the window's days from the new boundary
    n2 = 4 * (k + 1)
    s = second.summary
    assert (s["expected"], s["present"], s["missing"], s["gaps_repaired"], s["gaps_open"]) == (n2, n2 - 1, 1, 1, 1)
    assert s["s3_requests"] == 1 + 8 + 2
    assert second.gaps_by_cause["late-upstream"] == 1
    assert second.coverage.by_dimension["interval"] == {"1h": (2 * (k + 1), 2 * (k + 1) - 1, 1),
                                                        "1d": (2 * (k + 1), 2 * (k + 1), 0)}
    closed = "SELECT symbol, variant, period, date, status, reason FROM t WHERE status <> 'repaired' ORDER BY ALL"
    assert q("gaps", closed) == [
        ("BTCUSDT", "interval=1d", "daily", previous, "covered", "by-archive"),
        ("BTCUSDT", "interval=1h", "monthly", previous, "covered", "by-daily-files"),
        ("ETHUSDT", "interval=1d", "monthly", previous, "covered", "by-daily-files"),
        ("ETHUSDT", "interval=1h", "daily", previous + 2 * ONE, "superseded", "expected-as-archive"),
        ("ETHUSDT", "interval=1h", "monthly", previous, "open", "late-upstream")]
    (why,) = q("gaps", "SELECT last_error FROM t WHERE status = 'covered' AND period = 'daily'")[0]
    assert why == (f"held by its month's archive {dataset.prefix}/data/spot/monthly/klines/BTCUSDT/1d/"
                   f"BTCUSDT-1d-{previous:%Y-%m}.zip (was late-upstream)")

    # the report names them, per series and period
    from ingestion_job.report import report

    text = report(db, "demo", 7, "table", wide=True, ctx=context(spec, store_credentials=creds))
    held = text.split("HELD BY THE OTHER PERIOD", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert [line.split()[:5] for line in held] == [
        ["demo", "BTCUSDT@interval=1d", "covered", "by-archive", "1"],
        ["demo", "BTCUSDT@interval=1h", "(monthly)", "covered", "by-daily-files"],
        ["demo", "ETHUSDT@interval=1d", "(monthly)", "covered", "by-daily-files"],
        ["demo", "ETHUSDT@interval=1h", "superseded", "expected-as-archive", "1"]], text

    # 3. Run again: nothing to repair, and not one gap row rewritten.
    before = q("gaps", "SELECT * FROM t ORDER BY ALL")
    third = run(context(spec, store_credentials=creds), db)
    assert third.outcome == "succeeded", third.error
    assert (third.summary["gaps_repaired"], third.summary["bytes_fetched"], third.summary["gaps_open"]) == (0, 0, 1)
    assert q("gaps", "SELECT * FROM t ORDER BY ALL") == before


@pytest.mark.parametrize("mode", ["duckdb", "delta"])
def test_a_backfill_across_the_boundary_expects_archives_before_it_and_daily_files_after(dataset, servers, tmp_path, mode):
    """Its units count the boundary back from the backfill's last date, as the operator counts
    their cells, so the backfill's progress adds up whichever day a unit runs."""
    from ingestion_contract import parse_backfill
    from ingestion_operator.backfill import unit_cells

    last = TODAY - ONE
    previous = month_before(last.replace(day=1))
    m2 = month_before(previous)
    m1 = month_before(m2)
    spec = layout_spec(dataset, last.day + 5)  # the boundary: the first of the previous month
    s3 = servers.s3.client()
    missing = ("ETHUSDT", m2, "1d")
    sampledata.upload(s3, PUBLIC, [(s, m, i) for s in SYMS for m in (m1, m2) for i in INTERVALS if (s, m, i) != missing],
                      rows=24 * 31, template=spec["target"]["archive"]["keyTemplate"])
    sampledata.upload(s3, PUBLIC, [(s, d, i) for s in SYMS for d in days_of(m2, last) for i in INTERVALS], rows=24,
                      template=spec["target"]["keyTemplate"])  # m2's daily files too: its archives hold its days
    bf = parse_backfill({"schedule": "demo", "from": m1.isoformat(), "to": last.isoformat(), "daysPerChunk": 20})
    db = tmp_path / "s.duckdb" if mode == "duckdb" else None
    lake = f"{dataset.prefix}-lake/"
    if mode == "delta":
        spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": lake, "endpoint": servers.s3.endpoint}}
    creds = (servers.s3.access_key, servers.s3.secret_key)
    results = [run(context(spec, job_name="history", store_credentials=creds, backfill=("history", bf, i)), db)
               for i in range(bf.units)]
    assert [r.outcome for r in results] == ["succeeded"] * bf.units, [r.error for r in results]
    counted = unit_cells(bf, tuple(SYMS), len(INTERVALS), "daily", last.day + 5)
    assert [r.coverage.expected for r in results] == [counted[i] for i in range(bf.units)]
    total = 4 * (2 + len(days_of(previous, last)))
    assert sum(counted.values()) == total
    assert sum(r.coverage.present for r in results) == total - 1
    assert sum(r.coverage.missing for r in results) == 1 and sum(r.coverage.repaired for r in results) == total - 1
    q = table_reader(servers, db, lake)
    assert set(q("objects", "SELECT period, min(date), max(date) FROM t GROUP BY ALL")) == {
        ("daily", previous, last), ("monthly", m1, m2)}
