"""The wiring: every event that can change a resource's truth queues one reconcile.

kopf runs the operator (startup, login, cleanup) and watches Jobs and backfills, with
``on.event`` handlers only: they keep no progress on the resource, add no finalizers and
post no events of their own, so kopf itself never writes to the API. The schedules, their
CronJobs and the upstreams are followed by the lean informers of :mod:`.informer`, started
here. The reconciler reaches the handlers through kopf's ``memo`` (``memo.reconciler``), set
by :func:`ingestion_operator.cli.cmd_run`; nothing is global.
"""

from __future__ import annotations

import asyncio
import logging

import kopf
from kubernetes import client

from . import names
from .gateway import BACKFILL, SCHEDULE, UPSTREAM
from .informer import Informer, Work
from .status import job_outcome
from .upstream import shown_share, upstream_spec

log = logging.getLogger("ingestion_operator")
MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps a "diff-base" (a deep copy of each object's essence) to tell changing
    handlers what changed. This operator has none (it is level-based and compares whole
    objects itself), yet kopf builds and fetches that copy for every watch event: at 1,000
    schedules, 12 % of the operator's CPU. Nothing is built, fetched or stored."""

    def build(self, *, body, extra_fields=None):
        return None

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence):
        pass


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
    settings.posting.enabled = False  # our own events, on transitions only
    settings.scanning.disabled = True  # no CRD/namespace scanning: fewer permissions
    settings.persistence.diffbase_storage = NoDiffBase()  # only on.event handlers: no diffs needed
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = memo.workers  # Jobs' and backfills' handlers (each waits on the API server)
    # The schedules, their CronJobs and the upstreams: listed into the books (the sharing index,
    # the CronJob cache) before any reconcile starts, so none reads a cache that has not seen
    # every CronJob or computes a share from half of a source's sharers; kopf's watches of Jobs
    # and backfills start once this handler returns.
    r = memo.reconciler
    memo.informers = watches(memo)
    for informer in memo.informers:
        informer.start()
    try:
        while not all(i.listed() for i in memo.informers):
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:  # stopped while listing: no cleanup handler will run
        _stop(memo)
        raise
    r.cronjobs.primed = True
    r.timer.start(submit=lambda key: r.submit(key, Work("timer")))
    r.queue.start()


def watches(memo: kopf.Memo) -> list[Informer]:
    """The informers of the kinds that grow with the fleet (see :mod:`.informer`), each event
    kept in the books at once and its reconcile queued (an echo of our own write: none)."""
    r = memo.reconciler
    api = client.ApiClient(r.api_client.configuration)  # a pool of its own: watches hold their connections
    version = f"{names.GROUP}/{names.VERSION}"
    selector = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    return [Informer(api, names.UPSTREAM_PLURAL, version, names.UPSTREAM_KIND, memo.namespaces, lambda t, o: on_upstream(t, o, memo)),
            Informer(api, names.PLURAL, version, names.KIND, memo.namespaces, lambda t, o: on_schedule(t, o, memo)),
            Informer(api, "cronjobs", "batch/v1", "CronJob", memo.namespaces, lambda t, o: on_cronjob(t, o, memo), selector)]


def _stop(memo: kopf.Memo) -> None:
    for informer in memo.get("informers") or []:
        informer.stop()
    memo.reconciler.queue.stop()
    memo.reconciler.timer.stop()


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
    _stop(memo)
    term = memo.get("term")
    if term is not None:  # kopf waits on its flag in a thread: end it, or the run never returns
        term.end()


@kopf.on.startup(id="health")
async def health_loop(memo: kopf.Memo, **_):
    """/healthz (served by :mod:`ingestion_operator.health`) also checks that this loop answers."""
    memo.health.loop = asyncio.get_running_loop()


def _meta(obj: dict) -> tuple[str, str, str | None]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace"), meta.get("name"), meta.get("resourceVersion")


def _maybe_echo(type: str | None, kind: str, namespace: str, name: str, rv: str | None) -> tuple:
    """A change the watch saw (not a listing, not a deletion) may still turn out to be the echo
    of a write whose response had not been read yet: asked again when its work runs."""
    return ((kind, namespace, name, rv),) if type in ("ADDED", "MODIFIED") else ()


def on_schedule(type: str | None, obj: dict, memo: kopf.Memo) -> None:
    """A schedule listed or changed: its books at once (in the watch's order, echoes too: an
    older event delivered after our write is put right by its echo), then its reconcile, with
    the body the event carried; deleted: a sharer less (its upstream's other schedules get
    more), and forgotten."""
    namespace, name, rv = _meta(obj)
    r, key = memo.reconciler, (SCHEDULE.name, namespace, name)
    if type == "DELETED":
        memo.upstreams.soon(namespace, r.sharing.put_schedule(namespace, name, None))
        r.submit(key, Work("deleted"))
        return
    _keep_schedule(obj, namespace, name, memo)
    if not r.kube.is_echo(SCHEDULE.name, namespace, name, rv):
        r.submit(key, Work("schedule", obj if obj.get("spec") is not None else None, echoes=_maybe_echo(type, SCHEDULE.name, namespace, name, rv)))


