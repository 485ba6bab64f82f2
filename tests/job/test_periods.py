"""Monthly archives (target.period: monthly) against the real S3 server, in Binance Vision's own
layout: a cell is a calendar month, expected once it is over plus the lag, named by {month},
checked against its whole month, kept apart from daily cells in the store (column period)."""

from __future__ import annotations

import datetime as dt

import pytest

from ingestion_dev import sampledata

from .conftest import PRIVATE, PUBLIC, TODAY, context, rows, run, table_reader

SYMS = ["BTCUSDT", "ETHUSDT"]


def months_ending_within(first: dt.date, last: dt.date) -> list[dt.date]:
    """The first days of the months whose last day falls in first..last (the test's own count)."""
    out, m = [], first.replace(day=1)
    while True:
        nxt = (m.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        if nxt - dt.timedelta(days=1) > last:
            return out
        if nxt - dt.timedelta(days=1) >= first:
            out.append(m)
        m = nxt


def days_in(m: dt.date) -> int:
    return ((m.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - m).days


@pytest.mark.parametrize("mode", ["duckdb", "delta"])
def test_a_monthly_cell_is_a_whole_month_expected_once_it_is_over(dataset, servers, tmp_path, mode):
    template = f"{dataset.prefix}/{sampledata.KLINES_MONTHLY}"
    spec = dataset.spec(SYMS, lookback=100, repair={"maxRepairsPerRun": 100, "load": "csv-zip", "expectRowsFromInterval": True})
    spec["target"].update(keyTemplate=template, period="monthly", dimensions={"interval": ["1h", "1d"]})
    last = TODAY - dt.timedelta(days=1)
    months = months_ending_within(last - dt.timedelta(days=100), last)
    assert len(months) in (3, 4)  # 101 days hold three or four month ends
    # every month's archive, whole (24 x its days of 1h rows, one 1d row a day), but ETHUSDT's
    # 1d archive of the second month (a series is expected from its first object: a middle one);
    # and the current month's, which is not over (never expected)
    cells = [(s, m, i) for s in SYMS for m in months for i in ("1h", "1d") if (s, m, i) != ("ETHUSDT", months[1], "1d")]
    sampledata.upload(servers.s3.client(), PUBLIC, cells + [("BTCUSDT", TODAY.replace(day=1), "1h")], rows=24 * 31,
                      template=template)
    db = tmp_path / "s.duckdb" if mode == "duckdb" else None
    if mode == "delta":
        spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": f"{dataset.prefix}-lake/", "endpoint": servers.s3.endpoint}}
    creds = (servers.s3.access_key, servers.s3.secret_key)
    res = run(context(spec, store_credentials=creds), db)
    assert res.outcome == "succeeded", res.error
    n = 2 * 2 * len(months)
    s = res.summary
    assert (s["expected"], s["present"], s["missing"], s["gaps_repaired"]) == (n, n - 1, 1, n - 1)
    assert s["s3_requests"] == 1 + 4 + 2 * (n - 1)  # a listing per series, whatever the months; a GET and a sidecar each
    assert res.gaps_by_cause["late-upstream"] == 1

    q = table_reader(servers, db, f"{dataset.prefix}-lake/")

    assert q("objects", "SELECT DISTINCT period FROM t") == [("monthly",)]
    assert sorted(d for (d,) in q("objects", "SELECT DISTINCT date FROM t")) == months
    assert q("gaps", "SELECT symbol, variant, date, reason, key FROM t WHERE status = 'open'") == [
        ("ETHUSDT", "interval=1d", months[1], "late-upstream",
         f"{dataset.prefix}/data/spot/monthly/klines/ETHUSDT/1d/ETHUSDT-1d-{months[1]:%Y-%m}.zip")]
    # each month loaded whole, as its month: the row count its interval gives, every row inside it
    loaded = q("loaded", "SELECT symbol, variant, date, count(*), min(open_time), max(open_time) FROM t "
                         "WHERE period = 'monthly' GROUP BY ALL ORDER BY ALL")
    assert len(loaded) == n - 1
    for symbol, variant, m, count, lo, hi in loaded:
        per_day = 24 if variant == "interval=1h" else 1
        assert count == per_day * days_in(m), (symbol, variant, m, count)
        start = dt.datetime(m.year, m.month, 1, tzinfo=dt.timezone.utc).timestamp() * 1000
        assert start <= lo and hi < start + days_in(m) * 86_400_000
    assert res.coverage.by_dimension["interval"]["1d"] == (2 * len(months), 2 * len(months) - 1, 1)

    again = run(context(spec, store_credentials=creds), db)
    assert again.outcome == "succeeded" and again.summary["gaps_repaired"] == 0 and again.summary["bytes_fetched"] == 0
    if mode == "duckdb":
        assert again.summary["rows_written"] == 0


def test_a_month_that_holds_another_months_rows_is_quarantined(dataset, servers, tmp_path):
    template = f"{dataset.prefix}/{sampledata.KLINES_MONTHLY}"
    spec = dataset.spec(["BTCUSDT"], lookback=40, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    spec["target"].update(keyTemplate=template, period="monthly", dimensions={"interval": ["1d"]})
    last = TODAY - dt.timedelta(days=1)
    (month,) = months_ending_within(last - dt.timedelta(days=40), last)[-1:]
    earlier = (month - dt.timedelta(days=1)).replace(day=1)
    body = sampledata.kline_zip("BTCUSDT", earlier, rows=3, interval="1d", month=True)  # the month before's rows...
    key = template.format(symbol="BTCUSDT", interval="1d", month=f"{month:%Y-%m}", date="")
    member = sampledata.csv_of(body)
    s3 = servers.s3.client()
    good = sampledata.zipped_csv(key, member)  # ...in an archive named as this month's, its member too
    s3.put_object(Bucket=PUBLIC, Key=key, Body=good)
    s3.put_object(Bucket=PUBLIC, Key=key + ".CHECKSUM", Body=sampledata.checksum(good, key))
    res = run(context(spec), tmp_path / "s.duckdb")
    assert res.outcome == "partial" and res.summary["repairs_quarantined"] == 1
    (err,) = rows(tmp_path / "s.duckdb", "SELECT last_error FROM gaps WHERE status = 'open' AND date = ?", month)[0]
    assert f"open_time outside {month}..{month.replace(day=days_in(month))}" in err, err
