"""The reconciler's 409 retry, on the real API server: another writer changes the CronJob
between the reconciler's read and its update; the update is refused with 409 Conflict, the
reconciler reads again and redoes the work, keeping the other writer's change. No operator
process runs in this module: the reconciler is driven in-process, so the interleaving is exact."""

from __future__ import annotations

import logging

from ingestion_operator.reconcile import Reconciler
from ingestion_operator.render import RenderSettings

from ..conftest import kubectl
from ..kube import get_cronjob, schedule_yaml


class InterleavedReconciler(Reconciler):
    """Once armed, the next CronJob read is followed by another writer's update of it."""

    def __init__(self, *a, other_writer, **kw):
        super().__init__(*a, **kw)
        self.other_writer = other_writer
        self.armed = False

    def _read_cronjob(self, namespace, name):
        live = super()._read_cronjob(namespace, name)
        if self.armed and live is not None:
            self.armed = False
            self.other_writer(namespace, name)
        return live


def test_a_concurrent_write_is_retried_on_a_fresh_read(cluster, crd, namespace, caplog):
    def annotate(ns, name):
        cluster.batch.patch_namespaced_cron_job(name, ns, {"metadata": {"annotations": {"team.example/owner": "data"}}})

    r = InterleavedReconciler(cluster.api_client, RenderSettings(job_image="ingestion-job:test"), other_writer=annotate)
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("raced"))
    caplog.set_level(logging.INFO, logger="ingestion_operator")
    r.reconcile(namespace, "raced")
    assert get_cronjob(cluster, namespace, "raced")["spec"]["schedule"] == "0 2 * * *"

    kubectl(cluster, "patch", "isched", "raced", "-n", namespace, "--type", "merge", "-p", '{"spec": {"schedule": "0 3 * * *"}}')
    r.armed = True
    caplog.clear()
    r.reconcile(namespace, "raced")
    (line,) = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("event=reconciled")]
    assert f"namespace={namespace} name=raced " in line and "result=CronJobUpdated" in line and "conflicts=1" in line, line
    live = get_cronjob(cluster, namespace, "raced")
    assert live["spec"]["schedule"] == "0 3 * * *"
    assert live["metadata"]["annotations"]["team.example/owner"] == "data"  # the other writer's change kept
    r.timer.stop()


def _reconciled_line(caplog) -> str:
    (line,) = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("event=reconciled")]
    return line


def test_the_cronjob_cache_is_trusted_only_where_a_mistake_costs_a_retry(cluster, crd, namespace, caplog):
    """The reconciler's CronJobCache (fed by the watch in the operator) is driven by hand
    here, so each way it can be wrong is exact: a CronJob it does not know of, one it shows
    with another owner, one it holds an old version of, and one deleted without its DELETED
    event reaching it."""
    settings = RenderSettings(job_image="ingestion-job:test")
    first = Reconciler(cluster.api_client, settings)
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=schedule_yaml("cached"))
    first.reconcile(namespace, "cached")
    created = get_cronjob(cluster, namespace, "cached")

    r = Reconciler(cluster.api_client, settings)
    r.cronjobs.primed = True
    caplog.set_level(logging.INFO, logger="ingestion_operator")
    try:
        # 1. The cache does not know the CronJob: the create is refused (409), the retry reads it.
        r.reconcile(namespace, "cached")
        line = _reconciled_line(caplog)
        assert "result=unchanged" in line and "conflicts=1" in line and "writes=0" in line, line
        cjs = cluster.batch.list_namespaced_cron_job(namespace).items
        assert [c.metadata.uid for c in cjs] == [created["metadata"]["uid"]]

        # 1b. The cache shows another owner (a predecessor's CronJob, say, already collected):
        #     a conflict is reported only from a read, and the read finds ours.
        held = get_cronjob(cluster, namespace, "cached")
        held["metadata"]["ownerReferences"] = [{**held["metadata"]["ownerReferences"][0], "uid": "a-predecessor"}]
        r.cronjobs.put(held)
        caplog.clear()
        r.reconcile(namespace, "cached")
        line = _reconciled_line(caplog)
        assert "result=unchanged" in line and "writes=0" in line, line
        assert "CronJobConflict" not in caplog.text

        # 2. The cache holds the old version after a spec change: read again before the replace.
        r.cronjobs.put(get_cronjob(cluster, namespace, "cached"))
        kubectl(cluster, "patch", "isched", "cached", "-n", namespace, "--type", "merge", "-p", '{"spec": {"schedule": "0 5 * * *"}}')
        caplog.clear()
        r.reconcile(namespace, "cached")
        line = _reconciled_line(caplog)
        assert "result=CronJobUpdated" in line and "conflicts=0" in line, line
        assert get_cronjob(cluster, namespace, "cached")["spec"]["schedule"] == "0 5 * * *"
        assert r.cronjobs.get(namespace, "cached")["spec"]["schedule"] == "0 5 * * *"  # its own write, remembered
        assert "managedFields" not in r.cronjobs.get(namespace, "cached")["metadata"]

        # 3. Deleted, and the cache never heard: a watch-woken reconcile trusts it and writes
        #    nothing; the timer's reconcile reads, and creates the CronJob again.
        cluster.batch.delete_namespaced_cron_job("cached", namespace)
        caplog.clear()
        r.reconcile(namespace, "cached", trigger="job")
        assert "result=unchanged" in _reconciled_line(caplog)
        caplog.clear()
        r.reconcile(namespace, "cached", trigger="timer")
        assert "result=CronJobCreated" in _reconciled_line(caplog)
        assert get_cronjob(cluster, namespace, "cached")["metadata"]["uid"] != created["metadata"]["uid"]
    finally:
        first.timer.stop()
        r.timer.stop()
