"""Metrics of one run, pushed to a Prometheus Pushgateway.

Grouping key: job="ingestion", namespace, schedule. ``push_to_gateway`` replaces the
group, so each run's values stand alone; cumulative run counts are read from the store,
so ``increase(ingestion_runs_total[30d])`` gives an SLO success rate that survives pod
restarts. An unreachable Pushgateway is a warning, never a failed run or lost data.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import push_to_gateway

JOB = "ingestion"

# name -> help; every name is defined once here and listed in the README
GAUGES = {
    "ingestion_run_duration_seconds": "Wall time of the last run.",
    "ingestion_run_success": "1 if the last run succeeded, else 0.",
    "ingestion_last_success_timestamp_seconds": "Unix time the last successful run finished.",
    "ingestion_last_failure_timestamp_seconds": "Unix time the last failed run finished.",
    "ingestion_objects_expected": "Cells (symbol, date) the last run expected.",
    "ingestion_objects_present": "Expected cells present upstream.",
    "ingestion_objects_missing": "Expected cells absent upstream.",
    "ingestion_gaps_open": "Gaps still open after the last run.",
    "ingestion_gaps_repaired": "Gaps the last run repaired.",
    "ingestion_repairs_failed": "Repairs the last run attempted that failed.",
    "ingestion_fetched_bytes": "Bytes the last run fetched from the source.",
}
S3_REQUESTS = "ingestion_s3_requests"
S3_ERRORS = "ingestion_s3_errors"
RUNS_TOTAL = "ingestion_runs_total"


def build_registry(summary: dict, stats, run_counts: dict[str, int], last_times: dict[str, float]) -> CollectorRegistry:
    reg = CollectorRegistry()
    values = {
        "ingestion_run_duration_seconds": summary["duration_seconds"],
        "ingestion_run_success": 1.0 if summary["outcome"] == "succeeded" else 0.0,
        "ingestion_objects_expected": summary["expected"],
        "ingestion_objects_present": summary["present"],
        "ingestion_objects_missing": summary["missing"],
        "ingestion_gaps_open": summary["gaps_open"],
        "ingestion_gaps_repaired": summary["gaps_repaired"],
        "ingestion_repairs_failed": summary["repairs_failed"],
        "ingestion_fetched_bytes": summary["bytes_fetched"],
    }
    for name, help_ in GAUGES.items():
        if name in values:
            Gauge(name, help_, registry=reg).set(values[name])
    for name, key in (("ingestion_last_success_timestamp_seconds", "succeeded"), ("ingestion_last_failure_timestamp_seconds", "failed")):
        if last_times.get(key):
            Gauge(name, GAUGES[name], registry=reg).set(last_times[key])
    req = Gauge(S3_REQUESTS, "S3 HTTP requests of the last run (retries included), by operation.", ["operation"], registry=reg)
    for op, n in stats.requests.items():
        req.labels(op).set(n)
    err = Gauge(S3_ERRORS, "S3 errors of the last run, by operation and code.", ["operation", "code"], registry=reg)
    for (op, code), n in stats.errors.items():
        err.labels(op, code).set(n)
    # A counter in meaning (read from the store, monotonic per schedule), exposed untyped-safe as a gauge
    # named *_total so increase() works across pushes.
    runs = Gauge(RUNS_TOTAL, "Runs recorded in the store, by outcome (cumulative).", ["outcome"], registry=reg)
    for outcome in ("succeeded", "failed"):
        runs.labels(outcome).set(run_counts.get(outcome, 0))
    return reg


def push(url: str, namespace: str, schedule: str, registry: CollectorRegistry, timeout: float = 10) -> None:
    push_to_gateway(url, job=JOB, grouping_key={"namespace": namespace, "schedule": schedule}, registry=registry, timeout=timeout)
