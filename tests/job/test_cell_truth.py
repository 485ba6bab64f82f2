"""Cell truth (issue 24, point 1), against the real S3 server and Pushgateway, in DuckDB and in
Delta mode: a cell held verified follows its object. A republished object is fetched, verified
and loaded again, its old rows replaced, its provenance kept; a withdrawn one is an open gap
with reason withdrawn. After every step, the store, the report, the run's summary, the pushed
metrics and the coverage the run reports for status.coverage give the same counts."""

from __future__ import annotations

import pytest

from ingestion_dev import sampledata

from .conftest import days_ago
from .truth import Scenario


@pytest.mark.parametrize("mode", ["duckdb", "delta"])
def test_a_cell_follows_its_object_republished_and_withdrawn(dataset, servers, tmp_path, mode):
    s = Scenario(dataset, servers, tmp_path, mode)
    d1, d2, d3, d4 = days_ago(1, 2, 3, 4)
    dataset.upload([("BTCUSDT", d) for d in (d1, d2, d3, d4)])
    first = s.run()
    assert (first.summary["gaps_repaired"], first.summary["republished"], first.summary["withdrawn"]) == (4, 0, 0)
    assert s.agree(first) == 0
    old_sha = s.gaps()[d1]["sha256"]

    # The publisher replaces d1 with a longer file: fetched, verified and loaded again; its old
    # rows are replaced, never mixed with the new ones; the old sha256 and ETag are its provenance.
    s3 = servers.s3.client()
    key = dataset.template.format(symbol="BTCUSDT", date=d1.isoformat())
    body = sampledata.kline_zip("BTCUSDT", d1, rows=7)
    s3.put_object(Bucket="data.binance.vision", Key=key, Body=body)
    s3.put_object(Bucket="data.binance.vision", Key=key + ".CHECKSUM", Body=sampledata.checksum(body, key))
    second = s.run()
    assert (second.summary["gaps_repaired"], second.summary["republished"], second.summary["withdrawn"]) == (1, 1, 0)
    g = s.gaps()[d1]
    assert (g["status"], g["previous_sha256"], g["changes"], g["bytes"]) == ("repaired", old_sha, 1, len(body))
    assert g["sha256"] != old_sha and g["changed_at"] is not None and g["previous_etag"] and g["etag"] != g["previous_etag"]
    assert s.loaded() == {d1: 7, d2: 5, d3: 5, d4: 5}
    assert s.agree(second) == 0
    assert [(c["date"], c["status"], c["changes"]) for c in s.report()["changed_upstream"]] == [(d1, "repaired", 1)]

    # d2 is withdrawn: an open gap with reason withdrawn, in every view
    s3.delete_object(Bucket="data.binance.vision", Key=dataset.template.format(symbol="BTCUSDT", date=d2.isoformat()))
    third = s.run()
    assert (third.summary["withdrawn"], third.summary["missing"], third.summary["gaps_open"]) == (1, 1, 1)
    g = s.gaps()[d2]
    assert (g["status"], g["reason"], g["sha256"], g["changes"]) == ("open", "withdrawn", None, 1) and g["previous_sha256"]
    assert [(x["date"], x["reason"]) for x in s.report()["open_gaps"]] == [(d2, "withdrawn")]
    assert s.agree(third) == 1

    # nothing new: no gap rewritten, the withdrawn cell stays withdrawn, nothing counted again
    fourth = s.run()
    assert (fourth.summary["republished"], fourth.summary["withdrawn"], fourth.summary["gaps_repaired"]) == (0, 0, 0)
    if mode == "duckdb":
        assert fourth.summary["rows_written"] == 0
    assert s.gaps()[d2]["reason"] == "withdrawn" and s.agree(fourth) == 1


def open_causes(res) -> dict:
    return {c: n for c, n in res.gaps_by_cause.items() if n}


