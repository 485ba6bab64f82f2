"""derive_status: conditions, next runs and last run from a CronJob and its Jobs."""

import copy
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_operator.resource import Problem, ScheduleResource
from ingestion_operator.status import derive_status, last_run, stale_deadline

from ..samples import SCHEDULE

NOW = dt.datetime(2026, 11, 23, 7, 30, tzinfo=dt.timezone.utc)
CJ = {"metadata": {"name": "binance-um-klines", "uid": "cj-1"},
      "status": {"lastScheduleTime": "2026-11-23T02:00:00Z", "lastSuccessfulTime": "2026-11-23T02:03:10Z", "active": []}}


def job(name, created, conditions=(), manual=False, start=None, completion=None):
    ann = {"cronjob.kubernetes.io/instantiate": "manual"} if manual else {}
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": ann},
            "status": {"startTime": start or created, "completionTime": completion, "conditions": list(conditions)}}


def cond(status_dict, type_):
    return next(c for c in status_dict["conditions"] if c["type"] == type_)


def test_ready_schedule_with_a_successful_scheduled_run():
    jobs = [job("b-1", "2026-11-22T02:00:00Z", [{"type": "Complete", "status": "True"}], completion="2026-11-22T02:01:00Z"),
            job("b-2", "2026-11-23T02:00:00Z", [{"type": "Complete", "status": "True"}], completion="2026-11-23T02:03:10Z")]
    st = derive_status(ScheduleResource.from_body(SCHEDULE), CJ, jobs, NOW)
    assert st["observedGeneration"] == 3 and st["cronJobName"] == "binance-um-klines"
    assert st["nextRuns"] == [f"2026-11-{d}T02:00:00Z" for d in range(24, 29)]
    assert st["lastSuccessfulTime"] == "2026-11-23T02:03:10Z" and st["active"] == 0
    assert st["lastRun"] == {"job": "b-2", "trigger": "scheduled", "outcome": "Succeeded",
                             "start": "2026-11-23T02:00:00Z", "end": "2026-11-23T02:03:10Z"}
    assert cond(st, "Ready")["status"] == "True"
    assert cond(st, "Suspended")["status"] == "False"
    assert cond(st, "Degraded")["status"] == "False"


def test_failed_manual_run_degrades_with_reason():
    jobs = [job("manual-1", "2026-11-23T05:00:00Z", [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                      "message": "Job has reached the specified backoff limit",
                                                      "lastTransitionTime": "2026-11-23T05:02:00Z"}], manual=True)]
    st = derive_status(ScheduleResource.from_body(SCHEDULE), CJ, jobs, NOW)
    assert st["lastRun"]["trigger"] == "manual" and st["lastRun"]["outcome"] == "Failed"
    assert st["lastRun"]["end"] == "2026-11-23T05:02:00Z"
    d = cond(st, "Degraded")
    assert d["status"] == "True" and d["reason"] == "LastRunFailed" and "BackoffLimitExceeded" in d["message"]


def test_running_job_and_active_count():
    cj = copy.deepcopy(CJ)
    cj["status"]["active"] = [{"name": "b-3"}]
    st = derive_status(ScheduleResource.from_body(SCHEDULE), cj, [job("b-3", "2026-11-23T07:29:00Z")], NOW)
    assert st["active"] == 1 and st["lastRun"]["outcome"] == "Running" and "end" not in st["lastRun"]


def test_disabled_schedule_is_suspended_with_no_next_runs():
    s = copy.deepcopy(SCHEDULE)
    s["spec"]["enabled"] = False
    st = derive_status(ScheduleResource.from_body(s), CJ, [], NOW)
    assert st["nextRuns"] == [] and cond(st, "Suspended")["status"] == "True"
    assert cond(st, "Ready")["status"] == "True"


def test_invalid_spec_is_not_ready_and_degraded_with_the_message():
    st = derive_status(ScheduleResource.from_body(SCHEDULE), CJ, [], NOW, problem=Problem("InvalidSpec", "spec.timezone='Mars/Base': unknown time zone"))
    r = cond(st, "Ready")
    assert r["status"] == "False" and r["reason"] == "InvalidSpec" and "Mars/Base" in r["message"]
    assert st["nextRuns"] == []


