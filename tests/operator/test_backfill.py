"""The backfill's Job and status, as pure functions of their inputs."""

from __future__ import annotations

import datetime as dt
import json

from ingestion_contract import Coverage, parse_backfill, parse_spec, read_environment
from ingestion_contract.cron import load_timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_operator.backfill import (UNLIMITED_REPAIRS, derive_backfill_status, due_range, parse_indexes,
                                         render_backfill_job, unit_cells)
from ingestion_operator.resource import Problem
from ingestion_operator.status import condition_of

from ..samples import SCHEDULE

NOW = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
BF = parse_backfill({"schedule": "daily", "from": "2026-01-01", "to": "2026-01-28", "parallelism": 4, "daysPerChunk": 7,
                     "symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "maxRequestsPerSecond": 10})


def body(status=None):
    return {"metadata": {"name": "jan", "namespace": "ns", "uid": "u1", "generation": 1}, "spec": {}, "status": status or {}}


def test_the_job_is_indexed_one_completion_per_unit_one_pod_per_shard():
    spec = parse_spec({**SCHEDULE["spec"], "target": {**SCHEDULE["spec"]["target"], "maxRequestsPerSecond": 50,
                                                       "maxBytesPerSecond": 1_000_000}})
    job = render_backfill_job("jan", "ns", BF, "daily", spec)
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"], js["backoffLimitPerIndex"]) == ("Indexed", 16, 4, 2)
    assert "activeDeadlineSeconds" not in js  # a backfill takes as long as its units; each pod has the run's deadline
    pod = js["template"]["spec"]
    assert pod["activeDeadlineSeconds"] == spec.active_deadline_seconds
    assert js["podFailurePolicy"]["rules"][0]["action"] == "FailIndex"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"] if "value" in e}
    ctx = read_environment({**env, "INGESTION_NAMESPACE": "ns", "JOB_COMPLETION_INDEX": "6"})
    assert ctx.trigger == "backfill" and (ctx.backfill.unit.shard, ctx.backfill.unit.chunk) == (2, 1)
    t = ctx.spec.target
    assert (t.symbols, t.discover, t.max_requests_per_second) == (("BTCUSDT", "ETHUSDT", "SOLUSDT"), False, 2)  # 10 / 4 shards
    assert t.max_bytes_per_second == 250_000  # the byte cap is split among the shards too
    assert ctx.spec.repair.max_repairs_per_run == UNLIMITED_REPAIRS
    assert job["metadata"]["labels"]["ingestion.dev/backfill"] == "jan"
    assert "ingestion.dev/schedule" not in job["metadata"]["labels"]  # the schedule's reconcile never takes it for a run


def test_index_lists_parse():
    assert parse_indexes("0-3,7,9-10") == {0, 1, 2, 3, 7, 9, 10}
    assert parse_indexes("") == set() and parse_indexes(None) == set()


def pod(index, cov: Coverage | None, finished="2026-11-24T11:00:00Z"):
    term = {"exitCode": 0, "finishedAt": finished, **({"message": cov.encode()} if cov else {})}
    return {"metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "status": {"containerStatuses": [{"name": "ingest", "state": {"terminated": term}}]}}


def cov(expected, repaired, missing=0, unrepaired=0):
    return Coverage(expected, expected - missing, missing, repaired, 0, None, 1000 * repaired, "succeeded", unrepaired)


CELLS = unit_cells(BF, BF.symbols)


def test_progress_counts_units_and_the_cells_their_pods_reported():
    assert sum(CELLS.values()) == 3 * 28
    assert [CELLS[i] for i in (0, 3, 4, 5)] == [14, 7, 14, 0]  # BTC and SOL in shard 0, ETH in shard 3
    # with dimensions: each symbol's series (3 intervals) stay in its shard
    assert unit_cells(BF, BF.symbols, 3) == {i: 3 * n for i, n in CELLS.items()}
    # monthly: a unit counts the months that end within its days, so no month is in two units
    assert sum(unit_cells(BF, BF.symbols, 1, "monthly").values()) == 0  # January 1-28 holds no whole month
    quarter = parse_backfill({"schedule": "m", "from": "2026-01-01", "to": "2026-03-31", "parallelism": 1, "daysPerChunk": 45,
                              "symbols": ["BTCUSDT", "ETHUSDT"]})
    assert unit_cells(quarter, quarter.symbols, 2, "monthly") == {0: 2 * 2 * 1, 1: 2 * 2 * 2}  # January; February, March
    job = {"metadata": {"name": "jan"}, "status": {"completedIndexes": "0,3-5", "active": 4, "startTime": "2026-11-24T10:00:00Z"}}
    pods = [pod(0, cov(14, 10)), pod(3, cov(7, 6, missing=1)), pod(5, cov(0, 0)),
            pod(4, cov(14, 3, unrepaired=2)),
            pod(4, cov(14, 0), finished="2026-11-24T10:00:00Z"),  # an earlier pod of unit 4, replaced
            pod(6, None)]  # running: no message yet
    st = derive_backfill_status(body(), BF, job, pods, NOW, cells=CELLS)
    p = st["progress"]
    assert (p["units"], p["unitsDone"], p["unitsRunning"], p["percent"], p["summary"]) == (16, 4, 4, 25, "25%")
    assert p["unitsProgress"] == "4/16"
    assert (p["cellsDone"], p["cellsTotal"], p["cells"], p["cellsPending"]) == (35, 84, "35/84", 49)
    assert (p["cellsVerified"], p["cellsRepaired"], p["cellsMissingUpstream"], p["cellsFailed"]) == (32, 19, 1, 2)
    assert p["cellsVerified"] + p["cellsMissingUpstream"] + p["cellsFailed"] + p["cellsPending"] == p["cellsTotal"]
    assert set(st["reports"]) == {"0", "3", "4", "5"} and st["reports"]["4"]["repaired"] == 3  # the newest pod's
    assert [s["chunksDone"] for s in st["shards"]] == [2, 1, 0, 1] and {s["state"] for s in st["shards"]} == {"Running"}
    assert condition_of(st, "Complete")["status"] == "False" and condition_of(st, "Complete")["reason"] == "InProgress"
    # equal inputs, equal status: a resync writes nothing
    assert derive_backfill_status(body(st), BF, job, pods, NOW + dt.timedelta(hours=1), cells=CELLS) == st
    # the pods are deleted (by hand, by pod garbage collection): the kept reports still count
    assert derive_backfill_status(body(st), BF, job, [], NOW + dt.timedelta(hours=1), cells=CELLS)["progress"] == p


def test_a_finished_job_completes_or_fails_the_backfill():
    done = {"metadata": {"name": "jan"}, "status": {"completedIndexes": "0-15", "completionTime": "2026-11-24T11:30:00Z",
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-24T11:30:00Z"}]}}
    st = derive_backfill_status(body(), BF, done, [pod(i, cov(CELLS[i], CELLS[i])) for i in range(16)], NOW, cells=CELLS)
    assert condition_of(st, "Complete")["status"] == "True" and condition_of(st, "Failed")["status"] == "False"
    assert st["progress"]["cells"] == "84/84" and st["completionTime"] == "2026-11-24T11:30:00Z"
    assert condition_of(st, "Complete")["message"] == "16 units, 84 cells: 84 verified (84 repaired by it), 0 not in the source, 0 failed"
    assert {s["state"] for s in st["shards"]} == {"Complete"}
    failed = {"metadata": {"name": "jan"}, "status": {"completedIndexes": "0-14", "failedIndexes": "15", "conditions": [
        {"type": "Failed", "status": "True", "reason": "FailedIndexes", "message": "Job has failed indexes",
         "lastTransitionTime": "2026-11-24T11:30:00Z"}]}}
    st = derive_backfill_status(body(), BF, failed, [], NOW, cells=CELLS)
    assert condition_of(st, "Failed")["status"] == "True" and "failed indexes" in condition_of(st, "Failed")["message"]
    assert st["progress"]["unitsFailed"] == 1 and st["shards"][3]["state"] == "Failed"
    p = st["progress"]  # no pod left to report: the failed unit's cells are failed, the done ones' unreported
    assert (p["cellsFailed"], p["cellsUnreported"], p["cellsPending"]) == (CELLS[15], 84 - CELLS[15], 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["pending", "running", "done", "failed"]), min_size=16, max_size=16),
       st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30))), min_size=16, max_size=16),
       st.booleans())
