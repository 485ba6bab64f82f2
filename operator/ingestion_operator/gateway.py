"""The operator's one door to the API server, shared by the schedule and backfill reconcilers.

Everything a reconcile asks of Kubernetes goes through :class:`KubeGateway`: reads (as the
API server's JSON, no client models), writes (each counted in
``ingestion_operator_api_writes_total`` and in the calling reconcile's tally), the record of
our own writes (so the watch event that echoes one is recognised and costs nothing), Events,
the owner check and the one retry policy for a concurrent write (409 Conflict).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from . import metrics, names

log = logging.getLogger("ingestion_operator")


@dataclasses.dataclass(frozen=True)
class Kind:
    """One of our resources: what the gateway needs to read it and write its status."""

    name: str  # the key of its echo record and of its timer entries: schedule | backfill | upstream
    kind: str  # IngestionSchedule | IngestionBackfill (Events name it)
    plural: str

    @property
    def status_resource(self) -> str:  # the label of its status writes in the write counter
        return f"{self.plural}/status"


SCHEDULE = Kind("schedule", names.KIND, names.PLURAL)
BACKFILL = Kind("backfill", names.BACKFILL_KIND, names.BACKFILL_PLURAL)
UPSTREAM = Kind("upstream", names.UPSTREAM_KIND, names.UPSTREAM_PLURAL)


class NotLeading(RuntimeError):
    """A write refused because this replica stepped down."""


def owned_by(obj: dict, uid: str | None) -> bool:
    """Whether ``obj`` names the object ``uid`` among its owners (the one owner check)."""
    return any(o.get("uid") == uid for o in (obj.get("metadata") or {}).get("ownerReferences") or [])


class KubeGateway:
    CONFLICT_ATTEMPTS = 3  # one policy for both resources: a 409 reads again and redoes, at most this often

    def __init__(self, api_client: client.ApiClient, clock: Callable[[], dt.datetime], pool_size: int | None = None):
        if pool_size and api_client.configuration.connection_pool_maxsize < pool_size:
            # one HTTP connection per concurrent reconcile (urllib3 otherwise discards and reopens them)
            api_client.configuration.connection_pool_maxsize = pool_size
            api_client = client.ApiClient(api_client.configuration)
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.clock = clock
        self._events_refused = False
        self.fence: Callable[[], bool] = lambda: True  # False once this replica stopped leading
        self._tally = threading.local()  # the calling thread's reconcile: the writes it made
        # resourceVersions our own writes returned: the watch event for exactly that version
        # is the echo of our write, and changes nothing a reconcile would look at.
        self._written: dict[tuple[str, str, str], str] = {}
        self._written_guard = threading.Lock()

    # -- the calling reconcile's tally ------------------------------------------------------
    def start_tally(self) -> None:
        self._tally.writes = 0

    @property
    def writes(self) -> int:
        """Writes the calling thread made since its :meth:`start_tally`."""
        return getattr(self._tally, "writes", 0)

    def _wrote(self, resource: str, verb: str) -> None:
        metrics.API_WRITES.labels(resource, verb).inc()
        self._tally.writes = self.writes + 1

    # -- the record of our own writes -------------------------------------------------------
    def remember(self, kind: str, namespace: str, name: str, obj) -> None:
        """Record the resourceVersion our write of ``kind`` (schedule, backfill, cronjob) returned."""
        rv = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else None
        if rv:
            with self._written_guard:
                self._written[(kind, namespace, name)] = rv

    def is_echo(self, kind: str, namespace: str, name: str, resource_version: str | None) -> bool:
        """True when this watch event shows exactly the version our last write produced."""
        with self._written_guard:
            return bool(resource_version) and self._written.get((kind, namespace, name)) == resource_version

    def forget_write(self, kind: str, namespace: str, name: str) -> None:
        with self._written_guard:
            self._written.pop((kind, namespace, name), None)

    # -- reads ------------------------------------------------------------------------------
    def read(self, kind: Kind, namespace: str, name: str) -> dict | None:
        """One of our resources, None when it does not exist."""
        return raw_or_none(self.custom.get_namespaced_custom_object, names.GROUP, names.VERSION, namespace, kind.plural, name)

    def read_cronjob(self, namespace: str, name: str) -> dict | None:
        return raw_or_none(self.batch.read_namespaced_cron_job, name, namespace)

    def read_job(self, namespace: str, name: str) -> dict | None:
        return raw_or_none(self.batch.read_namespaced_job, name, namespace)

    def jobs(self, namespace: str, label_selector: str) -> list[dict]:
        return raw(self.batch.list_namespaced_job, namespace, label_selector=label_selector)["items"]

    def pods(self, namespace: str, label_selector: str) -> list[dict]:
        return raw(self.core.list_namespaced_pod, namespace, label_selector=label_selector)["items"]

    def events(self, namespace: str, kind: str, name: str) -> list[dict]:
        """The Events about one object (why the Job controller made no pod, why a volume
        did not mount); an operator not allowed to list them sees none (logged once)."""
        try:
            return raw(self.core.list_namespaced_event, namespace,
                       field_selector=f"involvedObject.kind={kind},involvedObject.name={name}")["items"]
        except ApiException as e:
            if e.status != 403:
                raise
            if not self._events_refused:
                self._events_refused = True
                log.warning("event=events_not_readable namespace=%s error=%r", namespace, api_message(e))
            return []

    # -- counted writes ---------------------------------------------------------------------
    def _fenced(self) -> None:
        """Every write asks first: a replica that stopped leading writes nothing more, even from a
        reconcile already under way while it steps down."""
        if not self.fence():
            raise NotLeading("this replica no longer holds the Lease: the write is left to the leader")

    def create_cronjob(self, namespace: str, body: dict) -> dict:
        self._fenced()
        out = raw(self.batch.create_namespaced_cron_job, namespace, body, field_manager=names.FIELD_MANAGER)
        self._wrote("cronjobs", "create")
        self.remember("cronjob", namespace, out["metadata"]["name"], out)
        return out

    def replace_cronjob(self, namespace: str, body: dict) -> dict:
        self._fenced()
        out = raw(self.batch.replace_namespaced_cron_job, body["metadata"]["name"], namespace, body,
                  field_manager=names.FIELD_MANAGER)
        self._wrote("cronjobs", "update")
        self.remember("cronjob", namespace, out["metadata"]["name"], out)
        return out

    def create_job(self, namespace: str, body: dict) -> dict:
        self._fenced()
        out = raw(self.batch.create_namespaced_job, namespace, body, field_manager=names.FIELD_MANAGER)
        self._wrote("jobs", "create")
        return out

    def patch_status(self, kind: Kind, namespace: str, name: str, patch: dict) -> dict:
        """A merge patch of one of our resources' status; its echo is remembered."""
        self._fenced()
        out = self.custom.patch_namespaced_custom_object_status(names.GROUP, names.VERSION, namespace, kind.plural, name,
                                                                {"status": patch})
        self._wrote(kind.status_resource, "patch")
        self.remember(kind.name, namespace, name, out)
        return out

    def post_event(self, kind: Kind, meta: dict, type_: str, reason: str, message: str) -> None:
        """An Event about one of our resources (``meta``: its metadata). Best effort: status
        carries the truth."""
        self._fenced()
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{names.GROUP}/{names.VERSION}", "kind": kind.kind, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid", "")},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": names.MANAGED_BY},
            "firstTimestamp": now, "lastTimestamp": now,
            "count": 1,
        }
        try:
            raw(self.core.create_namespaced_event, meta["namespace"], body)
            self._wrote("events", "create")
        except ApiException as e:
            log.warning("event=event_post_failed namespace=%s kind=%s name=%s status=%s", meta["namespace"], kind.kind,
                        meta["name"], e.status)

    # -- the retry policy -------------------------------------------------------------------
    def with_retries(self, attempt: Callable[[bool], str], on_gone: Callable[[], None]) -> tuple[str, int]:
        """Run one reconcile: ``attempt(fresh)`` until it does not meet a concurrent write.
        ``fresh`` is False the first time (the caller may use what its event carried) and True
        after a 409 (read everything again). Returns its result and the conflicts met; a
        resource deleted meanwhile (or whose namespace is terminating) calls ``on_gone`` and is
        ``gone``; after :attr:`CONFLICT_ATTEMPTS` conflicts the result is ``conflict``."""
        conflicts, fresh = 0, False
        while True:
            try:
                return attempt(fresh), conflicts
            except ApiException as e:
                if gone(e):
                    on_gone()
                    return "gone", conflicts
                if e.status != 409:
                    raise
                conflicts += 1
                fresh = True
                if conflicts == self.CONFLICT_ATTEMPTS:
                    return "conflict", conflicts


