"""The user's path, in real containers: exactly what docs/operations/install.md tells a kind user to run.

helm install with the images built from our Dockerfiles -> the operator pod Ready through
its probes (in-cluster config, the chart's ServiceAccount) -> an example schedule against
S3 and a Pushgateway reachable from pods -> a CronJob tick runs the job image (UID 65532,
read-only root, /tmp an emptyDir) writing DuckDB to a real PVC and pushing metrics ->
status, `kubectl logs job/...`, a manual run -> a backfill of two shards -> deleting the schedule collects its
CronJob, Jobs and Pods -> helm uninstall removes what the chart installed.
"""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
import time
import urllib.request

import yaml

from ingestion_dev import images, sampledata
from ingestion_dev.node import NODE_NAME, local_storage
from ingestion_dev.operatorproc import wait_for

from ..conftest import CHART, REPO
from ..samples import store_rows

NS, RELEASE, SCHEDULE = "data", "ingestion", "binance-um-klines-daily"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
LOOKBACK = 3
NEVER_PUBLISHED = ("ETHUSDT", 2)  # (symbol, days ago)


def run(cluster, *args: str, input: str | None = None, timeout: float = 180) -> str:
    out = subprocess.run(list(args), env=cluster.kubectl_env(), capture_output=True, text=True, input=input, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


wait_for = functools.partial(wait_for, interval=1.0)  # a real node is slower: poll once a second


def example_schedule(cluster) -> str:
    """examples/binance-um-klines-daily.yaml, pointed at the local S3 and Pushgateway, every minute."""
    doc = yaml.safe_load((REPO / "examples" / f"{SCHEDULE}.yaml").read_text())
    doc["metadata"]["namespace"] = NS
    doc["spec"]["schedule"] = "* * * * *"
    doc["spec"]["target"].update(endpoint=cluster.s3.endpoint, region="us-east-1", lookbackDays=LOOKBACK)
    doc["spec"]["metrics"]["pushgatewayUrl"] = cluster.pushgateway
    return yaml.safe_dump(doc)


def schedule_status(cluster) -> dict:
    return cluster.custom.get_namespaced_custom_object("ingestion.dev", "v1alpha1", NS, "ingestionschedules", SCHEDULE).get("status") or {}


def lease_holder(cluster) -> str | None:
    """The pod that holds the operator's Lease (the identity is POD_NAME plus a suffix)."""
    from kubernetes import client

    try:
        spec = client.CoordinationV1Api(cluster.api_client).read_namespaced_lease("ingestion-ingestion-operator", "ingestion-system").spec
    except client.ApiException:
        return None
    return spec.holder_identity.rsplit("_", 1)[0] if spec.holder_identity else None


def job_done(cluster, name: str) -> str | None:
    st = cluster.batch.read_namespaced_job(name, NS).status
    for c in st.conditions or []:
        if c.status == "True" and c.type in ("Complete", "Failed"):
            return c.type
    return None


def test_the_readme_path_on_a_real_node(real_cluster, helm):
    c = real_cluster
    today = dt.datetime.now(dt.timezone.utc).date()
    # Today too: should the tick fall after midnight, its window (a day later) is as complete.
    cells = [(s, today - dt.timedelta(days=n)) for s in SYMBOLS for n in range(0, LOOKBACK + 2)
             if (s, n) != NEVER_PUBLISHED]
    window_cells = len(SYMBOLS) * (LOOKBACK + 1)
    # A bucket as a new user's: no history of these symbols that other tests on this node left
    # (a symbol new to the store is expected from its first object, so older days would count).
    s3 = c.s3.client()
    try:
        for sym in SYMBOLS:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="data.binance.vision",
                                                                     Prefix=f"data/futures/um/daily/klines/{sym}/"):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket="data.binance.vision", Key=obj["Key"])
    except s3.exceptions.NoSuchBucket:
        pass
    sampledata.upload(s3, "data.binance.vision", cells, rows=60)

    # 1. helm install, as docs/operations/install.md says, with the images built here.
    image_sets = [*images.chart_values(), f"defaultPushgatewayUrl={c.pushgateway}"]
    run(c, helm, "install", RELEASE, str(CHART), "-n", "ingestion-system", "--create-namespace", "--wait", "--timeout", "180s",
        *(a for s in image_sets for a in ("--set", s)))

    # 2. Two operator pods: Ready through their probes, the chart's ServiceAccount, in-cluster
    #    config; one leads through the Lease, the other stands by.
    pods = c.core.list_namespaced_pod("ingestion-system", label_selector="app.kubernetes.io/name=ingestion-operator").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name == NODE_NAME
        assert any(cond.type == "Ready" and cond.status == "True" for cond in pod.status.conditions)
        assert pod.spec.service_account_name == "ingestion-ingestion-operator"
        assert pod.spec.containers[0].readiness_probe.http_get.path == "/readyz"
        assert pod.spec.containers[0].liveness_probe.http_get.path == "/livez"
        assert "--kubeconfig" not in " ".join(pod.spec.containers[0].args)
    # A pod is Ready once it serves its probes and webhook, which it does before it imports kopf
    # and logs its start (seconds under a loaded node's CPU limit): its log lines follow.
    def both_logged():
        logs = {p.metadata.name: run(c, "kubectl", "logs", "-n", "ingestion-system", p.metadata.name) for p in pods}
        return logs if all("event=starting scope=cluster" in text and
                           "event=standby lease=ingestion-system/ingestion-ingestion-operator" in text
                           for text in logs.values()) else None

    logs = wait_for(both_logged, 60, "each operator pod's start and standby lines")
    leader = wait_for(lambda: lease_holder(c), 30, "a leader in the Lease")
    assert [n for n, text in logs.items() if "event=leading" in text] in ([leader], [])

    # 3. A volume on the node through a StorageClass, and the example schedule.
    c.core.create_namespace({"metadata": {"name": NS}})
    volume = c.node.dir / "volumes" / "ingestion-data"
    run(c, "kubectl", "apply", "-f", "-", input=yaml.safe_dump_all(local_storage(volume, "ingestion-data", NS)))
    # The chart's admission webhook, through its Service's endpoints: a preview under
    # --dry-run=server (nothing saved), a bad zone refused with its field's message.
    def apply(text, *flags):
        return subprocess.run(["kubectl", "apply", *flags, "-f", "-"], env=c.kubectl_env(), capture_output=True, text=True,
                              input=text, timeout=60)
    preview = wait_for(lambda: [w for w in apply(example_schedule(c), "--dry-run=server").stderr.splitlines()
                                if w.startswith("Warning: next run: ")], 60, "the webhook's preview")
    assert len(preview) == 3 and preview[0].endswith(" UTC")
    assert not c.custom.list_namespaced_custom_object("ingestion.dev", "v1alpha1", NS, "ingestionschedules")["items"]
    bad = yaml.safe_load(example_schedule(c))
    bad["spec"]["timezone"] = "Europe/Berln"
    refused = apply(yaml.safe_dump(bad))
    assert refused.returncode != 0 and 'admission webhook "schedules.ingestion.dev" denied the request: ' \
        "spec.timezone='Europe/Berln': unknown time zone" in refused.stderr, refused.stderr
    run(c, "kubectl", "apply", "-f", "-", input=example_schedule(c))
    wait_for(lambda: any(x["type"] == "Ready" and x["status"] == "True" for x in schedule_status(c).get("conditions", [])),
             60, "the schedule Ready")

    # 4. A CronJob tick runs the job image as a real container, writing to the PVC.
    first = wait_for(lambda: next((j.metadata.name for j in c.batch.list_namespaced_job(NS).items), None), 100, "the first tick")
    assert wait_for(lambda: job_done(c, first), 180, f"Job {first} to finish") == "Complete", run(c, "kubectl", "logs", "-n", NS, f"job/{first}")
    (job_pod,) = c.core.list_namespaced_pod(NS, label_selector=f"job-name={first}").items
    assert job_pod.spec.node_name == NODE_NAME
    assert job_pod.spec.security_context.run_as_user == 65532
    container = job_pod.spec.containers[0]
    assert container.image == images.JOB_IMAGE and container.security_context.read_only_root_filesystem is True
    tmp = next(v for v in job_pod.spec.volumes if v.name == "tmp")
    assert tmp.empty_dir is not None and any(m.mount_path == "/tmp" and m.name == "tmp" for m in container.volume_mounts)

    claim = c.core.read_namespaced_persistent_volume_claim("ingestion-data", NS).spec.volume_name
    assert claim == "node-local-ingestion-data", f"the claim bound to {claim}, not to the volume at {volume}"
    db = volume / f"{SCHEDULE}.duckdb"
    assert db.stat().st_uid == 65532  # written by the container's user, on the node's volume
    (present, missing), = store_rows(db, "SELECT count(*) FILTER (WHERE present), count(*) FILTER (WHERE NOT present) FROM objects")
    assert (present, missing) == (window_cells - 1, 1) and store_rows(db, "SELECT outcome FROM runs") == [("succeeded",)]

    metrics = urllib.request.urlopen(f"{c.pushgateway}/metrics", timeout=10).read().decode()
    assert any(line.startswith("ingestion_runs_total") and f'schedule="{SCHEDULE}"' in line and f'namespace="{NS}"' in line
               and line.endswith(" 1") for line in metrics.splitlines()), "no ingestion_runs_total for the run"

    # 5. The schedule's status shows the run, and its coverage from the container's termination
    #    message (written to the kubelet's /dev/termination-log under a read-only root filesystem);
    #    kubectl logs job/... shows its summary line.
    wait_for(lambda: (schedule_status(c).get("lastRun") or {}).get("outcome") == "Succeeded", 60, "status.lastRun Succeeded")
    assert schedule_status(c)["lastRun"]["job"] == first
    coverage = wait_for(lambda: schedule_status(c).get("coverage"), 30, "status.coverage")
    assert (coverage["job"], coverage["expected"], coverage["present"], coverage["gapsOpen"]) == (first, window_cells, window_cells - 1, 1)
    assert "event=run_finished outcome=succeeded" in run(c, "kubectl", "logs", "-n", NS, f"job/{first}")

    # 6. A manual run (the schedule suspended first, so no tick competes for the DuckDB file).
    run(c, "kubectl", "patch", "isched", SCHEDULE, "-n", NS, "--type", "merge", "-p", '{"spec":{"enabled":false}}')
    wait_for(lambda: c.batch.read_namespaced_cron_job(SCHEDULE, NS).spec.suspend, 30, "the CronJob suspended")
    wait_for(lambda: all(job_done(c, j.metadata.name) for j in c.batch.list_namespaced_job(NS).items), 180, "running ticks to end")
    run(c, "kubectl", "create", "job", "manual-1", f"--from=cronjob/{SCHEDULE}", "-n", NS)
    assert wait_for(lambda: job_done(c, "manual-1"), 180, "the manual run") == "Complete"
    wait_for(lambda: (schedule_status(c).get("lastRun") or {}).get("trigger") == "manual", 60, "status naming the manual run")

    # 6b. A backfill of four older days, two shards on the DuckDB file (they take turns to commit):
    #     an Indexed Job of real containers, progress from their termination messages.
    older = [today - dt.timedelta(days=LOOKBACK + n) for n in (6, 5, 4, 3)]
    sampledata.upload(c.s3.client(), "data.binance.vision", [(s, d) for s in SYMBOLS for d in older], rows=60)
    backfill = {"apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionBackfill", "metadata": {"name": "older", "namespace": NS},
                "spec": {"schedule": SCHEDULE, "from": older[0].isoformat(), "to": older[-1].isoformat(), "parallelism": 2,
                         "daysPerChunk": 2}}
    run(c, "kubectl", "apply", "-f", "-", input=yaml.safe_dump(backfill))

    def backfill_status():
        return c.custom.get_namespaced_custom_object("ingestion.dev", "v1alpha1", NS, "ingestionbackfills", "older").get("status") or {}

    done = wait_for(lambda: (st := backfill_status()) and any(x["type"] == "Complete" and x["status"] == "True"
                                                              for x in st.get("conditions", [])) and st, 240, "the backfill Complete")
    assert (done["progress"]["unitsProgress"], done["progress"]["cells"], done["progress"]["cellsRepaired"]) == ("4/4", "8/8", 8), done
    assert {p.spec.node_name for p in c.core.list_namespaced_pod(NS, label_selector="batch.kubernetes.io/job-name=older").items} == {NODE_NAME}
    assert store_rows(db, "SELECT count(*) FROM runs WHERE trigger = 'backfill'") == [(4,)]
    assert store_rows(db, "SELECT count(*) FROM objects WHERE present AND date BETWEEN ? AND ?", older[0], older[-1]) == [(8,)]
    run(c, "kubectl", "delete", "ibf", "older", "-n", NS)
    wait_for(lambda: not c.batch.list_namespaced_job(NS, label_selector="ingestion.dev/backfill=older").items, 60, "the backfill's Job collected")

    # 7. Deleting the schedule garbage-collects its CronJob, Jobs and Pods.
    run(c, "kubectl", "delete", "isched", SCHEDULE, "-n", NS)
    selector = f"ingestion.dev/schedule={SCHEDULE}"
    wait_for(lambda: not c.batch.list_namespaced_cron_job(NS).items and not c.batch.list_namespaced_job(NS, label_selector=selector).items
             and not c.core.list_namespaced_pod(NS, label_selector=selector).items, 120, "CronJob, Jobs and Pods collected")

    # 8. Deleting the leader's pod (a drain would do the same): it releases the Lease, and another
    #    pod leads within a retry period (2 s), not a lease duration (15 s). Usually that is the
    #    standby; the Deployment's replacement pod can win the race when it starts that fast, and
    #    either is correct. The other one stands by.
    t0 = time.monotonic()
    run(c, "kubectl", "delete", "pod", "-n", "ingestion-system", leader, "--wait=false")
    new_leader = wait_for(lambda: (h := lease_holder(c)) not in (None, leader) and h, 60, "another pod to lead")
    failover = time.monotonic() - t0
    print(f"\nfailover on the node after deleting the leader pod: {failover:.1f} s")
    assert failover < 10, f"took {failover:.1f} s: the Lease was not released, so it had to expire"
    standby = next(p.metadata.name for p in pods if p.metadata.name != leader)
    current = {p.metadata.name for p in c.core.list_namespaced_pod("ingestion-system", label_selector="app.kubernetes.io/name=ingestion-operator").items}
    assert new_leader in current and new_leader != leader, (new_leader, standby, current)
    wait_for(lambda: sum(1 for p in c.core.list_namespaced_pod("ingestion-system", label_selector="app.kubernetes.io/name=ingestion-operator").items
                         if p.metadata.deletion_timestamp is None and any(x.type == "Ready" and x.status == "True" for x in p.status.conditions or [])) == 2,
             120, "the Deployment's replacement pod Ready")

    # 9. helm uninstall removes what the chart installed (its CRD stays, as Helm keeps crds/).
    run(c, helm, "uninstall", RELEASE, "-n", "ingestion-system", "--wait")
    assert not c.apps.list_namespaced_deployment("ingestion-system").items
    assert not [s for s in c.core.list_namespaced_service_account("ingestion-system").items if s.metadata.name != "default"]
    rbac = run(c, "kubectl", "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name")
    assert rbac.strip() == ""
    assert run(c, "kubectl", "get", "crd", "ingestionschedules.ingestion.dev", "-o", "name").strip()
