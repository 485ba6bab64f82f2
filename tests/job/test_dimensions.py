"""Datasets with more dimensions than symbol x date (target.dimensions), against the real S3
server in Binance Vision's own layout: a cell is (symbol, one value of each dimension, date),
in the store's keys (column ``variant``), its listing one per series, its loads, its reruns, in
DuckDB and in Delta mode."""

from __future__ import annotations

import pytest

from ingestion_dev import sampledata

from .conftest import PRIVATE, PUBLIC, context, days_ago, pushed, run, table_reader

SYMS = ["BTCUSDT", "ETHUSDT"]


def interval_spec(dataset, intervals=("1m", "1h"), lookback=3, **target):
    spec = dataset.spec(SYMS, lookback=lookback, repair={"maxRepairsPerRun": 100, "load": "csv-zip",
                                                         "expectRowsFromInterval": False})
    spec["target"].update(keyTemplate=f"{dataset.prefix}/{sampledata.KLINES_DAILY}", dimensions={"interval": list(intervals)},
                          **target)
    return spec


def upload(dataset, cells):
    sampledata.upload(dataset.servers.s3.client(), PUBLIC, cells,
                      template=f"{dataset.prefix}/{sampledata.KLINES_DAILY}")


@pytest.mark.parametrize("mode", ["duckdb", "delta"])
def test_a_cell_is_a_symbol_an_interval_and_a_date(dataset, servers, tmp_path, mode):
    days = days_ago(1, 2, 3, 4)
    # every (symbol, interval, day) but ETHUSDT's 1h of two days ago; a 1d series upstream that
    # the schedule does not ask for
    upload(dataset, [(s, d, i) for s in SYMS for d in days for i in ("1m", "1h", "1d")
                     if (s, d, i) != ("ETHUSDT", days[1], "1h")])
    spec = interval_spec(dataset)
    db = tmp_path / "s.duckdb" if mode == "duckdb" else None
    if mode == "delta":
        spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": f"{dataset.prefix}-lake/",
                                           "endpoint": servers.s3.endpoint}}
    creds = (servers.s3.access_key, servers.s3.secret_key)
    res = run(context(spec, store_credentials=creds), db)
    assert res.outcome == "succeeded", res.error
    s = res.summary
    # 2 symbols x 2 intervals x 4 days; the missing hour file is the one gap
    assert (s["symbols"], s["expected"], s["present"], s["missing"], s["gaps_repaired"]) == (2, 16, 15, 1, 15)
    # one bucket check, then one listing per series (symbol x interval), whatever the days
    assert s["s3_requests"] == 1 + 4 + 2 * 15  # + each repaired object and its checksum
    assert res.gaps_by_cause["late-upstream"] == 1
    # status.coverage per value: the run's termination message says it
    assert res.coverage.by_dimension == {"interval": {"1m": (8, 8, 0), "1h": (8, 7, 1)}}
    # and the pushed metrics, a series per value (2 values: within metrics.dimensionLabels)
    got = {k: v for k, v in pushed(servers.pushgateway, "demo").items() if k.startswith("ingestion_dimension_")}
    assert got == {'ingestion_dimension_cells_expected{dimension="interval",value="1h"}': 8,
                   'ingestion_dimension_cells_expected{dimension="interval",value="1m"}': 8,
                   'ingestion_dimension_cells_present{dimension="interval",value="1h"}': 7,
                   'ingestion_dimension_cells_present{dimension="interval",value="1m"}': 8,
                   'ingestion_dimension_gaps_open{dimension="interval",value="1h"}': 1,
                   'ingestion_dimension_gaps_open{dimension="interval",value="1m"}': 0}

    q = table_reader(servers, db, f"{dataset.prefix}-lake/")

    assert q("objects", "SELECT symbol, variant, count(*), count(*) FILTER (WHERE present) FROM t GROUP BY ALL ORDER BY ALL") == [
        ("BTCUSDT", "interval=1h", 4, 4), ("BTCUSDT", "interval=1m", 4, 4),
        ("ETHUSDT", "interval=1h", 4, 3), ("ETHUSDT", "interval=1m", 4, 4)]
    assert q("gaps", "SELECT symbol, variant, date, reason, key FROM t WHERE status = 'open'") == [
        ("ETHUSDT", "interval=1h", days[1], "late-upstream",
         f"{dataset.prefix}/data/spot/daily/klines/ETHUSDT/1h/ETHUSDT-1h-{days[1]}.zip")]
    # each cell's rows, loaded under its own variant: 5 one-minute rows, 5 one-hour rows a day
    assert q("loaded", "SELECT variant, count(DISTINCT (symbol, date)), count(*), min(open_time % 3600000 = 0) FROM t "
                       "GROUP BY ALL ORDER BY ALL") == [("interval=1h", 7, 35, True), ("interval=1m", 8, 40, False)]

    # the report: series named SYMBOL@interval=..., and each value's cells
    from ingestion_job.report import report

    text = report(db, "demo", 7, "table", wide=True, ctx=context(spec, store_credentials=creds))
    assert "ETHUSDT@interval=1h" in text and "BY DIMENSION" in text, text
    by = text.split("BY DIMENSION")[1].split("\n\n")[0].splitlines()[2:]
    assert [line.split() for line in by] == [["demo", "interval", "1h", "7/8", "1"], ["demo", "interval", "1m", "8/8", "0"]]

    again = run(context(spec, store_credentials=creds), db)
    assert again.outcome == "succeeded" and again.summary["gaps_repaired"] == 0 and again.summary["bytes_fetched"] == 0
    if mode == "duckdb":
        assert again.summary["rows_written"] == 0
    # the late hour file arrives: it is that one cell that flips and is repaired
    upload(dataset, [("ETHUSDT", days[1], "1h")])
    late = run(context(spec, store_credentials=creds), db)
    assert late.summary["gaps_repaired"] == 1 and late.summary["missing"] == 0 and late.gaps_by_cause["late-upstream"] == 0
    assert late.coverage.by_dimension == {"interval": {"1m": (8, 8, 0), "1h": (8, 8, 0)}}
    assert q("loaded", "SELECT count(*) FROM t WHERE variant = 'interval=1h'") == [(40,)]
