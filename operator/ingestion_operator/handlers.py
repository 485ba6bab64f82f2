"""kopf wiring: every event that can change a schedule's truth triggers one reconcile.

Only ``on.event`` handlers are used: they keep no progress on the resource, add no
finalizers and post no events of their own, so kopf itself never writes to the API.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import kopf
from kubernetes import client

from . import names
from .reconcile import Reconciler

log = logging.getLogger("ingestion_operator")
MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


class State:
    reconciler: Reconciler | None = None
    stop = threading.Event()
    api_client: client.ApiClient | None = None


def configure(reconciler: Reconciler) -> None:
    State.reconciler = reconciler
    State.api_client = reconciler.batch.api_client


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_):
    settings.posting.enabled = False  # our own events, on transitions only
    settings.scanning.disabled = True  # no CRD/namespace scanning: fewer permissions
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 8
    State.stop.clear()
    threading.Thread(target=_due_loop, name="next-run-refresh", daemon=True).start()


@kopf.on.login()
def login(**_):
    """kopf connects with exactly the credentials the reconciler uses (kubeconfig or
    in-cluster). On a 401 kopf calls this again, and a rotated token is re-read."""
    cfg = State.api_client.configuration
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
def cleanup(**_):
    State.stop.set()


@kopf.on.probe(id="api")
def api_reachable(**_):
    """The health endpoint fails while the API server cannot be reached."""
    client.VersionApi(State.api_client).get_code(_request_timeout=5)
    return True


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
def on_schedule(type, body, namespace, name, **_):
    if type == "DELETED":
        State.reconciler.forget(namespace, name)
        log.info("event=deleted namespace=%s name=%s (CronJob and Jobs are garbage-collected)", namespace, name)
        return
    State.reconciler.reconcile(namespace, name)


@kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED)
def on_cronjob(body, namespace, **_):
    owner = (body.get("metadata", {}).get("labels") or {}).get(names.LABEL_SCHEDULE)
    if owner:
        State.reconciler.reconcile(namespace, owner)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
def on_job(body, namespace, **_):
    owner = (body.get("metadata", {}).get("labels") or {}).get(names.LABEL_SCHEDULE)
    if owner:
        State.reconciler.reconcile(namespace, owner)


def _due_loop(interval: float = 15.0) -> None:
    """Refresh status.nextRuns of schedules whose first next run has passed, even when no
    Job appeared (a tick skipped by Forbid or by the misfire window)."""
    while not State.stop.wait(interval):
        now = dt.datetime.now(dt.timezone.utc)
        for (ns, name), due in list(State.reconciler.next_due.items()):
            if due is not None and due <= now:
                try:
                    State.reconciler.reconcile(ns, name)
                except Exception:  # logged and counted by reconcile; retried next round
                    pass
