"""A run that cannot start, a run's own reason, and Degraded that does not flap (issue 25).

Pure: pods, Jobs and Events as the API server returns them, at a fixed clock."""

import datetime as dt
import json

import pytest

from ingestion_contract import Coverage, end_message, end_reason
from ingestion_operator.resource import ScheduleResource
from ingestion_operator.status import (START_GRACE, Blocked, derive_status, job_blocked, last_run, pod_blocked,
                                       transition_events)

from ..samples import SCHEDULE

NOW = dt.datetime(2026, 11, 23, 7, 30, tzinfo=dt.timezone.utc)
CJ = {"metadata": {"name": "binance-um-klines", "uid": "cj-1"}, "status": {"active": []}}


def at(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(name, created, conditions=(), ready=0, completion=None):
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"startTime": created, "ready": ready, "completionTime": completion, "conditions": list(conditions)}}


FAILED = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
           "message": "Job has reached the specified backoff limit", "lastTransitionTime": "2026-11-23T02:05:00Z"}]
DONE = [{"type": "Complete", "status": "True"}]


def waiting_pod(reason, message, created, name="run-1-abc"):
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "ingest", "state": {"waiting": {"reason": reason, "message": message}}}]}}


def unscheduled_pod(message, created):
    return {"metadata": {"name": "run-1-abc", "creationTimestamp": created},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                           "message": message}]}}


@pytest.mark.parametrize("reason", ["CreateContainerConfigError", "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull"])
def test_a_pod_waiting_on_what_will_not_come_is_blocked_after_the_grace(reason):
    pod = waiting_pod(reason, 'secret "s3-creds" not found', at(30))
    assert pod_blocked(pod, NOW) == Blocked(reason, 'secret "s3-creds" not found')
    young = waiting_pod(reason, "x", at(START_GRACE.total_seconds() - 5))
    assert pod_blocked(young, NOW) is None  # a Secret applied with the schedule may still come


def test_creating_or_running_is_not_blocked():
    assert pod_blocked(waiting_pod("ContainerCreating", "", at(40)), NOW) is None
    running = {"metadata": {"name": "p", "creationTimestamp": at(300)}, "status": {"phase": "Running"}}
    assert pod_blocked(running, NOW) is None


def test_an_unschedulable_pod_names_the_scheduler_s_reason():
    pod = unscheduled_pod('0/1 nodes are available: persistentvolumeclaim "ingestion-data" not found.', at(25))
    assert pod_blocked(pod, NOW) == Blocked("Unschedulable", '0/1 nodes are available: persistentvolumeclaim "ingestion-data" not found.')


def test_a_volume_that_does_not_mount_is_read_from_the_pod_s_events():
    pod = waiting_pod("ContainerCreating", "", at(90))
    events = [{"reason": "Scheduled", "message": "assigned"}, {"reason": "FailedMount", "lastTimestamp": at(10),
                                                                "message": 'MountVolume.SetUp failed: configmap "x" not found'}]
    assert pod_blocked(pod, NOW, events) == Blocked("FailedMount", 'MountVolume.SetUp failed: configmap "x" not found')
    assert pod_blocked(waiting_pod("ContainerCreating", "", at(30)), NOW, events) is None  # an image pull may take that long


def test_a_job_with_no_pod_is_blocked_by_the_job_controller_s_failed_create():
    j = job("run-1", at(40))
    quota = [{"reason": "FailedCreate", "lastTimestamp": at(5), "message": 'Error creating: pods "run-1-x" is forbidden: '
              "failed quota: q: must specify limits.cpu for: ingest"}]
    assert job_blocked(j, [], NOW, quota) == Blocked("FailedCreate", quota[0]["message"])
    assert job_blocked(job("run-1", at(10)), [], NOW, quota) is None  # within the grace
    assert job_blocked(job("run-1", at(40), ready=1), [], NOW, quota) is None  # a pod ran: not blocked
    assert job_blocked(job("run-1", at(40), FAILED), [], NOW, quota) is None  # ended: its outcome says it


def blocked_status(prev_status=None, jobs=None, blocked=None, ends=None, now=NOW):
    body = {**SCHEDULE, "status": prev_status or {}}
    return derive_status(ScheduleResource.from_body(body), CJ, jobs or [], now, None, None, ends, blocked)


def cond(st, type_):
    return next(c for c in st["conditions"] if c["type"] == type_)


def test_a_blocked_run_is_on_last_run_and_degraded():
    b = Blocked("CreateContainerConfigError", 'secret "s3-creds" not found')
    st = blocked_status(jobs=[job("run-1", at(40))], blocked=b)
    assert st["lastRun"]["outcome"] == "Blocked"
    assert st["lastRun"]["reason"] == 'CreateContainerConfigError: secret "s3-creds" not found'
    d = cond(st, "Degraded")
    assert (d["status"], d["reason"]) == ("True", "RunBlocked") and 'secret "s3-creds" not found' in d["message"]


