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
from .gateway import UPSTREAM
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
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
    settings.posting.enabled = False  # our own events, on transitions only
    settings.scanning.disabled = True  # no CRD/namespace scanning: fewer permissions
    settings.persistence.diffbase_storage = NoDiffBase()  # only on.event handlers: no diffs needed
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = memo.workers  # reconciles at once (each waits on the API server, not the CPU)
    # due reconciles (schedules' next runs, rechecks of both resources) run on kopf's worker pool
    memo.reconciler.timer.start(submit=settings.execution.executor.submit)
    memo.listed = False  # until kopf runs the first on.event filter: see _while_listing
    # kopf holds every handler until the index below has seen every CronJob of ours, and
    # the timer is armed only by a reconcile: no reconcile can read the cache before that.
    memo.reconciler.cronjobs.primed = True


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
    term = memo.get("term")
    if term is not None:  # kopf waits on its flag in a thread: end it, or the run never returns
        term.end()


@kopf.on.startup(id="health")
async def health_loop(memo: kopf.Memo, **_):
    """/healthz (served by :mod:`ingestion_operator.health`) also checks that this loop answers."""
    memo.health.loop = asyncio.get_running_loop()


def _while_listing(memo: kopf.Memo, **_) -> bool:
    """The filter of the index handlers below: true until kopf first runs an on.event filter.
    kopf holds every handler until each object of an indexed kind has been through its index
    handlers once, which is all the indexes are for (no share is computed from half of a
    source's sharers, no reconcile reads a CronJob cache that has not seen every CronJob).
    After that the on.event filters keep the same books: an index handler costs kopf a full
    handler invocation on every event of its kind (at 1,000 new schedules, 2,000 of them),
    a filter a call."""
    return not memo.listed


def _news(kind: str, keep=None):
    """A kopf filter for the watch of ``kind`` (schedule, backfill, cronjob): false for the
    echo of our own write (the event at exactly the resourceVersion it returned), which
    changes nothing a reconcile looks at. Run by kopf on its event loop, so an echo costs no
    hop to a worker thread. Every event but a deletion is first given to ``keep(body,
    namespace, name, memo)``, the books the index handlers keep while kopf lists
    (:func:`_while_listing`); echoes too, so the books follow the watch's order, as the
    index's did (an older event delivered after our write is put right by its echo)."""
    def news(type, body, namespace, name, memo: kopf.Memo, **_) -> bool:
        memo.listed = True  # kopf runs on.event filters only once it holds no handler
        if type == "DELETED":
            return True
        if keep is not None:
            keep(body, namespace, name, memo)
        return not memo.reconciler.kube.is_echo(kind, namespace, name, (body.get("metadata") or {}).get("resourceVersion"))
    return news


def _keep_schedule(body, namespace: str, name: str, memo: kopf.Memo) -> None:
    """What a schedule reads from (its source, its own cap, its floor: parsed once per
    generation) and the share its status shows, in the reconciler's SharingIndex; one that
    moves a source wakes that source's upstream."""
    sharing = memo.reconciler.sharing
    moved = sharing.put_schedule(namespace, name, sharing.sharer(namespace, name, body), shown_share(body.get("status")))
    memo.upstreams.soon(namespace, moved)


def _keep_cronjob(body, namespace: str, name: str, memo: kopf.Memo) -> None:
    """The CronJob in the reconciler's CronJobCache."""
    memo.reconciler.cronjobs.put(body)


def _own(reconciler, type: str, event: dict, namespace: str, name: str, gone: str) -> None:
    """One of our resources (a schedule or a backfill) changed: forget a deleted one (``gone``
    says what collects its children), else reconcile it with the body the event carried."""
    if type == "DELETED":
        reconciler.forget(namespace, name)
        log.info(gone, namespace, name)
        return
    obj = event.get("object") or {}
    reconciler.reconcile(namespace, name, body=obj if obj.get("spec") is not None else None)


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL, when=_news("schedule", _keep_schedule))
def on_schedule(type, event, namespace, name, memo: kopf.Memo, **_):
    if type == "DELETED":  # a sharer less: its upstream's other schedules get more
        memo.upstreams.soon(namespace, memo.reconciler.sharing.put_schedule(namespace, name, None))
    _own(memo.reconciler, type, event, namespace, name, "event=deleted namespace=%s name=%s (CronJob and Jobs are garbage-collected)")


