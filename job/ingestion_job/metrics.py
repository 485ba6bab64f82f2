"""Metrics of one run, pushed to a Prometheus Pushgateway.

Grouping key: job="ingestion", namespace, schedule. A backfill's units push their own group
instead (job="ingestion-backfill", namespace, schedule, backfill, unit), so a backfill never
stands in for the schedule's last run. ``push_to_gateway`` replaces the
group, so each run's values stand alone. ``ingestion_runs_total`` is a counter: the
schedule's finished runs by outcome, read from the store after the commit, so it only grows
(per grouping key) and survives pod restarts, and ``increase(ingestion_runs_total[30d])``
gives an SLO success rate. An unreachable Pushgateway is a warning, never a failed run or
lost data. The per-run gauges are the counters of :class:`ingestion_contract.RunSummary`.
"""

from __future__ import annotations

import datetime as dt
import urllib.error

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import push_to_gateway
from prometheus_client.metrics_core import CounterMetricFamily

from ingestion_contract import GAP_CAUSES, RunSummary

from .store import OUTCOMES

JOB = "ingestion"
RUN_SUCCESS = "ingestion_run_success"
LAST_SUCCESS = "ingestion_last_success_timestamp_seconds"
LAST_FAILURE = "ingestion_last_failure_timestamp_seconds"
S3_REQUESTS = "ingestion_s3_requests"
S3_ERRORS = "ingestion_s3_errors"
RUNS_TOTAL = "ingestion_runs_total"
GAPS_OPEN = "ingestion_gaps_open"
DIMENSION_METRICS = (("ingestion_dimension_cells_expected", "Cells of the last run's window with this value of a dimension."),
                     ("ingestion_dimension_cells_present", "Those of them present upstream."),
                     ("ingestion_dimension_gaps_open", "Gaps open after the last run with this value of a dimension."))


def build_registry(summary: RunSummary, outcome: str, stats, run_counts: dict[str, int] | None,
                   last_finished: dict[str, dt.datetime], gaps_by_cause: dict[str, int] | None = None,
                   by_dimension: dict | None = None) -> CollectorRegistry:
    """The run's gauges. ``run_counts`` and ``last_finished`` are what the store holds after
    the run's commit; ``run_counts`` None (the store could not be read) pushes no run count,
    so that a pushed count never goes down. ``gaps_by_cause``: the schedule's open gaps by
    cause once the run committed, pushed as ``ingestion_gaps_open{cause}`` with every cause (0
    included); None (nothing committed) pushes no gap count rather than a false 0."""
    reg = CollectorRegistry()
    if gaps_by_cause is not None:
        gaps = Gauge(GAPS_OPEN, "Gaps open after the last run, by cause: not-due, late-upstream, withdrawn (upstream's); "
                     "fetch-failed, verification-failed, quarantined, deferred (ours). sum() is every open gap.", ["cause"],
                     registry=reg)
        for cause in GAP_CAUSES:
            gaps.labels(cause).set(gaps_by_cause.get(cause, 0))
    if by_dimension:  # {dimension: {value: (expected, present, gaps open)}}, bounded by metrics.dimensionLabels
        gauges = [Gauge(name, help_, ["dimension", "value"], registry=reg) for name, help_ in DIMENSION_METRICS]
        for dim, values in by_dimension.items():
            for value, counts in values.items():
                for gauge, n in zip(gauges, counts):
                    gauge.labels(dim, value).set(n)
    Gauge(RUN_SUCCESS, "1 if the last run succeeded, else 0.", registry=reg).set(1.0 if outcome == "succeeded" else 0.0)
    for field, name, help_ in RunSummary.gauges():
        Gauge(name, help_, registry=reg).set(getattr(summary, field))
    failures = [t for o, t in last_finished.items() if o in ("failed", "partial") and t]
    for name, help_, when in ((LAST_SUCCESS, "Unix time the last successful run finished.", last_finished.get("succeeded")),
                              (LAST_FAILURE, "Unix time the last failed or partial run finished.", max(failures, default=None))):
        if when:
            Gauge(name, help_, registry=reg).set(when.timestamp())
    req = Gauge(S3_REQUESTS, "S3 HTTP requests of the last run (retries included), by operation.", ["operation"], registry=reg)
    for op, n in stats.requests.items():
        req.labels(op).set(n)
    err = Gauge(S3_ERRORS, "S3 errors of the last run, by operation and code.", ["operation", "code"], registry=reg)
    for (op, code), n in stats.errors.items():
        err.labels(op, code).set(n)
    if run_counts is not None:
        reg.register(RunCounts(run_counts))
    return reg