def test_the_run_s_own_reason_replaces_the_job_s_words():
    ends = {"b-2": "ListObjectsV2 'data/spot/daily/klines/BTCUSDT/1m/': access denied (403)"}
    st = blocked_status(jobs=[job("b-2", at(600), FAILED)], ends=ends)
    assert st["lastRun"]["reason"] == "BackoffLimitExceeded: ListObjectsV2 'data/spot/daily/klines/BTCUSDT/1m/': access denied (403)"
    assert st["lastRun"]["message"] == ends["b-2"]
    assert "access denied (403)" in cond(st, "Degraded")["message"]
    partial = job("b-3", at(600), [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                    "message": "Container ingest for pod d/b-3-x failed with exit code 3 matching FailJob rule at index 0"}])
    run = last_run([partial], {"b-3": "2 repair(s) failed, the first: GetObject 'k': 503"})
    assert run["reason"] == "Partial (exit code 3): 2 repair(s) failed, the first: GetObject 'k': 503"
    assert "message" not in last_run([job("b-4", at(60), DONE)], {"b-4": "stale words"})


def test_degraded_stays_true_while_the_next_run_starts_and_keeps_its_transition_time():
    failed = job("b-1", at(3600), FAILED)
    first = blocked_status(jobs=[failed])
    assert cond(first, "Degraded")["status"] == "True"
    later = NOW + dt.timedelta(hours=1)
    starting = blocked_status(first, jobs=[failed, job("b-2", at(-3590))], now=later)
    assert starting["lastRun"]["outcome"] == "Running"
    assert cond(starting, "Degraded") == {**cond(first, "Degraded"), "observedGeneration": cond(starting, "Degraded")["observedGeneration"]}
    ok = blocked_status(starting, jobs=[failed, job("b-2", at(-3590), DONE, completion=at(-3600))], now=later)
    assert cond(ok, "Degraded")["status"] == "False"


def test_one_event_per_failed_run_per_block_and_per_recovery():
    failed1, failed2 = job("b-1", at(7200), FAILED), job("b-2", at(3600), FAILED)
    s0 = blocked_status(jobs=[job("b-0", at(9000), DONE, completion=at(8900))])
    s1 = blocked_status(s0, jobs=[failed1])
    events = transition_events(s0, s1, None, None)
    assert [(e.type, e.reason) for e in events] == [("Warning", "RunFailed")] and "b-1" in events[0].message
    assert transition_events(s1, blocked_status(s1, jobs=[failed1]), None, None) == []  # nothing new: nothing posted
    running = blocked_status(s1, jobs=[failed1, job("b-2", at(60))])
    assert transition_events(s1, running, None, None) == []  # a run starting is not news
    s2 = blocked_status(running, jobs=[failed1, failed2])
    assert [(e.type, e.reason) for e in transition_events(running, s2, None, None)] == [("Warning", "RunFailed")]
    # a blocked run: one Warning, however its pod's wait flips between ErrImagePull and ImagePullBackOff
    b3 = job("b-3", at(60))
    pulling = blocked_status(s2, jobs=[failed2, b3], blocked=Blocked("ErrImagePull", "pull access denied"))
    assert [(e.type, e.reason) for e in transition_events(s2, pulling, None, None)] == [("Warning", "RunBlocked")]
    backoff = blocked_status(pulling, jobs=[failed2, b3], blocked=Blocked("ImagePullBackOff", "Back-off pulling image"))
    assert transition_events(pulling, backoff, None, None) == []
    ok = blocked_status(backoff, jobs=[failed2, job("b-3", at(60), DONE, completion=at(1))])
    assert [(e.type, e.reason) for e in transition_events(backoff, ok, None, None)] == [("Normal", "RunSucceeded")]


def test_stale_turning_true_and_clearing_are_one_event_each():
    fresh = {"conditions": [{"type": "Stale", "status": "False", "reason": "RecentSuccess", "message": "ok"}]}
    stale = {"conditions": [{"type": "Stale", "status": "True", "reason": "NoRecentSuccess", "message": "no run since"}]}
    assert [(e.type, e.reason) for e in transition_events(fresh, stale, None, None)] == [("Warning", "Stale")]
    assert transition_events(stale, stale, None, None) == []
    assert [(e.type, e.reason) for e in transition_events(stale, fresh, None, None)] == [("Normal", "Fresh")]


def test_the_end_message_carries_the_reason_within_the_kubelet_s_limit():
    cov = Coverage(10, 9, 1, 0, 1, "2026-11-20", 100, "partial", delisted=tuple(f"SYM{i:03d}USDT" for i in range(40)))
    msg = end_message(cov, "partial", "x" * 10_000 + "\nsecond line")
    assert len(msg.encode()) <= 4096 and Coverage.decode(msg) == cov
    assert end_reason(msg) == ("partial", "x" * 1024)
    huge = end_message(None, "failed", "é" * 5000)
    assert len(huge.encode()) <= 4096 and end_reason(huge)[1].startswith("é")
    assert end_reason(end_message(None, "failed", "one\n  two")) == ("failed", "one two")
    assert end_reason(cov.encode()) is None and end_reason("not json") is None and end_reason(json.dumps([1])) is None
