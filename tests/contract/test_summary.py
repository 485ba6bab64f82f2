"""RunSummary: one field per counter names its runs column and its metric."""

import dataclasses

import pytest

from ingestion_contract import RunSummary


def test_columns_and_gauges_come_from_the_fields():
    cols = dict(RunSummary.columns())
    assert cols["bytes_fetched"] == "BIGINT" and cols["expected"] == "INTEGER"
    assert "duration_seconds" not in cols  # the runs table has started_at/finished_at
    gauges = {f: m for f, m, _ in RunSummary.gauges()}
    assert gauges["gaps_open"] == "ingestion_gaps_open" and gauges["duration_seconds"] == "ingestion_run_duration_seconds"
    assert all(m.startswith("ingestion_") for m in gauges.values())
    assert len(set(gauges.values())) == len(gauges)


def test_every_field_is_described():
    assert all(f.metadata["help"].endswith(".") for f in dataclasses.fields(RunSummary))


def test_reading_by_name():
    s = RunSummary(gaps_repaired=3)
    assert s["gaps_repaired"] == 3 and s.as_dict()["gaps_repaired"] == 3
    with pytest.raises(KeyError):
        s["outcome"]