def test_every_cell_is_counted_once_whatever_became_of_its_pod(states, reported, kept):
    """Units done, failed, running or waiting, their pods' reports there or gone (deleted, or
    read before and kept on the status): verified + missing + failed + pending + unreported is
    always the total, and nothing is negative."""
    done = ",".join(str(i) for i, s in enumerate(states) if s == "done")
    failed = ",".join(str(i) for i, s in enumerate(states) if s == "failed")
    job = {"metadata": {"name": "jan"}, "status": {"completedIndexes": done, "failedIndexes": failed}}
    pods = []
    for i, r in enumerate(reported):
        if r is not None:
            n = CELLS[i]
            present = min(r[0], n)
            unrepaired = min(r[2], present)
            pods.append(pod(i, Coverage(n, present, n - present, min(r[1], present - unrepaired), 0, None, 10, "succeeded",
                                        unrepaired)))
    first = derive_backfill_status(body(), BF, job, pods, NOW, cells=CELLS)
    st_ = derive_backfill_status(body(first), BF, job, [] if kept else pods, NOW, cells=CELLS)
    p = st_["progress"]
    parts = [p["cellsVerified"], p["cellsMissingUpstream"], p["cellsFailed"], p["cellsPending"], p.get("cellsUnreported", 0)]
    assert sum(parts) == p["cellsTotal"] == 84 and min(parts) >= 0 and p["cellsRepaired"] <= p["cellsVerified"]


