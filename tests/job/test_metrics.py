"""build_registry: the pushed gauges are the run summary's counters, named once."""

import datetime as dt

from prometheus_client import generate_latest

from ingestion_contract import RunSummary
from ingestion_job.metrics import build_registry
from ingestion_job.source import RequestStats


def exposition(**kw) -> str:
    stats = RequestStats()
    stats.on_response("ListObjectsV2", None)
    stats.on_response("GetObject", "SlowDown")
    summary = RunSummary(expected=10, present=8, missing=2, gaps_repaired=3, bytes_fetched=2048, duration_seconds=1.5)
    args = {"outcome": "succeeded", "run_counts": {"succeeded": 4, "failed": 1},
            "last_finished": {"succeeded": dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)}, **kw}
    return generate_latest(build_registry(summary, args["outcome"], stats, args["run_counts"], args["last_finished"])).decode()


def test_every_summary_gauge_is_pushed_with_its_value():
    text = exposition()
    for field, name, _ in RunSummary.gauges():
        assert f"\n{name} " in text, name
    assert "\ningestion_objects_expected 10.0" in text and "\ningestion_fetched_bytes 2048.0" in text
    assert "\ningestion_run_duration_seconds 1.5" in text and "\ningestion_run_success 1.0" in text


def test_run_counts_last_times_and_s3_by_operation():
    text = exposition()
    assert 'ingestion_runs_total{outcome="succeeded"} 4.0' in text and 'ingestion_runs_total{outcome="failed"} 1.0' in text
    assert "\ningestion_last_success_timestamp_seconds 1.795392e+09" in text  # 2026-11-23T00:00Z
    assert "ingestion_last_failure_timestamp_seconds" not in text  # never failed: no timestamp, not 0
    assert 'ingestion_s3_requests{operation="GetObject"} 1.0' in text
    assert 'ingestion_s3_errors{code="SlowDown",operation="GetObject"} 1.0' in text


def test_a_failed_run_says_so():
    assert "\ningestion_run_success 0.0" in exposition(outcome="failed")
