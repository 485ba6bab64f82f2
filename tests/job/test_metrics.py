"""build_registry: the pushed gauges are the run summary's counters, named once; the run counts a
counter; and what a Pushgateway left by an older release does to a push."""

import datetime as dt
import urllib.request

import pytest
from prometheus_client import generate_latest

from ingestion_contract import RunSummary
from ingestion_dev.processes import ProcessGroup
from ingestion_dev.services import start_pushgateway
from ingestion_job.metrics import PushRefused, build_registry, push
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
    # a counter (increase() over it is the SLO), every outcome pushed, 0 included; no _created series
    assert "# TYPE ingestion_runs_total counter" in text and 'ingestion_runs_total{outcome="abandoned"} 0.0' in text
    assert "ingestion_runs_created" not in text
    assert "\ningestion_last_success_timestamp_seconds 1.795392e+09" in text  # 2026-11-23T00:00Z
    assert "ingestion_last_failure_timestamp_seconds" not in text  # never failed: no timestamp, not 0
    assert 'ingestion_s3_requests{operation="GetObject"} 1.0' in text
    assert 'ingestion_s3_errors{code="SlowDown",operation="GetObject"} 1.0' in text


def test_a_failed_run_says_so():
    assert "\ningestion_run_success 0.0" in exposition(outcome="failed")


@pytest.mark.servers
def test_a_pushgateway_holding_the_old_gauge_refuses_with_what_to_do(tmp_path):
    """Before this release ingestion_runs_total was pushed as a gauge; the Pushgateway refuses
    a family of two types, so after an upgrade every schedule's push is refused while any old
    group remains. The warning says what to do, and deleting the old groups is enough."""
    group = ProcessGroup(tmp_path)
    try:
        url = start_pushgateway(group)
        old = '# TYPE ingestion_runs_total gauge\ningestion_runs_total{outcome="succeeded"} 3\n'
        for name in ("a", "b"):
            urllib.request.urlopen(urllib.request.Request(f"{url}/metrics/job/ingestion/namespace/data/schedule/{name}",
                                                          data=old.encode(), method="PUT"), timeout=10)
        registry = build_registry(RunSummary(), "succeeded", RequestStats(), {"succeeded": 4}, {})
        with pytest.raises(PushRefused, match='delete the Pushgateway\'s job="ingestion" groups once'):
            push(url, "data", "a", registry)
        for name in ("a", "b"):  # the upgrade step (docs/operations/upgrade.md)
            urllib.request.urlopen(urllib.request.Request(f"{url}/metrics/job/ingestion/namespace/data/schedule/{name}",
                                                          method="DELETE"), timeout=10)
        push(url, "data", "a", registry)
        text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        assert "# TYPE ingestion_runs_total counter" in text
    finally:
        group.down(log=lambda m: None)