class RunCounts:
    """``ingestion_runs_total{outcome}``, a counter whose values are the store's counts (a
    prometheus_client Counter can only count up from 0 in this process)."""

    def __init__(self, counts: dict[str, int]):
        self.counts = counts

    def collect(self):
        family = CounterMetricFamily(RUNS_TOTAL, "Finished runs recorded in the store, by outcome (cumulative).",
                                     labels=["outcome"])
        for o in OUTCOMES:
            family.add_metric([o], self.counts.get(o, 0))
        yield family


class PushRefused(OSError):
    pass


def push(url: str, namespace: str, schedule: str, registry: CollectorRegistry, timeout: float = 10) -> None:
    try:
        push_to_gateway(url, job=JOB, grouping_key={"namespace": namespace, "schedule": schedule}, registry=registry,
                        timeout=timeout)
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace") if e.fp else ""
        # "collected metric ... is not a GAUGE" or "... is not a COUNTER", whichever group it met first
        if e.code == 400 and f'collected metric "{RUNS_TOTAL}"' in body and ("is not a GAUGE" in body or "is not a COUNTER" in body):
            # A job before ingestion_runs_total was a counter left it as a gauge in another group,
            # and the Pushgateway refuses a family of two types until those groups are gone.
            raise PushRefused(f"{RUNS_TOTAL} is a counter now, and groups pushed before hold it as a gauge: delete the "
                              f'Pushgateway\'s job="{JOB}" groups once (docs/operations/upgrade.md)') from None
        raise


BACKFILL_JOB = "ingestion-backfill"
BACKFILL_UNITS = "ingestion_backfill_units"
BACKFILL_UNIT_CELLS = "ingestion_backfill_unit_cells"
BACKFILL_UNIT_FINISHED = "ingestion_backfill_unit_finished_timestamp_seconds"


def build_backfill_registry(units: int, summary: RunSummary, outcome: str, finished: dt.datetime) -> CollectorRegistry:
    """One committed unit of a backfill: its cells by state, and the size of the grid it is part of
    (``count`` of units reporting over ``ingestion_backfill_units`` is the backfill's progress)."""
    reg = CollectorRegistry()
    Gauge(BACKFILL_UNITS, "Units (shard x chunk) of the backfill this unit belongs to.", registry=reg).set(units)
    cells = Gauge(BACKFILL_UNIT_CELLS, "Cells of this unit by state: expected, present (upstream), missing (upstream), "
                  "repaired, unrepaired (repair failed or deferred).", ["state"], registry=reg)
    for state, n in (("expected", summary.expected), ("present", summary.present), ("missing", summary.missing),
                     ("repaired", summary.gaps_repaired), ("unrepaired", summary.repairs_failed + summary.repairs_deferred)):
        cells.labels(state).set(n)
    Gauge(BACKFILL_UNIT_FINISHED, f"Unix time this unit committed (outcome {outcome}).", registry=reg).set(finished.timestamp())
    return reg


def push_backfill(url: str, namespace: str, schedule: str, backfill: str, unit: int, registry: CollectorRegistry,
                  timeout: float = 10) -> None:
    push_to_gateway(url, job=BACKFILL_JOB, grouping_key={"namespace": namespace, "schedule": schedule, "backfill": backfill,
                                                         "unit": str(unit)}, registry=registry, timeout=timeout)