@kopf.index(names.GROUP, names.VERSION, names.PLURAL, id="schedule_sources", when=_while_listing)
async def schedule_sources(body, namespace, name, memo: kopf.Memo, **_):
    """Every schedule listed, in the SharingIndex (:func:`_keep_schedule`) before any handler
    runs, so no schedule's share is computed from half of its sharers."""
    _keep_schedule(body, namespace, name, memo)
    return None


@kopf.index(names.GROUP, names.VERSION, names.UPSTREAM_PLURAL, id="upstream_index")
async def upstream_index(body, namespace, name, memo: kopf.Memo, **_):
    """Keeps the upstreams (namespace -> name -> spec) in the SharingIndex: a schedule's
    reconcile finds its upstream there, without a list. One that changes (or turns invalid)
    wakes the schedules of its source at once."""
    moved = memo.reconciler.sharing.put_upstream(namespace, name, upstream_spec(body.get("spec")))
    memo.upstreams.soon(namespace, moved, wake=True)
    return None


@kopf.on.event(names.GROUP, names.VERSION, names.UPSTREAM_PLURAL, id="upstream", when=_news("upstream"))
def on_upstream(type, event, namespace, name, memo: kopf.Memo, **_):
    """An IngestionUpstream changed: its status; deleted: every sharer back to its own settings."""
    if type == "DELETED":
        moved = memo.reconciler.sharing.drop_upstream(namespace, name)
        memo.upstreams.forget(namespace, name)
        memo.upstreams.soon(namespace, moved, wake=True)
        log.info("event=upstream_deleted namespace=%s name=%s (its schedules return to their own settings)", namespace, name)
        return
    obj = event.get("object") or {}
    memo.upstreams.reconcile(namespace, name, body=obj if obj.get("spec") is not None else None)


@kopf.index("batch", "v1", "cronjobs", labels=MANAGED, id="cronjob_cache", when=_while_listing)
async def cronjob_cache(body, namespace, name, memo: kopf.Memo, **_):
    """Every CronJob of ours listed, in the reconciler's CronJobCache (:func:`_keep_cronjob`)
    before any handler runs. Indexes nothing itself: kopf's index is used for its hold."""
    _keep_cronjob(body, namespace, name, memo)
    return None


@kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED, id="cronjob", when=_news("cronjob", _keep_cronjob))
@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="job")
def on_child(type, body, namespace, name, resource, memo: kopf.Memo, **_):
    """A CronJob or Job of ours changed: reconcile the schedule its label names (the echo of
    a CronJob write of our own never gets here)."""
    labels = body.get("metadata", {}).get("labels") or {}
    if resource.plural == "jobs" and labels.get(names.LABEL_BACKFILL):
        memo.backfills.reconcile(namespace, labels[names.LABEL_BACKFILL], trigger="job")
        upstream = (body.get("metadata", {}).get("annotations") or {}).get(names.ANNOTATION_UPSTREAM)
        if upstream and (type == "DELETED" or job_outcome(body)[0] != "Running"):  # its share is free again
            memo.reconciler.timer.set((UPSTREAM.name, namespace, upstream), memo.reconciler.clock())
        return
    if resource.plural == "cronjobs" and type == "DELETED":
        memo.reconciler.cronjobs.drop(namespace, name, body.get("metadata", {}).get("uid"))
    owner = labels.get(names.LABEL_SCHEDULE)
    if not owner:
        return
    memo.reconciler.reconcile(namespace, owner, trigger="cronjob" if resource.plural == "cronjobs" else "job")


@kopf.on.event(names.GROUP, names.VERSION, names.BACKFILL_PLURAL, id="backfill", when=_news("backfill"))
def on_backfill(type, event, namespace, name, memo: kopf.Memo, **_):
    """An IngestionBackfill changed: create its Job once, report its progress."""
    _own(memo.backfills, type, event, namespace, name,
         "event=backfill_deleted namespace=%s name=%s (its Job and pods are garbage-collected)")
