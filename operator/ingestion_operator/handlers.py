"""kopf wiring: every event that can change a schedule's truth triggers one reconcile.

Only ``on.event`` handlers are used: they keep no progress on the resource, add no
finalizers and post no events of their own, so kopf itself never writes to the API.
The reconciler reaches the handlers through kopf's ``memo`` (``memo.reconciler``), set
by :func:`ingestion_operator.cli.cmd_run`; nothing is global.
"""

from __future__ import annotations

import asyncio
import logging

import kopf
from . import names

log = logging.getLogger("ingestion_operator")
MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
    settings.posting.enabled = False  # our own events, on transitions only
    settings.scanning.disabled = True  # no CRD/namespace scanning: fewer permissions
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = memo.workers  # reconciles at once (each waits on the API server, not the CPU)
    memo.reconciler.timer.start()


@kopf.on.login()
def login(memo: kopf.Memo, **_):
    """kopf connects with exactly the credentials the reconciler uses (kubeconfig or
    in-cluster). On a 401 kopf calls this again, and a rotated token is re-read."""
    cfg = memo.reconciler.api_client.configuration
    if cfg.refresh_api_key_hook:
        cfg.refresh_api_key_hook(cfg)
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken") or ""
    scheme, _, token = auth.partition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        default_namespace=None,
    )


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_):
    memo.reconciler.timer.stop()


@kopf.on.startup(id="health")
async def health_loop(memo: kopf.Memo, **_):
    """/healthz (served by :mod:`ingestion_operator.health`) also checks that this loop answers."""
    memo.health.loop = asyncio.get_running_loop()


def _own(memo: kopf.Memo, reconciler, kind: str, type: str, event: dict, namespace: str, name: str, gone: str) -> None:
    """One of our resources (``kind``: schedule or backfill) changed: forget a deleted one
    (``gone`` says what collects its children), skip the echo of our own status write, else
    reconcile it with the body the event carried."""
    if type == "DELETED":
        reconciler.forget(namespace, name)
        log.info(gone, namespace, name)
        return
    obj = event.get("object") or {}
    if memo.reconciler.is_echo(kind, namespace, name, (obj.get("metadata") or {}).get("resourceVersion")):
        return  # the status we just wrote, coming back
    reconciler.reconcile(namespace, name, body=obj if obj.get("spec") is not None else None)


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
def on_schedule(type, event, namespace, name, memo: kopf.Memo, **_):
    _own(memo, memo.reconciler, "schedule", type, event, namespace, name,
         "event=deleted namespace=%s name=%s (CronJob and Jobs are garbage-collected)")


@kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED, id="cronjob")
@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="job")
def on_child(type, body, namespace, name, resource, memo: kopf.Memo, **_):
    """A CronJob or Job of ours changed: reconcile the schedule its label names (not for
    the echo of a CronJob write of our own)."""
    labels = body.get("metadata", {}).get("labels") or {}
    if resource.plural == "jobs" and labels.get(names.LABEL_BACKFILL):
        memo.backfills.reconcile(namespace, labels[names.LABEL_BACKFILL], trigger="job")
        return
    owner = labels.get(names.LABEL_SCHEDULE)
    if not owner:
        return
    if resource.plural == "cronjobs" and type != "DELETED" and \
            memo.reconciler.is_echo("cronjob", namespace, name, body.get("metadata", {}).get("resourceVersion")):
        return
    memo.reconciler.reconcile(namespace, owner, trigger="cronjob" if resource.plural == "cronjobs" else "job")


@kopf.on.event(names.GROUP, names.VERSION, names.BACKFILL_PLURAL, id="backfill")
def on_backfill(type, event, namespace, name, memo: kopf.Memo, **_):
    """An IngestionBackfill changed: create its Job once, report its progress."""
    _own(memo, memo.backfills, "backfill", type, event, namespace, name,
         "event=backfill_deleted namespace=%s name=%s (its Job and pods are garbage-collected)")
