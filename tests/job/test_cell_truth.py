"""Cell truth (issue 24, point 1), against the real S3 server and Pushgateway, in DuckDB and in
Delta mode: a cell held verified follows its object. A republished object is fetched, verified
and loaded again, its old rows replaced, its provenance kept; a withdrawn one is an open gap
with reason withdrawn. After every step, the store, the report, the run's summary, the pushed
metrics and the coverage the run reports for status.coverage give the same counts."""

from __future__ import annotations

import pytest

from ingestion_dev import sampledata
from ingestion_job.store import open_backend

from ..conftest import PRIVATE
from ..samples import delta_table
from .conftest import context, days_ago, now, pushed, pushed_causes, run


class Scenario:
    def __init__(self, dataset, servers, tmp_path, mode: str):
        self.dataset, self.servers = dataset, servers
        self.schedule = f"truth-{mode}-{dataset.prefix}"
        self.spec = dataset.spec(["BTCUSDT"], lookback=3, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
        self.creds = (servers.s3.access_key, servers.s3.secret_key)
        self.prefix = f"{dataset.prefix}-truth/"
        if mode == "delta":
            self.spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": self.prefix, "endpoint": servers.s3.endpoint}}
            self.db = None
        else:
            self.db = tmp_path / "s.duckdb"

    def run(self):
        res = run(context(self.spec, schedule=self.schedule, store_credentials=self.creds), self.db)
        assert res.outcome == "succeeded", res.error
        return res

    def store(self):
        return open_backend(context(self.spec, schedule=self.schedule, store_credentials=self.creds), self.db,
                            read_only=self.db is not None)

    def gaps(self) -> dict:
        store = self.store()
        try:
            with store.locked():
                return {d: g for (_, d), g in store.gaps(self.schedule).items()}
        finally:
            store.close()

    def report(self) -> dict:
        store = self.store()
        try:
            with store.locked():
                return store.report(self.schedule, 30, now())
        finally:
            store.close()

    def loaded(self) -> dict:
        """Rows of table loaded per date."""
        if self.db is None:
            t = delta_table(self.servers, self.prefix, "loaded", bucket=PRIVATE).to_pyarrow_table()
            dates = t.column("date").to_pylist()
        else:
            import duckdb

            with duckdb.connect(str(self.db), read_only=True) as con:
                dates = [d for d, in con.execute("SELECT date FROM loaded").fetchall()]
        return {d: dates.count(d) for d in set(dates)}

    def agree(self, res) -> int:
        """The five views of the open gaps say the same, cause by cause; returns their count."""
        from ingestion_contract import by_cause

        open_ = [g["reason"] for g in self.gaps().values() if g["status"] == "open"]
        report = self.report()
        metrics = pushed(self.servers.pushgateway, self.schedule)
        views = {"store": by_cause({c: open_.count(c) for c in set(open_)}), "report": report["open_gaps_by_cause"],
                 "summary": res.gaps_by_cause, "metrics": pushed_causes(metrics), "coverage": res.coverage.gaps_by_cause}
        assert all(v == views["store"] for v in views.values()), views
        assert res.summary["gaps_open"] == res.coverage.gaps_open == len(report["open_gaps"]) == len(open_)
        assert int(metrics["ingestion_objects_republished"]) == res.summary["republished"]
        assert int(metrics["ingestion_objects_withdrawn"]) == res.summary["withdrawn"]
        return len(open_)


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