def test_a_backfill_without_its_schedule_waits_and_says_why():
    st = derive_backfill_status(body(), BF, None, [], NOW, Problem("ScheduleNotFound", "IngestionSchedule daily not found in namespace ns"))
    c = condition_of(st, "Complete")
    assert (c["status"], c["reason"]) == ("False", "ScheduleNotFound") and condition_of(st, "Failed")["status"] == "False"
    assert json.dumps(st)  # serialisable as a status patch


def test_a_range_past_the_last_due_date_is_cut_and_one_wholly_after_it_refused():
    spec = parse_spec(SCHEDULE["spec"])  # lagDays 1
    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.timezone.utc)
    future = parse_backfill({"schedule": "daily", "from": "2026-11-01", "to": "2036-11-23", "daysPerChunk": 7})
    cut, why, problem = due_range(future, spec, now)
    due = (now.astimezone(load_timezone(spec.timezone)).date() - dt.timedelta(days=spec.target.lag_days)).isoformat()
    assert problem is None and cut.to_date == due and cut.units == 4 and future.units == 526
    assert why == f"to 2036-11-23 cut to {due}, the last date due: today in {spec.timezone} minus lagDays 1"
    same, why, problem = due_range(parse_backfill({"schedule": "daily", "from": "2026-11-01", "to": "2026-11-10"}), spec, now)
    assert (same.to_date, why, problem) == ("2026-11-10", None, None)
    _, _, problem = due_range(parse_backfill({"schedule": "daily", "from": "2027-01-01", "to": "2027-01-10"}), spec, now)
    assert problem.reason == "RangeNotDue" and problem.message.startswith("spec.from=2027-01-01: after ")
    st = derive_backfill_status(body(), future, None, [], now, problem)
    assert condition_of(st, "Failed")["status"] == "True"


def test_one_warning_per_problem():
    from ingestion_operator.backfill import BackfillReconciler

    invalid = derive_backfill_status(body(), None, None, [], NOW, Problem("InvalidSpec", "spec.to='x': must be a date"))
    events = BackfillReconciler._events({}, invalid, None, "jan")
    assert events == [("Warning", "InvalidSpec", "spec.to='x': must be a date")]
    assert BackfillReconciler._events(invalid, invalid, None, "jan") == []
    waiting = derive_backfill_status(body(), BF, None, [], NOW, Problem("ScheduleNotFound", "IngestionSchedule daily not found"))
    assert [e[1] for e in BackfillReconciler._events({}, waiting, None, "jan")] == ["ScheduleNotFound"]
    failed_job = {"metadata": {"name": "jan"}, "status": {"completedIndexes": "0-14", "failedIndexes": "15", "conditions": [
        {"type": "Failed", "status": "True", "reason": "FailedIndexes", "message": "Job has failed indexes"}]}}
    failed = derive_backfill_status(body(), BF, failed_job, [], NOW, cells=CELLS)
    assert [(e[0], e[1]) for e in BackfillReconciler._events({}, failed, None, "jan")] == [("Warning", "Failed")]


def test_the_cells_of_a_running_backfill_come_from_the_symbols_its_job_runs():
    from ingestion_operator.backfill import job_symbols, job_unit_env

    spec = parse_spec(SCHEDULE["spec"])
    job = render_backfill_job("jan", "ns", BF, "daily", spec, created="2026-11-24T10:00:00Z")
    assert job_symbols(job) == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert job_unit_env(job)["to"] == "2026-01-28" and job_unit_env(job)["since"] == "2026-11-24T10:00:00Z"
