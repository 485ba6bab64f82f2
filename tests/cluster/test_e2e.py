"""The user's whole path on the real control plane, with real S3 and Pushgateway:

apply YAML -> the operator renders a CronJob -> Kubernetes fires it -> the pod runner
executes the real `ingestion-job run` with the pod's environment -> rows in DuckDB,
metrics in the Pushgateway, lastRun on the IngestionSchedule; then a manual run with
`kubectl create job --from=cronjob/...` meets a late arrival in a shape it refuses (a
partial run: the Job fails at once through its podFailurePolicy, status says why), then
repairs it once fixed; disabling stops ticks.
"""

from __future__ import annotations

import datetime as dt
import functools
import urllib.request
import uuid

import yaml

from ingestion_dev import sampledata

from ..conftest import PUBLIC, kubectl
from ..kube import cond, get, last_run, plain_cronjob
from ..samples import store_rows

query = functools.partial(store_rows, wait=30)  # a run may hold the store's lock for a moment


def test_apply_tick_run_store_metrics_status_manual_run_and_disable(cluster, operator, servers, namespaces, wait_for):
    assert cluster.pod_state, "needs the session's own control plane (its pod runner executes pods)"
    ns = namespaces("e2e")
    today = dt.datetime.now(dt.timezone.utc).date()
    template = f"e2e{uuid.uuid4().hex[:6]}/{sampledata.KEY_TEMPLATE}"
    # The window is 4 days up to yesterday (lagDays 1, lookbackDays 3). Today is uploaded too, so
    # that a tick after midnight (the CronJob picks the instant) finds its window as complete.
    days = [today - dt.timedelta(days=n) for n in (0, 1, 2, 3, 4)]
    late = ("ETHUSDT", today - dt.timedelta(days=2))
    sampledata.upload(servers.s3.client(), PUBLIC, [(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days if (s, d) != late],
                      template=template)
    schedule = {
        "apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionSchedule", "metadata": {"name": "e2e"},
        "spec": {
            "schedule": "* * * * *", "timezone": "UTC", "startingDeadlineSeconds": 120, "backoffLimit": 2,
            "target": {"endpoint": servers.s3.endpoint, "bucket": PUBLIC, "anonymous": True, "keyTemplate": template,
                       "checksumSuffix": ".CHECKSUM", "symbols": ["BTCUSDT", "ETHUSDT"], "lagDays": 1, "lookbackDays": 3},
            "repair": {"maxRepairsPerRun": 100, "load": "csv-zip"},
            "storage": {"duckdb": {"claimName": "e2e-data", "path": "/data/e2e.duckdb"}},
            "metrics": {"pushgatewayUrl": servers.pushgateway},
        },
    }
    kubectl(cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(schedule))

    # A CronJob tick runs the real job.
    obj = wait_for(lambda: last_run(cluster, ns, "e2e", "Succeeded", "scheduled"), 110, "a scheduled run to succeed")
    fresh = cond(obj, "Stale")  # a success just now; an every-minute schedule goes stale 2 min + the run's hour later
    assert (fresh["status"], fresh["reason"]) == ("False", "RecentSuccess") and fresh["message"].endswith("(limit 1h2m0s)"), fresh
    # Stop the ticks before reading the store, so no run holds its lock meanwhile.
    kubectl(cluster, "patch", "isched", "e2e", "-n", ns, "--type", "merge", "-p", '{"spec": {"enabled": false}}')
    wait_for(lambda: cond(get(cluster, ns, "e2e"), "Suspended").get("status") == "True", 30, "Suspended")
    st = obj["status"]
    assert st["lastSuccessfulTime"] and len(st["nextRuns"]) == 5 and cond(obj, "Ready")["status"] == "True"
    # Coverage, from the run's termination message through the pod's status: 7 of 8 cells.
    cov = st.get("coverage") or {}
    assert cov.get("job", "").startswith("e2e-"), st
    assert {k: cov[k] for k in ("expected", "present", "missing", "gapsOpen", "oldestOpenGap", "percent")} == {
        "expected": 8, "present": 7, "missing": 1, "gapsOpen": 1, "oldestOpenGap": late[1].isoformat(), "percent": 87.5}
    assert cov["gapsByCause"] == {"not-due": 0, "late-upstream": 1, "withdrawn": 0, "fetch-failed": 0, "verification-failed": 0,
                                  "quarantined": 0, "deferred": 0}, cov
    complete = cond(obj, "Complete")
    assert (complete["status"], complete["reason"]) == ("False", "CellsMissing") and "7 of 8" in complete["message"]
    assert "1 gap(s) open (late-upstream 1)" in complete["message"], complete
    header, row = kubectl(cluster, "get", "isched", "e2e", "-n", ns).stdout.splitlines()
    # disabled now: freshness is not judged
    assert header.split()[-4:] == ["COVERAGE", "GAPS", "STALE", "AGE"] and row.split()[-4:-1] == ["87.5", "1", "Unknown"], (header, row)

    db = cluster.pod_state / "pvc" / ns / "e2e-data" / "e2e.duckdb"
    wait_for(db.exists, 10, f"the DuckDB file at {db}")
    assert query(db, "SELECT count(*), count(*) FILTER (WHERE present) FROM objects") == [(8, 7)]
    assert query(db, "SELECT symbol, date, reason FROM gaps WHERE status = 'open'") == [("ETHUSDT", late[1], "late-upstream")]
    assert query(db, "SELECT count(*) FROM loaded") == [(7 * 5,)]
    runs = query(db, "SELECT trigger, outcome, job_name FROM runs")
    assert runs and all(r[0] == "scheduled" and r[1] == "succeeded" and r[2].startswith("e2e-") for r in runs)

    metrics = urllib.request.urlopen(servers.pushgateway + "/metrics").read().decode()
    mine = [line for line in metrics.splitlines() if f'namespace="{ns}"' in line and 'schedule="e2e"' in line]
    assert any(line.startswith("ingestion_objects_missing") and line.endswith(" 1") for line in mine), mine
    assert any(line.startswith("ingestion_runs_total") and 'outcome="succeeded"' in line for line in mine)

    # The late object arrives with 11 columns and no header: the manual run commits the rest and
    # ends partial (exit 3); the Job fails at once (no retry: a new pod would end the same).
    key = template.format(symbol=late[0], date=late[1].isoformat())
    bad = sampledata.zipped_csv(key, "1700000000000,1,2,3,4,5,1700000059999,6,7,8,9\n")
    servers.s3.client().put_object(Bucket=PUBLIC, Key=key, Body=bad)
    servers.s3.client().put_object(Bucket=PUBLIC, Key=key + ".CHECKSUM", Body=sampledata.checksum(bad, key))
    kubectl(cluster, "create", "job", "manual-1", "--from=cronjob/e2e", "-n", ns)
    obj = wait_for(lambda: last_run(cluster, ns, "e2e", "Failed", "manual"), 60, "the partial manual run to fail its Job")
    # the Job's word for how it ended, then the run's own: which repair failed and why (its termination message)
    reason = obj["status"]["lastRun"]["reason"]
    assert reason.startswith("Partial (exit code 3): 1 repair(s) failed, the first: ") and "no header row" in reason, reason
    pods = cluster.core.list_namespaced_pod(ns, label_selector="batch.kubernetes.io/job-name=manual-1").items
    assert len(pods) == 1, "a partial run is not retried"
    assert query(db, "SELECT outcome, repairs_failed FROM runs WHERE job_name = 'manual-1'") == [("partial", 1)]
    (status, reason, err), = query(db, "SELECT status, reason, last_error FROM gaps WHERE symbol = 'ETHUSDT' AND date = DATE '%s'"
                                   % late[1])
    assert (status, reason) == ("open", "quarantined") and "no header row and 11 columns" in err

    # Fixed upstream, the next manual run repairs it.
    sampledata.upload(servers.s3.client(), PUBLIC, [late], template=template)
    kubectl(cluster, "create", "job", "manual-2", "--from=cronjob/e2e", "-n", ns)
    wait_for(lambda: last_run(cluster, ns, "e2e", "Succeeded", "manual"), 60, "the manual run to succeed")
    assert query(db, "SELECT status FROM gaps WHERE symbol = 'ETHUSDT' AND date = DATE '%s'" % late[1]) == [("repaired",)]
    assert query(db, "SELECT count(*) FILTER (WHERE present) FROM objects") == [(8,)]
    assert query(db, "SELECT job_name, outcome FROM runs WHERE trigger = 'manual' ORDER BY ALL") == [
        ("manual-1", "partial"), ("manual-2", "succeeded")]
    obj = wait_for(lambda: (o := get(cluster, ns, "e2e"))["status"].get("coverage", {}).get("job") == "manual-2" and o, 30,
                   "the repairing run's coverage")
    assert obj["status"]["coverage"]["percent"] == 100.0 and obj["status"]["coverage"]["gapsOpen"] == 0
    assert "oldestOpenGap" not in obj["status"]["coverage"]
    assert (cond(obj, "Complete")["status"], cond(obj, "Complete")["reason"]) == ("True", "AllPresent")

    # Disabled: no new scheduled Job across the next tick. The positive signal that the CronJob
    # controller has passed that tick: a witness CronJob of the same schedule, created now,
    # fires its (suspended, podless) Job for it.
    def scheduled_jobs():
        out = kubectl(cluster, "get", "jobs", "-n", ns, "-l", "ingestion.dev/schedule=e2e",
                      "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
        return {j for j in out if not j.startswith("manual-")}

    before = scheduled_jobs()
    cluster.batch.create_namespaced_cron_job(ns, plain_cronjob("witness", "* * * * *", suspend_jobs=True))
    wait_for(lambda: any(ref.name == "witness" for j in cluster.batch.list_namespaced_job(ns).items
                         for ref in j.metadata.owner_references or []), 75, "the witness CronJob's Job for the next tick")
    assert scheduled_jobs() == before
