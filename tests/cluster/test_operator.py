"""The operator end to end on the real control plane, driven as a user would (kubectl).

The schedules that must tick are created first (module fixture `ticking`), so their
minute boundaries pass while the other tests run.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from ingestion_contract.cron import spread

from ..conftest import _wait_for, REPO, kubectl
from ..kube import apply_schedule, cond, events, get, get_cronjob, get_upstream, last_run, ready, schedule_yaml

EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def ticking(cluster, operator, module_namespaces):
    """Two every-minute schedules, one whose runs succeed and one whose runs fail; and one every
    two minutes in Asia/Kathmandu (UTC+05:45: even local minutes are odd UTC ones), whose
    nextRuns are recorded now for the CronJob controller to confirm later (``kathmandu``)."""
    ok = module_namespaces("tick-ok", mode="complete")
    bad = module_namespaces("tick-bad", mode="fail")
    for ns in (ok, bad):
        kubectl(cluster, "apply", "-n", ns, "-f", "-",
                input=schedule_yaml("every-minute", schedule="* * * * *", timezone="Europe/London",
                                    startingDeadlineSeconds=120, backoffLimit=0))
    obj = apply_schedule(cluster, ok, "kathmandu", schedule="*/2 * * * *", timezone="Asia/Kathmandu", startingDeadlineSeconds=100)
    KATHMANDU_NEXT_RUNS[:] = obj["status"]["nextRuns"]
    # Fires once a year and may go 60 s without a success: Stale turns True while the other
    # tests run, with no event to announce it (``test_stale_turns_true_on_time_...``).
    STALE_FIRST.update(apply_schedule(cluster, ok, "stale", schedule="0 0 1 1 *", staleAfterSeconds=60))
    return ok, bad


KATHMANDU_NEXT_RUNS: list[str] = []  # as the operator first published them
STALE_FIRST: dict = {}  # the "stale" schedule as first Ready


def test_examples_apply_become_ready_and_print_columns(cluster, operator, ticking, namespace, wait_for):
    kubectl(cluster, "apply", "-n", namespace, "-f", str(EXAMPLES))
    docs = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "IngestionSchedule"]
    assert len(names) >= 4 and {d["kind"] for d in docs} == {"IngestionSchedule", "IngestionUpstream"}
    for name in names:
        obj = wait_for(lambda: ready(cluster, namespace, name), 30, f"{name} Ready")
        cj = get_cronjob(cluster, namespace, obj["status"]["cronJobName"])
        spec = obj["spec"]
        # an example written with H fires at its concrete minute for this namespace and name
        assert cj["spec"]["schedule"] == spread(spec["schedule"], f"{namespace}/{name}") and cj["spec"]["timeZone"] == spec["timezone"]
        assert cj["spec"]["concurrencyPolicy"] == "Forbid"
        assert cj["spec"]["startingDeadlineSeconds"] == spec["startingDeadlineSeconds"]
        assert cj["spec"]["suspend"] is (not spec["enabled"])
        owner = cj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("IngestionSchedule", name, obj["metadata"]["uid"], True)
        assert len(obj["status"]["nextRuns"]) == (5 if spec["enabled"] else 0)
    table = kubectl(cluster, "get", "isched", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    for column in ("NAME", "SCHEDULE", "TIMEZONE", "ENABLED", "NEXT", "RUN", "LAST", "SUCCESS", "READY", "AGE"):
        assert column in header
    row = next(line for line in table.splitlines() if line.startswith("london-weekdays"))
    assert "30 6 * * MON-FRI" in row and "Europe/London" in row and "True" in row
    explain = kubectl(cluster, "explain", "isched.spec.startingDeadlineSeconds").stdout
    assert "Misfire window" in explain
    # the Binance Vision upstream: the four enabled schedules of data.binance.vision share its 14
    # (70 % of 20) evenly, the remainder to the first by name
    up = wait_for(lambda: (u := get_upstream(cluster, namespace, "binance-vision")).get("status", {}).get("sharerCount") == 4 and u,
                  30, "the example upstream's sharers")
    assert [(x["name"], x["share"]) for x in up["status"]["sharers"]] == [
        ("binance-spot-klines-intervals", 4), ("binance-spot-klines-monthly", 4), ("binance-um-klines-daily", 3),
        ("binance-um-klines-hourly", 3)]
    wait_for(lambda: (get(cluster, namespace, "binance-um-klines-daily")["status"].get("upstream") or {}).get("requestsPerSecond") == 3,
             30, "the daily schedule's share in its status")
    row = next(line for line in kubectl(cluster, "get", "iup", "-n", namespace).stdout.splitlines() if line.startswith("binance-vision"))
    assert row.split()[1:6] == ["s3://data.binance.vision", "20", "4", "14/6", "True"]


def test_update_schedule_and_timezone_rerenders_the_cronjob(cluster, operator, namespace, wait_for):
    before = apply_schedule(cluster, namespace, "s")
    assert before["status"]["nextRuns"][0].endswith("T02:00:00Z")
    kubectl(cluster, "patch", "isched", "s", "-n", namespace, "--type", "merge",
            "-p", '{"spec": {"schedule": "30 6 * * 1-5", "timezone": "America/New_York"}}')
    after = wait_for(lambda: ready(cluster, namespace, "s"), 30, "s Ready at generation 2")
    assert after["status"]["observedGeneration"] == 2
    cj = get_cronjob(cluster, namespace, "s")
    assert (cj["spec"]["schedule"], cj["spec"]["timeZone"]) == ("30 6 * * 1-5", "America/New_York")
    # 06:30 in New York is 11:30Z in winter (EST) and 10:30Z in summer (EDT)
    assert all(t[11:16] in ("11:30", "10:30") for t in after["status"]["nextRuns"])
    assert any(e["reason"] == "CronJobUpdated" for e in events(cluster, namespace, "s"))


def test_disable_suspends_and_enable_resumes(cluster, operator, namespace, wait_for):
    apply_schedule(cluster, namespace, "d")
    kubectl(cluster, "patch", "isched", "d", "-n", namespace, "--type", "merge", "-p", '{"spec": {"enabled": false}}')
    off = wait_for(lambda: ready(cluster, namespace, "d"), 30, "d reconciled disabled")
    assert get_cronjob(cluster, namespace, "d")["spec"]["suspend"] is True
    assert cond(off, "Suspended")["status"] == "True" and off["status"]["nextRuns"] == []
    kubectl(cluster, "patch", "isched", "d", "-n", namespace, "--type", "merge", "-p", '{"spec": {"enabled": true}}')
    on = wait_for(lambda: ready(cluster, namespace, "d"), 30, "d reconciled enabled")
    assert get_cronjob(cluster, namespace, "d")["spec"]["suspend"] is False
    assert cond(on, "Suspended")["status"] == "False" and len(on["status"]["nextRuns"]) == 5


@pytest.mark.parametrize("spec,message", [
    ({"schedule": "0 2 * *"}, "spec.schedule"),
    ({"schedule": "TZ=UTC 0 2 * * *"}, "set spec.timezone instead"),
    ({"schedule": "@every 1h"}, "@every is not supported"),
    ({"schedule": "0\t2 * * *"}, "schedule must have exactly 5 fields"),
    ({"storage": {}}, "set exactly one of storage.duckdb or storage.objectStore"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{date}"}}, "set exactly one of target.symbols"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}", "symbols": ["X"]}}, "keyTemplate must contain {symbol} and {date}"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{date}", "symbols": ["X"], "period": "monthly"}},
     "target.keyTemplate names a month with {month} exactly when target.period is monthly"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{month}", "symbols": ["X"]}},
     "target.keyTemplate names a month with {month} exactly when target.period is monthly"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{date}", "symbols": ["X"], "period": "weekly"}},
     'Unsupported value: "weekly"'),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{interval}/{date}", "symbols": ["X"],
                 "dimensions": {"interval": ["1m", "1m"]}}}, "Duplicate value"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{interval}/{date}", "symbols": ["X"],
                 "dimensions": {"interval": []}}}, "should have at least 1 items"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{interval}/{date}", "symbols": ["X"],
                 "dimensions": {"interval": ["1/m"]}}}, "spec.target.dimensions.interval[0]"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{month}", "symbols": ["X"], "period": "monthly",
                 "archive": {"keyTemplate": "m/{symbol}/{month}"}}}, "target.archive needs target.period: daily"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{date}", "symbols": ["X"],
                 "archive": {"keyTemplate": "m/{symbol}/{date}"}}}, "archive.keyTemplate must contain {symbol} and {month}"),
    ({"target": {"bucket": "b.example", "keyTemplate": "{symbol}/{date}", "symbols": ["X"],
                 "archive": {"dailyDays": 0, "keyTemplate": "m/{symbol}/{month}"}}}, "spec.target.archive.dailyDays"),
    ({"startingDeadlineSeconds": -1}, "spec.startingDeadlineSeconds"),
    ({"repair": {"load": "xlsx"}}, "spec.repair.load"),
    ({"timezone": ""}, "spec.timezone"),
])
def test_schema_refuses_bad_input_at_the_door(cluster, operator, namespace, spec, message):
    out = kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("bad", **spec), check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr



def test_a_schedule_of_months_and_intervals_is_accepted_and_its_coverage_by_dimension_is_kept(cluster, operator, namespace,
                                                                                               wait_for):
    """Binance Vision's monthly archives of two intervals, with a retention, pass the door and become Ready; the
    status schema keeps status.coverage.byDimension as the operator writes it (a server-side
    dry run of the status patch: the API server prunes what its schema does not name)."""
    from ingestion_contract import Coverage

    target = {"bucket": "data.binance.vision", "anonymous": True, "symbols": ["BTCUSDT"], "period": "monthly",
              "keyTemplate": "data/spot/monthly/klines/{symbol}/{interval}/{symbol}-{interval}-{month}.zip",
              "dimensions": {"interval": ["1m", "1h"]}, "lookbackDays": 62}
    storage = {"duckdb": {"claimName": "ingestion-data"},
               "retention": {"default": "1825d", "dimensions": {"interval": {"1m": "90d"}}, "history": True}}
    obj = apply_schedule(cluster, namespace, "months", target=target, storage=storage)
    assert obj["spec"]["storage"]["retention"] == storage["retention"]  # the schema keeps the retention whole
    cov = Coverage(4, 3, 1, 3, 1, "2026-10-01", 10, "succeeded", 0, {"late-upstream": 1},
                   by_dimension={"interval": {"1m": (2, 2, 0), "1h": (2, 1, 1)}}).as_status()
    out = kubectl(cluster, "patch", "isched", "months", "-n", namespace, "--subresource=status", "--type", "merge",
                  "--dry-run=server", "-o", "json", "-p", json.dumps({"status": {"coverage": cov}}))
    kept = json.loads(out.stdout)["status"]["coverage"]
    assert kept["byDimension"] == {"interval": {"1m": {"expected": 2, "present": 2, "gapsOpen": 0},
                                                "1h": {"expected": 2, "present": 1, "gapsOpen": 1}}}
    assert kept == cov

def test_a_name_too_long_for_its_jobs_is_refused_at_the_door(cluster, operator, namespace):
    out = kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("n" * 53), check=False)
    assert out.returncode != 0 and "metadata.name must have at most 52 characters" in out.stderr, out.stderr
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("n" * 52))  # the longest that fits


def test_invalid_spec_keeps_last_good_cronjob_then_recovers(cluster, operator, namespace, wait_for):
    apply_schedule(cluster, namespace, "tz")
    good = get_cronjob(cluster, namespace, "tz")
    errors_before = operator.metrics().get("ingestion_operator_reconcile_errors_total", 0)
    kubectl(cluster, "patch", "isched", "tz", "-n", namespace, "--type", "merge",
            "-p", '{"spec": {"timezone": "Mars/Olympus_Mons", "schedule": "0 25 * * *"}}')
    bad = wait_for(lambda: ready(cluster, namespace, "tz", status="False"), 30, "tz Ready=False")
    r = cond(bad, "Ready")
    assert r["reason"] == "InvalidSpec"
    assert "spec.timezone='Mars/Olympus_Mons'" in r["message"] and "spec.schedule='0 25 * * *'" in r["message"]
    assert cond(bad, "Degraded")["status"] == "True" and bad["status"]["nextRuns"] == []
    warnings = [e for e in events(cluster, namespace, "tz") if e["type"] == "Warning" and e["reason"] == "InvalidSpec"]
    assert len(warnings) == 1 and "Mars/Olympus_Mons" in warnings[0]["message"]
    # the last good CronJob is untouched, and the operator neither crashed nor looped
    assert get_cronjob(cluster, namespace, "tz")["metadata"]["resourceVersion"] == good["metadata"]["resourceVersion"]
    # No hot loop. A barrier first: a harmless annotation makes a version the operator must
    # reconcile; once its log says it acted on exactly that version, nothing may have been
    # written since (other schedules may tick meanwhile).
    n_events = len(events(cluster, namespace, "tz"))
    kubectl(cluster, "annotate", "isched", "tz", "-n", namespace, "test.ingestion.dev/barrier=1")
    version = get(cluster, namespace, "tz")["metadata"]["resourceVersion"]
    (seen,) = wait_for(lambda: operator.log_events("reconciled", namespace=namespace, name="tz", observed=version), 30,
                       f"the operator to reconcile tz at resourceVersion {version}")
    assert (seen["result"], seen["writes"]) == ("invalid", "0"), seen
    assert get(cluster, namespace, "tz")["metadata"]["resourceVersion"] == version, "the operator keeps writing for an invalid spec"
    assert len(events(cluster, namespace, "tz")) == n_events
    assert operator.metrics().get("ingestion_operator_reconcile_errors_total", 0) == errors_before
    assert operator.proc.poll() is None
    kubectl(cluster, "patch", "isched", "tz", "-n", namespace, "--type", "merge",
            "-p", '{"spec": {"timezone": "Asia/Tokyo", "schedule": "0 9 * * *"}}')
    wait_for(lambda: ready(cluster, namespace, "tz"), 30, "tz Ready again")
    assert get_cronjob(cluster, namespace, "tz")["spec"]["timeZone"] == "Asia/Tokyo"
    assert any(e["reason"] == "Recovered" for e in events(cluster, namespace, "tz"))


def test_a_symbol_with_its_own_range_reaches_the_job_and_a_bad_one_is_refused(cluster, operator, namespace, wait_for):
    """Issue 24, point 3: target.symbolRanges ({name, from, until}) beside target.symbols goes
    through the real API server (its CEL rules compile and run there), the range reaches the
    job's spec, and a range the schema cannot refuse (a date that does not exist) is an
    InvalidSpec condition naming the item."""
    ranged = {"name": "LUNAUSDT", "from": "2021-01-01", "until": "2022-05-31"}
    target = {"bucket": "data.binance.vision", "anonymous": True, "symbols": ["BTCUSDT"], "symbolRanges": [ranged],
              "keyTemplate": "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip"}
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("ranged", target=target))
    wait_for(lambda: ready(cluster, namespace, "ranged"), 30, "ranged Ready")
    env = get_cronjob(cluster, namespace, "ranged")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    (spec,) = [json.loads(e["value"]) for e in env if e["name"] == "INGESTION_SPEC"]
    assert (spec["target"]["symbols"], spec["target"]["symbolRanges"]) == (["BTCUSDT"], [ranged])
    backwards = {**target, "symbolRanges": [{**ranged, "from": "2023-01-01"}]}
    out = kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("ranged", target=backwards), check=False)
    assert out.returncode != 0 and "from must not be after until" in out.stderr, out.stderr
    only = {**target, "symbols": [], "symbolRanges": [{"name": "LUNAUSDT", "until": "2022-02-30"}]}  # ranges alone will do
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("ranged", target=only))
    r = cond(wait_for(lambda: ready(cluster, namespace, "ranged", status="False"), 30, "ranged Ready=False"), "Ready")
    assert r["reason"] == "InvalidSpec" and "spec.target.symbolRanges[0]" in r["message"] and "until must be a date" in r["message"]


def test_hand_edited_cronjob_is_put_back_and_deleted_one_recreated(cluster, operator, namespace, wait_for):
    apply_schedule(cluster, namespace, "drift")
    kubectl(cluster, "patch", "cronjob", "drift", "-n", namespace, "--type", "merge",
            "-p", '{"spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Allow", "suspend": true}}')
    wait_for(lambda: (cj := get_cronjob(cluster, namespace, "drift"))["spec"]["schedule"] == "0 2 * * *"
             and cj["spec"]["concurrencyPolicy"] == "Forbid" and cj["spec"]["suspend"] is False, 20, "drift corrected")
    uid = get_cronjob(cluster, namespace, "drift")["metadata"]["uid"]
    kubectl(cluster, "delete", "cronjob", "drift", "-n", namespace)
    wait_for(lambda: (cj := get_cronjob(cluster, namespace, "drift")) and cj["metadata"]["uid"] != uid, 20, "CronJob recreated")


def test_status_follows_scheduled_and_manual_runs(cluster, operator, ticking, wait_for):
    ok, bad = ticking

    obj = wait_for(lambda: last_run(cluster, ok, "every-minute", "Succeeded", "scheduled"), 100, "a scheduled run to succeed")
    st = obj["status"]
    assert st["lastSuccessfulTime"] and st["lastScheduleTime"] and st["lastRun"]["end"]
    assert st["lastRun"]["job"].startswith("every-minute-")
    assert cond(obj, "Degraded")["status"] == "False"

    kubectl(cluster, "create", "job", "manual-1", "--from=cronjob/every-minute", "-n", ok)
    obj = wait_for(lambda: last_run(cluster, ok, "every-minute", "Succeeded", "manual"), 30, "the manual run in status")
    assert obj["status"]["lastRun"]["job"] == "manual-1"

    obj = wait_for(lambda: last_run(cluster, bad, "every-minute", "Failed", "scheduled"), 100, "a failing scheduled run in status")
    d = cond(obj, "Degraded")
    assert d["status"] == "True" and d["reason"] == "LastRunFailed" and "BackoffLimitExceeded" in d["message"]
    assert "lastSuccessfulTime" not in obj["status"]


def test_stale_turns_true_on_time_without_an_event_and_false_after_a_success(cluster, operator, ticking, wait_for):
    """Nothing happens to a schedule when its freshness limit passes: the operator's timer must
    wake for it. Then a successful manual run makes it fresh again."""
    import datetime as dt

    ok, _ = ticking
    first = cond(STALE_FIRST, "Stale")
    created = STALE_FIRST["metadata"]["creationTimestamp"]
    deadline = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc) + dt.timedelta(seconds=60)
    assert (first["status"], first["reason"]) == ("False", "NoSuccessYet"), first
    assert first["message"] == f"no run has succeeded yet; stale after {deadline:%Y-%m-%dT%H:%M:%SZ} (limit 1m0s from creation)"
    wait = max(0.0, (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds())
    obj = wait_for(lambda: cond(o := get(cluster, ok, "stale"), "Stale").get("status") == "True" and o, wait + 30, "Stale=True")
    stale = cond(obj, "Stale")
    assert stale["reason"] == "NeverSucceeded" and stale["message"] == (
        f"no run has succeeded since the schedule was created at {created}, longer than the limit of 1m0s")
    # On time: the timer wakes a second after the deadline (NextRunTimer's grace); the rest is
    # a busy worker pool on a slow machine.
    late = deadline + dt.timedelta(seconds=15)
    assert f"{deadline:%Y-%m-%dT%H:%M:%SZ}" <= stale["lastTransitionTime"] <= f"{late:%Y-%m-%dT%H:%M:%SZ}", stale
    # And the timer woke for it: nothing else arms it for this schedule (no Job, no pause, its
    # next run is next January). Which reconcile wrote the flip is not asserted: in one CI run
    # another reconcile of it (its trigger unrecorded) wrote the flip first, and the
    # timer's found nothing left to write.
    seen = operator.log_events("reconciled", namespace=ok, name="stale")
    assert any(e["trigger"] == "timer" for e in seen), [
        {k: e.get(k) for k in ("trigger", "result", "observed", "writes")} for e in seen]
    assert cond(obj, "Ready")["status"] == "True" and obj["status"]["nextRuns"][0].endswith("-01-01T00:00:00Z")
    header, row = kubectl(cluster, "get", "isched", "stale", "-n", ok).stdout.splitlines()
    assert header.split()[-2:] == ["STALE", "AGE"] and row.split()[-2] == "True", (header, row)

    kubectl(cluster, "create", "job", "stale-manual", "--from=cronjob/stale", "-n", ok)
    obj = wait_for(lambda: cond(o := get(cluster, ok, "stale"), "Stale").get("status") == "False" and o, 60, "Stale=False again")
    fresh = cond(obj, "Stale")
    end = obj["status"]["lastRun"]["end"]
    assert obj["status"]["lastRun"]["job"] == "stale-manual" and fresh["reason"] == "RecentSuccess"
    assert fresh["message"].startswith(f"a run succeeded at {end}; stale after "), fresh


def test_restart_with_nothing_changed_makes_zero_writes(cluster, operator, namespace, wait_for):
    apply_schedule(cluster, namespace, "quiet")
    operator.stop()  # whatever the old process was still writing, it has written
    versions = {kind: kubectl(cluster, "get", kind, "quiet", "-n", namespace, "-o", "jsonpath={.metadata.resourceVersion}").stdout
                for kind in ("isched", "cronjob")}
    events = kubectl(cluster, "get", "events", "-n", namespace, "-o", "name").stdout.split()
    operator.start()
    # The new process lists every schedule and CronJob before it reconciles any, and the
    # schedule's and its CronJob's reconciles merge into one: wait until its log shows it, at
    # the version read above, and that it wrote nothing.
    def listed_and_reconciled():
        listed = {e["kind"] for e in operator.log_events("watch_listed")}
        seen = operator.log_events("reconciled", namespace=namespace, name="quiet")
        return seen if {"IngestionSchedule", "CronJob", "IngestionUpstream"} <= listed and seen else None

    seen = wait_for(listed_and_reconciled, 30, "the restarted operator to list everything and reconcile quiet")
    assert len(seen) == 1 and seen[0]["trigger"] in ("schedule", "cronjob"), seen  # whichever was listed first
    assert all(e["result"] == "unchanged" and e["writes"] == "0" and e["observed"] == versions["isched"] for e in seen), seen
    m = operator.metrics()
    writes = {k: v for k, v in m.items() if k.startswith("ingestion_operator_api_writes_total") and v}
    # Other modules' schedules may tick meanwhile; this namespace's objects must not change.
    after = {kind: kubectl(cluster, "get", kind, "quiet", "-n", namespace, "-o", "jsonpath={.metadata.resourceVersion}").stdout
             for kind in ("isched", "cronjob")}
    assert after == versions
    assert kubectl(cluster, "get", "events", "-n", namespace, "-o", "name").stdout.split() == events
    # Only ticking schedules' status, and the events of their transitions (a run that ended).
    assert not any("cronjobs" in k for k in writes), writes
    assert all('resource="ingestionschedules/status"' in k or 'resource="events",verb="create"' in k for k in writes), writes


def test_deleting_the_schedule_garbage_collects_cronjob_jobs_and_pods(cluster, operator, namespaces, wait_for):
    ns = namespaces("gc", mode="hold")
    apply_schedule(cluster, ns, "gone")
    kubectl(cluster, "create", "job", "gone-manual", "--from=cronjob/gone", "-n", ns)
    wait_for(lambda: kubectl(cluster, "get", "pods", "-n", ns, "-o", "name").stdout.strip(), 30, "the held pod")
    kubectl(cluster, "delete", "isched", "gone", "-n", ns)

    def all_gone():
        left = kubectl(cluster, "get", "cronjobs,jobs,pods", "-n", ns, "-o", "name").stdout.strip()
        return not left
    wait_for(all_gone, 60, "CronJob, Job and Pod to be garbage-collected")


def test_metrics_and_health_endpoints(cluster, operator):
    m = operator.metrics()
    assert any(k.startswith("ingestion_operator_reconciles_total") for k in m)
    assert "ingestion_operator_reconcile_duration_seconds_count" in m
    assert m["ingestion_operator_work_queue_depth"] >= 0  # served (a quiet operator's queue is near empty)
    assert operator._healthy()
    log_lines = [line for line in Path(operator.log).read_text().splitlines() if line.startswith("{")]
    assert log_lines and all("message" in json.loads(line) for line in log_lines[:20])


def test_next_runs_move_on_when_forbid_skips_a_tick(cluster, operator, namespaces, wait_for):
    """No Job appears for a tick that Forbid skips, so no event reaches the operator: its
    next-run timer alone must move status.nextRuns past the skipped tick."""
    import datetime as dt

    ns = namespaces("skip", mode="hold")  # every pod is held: a run stays active
    apply_schedule(cluster, ns, "skip", schedule="* * * * *", timezone="Asia/Kolkata")
    kubectl(cluster, "create", "job", "skip-held", "--from=cronjob/skip", "-n", ns)
    wait_for(lambda: (get_cronjob(cluster, ns, "skip").get("status") or {}).get("active"), 60, "the held run active")
    # The first tick still ahead (a tick that passed while the held run was starting may
    # have run, and the status may not have moved past it yet).
    now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    tick = next(t for t in get(cluster, ns, "skip")["status"]["nextRuns"] if t > now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    when = dt.datetime.strptime(tick, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    time.sleep(max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 1)
    moved = wait_for(lambda: (get(cluster, ns, "skip")["status"]["nextRuns"] or [tick])[0] > tick, 30,
                     f"nextRuns to move past the skipped tick {tick}")
    assert moved
    jobs = kubectl(cluster, "get", "jobs", "-n", ns, "-o", "name").stdout.split()
    skipped = f"job.batch/skip-{int(when.timestamp()) // 60}"  # the name a Job of that tick would have
    assert "job.batch/skip-held" in jobs and skipped not in jobs, jobs  # Forbid skipped it (an earlier tick may have run)


def test_next_runs_are_the_fire_times_of_the_real_cronjob_controller(cluster, operator, ticking):
    """The oracle is kube-controller-manager itself: the first two nextRuns the operator
    published for the Kathmandu schedule are exactly the ticks its CronJob controller fired
    (each Job is named after its scheduled minute), and it fired no other between them. (Two,
    not more: each further one is two more minutes of the suite spent waiting.)"""
    import datetime as dt

    ok, _ = ticking
    predicted = KATHMANDU_NEXT_RUNS[:2]
    assert len(predicted) == 2 and all(int(t[14:16]) % 2 == 1 for t in predicted), predicted  # odd UTC minutes

    def fired():
        out = kubectl(cluster, "get", "events", "-n", ok, "--field-selector", "involvedObject.name=kathmandu,reason=SuccessfulCreate",
                      "-o", "jsonpath={.items[*].message}").stdout
        minutes = [int(m) for m in re.findall(r"Created job kathmandu-(\d+)", out)]
        return sorted(dt.datetime.fromtimestamp(m * 60, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for m in minutes)

    last = dt.datetime.strptime(predicted[-1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    wait = max(0.0, (last - dt.datetime.now(dt.timezone.utc)).total_seconds())
    got = _wait_for(lambda: [t for t in fired() if predicted[0] <= t <= predicted[-1]] if predicted[-1] in fired() else None, wait + 60,
                    f"the controller's Job for {predicted[-1]}")
    assert got == predicted


PROCESS_EVENTS = {"starting", "standby", "leading", "stopped", "leadership_lost", "lease_released", "lease_error",
                  "lease_renew_error", "lease_release_failed", "watch_listed", "watch_retry", "watch_relist", "watch_error"}


def test_every_log_line_about_a_schedule_names_its_namespace_and_name(operator):
    """Run last in the module, over everything the operator logged since its last start: each
    of our lines that is not about the process itself says which schedule it is about."""
    messages = [json.loads(line).get("message", "") for line in Path(operator.log).read_text().splitlines()
                if line.startswith("{")]
    about = [m for m in messages if m.startswith("event=") and m.split()[0].removeprefix("event=") not in PROCESS_EVENTS]
    assert sum(m.startswith("event=reconciled ") for m in about) >= 3, about
    assert [m for m in about if not re.search(r"\bnamespace=[a-z0-9-]+ name=[a-z0-9.-]+\b", m)] == []


def test_a_pause_suspends_with_its_reason_and_ends_by_itself_on_time(cluster, operator, namespace, wait_for):
    """spec.pause on the real API server: the CronJob suspended, the PAUSED column and an Event
    naming who paused (kubectl's field manager) and why; at until the operator's timer resumes
    the schedule with no event to wake it, and says so."""
    import datetime as dt

    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    apply_schedule(cluster, namespace, "held", pause={"reason": "upstream migration", "until": until})
    wait_for(lambda: get_cronjob(cluster, namespace, "held")["spec"]["suspend"] is True, 30, "the CronJob suspended")
    obj = get(cluster, namespace, "held")
    assert obj["status"]["pause"] == {"reason": "upstream migration", "until": until, "by": "kubectl-client-side-apply"}
    assert obj["status"]["nextRuns"] == [] and cond(obj, "Stale")["reason"] == "NotJudged"
    table = kubectl(cluster, "get", "isched", "held", "-n", namespace).stdout.splitlines()
    assert "PAUSED" in table[0] and "upstream migration" in table[1]
    paused = [e for e in events(cluster, namespace, "held") if e["reason"] == "Paused"]
    assert len(paused) == 1 and "kubectl-client-side-apply" in paused[0]["message"], paused
    t0 = time.monotonic()
    wait_for(lambda: get_cronjob(cluster, namespace, "held")["spec"]["suspend"] is False, 60, "resumed by itself")
    resumed_at = dt.datetime.now(dt.timezone.utc)
    end = dt.datetime.strptime(until, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert (resumed_at - end).total_seconds() < 5, (resumed_at, end, time.monotonic() - t0)  # the timer woke at until
    obj = get(cluster, namespace, "held")
    assert "pause" not in obj["status"] and len(obj["status"]["nextRuns"]) == 5
    ours = sorted((e["lastTimestamp"], e["reason"]) for e in events(cluster, namespace, "held") if e["reason"] in ("Paused", "Resumed"))
    assert [reason for _, reason in ours] == ["Paused", "Resumed"]  # in time order (a list of Events is in name order)
    with pytest.raises(AssertionError):  # refused at the door: no reason
        kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("held", pause={"until": until}))