@pytest.mark.parametrize("mode", ["duckdb", "delta"])
def test_expectations_follow_the_listing_delisted_relisted_and_ranged(dataset, servers, tmp_path, mode):
    """Issue 24, point 3: a symbol is expected from its first object; one silent for
    delistAfterDays is delisted (its later dates are not gaps, the report and the coverage
    name it); when it publishes again its missing days are gaps again; a ranged symbol is
    expected over its range only. Every view agrees after every run."""
    eth = {"name": "ETHUSDT", "from": days_ago(5)[0].isoformat(), "until": days_ago(3)[0].isoformat()}
    s = Scenario(dataset, servers, tmp_path, mode, symbols=["LUNAUSDT", "NEWUSDT"], lookback=3, delistAfterDays=7,
                 publishDelayHours=0, symbolRanges=[eth])
    dataset.upload([("LUNAUSDT", d) for d in days_ago(*range(12, 21))] + [("NEWUSDT", d) for d in days_ago(2, 1)]
                   + [("ETHUSDT", d) for d in days_ago(*range(1, 11))])
    # Eight days ago LUNA had been silent for three days: late, not delisted.
    first = s.run(days_later=-8)
    g = s.gaps("LUNAUSDT")
    assert sorted(d for d, x in g.items() if x["status"] == "open") == days_ago(11, 10, 9), g
    assert open_causes(first) == {"late-upstream": 3} and first.summary["symbols_delisted"] == 0
    assert s.agree(first) == 3
    # Today LUNA has been silent for eleven days: delisted since the day after its last object;
    # its three late days are no longer gaps. NEW is expected from its first object only, ETH
    # over its range only.
    second = s.run()
    assert (second.summary["symbols_delisted"], second.coverage.symbols_delisted, second.coverage.delisted) == (1, 1, ("LUNAUSDT",))
    assert s.agree(second) == 0 and second.coverage.gaps_open == 0
    report = s.report()
    assert [(d["symbol"], d["since"]) for d in report["delisted"]] == [("LUNAUSDT", days_ago(11)[0])]
    avail = {a["symbol"]: (a["expected"], a["present"], a["first_date"], a["last_date"]) for a in report["availability"]}
    assert avail["NEWUSDT"] == (2, 2, days_ago(2)[0], days_ago(1)[0])
    assert avail["ETHUSDT"] == (3, 3, days_ago(5)[0], days_ago(3)[0])
    assert avail["LUNAUSDT"] == (9, 9, days_ago(20)[0], days_ago(12)[0])  # its probed late days are not expected
    # LUNA publishes again: active, and every day since its last object is a gap again
    dataset.upload([("LUNAUSDT", days_ago(1)[0])])
    third = s.run()
    assert third.summary["symbols_delisted"] == 0 and third.coverage.delisted == ()
    g = s.gaps("LUNAUSDT")
    assert sorted(d for d, x in g.items() if x["status"] == "open") == days_ago(*range(11, 1, -1))
    assert {x["reason"] for x in g.values() if x["status"] == "open"} == {"late-upstream"} and s.agree(third) == 10
    assert s.report()["delisted"] == []


@pytest.mark.parametrize("mode", ["duckdb", "delta"])
def test_no_date_is_left_unprobed_after_an_outage(dataset, servers, tmp_path, mode):
    """Issue 24, point 4: after an outage longer than lookbackDays, runs probe from the last
    date probed, maxCatchUpDays dates per run, oldest first; the rest are open gaps with cause
    deferred that the report lists as never probed, until a later run probes them."""
    s = Scenario(dataset, servers, tmp_path, mode, lookback=2, maxCatchUpDays=5, publishDelayHours=0)
    dataset.upload([("BTCUSDT", d) for d in days_ago(*range(1, 21))])
    before = s.run(days_later=-15)  # history from the first object (20 days ago) to 16 days ago
    assert (before.summary["expected"], before.summary["gaps_repaired"]) == (5, 5) and s.agree(before) == 0
    # fifteen days without a run: the window is 3..1 days ago; 15..4 days ago were never probed
    back = s.run()
    assert (back.summary["expected"], back.summary["cells_unprobed"], back.summary["gaps_repaired"]) == (8, 7, 8)
    assert open_causes(back) == {"deferred": 7} and s.agree(back) == 7
    never = s.report()["never_probed"]
    assert [(u["first"], u["last"], u["days"]) for u in never] == [(days_ago(10)[0], days_ago(4)[0], 7)]
    assert all(g["last_error"].startswith("not probed yet") for g in s.gaps().values() if g["status"] == "open")
    again = s.run()
    assert (again.summary["cells_unprobed"], again.summary["gaps_repaired"]) == (2, 5) and s.agree(again) == 2
    done = s.run()
    assert (done.summary["cells_unprobed"], done.summary["gaps_repaired"]) == (0, 2) and s.agree(done) == 0
    assert s.report()["never_probed"] == []
    avail = s.report()["availability"][0]
    assert (avail["expected"], avail["present"], avail["first_date"], avail["last_date"]) == (20, 20, days_ago(20)[0], days_ago(1)[0])