class KeyedLocks:
    """One lock per key (a resource's namespace and name), made on first use."""

    def __init__(self):
        self._locks: dict = {}
        self._guard = threading.Lock()

    def __call__(self, key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def raw(call, *args, **kwargs) -> dict:
    """A client call's response as the API server's JSON, with no client models built and
    then turned back into dicts. (Measured at 1,000 schedules: no speed-up beyond the noise;
    it keeps one form of every object, the API server's.)"""
    return json.loads(call(*args, _preload_content=False, **kwargs).data)


def raw_or_none(call, *args, **kwargs) -> dict | None:
    """:func:`raw` for a read, None when the object does not exist (404)."""
    try:
        return raw(call, *args, **kwargs)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def refused(e: ApiException) -> bool:
    """The API server refused an object itself: invalid (400, 422: validation, an admission
    policy), or forbidden by admission (403 from a quota or a webhook), not by RBAC."""
    if e.status in (400, 422):
        return True
    message = api_message(e) if e.status == 403 else ""
    return "exceeded quota" in message or "admission webhook" in message or "denied the request" in message


def gone(e: ApiException) -> bool:
    return e.status == 404 or (e.status == 403 and "being terminated" in (e.body or ""))


def api_message(e: ApiException) -> str:
    try:
        return json.loads(e.body).get("message", e.reason)
    except (TypeError, ValueError):
        return str(e.reason)
