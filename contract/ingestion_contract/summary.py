"""What one run reports: its counters, each naming its ``runs`` column and its metric.

A new counter is one field here: the job fills it, the store adds the ``runs`` column
(``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` when it opens a file), the metrics push
exposes it under its name, and ``ingestion-job report --format json`` lists it.
"""

from __future__ import annotations

import dataclasses


def counter(help: str, metric: str | None = None, sql: str | None = "INTEGER", default=0):
    """A run counter: its help text, its Prometheus gauge (None: not pushed), its ``runs``
    column type (None: not stored)."""
    return dataclasses.field(default=default, metadata={"help": help, "metric": metric, "sql": sql})


@dataclasses.dataclass
class RunSummary:
    symbols: int = counter("Symbols the run probed.")
    expected: int = counter("Cells (symbol, date) the last run expected.", "ingestion_objects_expected")
    present: int = counter("Expected cells present upstream.", "ingestion_objects_present")
    missing: int = counter("Expected cells absent upstream.", "ingestion_objects_missing")
    gaps_open: int = counter("Gaps still open after the last run.", "ingestion_gaps_open")
    gaps_repaired: int = counter("Gaps the last run repaired.", "ingestion_gaps_repaired")
    repairs_failed: int = counter("Repairs the last run attempted that failed.", "ingestion_repairs_failed")
    repairs_deferred: int = counter("Repair candidates the last run left for a later one (maxRepairsPerRun or its time "
                                    "budget).", "ingestion_repairs_deferred")
    bytes_fetched: int = counter("Bytes the last run fetched from the source.", "ingestion_fetched_bytes", sql="BIGINT")
    s3_requests: int = counter("S3 HTTP requests of the run, retries included.")
    s3_errors: int = counter("S3 HTTP requests of the run that failed, retries included.")
    rows_written: int = counter("Rows of objects, gaps and loaded the run's commit inserted or changed (DuckDB's count; "
                                "0 for a rerun with nothing new).", "ingestion_rows_written", sql="BIGINT")
    duration_seconds: float = counter("Wall time of the last run.", "ingestion_run_duration_seconds", sql=None, default=0.0)

    def __getitem__(self, name: str):
        """``summary["gaps_repaired"]``: a counter by name, as the ``runs`` table calls it."""
        if name not in _NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def columns() -> list[tuple[str, str]]:
        """(column, DuckDB type) of every counter the ``runs`` table keeps."""
        return [(f.name, f.metadata["sql"]) for f in dataclasses.fields(RunSummary) if f.metadata["sql"]]

    @staticmethod
    def gauges() -> list[tuple[str, str, str]]:
        """(field, metric name, help) of every counter pushed as a gauge."""
        return [(f.name, f.metadata["metric"], f.metadata["help"]) for f in dataclasses.fields(RunSummary) if f.metadata["metric"]]


_NAMES = frozenset(f.name for f in dataclasses.fields(RunSummary))
