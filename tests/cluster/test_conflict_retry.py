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