def _keep_schedule(body, namespace: str, name: str, memo: kopf.Memo) -> None:
    """What a schedule reads from (its source, its own cap, its floor: parsed once per
    generation) and the share its status shows, in the reconciler's SharingIndex; one that
    moves a source wakes that source's upstream."""
    sharing = memo.reconciler.sharing
    moved = sharing.put_schedule(namespace, name, sharing.sharer(namespace, name, body), shown_share(body.get("status")))
    memo.upstreams.soon(namespace, moved)


def on_cronjob(type: str | None, obj: dict, memo: kopf.Memo) -> None:
    """A CronJob of ours listed or changed: the CronJob cache at once, then a reconcile of the
    schedule its label names (the echo of our own write of it: none)."""
    namespace, name, rv = _meta(obj)
    r = memo.reconciler
    if type == "DELETED":
        r.cronjobs.drop(namespace, name, obj["metadata"].get("uid"))
    else:
        r.cronjobs.put(obj)
        if r.kube.is_echo("cronjob", namespace, name, rv):
            return
    owner = (obj["metadata"].get("labels") or {}).get(names.LABEL_SCHEDULE)
    if owner:
        r.submit((SCHEDULE.name, namespace, owner), Work("cronjob", echoes=_maybe_echo(type, "cronjob", namespace, name, rv)))


def on_upstream(type: str | None, obj: dict, memo: kopf.Memo) -> None:
    """An IngestionUpstream listed or changed: its spec in the SharingIndex at once, and the
    schedules of its source woken (a schedule's reconcile finds its upstream there, without a
    list); then its status. Deleted: every sharer back to its own settings."""
    namespace, name, rv = _meta(obj)
    r, key = memo.reconciler, (UPSTREAM.name, namespace, name)
    if type == "DELETED":
        memo.upstreams.soon(namespace, r.sharing.drop_upstream(namespace, name), wake=True)
        r.submit(key, Work("deleted"))
        return
    memo.upstreams.soon(namespace, r.sharing.put_upstream(namespace, name, upstream_spec(obj.get("spec"))), wake=True)
    if not r.kube.is_echo(UPSTREAM.name, namespace, name, rv):
        r.submit(key, Work("upstream", obj if obj.get("spec") is not None else None, echoes=_maybe_echo(type, UPSTREAM.name, namespace, name, rv)))


def _own(reconciler, type: str, event: dict, namespace: str, name: str, gone: str) -> None:
    """A backfill changed: forget a deleted one (``gone`` says what collects its children),
    else reconcile it with the body the event carried."""
    if type == "DELETED":
        reconciler.forget(namespace, name)
        log.info(gone, namespace, name)
        return
    obj = event.get("object") or {}
    reconciler.reconcile(namespace, name, body=obj if obj.get("spec") is not None else None)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="job")
def on_job(type, body, namespace, name, memo: kopf.Memo, **_):
    """A Job of ours changed: reconcile the schedule (queued) or the backfill its label names."""
    labels = body.get("metadata", {}).get("labels") or {}
    if labels.get(names.LABEL_BACKFILL):
        memo.backfills.reconcile(namespace, labels[names.LABEL_BACKFILL], trigger="job")
        upstream = (body.get("metadata", {}).get("annotations") or {}).get(names.ANNOTATION_UPSTREAM)
        if upstream and (type == "DELETED" or job_outcome(body)[0] != "Running"):  # its share is free again
            memo.reconciler.timer.set((UPSTREAM.name, namespace, upstream), memo.reconciler.clock())
        return
    owner = labels.get(names.LABEL_SCHEDULE)
    if owner:
        memo.reconciler.submit((SCHEDULE.name, namespace, owner), Work("job"))


def _news_of_backfills(type, body, namespace, name, memo: kopf.Memo, **_) -> bool:
    """False for the echo of our own status write (the event at exactly the resourceVersion it
    returned), which changes nothing a reconcile looks at."""
    return type == "DELETED" or not memo.reconciler.kube.is_echo(
        BACKFILL.name, namespace, name, (body.get("metadata") or {}).get("resourceVersion"))


@kopf.on.event(names.GROUP, names.VERSION, names.BACKFILL_PLURAL, id="backfill", when=_news_of_backfills)
def on_backfill(type, event, namespace, name, memo: kopf.Memo, **_):
    """An IngestionBackfill changed: create its Job once, report its progress."""
    _own(memo.backfills, type, event, namespace, name,
         "event=backfill_deleted namespace=%s name=%s (its Job and pods are garbage-collected)")