def test_transition_time_is_kept_while_the_status_holds():
    first = derive_status(ScheduleResource.from_body(SCHEDULE), CJ, [], NOW)
    later = NOW + dt.timedelta(minutes=10)
    s = {**SCHEDULE, "status": first}
    again = derive_status(ScheduleResource.from_body(s), CJ, [], later)
    assert again == first  # nothing new: identical status, so no write
    broken = derive_status(ScheduleResource.from_body(s), CJ, [], later, problem=Problem("InvalidSpec", "bad"))
    assert cond(broken, "Ready")["lastTransitionTime"] == "2026-11-23T07:40:00Z"
    assert cond(broken, "Suspended")["lastTransitionTime"] == cond(first, "Suspended")["lastTransitionTime"]


def test_last_run_is_the_newest_job():
    jobs = [job("b-10", "2026-11-23T02:00:00Z"), job("b-9", "2026-11-22T02:00:00Z")]
    assert last_run(jobs)["job"] == "b-10"
    assert last_run([]) is None


def test_a_job_failed_by_the_pod_failure_policy_says_how_the_run_ended():
    """The message the Job controller writes for a FailJob rule (Kubernetes 1.31+)."""
    partial = job("b-3", "2026-11-23T02:00:00Z", [{
        "type": "Failed", "status": "True", "reason": "PodFailurePolicy",
        "message": "Container ingest for pod data/b-3-x7k2p failed with exit code 3 matching FailJob rule at index 0"}])
    assert last_run([partial])["reason"] == ("Partial: the run committed, but some repairs failed; their gaps stay open "
                                             "with the reason (exit code 3)")
    other = job("b-4", "2026-11-23T03:00:00Z", [{
        "type": "Failed", "status": "True", "reason": "PodFailurePolicy",
        "message": "Container ingest for pod data/b-4-q failed with exit code 42 matching FailJob rule at index 0"}])
    assert last_run([other])["reason"].startswith("PodFailurePolicy: Container ingest for pod data/b-4-q failed with exit code 42")


JOB_CONDITIONS = st.sampled_from([[], [{"type": "Complete", "status": "True"}],
                                  [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}],
                                  [{"type": "Failed", "status": "False"}]])


