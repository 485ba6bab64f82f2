"""A cell-truth scenario: one schedule's spec, its store (a DuckDB file or Delta tables), its
runs on the tests' clock, and the five views of its open gaps that must agree (the store, the
report, the run's summary, the pushed metrics, the coverage for status.coverage). Shared by
test_cell_truth.py and test_cell_oracle.py."""

from __future__ import annotations

import datetime as dt

from ingestion_job.store import open_backend

from ..conftest import PRIVATE
from ..samples import delta_table
from .conftest import context, now, pushed, pushed_causes, run


class Scenario:
    def __init__(self, dataset, servers, tmp_path, mode: str, symbols=("BTCUSDT",), lookback: int = 3, **target):
        self.dataset, self.servers = dataset, servers
        self.schedule = f"truth-{mode}-{dataset.prefix}"
        self.spec = dataset.spec(list(symbols), lookback=lookback, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
        self.spec["target"].update(target)
        self.creds = (servers.s3.access_key, servers.s3.secret_key)
        self.prefix = f"{dataset.prefix}-truth/"
        if mode == "delta":
            self.spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": self.prefix, "endpoint": servers.s3.endpoint}}
            self.db = None
        else:
            self.db = tmp_path / "s.duckdb"

    def run(self, days_later: int = 0, outcomes=("succeeded",)):
        """A run on the tests' clock, moved ``days_later`` days on, that must end in one of ``outcomes``."""
        res = run(context(self.spec, schedule=self.schedule, store_credentials=self.creds), self.db,
                  now=now() + dt.timedelta(days=days_later))
        assert res.outcome in outcomes, (res.outcome, res.error)
        return res

    def store(self):
        return open_backend(context(self.spec, schedule=self.schedule, store_credentials=self.creds), self.db,
                            read_only=self.db is not None)

    def cells(self) -> dict:
        """Every gap row, by (symbol, date)."""
        store = self.store()
        try:
            with store.locked():
                return store.gaps(self.schedule)
        finally:
            store.close()

    def gaps(self, symbol: str = "BTCUSDT") -> dict:
        """One symbol's gap rows, by date."""
        return {d: g for (sym, d), g in self.cells().items() if sym == symbol}

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

        open_ = [g["reason"] for g in self.cells().values() if g["status"] == "open"]
        report = self.report()
        metrics = pushed(self.servers.pushgateway, self.schedule)
        views = {"store": by_cause({c: open_.count(c) for c in set(open_)}), "report": report["open_gaps_by_cause"],
                 "summary": res.gaps_by_cause, "metrics": pushed_causes(metrics), "coverage": res.coverage.gaps_by_cause}
        assert all(v == views["store"] for v in views.values()), views
        assert res.summary["gaps_open"] == res.coverage.gaps_open == len(report["open_gaps"]) == len(open_)
        assert int(metrics["ingestion_objects_republished"]) == res.summary["republished"]
        assert int(metrics["ingestion_objects_withdrawn"]) == res.summary["withdrawn"]
        return len(open_)
