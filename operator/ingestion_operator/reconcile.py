"""Reconcile one IngestionSchedule: the imperative shell around the pure core.

Level-based: whatever event arrives (the schedule, its CronJob or one of its Jobs changed,
a timer fired), the whole schedule is brought in line. Every write is a compare first:
the CronJob only when the rendered one is not already a subset of the live one, status
only when the derived status differs (as a merge patch that also removes nested fields
that no longer hold), events only on a transition. A resync or a restart
with nothing changed therefore writes nothing (counted by ingestion_operator_api_writes_total).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from ingestion_contract import JOB_NAME_LABEL, Coverage

from . import metrics, names
from .render import RenderSettings, cronjob_name, render_cronjob
from .resource import ScheduleResource
from .status import (Event, condition_of, derive_status, job_container_ends, merge_patch, newest_finished_job, parse_time,
                     stale_deadline, transition_events)
from .timer import NextRunTimer

log = logging.getLogger("ingestion_operator")


def is_subset(desired, live) -> bool:
    """Every value the operator sets is present in ``live`` (server defaults do not count)."""
    if isinstance(desired, dict):
        if live is None:
            return not desired
        if not isinstance(live, dict):
            return False
        return all(is_subset(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if live is None:
            return not desired
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_subset, desired, live))
    return desired == live and isinstance(desired, bool) == isinstance(live, bool)  # JSON: true is not 1


class CronJobCache:
    """The operator's CronJobs as their watch last showed them, so that a reconcile needs no
    read of its CronJob. kopf's index handler on CronJobs fills it (kopf holds every handler
    until that index has listed them all: :attr:`primed`), a DELETED event or the operator's
    own write updates it.

    It is trusted only where a mistake costs a retry, never a wrong write: "absent" leads to a
    create, which a CronJob that does exist refuses (409, and the retry reads); "present and in
    line" leads to nothing; anything else (it differs from the rendering, or another owner
    holds it) is read again before it is written or reported. A reconcile
    woken by its timer reads for real, so a deletion the watch missed (a re-list after a long
    outage) is found by the next run at the latest, as it was before the cache. Held trimmed
    (no managedFields, no annotations), since a replace starts from a read."""

    def __init__(self):
        self.primed = False  # set once kopf's index of CronJobs holds the handlers
        self._items: dict[tuple[str, str], dict] = {}

    @staticmethod
    def trim(obj) -> dict:
        meta = obj.get("metadata") or {}
        return {"metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "labels", "ownerReferences")
                             if k in meta},
                "spec": obj.get("spec"), "status": obj.get("status")}

    def put(self, obj) -> None:
        meta = obj.get("metadata") or {}
        self._items[(meta.get("namespace"), meta.get("name"))] = self.trim(obj)

    def drop(self, namespace: str, name: str, uid: str | None) -> None:
        """A DELETED event: forget the CronJob, unless the entry is already a newer one."""
        entry = self._items.get((namespace, name))
        if entry is not None and entry["metadata"].get("uid") == uid:
            self._items.pop((namespace, name), None)

    def get(self, namespace: str, name: str) -> dict | None:
        return self._items.get((namespace, name))

    def __len__(self) -> int:
        return len(self._items)


class StaleCache(Exception):
    """The cached CronJob differs from the rendered one: read it for real before writing."""


class Reconciler:
    RECHECK_SECONDS = 30  # a schedule blocked by a foreign CronJob or an admission refusal looks again

    def __init__(self, api_client: client.ApiClient, settings: RenderSettings, clock=None, pool_size: int | None = None):
        if pool_size and api_client.configuration.connection_pool_maxsize < pool_size:
            # one HTTP connection per concurrent reconcile (urllib3 otherwise discards and reopens them)
            api_client.configuration.connection_pool_maxsize = pool_size
            api_client = client.ApiClient(api_client.configuration)
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.settings = settings
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.timer = NextRunTimer(lambda namespace, name: self.reconcile(namespace, name, trigger="timer"), clock=self.clock)
        self._coverage_read: dict[tuple[str, str], str] = {}  # the Job whose pods were last read, per schedule
        self._tally = threading.local()  # this thread's reconcile: writes it made, version it saw
        self._lock = KeyedLocks()
        self.ready: dict[tuple[str, str], bool] = {}
        # resourceVersions our own writes returned: the watch event for exactly that version
        # is the echo of our write, and changes nothing a reconcile would look at.
        self._written: dict[tuple[str, str, str], str] = {}
        self._written_guard = threading.Lock()
        self.cronjobs = CronJobCache()

    def _remember(self, kind: str, namespace: str, name: str, obj) -> None:
        rv = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else None
        if rv:
            with self._written_guard:
                self._written[(kind, namespace, name)] = rv

    def is_echo(self, kind: str, namespace: str, name: str, resource_version: str | None) -> bool:
        """True when this watch event shows exactly the version our last write produced."""
        with self._written_guard:
            return bool(resource_version) and self._written.get((kind, namespace, name)) == resource_version

    def _wrote(self, resource: str, verb: str) -> None:
        metrics.API_WRITES.labels(resource, verb).inc()
        self._tally.writes = getattr(self._tally, "writes", 0) + 1

    def reconcile(self, namespace: str, name: str, body: dict | None = None, trigger: str = "schedule") -> None:
        """Bring one schedule in line. ``body``: the schedule as its watch event delivered it
        (saves a read); without it, or after a conflict, the schedule is read. ``trigger``
        (schedule, cronjob, job, timer) is what woke it, for the log line every reconcile ends
        with: ``event=reconciled namespace= name= trigger= result= observed=<the schedule's
        resourceVersion it acted on> writes= conflicts= duration_ms=``."""
        key = (namespace, name)
        t0 = time.monotonic()
        self._tally.writes, self._tally.observed = 0, None
        conflicts = 0
        cached = trigger != "timer"  # the timer's reconcile reads the CronJob: see CronJobCache
        try:
            with self._lock(key):
                while True:
                    try:
                        result = self._reconcile_once(namespace, name, body, cached)
                        break
                    except StaleCache:
                        cached = False
                    except ApiException as e:
                        if _gone(e):  # deleted meanwhile, or its namespace is terminating
                            self.forget(namespace, name)
                            result = "gone"
                            break
                        if e.status != 409:  # 409: a concurrent write; read again and redo
                            raise
                        conflicts += 1
                        body, cached = None, False
                        if conflicts == 3:
                            result = "conflict"
                            break
            metrics.RECONCILES.labels(result).inc()
            log.info("event=reconciled namespace=%s name=%s trigger=%s result=%s observed=%s writes=%d conflicts=%d duration_ms=%d",
                     namespace, name, trigger, result, self._tally.observed or "-", self._tally.writes, conflicts,
                     (time.monotonic() - t0) * 1000)
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            log.exception("event=reconcile_error namespace=%s name=%s trigger=%s observed=%s", namespace, name, trigger,
                          self._tally.observed or "-")
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - t0)
            metrics.SCHEDULES.labels("true").set(sum(self.ready.values()))
            metrics.SCHEDULES.labels("false").set(len(self.ready) - sum(self.ready.values()))

    def forget_write(self, kind: str, namespace: str, name: str) -> None:
        with self._written_guard:
            self._written.pop((kind, namespace, name), None)

    def forget(self, namespace: str, name: str) -> None:
        self.timer.set((namespace, name), None)
        self._coverage_read.pop((namespace, name), None)
        self.ready.pop((namespace, name), None)
        self.forget_write("schedule", namespace, name)
        self.forget_write("cronjob", namespace, cronjob_name(name))

    def _reconcile_once(self, namespace: str, name: str, body: dict | None = None, cached: bool = False) -> str:
        # 1. Load the schedule; a deleted one is left to garbage collection (ownerReferences).
        if body is None:
            try:
                body = self.custom.get_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, name)
            except ApiException as e:
                if e.status == 404:
                    self.forget(namespace, name)
                    return "gone"
                raise
        self._tally.observed = body["metadata"].get("resourceVersion")
        if body["metadata"].get("deletionTimestamp"):
            return "deleting"

        # 2. Parse and validate the spec once: field errors, or the typed spec.
        schedule = ScheduleResource.from_body(body)
        problem, reason = schedule.problem, schedule.reason

        # 3. Load the live CronJob and check it is ours.
        cj_name = cronjob_name(name)
        # (a schedule whose status says another object holds its CronJob's name reads, not caches:
        #  the cache holds only ours, so "absent" would cost a refused create)
        foreign = (condition_of(schedule.status, "Ready") or {}).get("reason") == "CronJobConflict"
        cached = cached and self.cronjobs.primed and not foreign
        live = self.cronjobs.get(namespace, cj_name) if cached else self._read_cronjob(namespace, cj_name)
        if live is not None and not any(o.get("uid") == schedule.uid for o in live["metadata"].get("ownerReferences") or []):
            if cached:
                raise StaleCache  # perhaps a predecessor's, already collected: a conflict is reported from a read only
            problem, reason = f"CronJob {cj_name} already exists and is not owned by this IngestionSchedule", "CronJobConflict"

        # 4. Converge the CronJob to the rendered one (only when it differs).
        action = None
        if problem is None:
            desired = render_cronjob(name, namespace, schedule.spec, self.settings)
            kopf.adopt(desired, owner=body)
            try:
                live, action = self._converge(namespace, desired, live, cached)
            except ApiException as e:
                if not _refused(e):
                    raise
                problem, reason = f"the API server rejected the CronJob: {_api_message(e)}", "CronJobRejected"

        # 5. Its Jobs, newest decides lastRun.
        # (A CronJob created just now, with a new uid, owns no Job yet: no need to list them.)
        jobs = self._jobs(namespace, name, live) if live is not None and action != "CronJobCreated" else []

        # 6. Status, written only when it changed.
        coverage = self._coverage(namespace, name, schedule.status.get("coverage"), jobs)
        new_status = derive_status(schedule, live, jobs, self.clock(), problem, reason, coverage)
        if new_status != schedule.status:
            out = self.custom.patch_namespaced_custom_object_status(
                names.GROUP, names.VERSION, namespace, names.PLURAL, name, {"status": merge_patch(schedule.status, new_status)})
            self._wrote("ingestionschedules/status", "patch")
            self._remember("schedule", namespace, name, out)

        # 7. Events on transitions only.
        for event in transition_events(schedule.status, new_status, problem, reason, action):
            self._event(schedule, event)
            log.log(logging.WARNING if event.type == "Warning" else logging.INFO, "event=%s namespace=%s name=%s cronjob=%s message=%r",
                    event.reason, namespace, name, cj_name, event.message)

        # 8. Wake again just after the next run, or when it would turn Stale, should no Job
        #    event come first. A schedule blocked by something outside it (a foreign CronJob,
        #    an admission policy, a quota) gets no event when that goes away: look again after
        #    RECHECK_SECONDS.
        wake = parse_time((new_status.get("nextRuns") or [None])[0])
        stale_at = stale_deadline(schedule, live, jobs) if problem is None else None
        if stale_at is not None and stale_at > self.clock() and (wake is None or stale_at < wake):
            wake = stale_at  # Stale turns True then, with no event to announce it
        if reason in ("CronJobConflict", "CronJobRejected"):
            wake = self.clock() + dt.timedelta(seconds=self.RECHECK_SECONDS)
        self.timer.set((namespace, name), wake)
        self.ready[(namespace, name)] = condition_of(new_status, "Ready")["status"] == "True"
        return "invalid" if problem else (action or "unchanged")

    def _coverage(self, namespace: str, name: str, known: dict | None, jobs: list[dict]) -> dict | None:
        """The coverage the newest finished run reported in its pod's termination message, read
        once per Job (a run that reported none, e.g. a failed one, leaves the last one standing)."""
        job = newest_finished_job(jobs)
        if job is None or (known or {}).get("job") == job or self._coverage_read.get((namespace, name)) == job:
            return known
        pods = raw(self.core.list_namespaced_pod, namespace, label_selector=f"{JOB_NAME_LABEL}={job}")["items"]
        self._coverage_read[(namespace, name)] = job
        messages = [(p["metadata"].get("creationTimestamp") or "", t.get("message")) for p in pods for t in job_container_ends(p)]
        for _, message in sorted(messages, key=lambda m: m[0], reverse=True):
            found = Coverage.decode(message)
            if found is not None:
                return {**found.as_status(), "job": job}
        return known

    def _read_cronjob(self, namespace: str, name: str) -> dict | None:
        return raw_or_none(self.batch.read_namespaced_cron_job, name, namespace)

    def _converge(self, namespace: str, desired: dict, live: dict | None, cached: bool = False) -> tuple[dict, str | None]:
        if live is None:
            out = raw(self.batch.create_namespaced_cron_job, namespace, desired, field_manager=names.FIELD_MANAGER)
            self._wrote("cronjobs", "create")
            self._remember("cronjob", namespace, out["metadata"]["name"], out)
            self.cronjobs.put(out)
            return out, "CronJobCreated"
        wanted = {"metadata": {k: desired["metadata"][k] for k in ("labels", "ownerReferences")}, "spec": desired["spec"]}
        if is_subset(wanted, live):
            return live, None
        if cached:
            raise StaleCache  # a replace starts from the whole object, read now
        body = {**live, "spec": desired["spec"]}
        body["metadata"] = {**live["metadata"],
                            "labels": {**(live["metadata"].get("labels") or {}), **desired["metadata"]["labels"]},
                            "ownerReferences": desired["metadata"]["ownerReferences"]}
        body.pop("status", None)
        out = raw(self.batch.replace_namespaced_cron_job, live["metadata"]["name"], namespace, body,
                  field_manager=names.FIELD_MANAGER)
        self._wrote("cronjobs", "update")
        self._remember("cronjob", namespace, out["metadata"]["name"], out)
        self.cronjobs.put(out)
        return out, "CronJobUpdated"

    def _jobs(self, namespace: str, schedule_name: str, cronjob: dict) -> list[dict]:
        jobs = raw(self.batch.list_namespaced_job, namespace, label_selector=f"{names.LABEL_SCHEDULE}={schedule_name}")["items"]
        uid = cronjob["metadata"]["uid"]
        return [j for j in jobs if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])]

    def _event(self, schedule: ScheduleResource, event: Event) -> None:
        meta = {"name": schedule.name, "namespace": schedule.namespace, "uid": schedule.uid}
        self.post_event(names.KIND, meta, event.type, event.reason, event.message)

    def post_event(self, kind: str, meta: dict, type_: str, reason: str, message: str) -> None:
        """An Event about our resource ``kind`` with metadata ``meta`` (a schedule or a
        backfill). Best effort: status carries the truth."""
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{names.GROUP}/{names.VERSION}", "kind": kind, "name": meta["name"],
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
            log.warning("event=event_post_failed namespace=%s kind=%s name=%s status=%s", meta["namespace"], kind, meta["name"],
                        e.status)


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


def _refused(e: ApiException) -> bool:
    """The API server refused the CronJob itself: invalid (400, 422: validation, an admission
    policy), or forbidden by admission (403 from a quota or a webhook), not by RBAC."""
    if e.status in (400, 422):
        return True
    message = _api_message(e) if e.status == 403 else ""
    return "exceeded quota" in message or "admission webhook" in message or "denied the request" in message


def _gone(e: ApiException) -> bool:
    return e.status == 404 or (e.status == 403 and "being terminated" in (e.body or ""))


def _api_message(e: ApiException) -> str:
    try:
        return json.loads(e.body).get("message", e.reason)
    except (TypeError, ValueError):
        return str(e.reason)
