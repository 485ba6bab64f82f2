"""RunSummary: one field per counter names its runs column and its metric."""

import dataclasses

import pytest

from ingestion_contract import RunSummary


def test_columns_and_gauges_come_from_the_fields():
    cols = dict(RunSummary.columns())
    assert cols["bytes_fetched"] == "BIGINT" and cols["expected"] == "INTEGER"
    assert "duration_seconds" not in cols  # the runs table has started_at/finished_at
    gauges = {f: m for f, m, _ in RunSummary.gauges()}
    assert gauges["gaps_repaired"] == "ingestion_gaps_repaired" and gauges["duration_seconds"] == "ingestion_run_duration_seconds"
    assert "gaps_open" not in gauges  # pushed by cause: ingestion_gaps_open{cause}
    assert all(m.startswith("ingestion_") for m in gauges.values())
    assert len(set(gauges.values())) == len(gauges)


def test_every_field_is_described():
    assert all(f.metadata["help"].endswith(".") for f in dataclasses.fields(RunSummary))


def test_reading_by_name():
    s = RunSummary(gaps_repaired=3)
    assert s["gaps_repaired"] == 3 and s.as_dict()["gaps_repaired"] == 3
    with pytest.raises(KeyError):
        s["outcome"]


def test_coverage_round_trips_through_a_termination_message_and_refuses_anything_else():
    from ingestion_contract import Coverage

    c = Coverage(expected=30, present=28, missing=2, repaired=26, gaps_open=3, oldest_open_gap="2026-11-20", bytes=12_345,
                 outcome="partial")
    text = c.encode()
    assert len(text.encode()) < 4096 and Coverage.decode(text) == c
    assert (c.percent, c.complete) == (93.3, False)
    assert c.as_status() == {"expected": 30, "present": 28, "missing": 2, "repaired": 26, "gapsOpen": 3,
                             "oldestOpenGap": "2026-11-20", "bytes": 12_345, "symbolsDelisted": 0, "percent": 93.3}
    assert Coverage(0, 0, 0, 0, 0, None, 0, "succeeded").percent == 100.0
    assert "oldestOpenGap" not in Coverage(5, 5, 0, 0, 0, None, 0, "succeeded").as_status()  # no null for a merge patch
    for other in (None, "", "Error: boom", "[1]", '{"v": 2}', text.replace('"expected":30', '"expected":"30"'),
                  text.replace('"bytes":12345', '"bytes":-1'), text.replace('"present":28', '"present":true'),
                  text.replace('"outcome":"partial"', '"outcome":3')):
        assert Coverage.decode(other) is None, other


def test_coverage_counts_open_gaps_by_cause_and_a_message_without_them_still_decodes():
    """Issue 24, point 5: the message carries the non-zero causes; status.coverage lists every
    cause (a merge patch never leaves a stale count); a message of an older job has none."""
    from ingestion_contract import GAP_CAUSES, Coverage, largest_causes

    c = Coverage(30, 27, 3, 20, 5, "2026-11-20", 1, "partial", 2, {"late-upstream": 3, "quarantined": 2})
    assert c.gaps_by_cause == {**dict.fromkeys(GAP_CAUSES, 0), "late-upstream": 3, "quarantined": 2}
    text = c.encode()
    assert '"gapsByCause":{"late-upstream":3,"quarantined":2}' in text and Coverage.decode(text) == c
    assert c.as_status()["gapsByCause"] == c.gaps_by_cause and largest_causes(c.gaps_by_cause) == [("late-upstream", 3), ("quarantined", 2)]
    old = text.replace(',"gapsByCause":{"late-upstream":3,"quarantined":2}', "")
    assert Coverage.decode(old).gaps_by_cause == {} and "gapsByCause" not in Coverage.decode(old).as_status()
    for bad in ('{"late":3}', '{"quarantined":-1}', '{"quarantined":"2"}', '[3]'):
        assert Coverage.decode(text.replace('{"late-upstream":3,"quarantined":2}', bad)) is None, bad
    # delisted symbols: counted, the first 20 named (sorted), a list on status (replaced whole)
    many = Coverage(30, 27, 3, 20, 5, None, 1, "succeeded", 0, {"late-upstream": 5}, 25, [f"S{i:02}" for i in range(25, 0, -1)])
    assert many.delisted == tuple(f"S{i:02}" for i in range(1, 21)) and Coverage.decode(many.encode()) == many
    assert many.as_status()["symbolsDelisted"] == 25 and many.as_status()["delistedSymbols"][0] == "S01"
    assert Coverage.decode(many.encode().replace('"delistedSymbols":["S01"', '"delistedSymbols":[1')) is None
    with pytest.raises(ValueError, match="not a gap cause"):
        Coverage(1, 0, 1, 0, 1, None, 0, "succeeded", 0, {"absent upstream": 1})


def test_coverage_per_dimension_value_is_small_round_trips_and_older_messages_still_decode():
    """{dimension: {value: (expected, present, gaps open)}} summed over the variants holding
    each value; a dimension of more than 16 values is left out, at most two are shown; the
    status spells the three counts out."""
    from ingestion_contract.summary import Coverage, dimension_coverage

    dims = (("interval", ("1m", "1h")), ("market", ("spot", "um")), ("zz", tuple(f"v{i}" for i in range(17))))
    expected = {"interval=1m,market=spot": 4, "interval=1h,market=spot": 4, "interval=1m,market=um": 4, "interval=1h,market=um": 4}
    present = {**expected, "interval=1h,market=um": 3}
    by = dimension_coverage(dims, expected, present, {"interval=1h,market=um": 1, "interval=1m,market=um": 2})
    assert by == {"interval": {"1m": (8, 8, 2), "1h": (8, 7, 1)}, "market": {"spot": (8, 8, 0), "um": (8, 7, 3)}}
    assert list(dimension_coverage((("a", ("x",)), ("b", ("y",)), ("c", ("z",))), {"a=x,b=y,c=z": 1}, {}, {})) == ["a", "b"]
    c = Coverage(16, 15, 1, 15, 3, None, 1, "succeeded", 0, {"late-upstream": 3}, by_dimension=by)
    assert Coverage.decode(c.encode()) == c and len(c.encode()) < 400
    assert c.as_status()["byDimension"]["interval"]["1h"] == {"expected": 8, "present": 7, "gapsOpen": 1}
    assert "byDimension" not in Coverage(1, 1, 0, 0, 0, None, 0, "succeeded").as_status()
    older = c.encode().replace(',"byDimension":' + c.encode().split(',"byDimension":')[1], "}")
    assert Coverage.decode(older).by_dimension == {}
    for bad in ('{"interval":[1,2,3]}', '{"interval":{"1m":[1,2]}}', '{"interval":{"1m":[1,2,-3]}}', '[]'):
        assert Coverage.decode(older[:-1] + ',"byDimension":' + bad + "}") is None, bad
