"""The backfill's Job and status, as pure functions of their inputs."""

from __future__ import annotations

import datetime as dt
import json

from ingestion_contract import Coverage, parse_backfill, parse_spec, read_environment

from ingestion_operator.backfill import UNLIMITED_REPAIRS, derive_backfill_status, parse_indexes, render_backfill_job
from ingestion_operator.resource import Problem
from ingestion_operator.status import condition_of

from ..samples import SCHEDULE

NOW = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
BF = parse_backfill({"schedule": "daily", "from": "2026-01-01", "to": "2026-01-28", "parallelism": 4, "daysPerChunk": 7,
                     "symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "maxRequestsPerSecond": 10})


def body(status=None):
    return {"metadata": {"name": "jan", "namespace": "ns", "uid": "u1", "generation": 1}, "spec": {}, "status": status or {}}


def test_the_job_is_indexed_one_completion_per_unit_one_pod_per_shard():
    spec = parse_spec({**SCHEDULE["spec"], "target": {**SCHEDULE["spec"]["target"], "maxRequestsPerSecond": 50}})
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


def test_progress_counts_units_and_the_cells_their_pods_reported():
    job = {"metadata": {"name": "jan"}, "status": {"completedIndexes": "0-2,5", "active": 4, "startTime": "2026-11-24T10:00:00Z"}}
    pods = [pod(0, cov(14, 10)), pod(1, cov(7, 7, missing=1)), pod(2, cov(0, 0)), pod(5, cov(7, 3, unrepaired=2)),
            pod(5, cov(7, 0), finished="2026-11-24T10:00:00Z"),  # an earlier pod of unit 5, replaced
            pod(6, None)]  # running: no message yet
    st = derive_backfill_status(body(), BF, job, pods, NOW, cells_total=3 * 28)
    p = st["progress"]
    assert (p["units"], p["unitsDone"], p["unitsRunning"], p["percent"], p["summary"]) == (16, 4, 4, 25, "25%")
    assert p["unitsProgress"] == "4/16"
    assert (p["cellsDone"], p["cellsTotal"], p["cells"]) == (28, 84, "28/84")
    assert (p["cellsRepaired"], p["cellsMissingUpstream"], p["cellsFailed"]) == (20, 1, 2)
    assert [s["chunksDone"] for s in st["shards"]] == [1, 2, 1, 0] and {s["state"] for s in st["shards"]} == {"Running"}
    assert condition_of(st, "Complete")["status"] == "False" and condition_of(st, "Complete")["reason"] == "InProgress"
    # equal inputs, equal status: a resync writes nothing
    assert derive_backfill_status(body(st), BF, job, pods, NOW + dt.timedelta(hours=1), cells_total=84) == st


def test_a_finished_job_completes_or_fails_the_backfill():
    done = {"metadata": {"name": "jan"}, "status": {"completedIndexes": "0-15", "completionTime": "2026-11-24T11:30:00Z",
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-24T11:30:00Z"}]}}
    st = derive_backfill_status(body(), BF, done, [pod(i, cov(6, 6)) for i in range(16)], NOW)
    assert condition_of(st, "Complete")["status"] == "True" and condition_of(st, "Failed")["status"] == "False"
    assert st["progress"]["cells"] == "96/96" and st["completionTime"] == "2026-11-24T11:30:00Z"
    assert {s["state"] for s in st["shards"]} == {"Complete"}
    failed = {"metadata": {"name": "jan"}, "status": {"completedIndexes": "0-14", "failedIndexes": "15", "conditions": [
        {"type": "Failed", "status": "True", "reason": "FailedIndexes", "message": "Job has failed indexes",
         "lastTransitionTime": "2026-11-24T11:30:00Z"}]}}
    st = derive_backfill_status(body(), BF, failed, [], NOW)
    assert condition_of(st, "Failed")["status"] == "True" and "failed indexes" in condition_of(st, "Failed")["message"]
    assert st["progress"]["unitsFailed"] == 1 and st["shards"][3]["state"] == "Failed"


def test_a_backfill_without_its_schedule_waits_and_says_why():
    st = derive_backfill_status(body(), BF, None, [], NOW, Problem("ScheduleNotFound", "IngestionSchedule daily not found in namespace ns"))
    c = condition_of(st, "Complete")
    assert (c["status"], c["reason"]) == ("False", "ScheduleNotFound") and condition_of(st, "Failed")["status"] == "False"
    assert json.dumps(st)  # serialisable as a status patch