@settings(max_examples=200, deadline=None)
@given(
    enabled=st.booleans(),
    problem=st.one_of(st.none(), st.builds(Problem, st.just("InvalidSpec"), st.text(min_size=1, max_size=40))),
    jobs=st.lists(st.tuples(st.integers(0, 10_000), JOB_CONDITIONS, st.booleans()), max_size=5),
    minutes=st.integers(0, 60 * 24 * 400),
    later=st.integers(0, 59),
    coverage=st.one_of(st.none(), st.sampled_from([
        {"expected": 30, "present": 30, "missing": 0, "repaired": 2, "gapsOpen": 0, "bytes": 9, "percent": 100.0, "job": "b-1"},
        {"expected": 30, "present": 28, "missing": 2, "repaired": 0, "gapsOpen": 2, "oldestOpenGap": "2026-11-20", "bytes": 0,
         "percent": 93.3, "job": "b-2"}])),
)
def test_status_is_a_fixed_point_when_nothing_changes(enabled, problem, jobs, minutes, later, coverage):
    s = copy.deepcopy(SCHEDULE)
    s["spec"]["enabled"] = enabled
    now = NOW + dt.timedelta(minutes=minutes)
    js = [job(f"b-{i}", (NOW + dt.timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"), c, manual=man)
          for i, (m, c, man) in enumerate(jobs)]
    first = derive_status(ScheduleResource.from_body(s), CJ, js, now, problem, coverage=coverage)
    assert [c["type"] for c in first["conditions"]] == ["Ready", "Suspended", "Degraded", "Complete", "Stale"]
    assert all(c["status"] in ("True", "False") for c in first["conditions"][:3])
    assert first["conditions"][3]["status"] == ("Unknown" if coverage is None else "True" if coverage["gapsOpen"] == 0 else "False")
    assert (first["conditions"][4]["status"] == "Unknown") == (problem is not None or not enabled)
    # Fed back, with a clock that has passed neither the first next run nor the Stale
    # deadline (each a reconcile the timer makes): identical, so no write.
    s["status"] = first
    again_at = now + dt.timedelta(seconds=later)
    if first["nextRuns"]:
        again_at = min(again_at, dt.datetime.strptime(first["nextRuns"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc) - dt.timedelta(seconds=1))
    deadline = stale_deadline(ScheduleResource.from_body(s), CJ, js, now)
    if deadline is not None and deadline > now:
        again_at = min(again_at, deadline - dt.timedelta(seconds=1))
    again_at = max(again_at, now)
    assert derive_status(ScheduleResource.from_body(s), CJ, js, again_at, problem, coverage=coverage) == first


def test_times_are_normalised_to_rfc3339_z():
    from ingestion_operator.status import iso
    assert iso("2026-11-23T07:35:17+00:00") == "2026-11-23T07:35:17Z"
    assert iso("2026-11-23T08:35:17+01:00") == "2026-11-23T07:35:17Z"
    assert iso("2026-11-23T07:35:17Z") == "2026-11-23T07:35:17Z"


def test_a_never_firing_schedule_is_not_ready_and_says_why():
    s = copy.deepcopy(SCHEDULE)
    s["spec"]["schedule"] = "0 0 30 2 *"
    res = ScheduleResource.from_body(s)
    assert res.problem.reason == "NeverFires" and res.spec is None
    st = derive_status(res, CJ, [], NOW, res.problem)
    ready = cond(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "NeverFires" and "never fires" in ready["message"]
    assert st["nextRuns"] == []
    # a leap day fires every four years: valid
    s["spec"]["schedule"] = "0 0 29 2 *"
    assert ScheduleResource.from_body(s).errors == ()


def test_coverage_goes_on_status_and_decides_complete():
    full = {"expected": 20, "present": 20, "missing": 0, "repaired": 3, "gapsOpen": 0, "bytes": 7, "percent": 100.0, "job": "b-7"}
    st = derive_status(ScheduleResource.from_body(SCHEDULE), CJ, [], NOW, coverage=full)
    assert st["coverage"] == full
    done = next(c for c in st["conditions"] if c["type"] == "Complete")
    assert (done["status"], done["reason"]) == ("True", "AllPresent") and "all 20 expected cells present" in done["message"]
    holes = {**full, "present": 18, "missing": 2, "gapsOpen": 3, "oldestOpenGap": "2026-11-02", "percent": 90.0}
    st = derive_status(ScheduleResource.from_body(SCHEDULE), CJ, [], NOW, coverage=holes)
    c = next(c for c in st["conditions"] if c["type"] == "Complete")
    assert (c["status"], c["reason"]) == ("False", "CellsMissing")
    assert c["message"] == "18 of 20 expected cells present (90.0%), 3 gap(s) open, the oldest from 2026-11-02 (Job b-7)"
    none = next(c for c in derive_status(ScheduleResource.from_body(SCHEDULE), CJ, [], NOW)["conditions"] if c["type"] == "Complete")
    assert (none["status"], none["reason"]) == ("Unknown", "NoCoverageYet")
    # the message names the two largest causes (issue 24, point 5)
    causes = {"not-due": 1, "late-upstream": 0, "withdrawn": 0, "fetch-failed": 0, "verification-failed": 0, "quarantined": 2,
              "deferred": 0}
    st = derive_status(ScheduleResource.from_body(SCHEDULE), CJ, [], NOW, coverage={**holes, "gapsByCause": causes})
    c = next(c for c in st["conditions"] if c["type"] == "Complete")
    assert c["message"] == ("18 of 20 expected cells present (90.0%), 3 gap(s) open (quarantined 2, not-due 1), the oldest "
                            "from 2026-11-02 (Job b-7)")
    three = {**causes, "deferred": 1}
    st = derive_status(ScheduleResource.from_body(SCHEDULE), CJ, [], NOW, coverage={**holes, "gapsOpen": 4, "gapsByCause": three})
    assert "4 gap(s) open (quarantined 2, not-due 1, ...)" in next(c for c in st["conditions"] if c["type"] == "Complete")["message"]


def _stale(schedule: dict, cronjob: dict | None, jobs: list, now: dt.datetime) -> dict:
    return cond(derive_status(ScheduleResource.from_body(schedule), cronjob, jobs, now), "Stale")


def test_stale_counts_from_the_last_success_with_a_default_from_the_interval():
    # daily at 02:00: twice a day plus the run's hour is 49 h after the last success (02:03:10)
    fresh = _stale(SCHEDULE, CJ, [], NOW)
    assert (fresh["status"], fresh["reason"]) == ("False", "RecentSuccess")
    assert fresh["message"] == ("a run succeeded at 2026-11-23T02:03:10Z; stale after 2026-11-25T03:03:10Z "
                                "(limit 49h0m0s)")
    at = dt.datetime(2026, 11, 25, 3, 3, 10, tzinfo=dt.timezone.utc)
    assert _stale(SCHEDULE, CJ, [], at - dt.timedelta(seconds=1))["status"] == "False"
    stale = _stale(SCHEDULE, CJ, [], at)
    assert (stale["status"], stale["reason"]) == ("True", "NoRecentSuccess")
    assert stale["message"] == "no run has succeeded since 2026-11-23T02:03:10Z, longer than the limit of 49h0m0s"
    # a later success (a manual run the CronJob's lastSuccessfulTime does not show) counts
    manual = job("b-9", "2026-11-24T10:00:00Z", [{"type": "Complete", "status": "True"}], manual=True,
                 completion="2026-11-24T10:02:00Z")
    assert _stale(SCHEDULE, CJ, [manual], at)["message"].startswith("a run succeeded at 2026-11-24T10:02:00Z;")
    # a failed run does not
    failed = job("b-8", "2026-11-24T10:00:00Z", [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    assert _stale(SCHEDULE, CJ, [failed], at)["status"] == "True"


def test_stale_limit_from_the_spec_and_before_the_first_success():
    s = copy.deepcopy(SCHEDULE)
    s["metadata"]["creationTimestamp"] = "2026-11-23T07:00:00Z"
    s["spec"]["staleAfterSeconds"] = 3600
    never = {"metadata": CJ["metadata"], "status": {}}
    c = _stale(s, never, [], NOW)
    assert (c["status"], c["reason"]) == ("False", "NoSuccessYet")
    assert c["message"] == "no run has succeeded yet; stale after 2026-11-23T08:00:00Z (limit 1h0m0s from creation)"
    c = _stale(s, never, [], NOW + dt.timedelta(minutes=30))
    assert (c["status"], c["reason"]) == ("True", "NeverSucceeded")
    assert c["message"] == ("no run has succeeded since the schedule was created at 2026-11-23T07:00:00Z, "
                            "longer than the limit of 1h0m0s")


def test_stale_is_not_judged_while_disabled_or_invalid():
    s = copy.deepcopy(SCHEDULE)
    s["spec"]["enabled"] = False
    c = _stale(s, CJ, [], NOW + dt.timedelta(days=30))
    assert (c["status"], c["reason"]) == ("Unknown", "NotJudged") and c["message"].startswith("spec.enabled is false")
    s["spec"]["enabled"], s["spec"]["schedule"] = True, "0 0 30 2 *"
    c = _stale(s, CJ, [], NOW)
    assert (c["status"], c["reason"]) == ("Unknown", "NotJudged") and c["message"].startswith("the spec is not valid")


def test_default_stale_limits_follow_the_schedules_longest_interval():
    from ingestion_contract import parse_spec

    def limit(schedule, timezone="UTC", **extra):
        return parse_spec({**SCHEDULE["spec"], "schedule": schedule, "timezone": timezone, **extra}).stale_after()

    assert limit("0 2 * * *") == dt.timedelta(hours=49)
    assert limit("*/2 * * * *", "Asia/Kathmandu") == dt.timedelta(minutes=4, hours=1)
    assert limit("0 9 * * MON-FRI", "Europe/London") == dt.timedelta(days=6, hours=1)  # the weekend is the interval
    assert limit("0 0 1 * *") == dt.timedelta(days=62, hours=1)
    assert limit("0 2 * * *", activeDeadlineSeconds=60) == dt.timedelta(hours=48, minutes=1)
    assert limit("0 2 * * *", staleAfterSeconds=600) == dt.timedelta(minutes=10)
