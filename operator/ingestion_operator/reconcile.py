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
from collections.abc import Callable

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from ingestion_contract import JOB_NAME_LABEL, Coverage, end_reason

from . import metrics, names
from .gateway import SCHEDULE, KeyedLocks, KubeGateway, api_message, owned_by, refused
from .render import RenderSettings, cronjob_name, render_cronjob
from .resource import Problem, ScheduleResource
from .shares import sharer_of, with_share
from .status import (MOUNT_GRACE, START_GRACE, Blocked, Event, condition_of, derive_status, job_blocked, job_container_ends, job_outcome,
                     merge_patch, newest_finished_job, newest_job, parse_time, stale_deadline, transition_events)
from .informer import Work, WorkQueue
from .timer import NextRunTimer
from .upstream import SharingIndex

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
    read of its CronJob. The CronJobs' informer fills it, listing them all before any reconcile
    starts (:attr:`primed`), then with every event in the watch's order; a DELETED event or the
    operator's own write updates it.

    It is trusted only where a mistake costs a retry, never a wrong write: "absent" leads to a
    create, which a CronJob that does exist refuses (409, and the retry reads); "present and in
    line" leads to nothing; anything else (it differs from the rendering, or another owner
    holds it) is read again before it is written or reported. A reconcile
    woken by its timer reads for real, so a deletion the watch missed (a re-list after a long
    outage) is found by the next run at the latest, as it was before the cache. Held trimmed
    (no managedFields, no annotations), since a replace starts from a read, and as compact
    JSON: a CronJob parsed into dicts and lists takes about ten times its JSON's size (most of
    the operator's memory with 1,000 schedules), and a read parses it again in microseconds,
    a fresh copy no caller can change under another. Whether an entry is acted on is
    :meth:`trusts`'s answer, a value computed before any write."""

    def __init__(self):
        self.primed = False  # set once the informer has listed every CronJob of ours
        self._items: dict[tuple[str, str], tuple[str | None, bytes]] = {}  # (uid, JSON)

    @staticmethod
    def trim(obj) -> dict:
        meta = obj.get("metadata") or {}
        return {"metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "labels", "ownerReferences")
                             if k in meta},
                "spec": obj.get("spec"), "status": obj.get("status")}

    def put(self, obj) -> None:
        meta = obj.get("metadata") or {}
        blob = json.dumps(self.trim(obj), separators=(",", ":")).encode()
        self._items[(meta.get("namespace"), meta.get("name"))] = (meta.get("uid"), blob)

    def drop(self, namespace: str, name: str, uid: str | None) -> None:
        """A DELETED event: forget the CronJob, unless the entry is already a newer one."""
        entry = self._items.get((namespace, name))
        if entry is not None and entry[0] == uid:
            self._items.pop((namespace, name), None)

    def get(self, namespace: str, name: str) -> dict | None:
        entry = self._items.get((namespace, name))
        return None if entry is None else json.loads(entry[1])

    @staticmethod
    def trusts(entry: dict | None, owner_uid: str, wanted: dict | None) -> bool:
        """Whether a reconcile may act on ``entry`` (the cache's CronJob, None: absent) without
        reading it: when it is absent (a create that is wrong costs a 409 and a retry), or ours
        and, with a rendering (``wanted``) to compare, already in line with it. Anything else
        (another owner: perhaps a predecessor's, already collected; a replace, which starts
        from the whole object) is read first."""
        if entry is None:
            return True
        return owned_by(entry, owner_uid) and (wanted is None or is_subset(wanted, entry))

    def __len__(self) -> int:
        return len(self._items)


class Reconciler:
    RECHECK_SECONDS = 30  # a schedule blocked by a foreign CronJob or an admission refusal looks again
    START_RECHECK_SECONDS = 15  # a run that has not started yet is looked at again

    def __init__(self, api_client: client.ApiClient, settings: RenderSettings, clock=None, pool_size: int | None = None):
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.kube = KubeGateway(api_client, self.clock, pool_size)
        self.api_client = self.kube.api_client
        self.settings = settings
        # Every resource's work (keys (kind, namespace, name)) runs on one queue, fed by the
        # watches and by one timer; what a key's work does, by kind: ``runs`` (the reconcile)
        # and ``gone`` (forget a deleted one). The backfill and upstream reconcilers add theirs.
        self.runs: dict[str, Callable[[str, str, Work], None]] = {
            SCHEDULE.name: lambda namespace, name, work: self.reconcile(namespace, name, body=work.body, trigger=work.trigger)}
        self.gone: dict[str, Callable[[str, str], None]] = {SCHEDULE.name: self._gone}
        self.queue = WorkQueue(self.work, pool_size or 32)
        metrics.WORK_QUEUE_DEPTH.set_function(self.queue.depth)  # this term's queue
        self.timer = NextRunTimer(lambda kind, namespace, name: self.work((kind, namespace, name), Work("timer")), clock=self.clock)
        self._coverage_read: dict[tuple[str, str], str] = {}  # the Job whose pods were last read, per schedule
        self._ends: dict[tuple[str, str], dict[str, str]] = {}  # per schedule: that Job's own reason, if it gave one
        self._observed = threading.local()  # this thread's reconcile: the schedule's version it acted on
        self._lock = KeyedLocks()
        self.ready: dict[tuple[str, str], bool] = {}
        self.cronjobs = CronJobCache()
        self.sharing = SharingIndex()  # the upstreams and who reads from them, kept by the informers (handlers.py)

    def reconcile(self, namespace: str, name: str, body: dict | None = None, trigger: str = "schedule") -> None:
        """Bring one schedule in line. ``body``: the schedule as its watch event delivered it
        (saves a read); without it, or after a conflict, the schedule is read. ``trigger``
        (schedule, cronjob, job, timer) is what woke it, for the log line every reconcile ends
        with: ``event=reconciled namespace= name= trigger= result= observed=<the schedule's
        resourceVersion it acted on> writes= conflicts= duration_ms=``."""
        t0 = time.monotonic()
        self.kube.start_tally()
        self._observed.version = None
        use_cache = trigger != "timer"  # the timer's reconcile reads the CronJob: see CronJobCache
        try:
            with self._lock((namespace, name)):
                # after a conflict (fresh): the schedule and its CronJob are read again
                result, conflicts = self.kube.with_retries(
                    lambda fresh: self._reconcile_once(namespace, name, None if fresh else body, use_cache and not fresh),
                    on_gone=lambda: self.forget(namespace, name))
            metrics.RECONCILES.labels(result).inc()
            log.info("event=reconciled namespace=%s name=%s trigger=%s result=%s observed=%s writes=%d conflicts=%d duration_ms=%d",
                     namespace, name, trigger, result, self._observed.version or "-", self.kube.writes, conflicts,
                     (time.monotonic() - t0) * 1000)
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            log.exception("event=reconcile_error namespace=%s name=%s trigger=%s observed=%s", namespace, name, trigger,
                          self._observed.version or "-")
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - t0)
            metrics.SCHEDULES.labels("true").set(sum(self.ready.values()))
            metrics.SCHEDULES.labels("false").set(len(self.ready) - sum(self.ready.values()))

    def submit(self, key: tuple, work: Work) -> None:
        """Queue ``work`` for ``key`` (kind, namespace, name): see :class:`WorkQueue`."""
        self.queue.put(key, work)

    def work(self, key: tuple, work: Work) -> None:
        """Run one key's work (on a queue worker, or the timer's thread in tests); one that
        fails is tried again by the timer (the reconcile logged and counted why)."""
        kind, namespace, name = key
        if work.echoes and all(self.kube.is_echo(*e) for e in work.echoes):
            return  # events of our own writes, delivered before the writes returned
        try:
            if work.forget:
                self.gone[kind](namespace, name)
            if work.trigger != "deleted":
                self.runs[kind](namespace, name, work)
        except Exception:
            self.timer.set(key, self.clock() + self.timer.RETRY)

    def _gone(self, namespace: str, name: str) -> None:
        self.forget(namespace, name)
        log.info("event=deleted namespace=%s name=%s (CronJob and Jobs are garbage-collected)", namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        self.timer.set((SCHEDULE.name, namespace, name), None)
        self._coverage_read.pop((namespace, name), None)
        self._ends.pop((namespace, name), None)
        self.ready.pop((namespace, name), None)
        try:
            metrics.SUSPENDED.remove(namespace, name)
        except KeyError:
            pass
        self.kube.forget_write(SCHEDULE.name, namespace, name)
        self.kube.forget_write("cronjob", namespace, cronjob_name(name))

    def _reconcile_once(self, namespace: str, name: str, body: dict | None = None, use_cache: bool = False) -> str:
        # 1. Load the schedule; a deleted one is left to garbage collection (ownerReferences).
        if body is None:
            body = self.kube.read(SCHEDULE, namespace, name)
            if body is None:
                self.forget(namespace, name)
                return "gone"
        self._observed.version = body["metadata"].get("resourceVersion")
        if body["metadata"].get("deletionTimestamp"):
            return "deleting"

        # 2. Parse and validate the spec once: field errors, or the typed spec; render it, with
        #    its share of the upstream it reads from (if one names its source) as its cap.
        schedule = ScheduleResource.from_body(body)
        problem = schedule.problem
        cj_name = cronjob_name(name)
        desired, share = None, None
        if problem is None:
            sharer = sharer_of(name, schedule.spec)
            share = self.sharing.share_of(namespace, sharer) if sharer is not None else None
            spec = with_share(schedule.spec, share and share.requests_per_second, share and share.bytes_per_second)
            desired = render_cronjob(name, namespace, spec, self.settings, paused=spec.paused(self.clock()))
            kopf.adopt(desired, owner=body)

        # 3. The live CronJob, from the cache where it can be trusted, and whether it is ours.
        live = self._live_cronjob(schedule, cj_name, desired, use_cache)
        if live is not None and not owned_by(live, schedule.uid):
            problem = Problem("CronJobConflict", f"CronJob {cj_name} already exists and is not owned by this IngestionSchedule")

        # 4. Converge the CronJob to the rendered one (only when it differs).
        action = None
        if problem is None:
            try:
                live, action = self._converge(namespace, desired, live)
            except ApiException as e:
                if not refused(e):
                    raise
                problem = Problem("CronJobRejected", f"the API server rejected the CronJob: {api_message(e)}")

        # 5. Its Jobs, newest decides lastRun.
        # (A CronJob created just now, with a new uid, owns no Job yet: no need to list them.)
        jobs = self._jobs(namespace, name, live) if live is not None and action != "CronJobCreated" else []

        # 6. Status, written only when it changed: with what the newest finished run said of
        #    itself, and why the newest Job cannot start, if it cannot.
        coverage, ends = self._run_ends(namespace, name, schedule.status, jobs)
        blocked, look_again = self._blocked(namespace, jobs)
        new_status = derive_status(schedule, live, jobs, self.clock(), problem, coverage, ends, blocked, share)
        if new_status != schedule.status:
            self.kube.patch_status(SCHEDULE, namespace, name, merge_patch(schedule.status, new_status))

        # 7. Events on transitions only.
        for event in transition_events(schedule.status, new_status, problem, action):
            self._event(schedule, event)
            log.log(logging.WARNING if event.type == "Warning" else logging.INFO, "event=%s namespace=%s name=%s cronjob=%s message=%r",
                    event.reason, namespace, name, cj_name, event.message)

        # 8. Wake again just after the next run, or when it would turn Stale, should no Job
        #    event come first. A schedule blocked by something outside it (a foreign CronJob,
        #    an admission policy, a quota) gets no event when that goes away: look again after
        #    RECHECK_SECONDS.
        wake = parse_time((new_status.get("nextRuns") or [None])[0])
        stale_at = stale_deadline(schedule, live, jobs, self.clock()) if problem is None else None
        if stale_at is not None and stale_at > self.clock() and (wake is None or stale_at < wake):
            wake = stale_at  # Stale turns True then, with no event to announce it
        if problem is not None and problem.reason in ("CronJobConflict", "CronJobRejected"):
            wake = self.clock() + dt.timedelta(seconds=self.RECHECK_SECONDS)
        pause_end = schedule.spec.pause.ends() if problem is None and schedule.spec.paused(self.clock()) else None
        if pause_end is not None:
            wake = pause_end  # it resumes by itself then, with no event to announce it
        if look_again is not None and (wake is None or look_again < wake):
            wake = look_again  # a run not started yet: whether it can, no event would tell
        self.timer.set((SCHEDULE.name, namespace, name), wake)
        self.ready[(namespace, name)] = condition_of(new_status, "Ready")["status"] == "True"
        metrics.SUSPENDED.labels(namespace, name).set(1 if (condition_of(new_status, "Suspended") or {}).get("status") == "True"
                                                      else 0)
        return "invalid" if problem else (action or "unchanged")

    def _live_cronjob(self, schedule: ScheduleResource, cj_name: str, desired: dict | None, use_cache: bool) -> dict | None:
        """The schedule's CronJob: the cache's entry where :meth:`CronJobCache.trusts` it, else a
        read. (A schedule whose status says another object holds its CronJob's name reads: the
        cache holds only ours, so "absent" would cost a refused create.)"""
        foreign = (condition_of(schedule.status, "Ready") or {}).get("reason") == "CronJobConflict"
        if use_cache and self.cronjobs.primed and not foreign:
            entry = self.cronjobs.get(schedule.namespace, cj_name)
            if self.cronjobs.trusts(entry, schedule.uid, desired and _wanted(desired)):
                return entry
        return self._read_cronjob(schedule.namespace, cj_name)

    def _run_ends(self, namespace: str, name: str, status: dict, jobs: list[dict]) -> tuple[dict | None, dict[str, str]]:
        """The coverage the newest finished run reported in its pod's termination message, and
        its one-line reason if it did not succeed ({job: reason}), read once per Job (a run
        that reported no coverage, e.g. a failed one, leaves the last one standing). A run
        that was Blocked and then ended (its deadline) keeps the block as its reason: its pod,
        that held it, is gone."""
        known = status.get("coverage")
        job = newest_finished_job(jobs)
        key = (namespace, name)
        if job is None:
            return known, {}
        if self._coverage_read.get(key) == job:
            return known, self._ends.get(key, {})
        succeeded = job_outcome(next(j for j in jobs if j["metadata"]["name"] == job))[0] == "Succeeded"
        prior = status.get("lastRun") or {}
        said = {}
        if prior.get("job") == job and prior.get("message"):  # a block keeps its Kubernetes reason: it is all there is
            said = {job: prior["reason"] if prior.get("outcome") == "Blocked" else prior["message"]}
        if (known or {}).get("job") == job and (succeeded or said):
            return known, said  # read before this operator started: the status holds it
        pods = self.kube.pods(namespace, f"{JOB_NAME_LABEL}={job}")
        messages = [(p["metadata"].get("creationTimestamp") or "", t.get("message")) for p in pods for t in job_container_ends(p)]
        coverage, ends, spoke = known, dict(said), False
        for _, message in sorted(messages, key=lambda m: m[0], reverse=True):
            found, end = Coverage.decode(message), end_reason(message)
            if end is not None and not spoke:  # the run's own words win over a block carried over
                ends[job], spoke = end[1], True
            if found is not None:
                coverage = {**found.as_status(), "job": job}
                break
        self._coverage_read[key], self._ends[key] = job, ends
        return coverage, ends

    def _blocked(self, namespace: str, jobs: list[dict]) -> tuple[Blocked | None, dt.datetime | None]:
        """Why the newest Job, running but with no pod ready, cannot start (its pods, and the
        Events of a Job with no pod or of a pod stuck creating), and when to look again while
        it has not started. A Job whose pod is ready costs no read."""
        job = newest_job(jobs)
        if job is None or job_outcome(job)[0] != "Running" or ((job.get("status") or {}).get("ready") or 0) > 0:
            return None, None
        now = self.clock()
        created = parse_time(job["metadata"].get("creationTimestamp")) or now
        if now - created < START_GRACE:
            return None, created + START_GRACE
        name = job["metadata"]["name"]
        pods = self.kube.pods(namespace, f"{JOB_NAME_LABEL}={name}")
        job_events = self.kube.events(namespace, "Job", name) if not pods else []
        pod_events = {p["metadata"]["name"]: self.kube.events(namespace, "Pod", p["metadata"]["name"]) for p in pods
                      if (p.get("status") or {}).get("phase") in (None, "Pending") and now - (parse_time(
                          p["metadata"].get("creationTimestamp")) or now) >= MOUNT_GRACE}
        found = job_blocked(job, pods, now, job_events, pod_events)
        # once blocked, the Job's own events (a pod made, a pod ready) wake it; look again less often
        return found, now + dt.timedelta(seconds=self.START_RECHECK_SECONDS * (4 if found else 1))

    def _read_cronjob(self, namespace: str, name: str) -> dict | None:
        return self.kube.read_cronjob(namespace, name)

    def _converge(self, namespace: str, desired: dict, live: dict | None) -> tuple[dict, str | None]:
        """Create or replace the CronJob unless ``live`` already holds what we render (a
        replace is made only from a ``live`` that was read, never from the cache)."""
        if live is None:
            out = self.kube.create_cronjob(namespace, desired)
            self.cronjobs.put(out)
            return out, "CronJobCreated"
        if is_subset(_wanted(desired), live):
            return live, None
        body = {**live, "spec": desired["spec"]}
        body["metadata"] = {**live["metadata"],
                            "labels": {**(live["metadata"].get("labels") or {}), **desired["metadata"]["labels"]},
                            "ownerReferences": desired["metadata"]["ownerReferences"]}
        body.pop("status", None)
        out = self.kube.replace_cronjob(namespace, body)
        self.cronjobs.put(out)
        return out, "CronJobUpdated"

    def _jobs(self, namespace: str, schedule_name: str, cronjob: dict) -> list[dict]:
        jobs = self.kube.jobs(namespace, f"{names.LABEL_SCHEDULE}={schedule_name}")
        return [j for j in jobs if owned_by(j, cronjob["metadata"]["uid"])]

    def _event(self, schedule: ScheduleResource, event: Event) -> None:
        meta = {"name": schedule.name, "namespace": schedule.namespace, "uid": schedule.uid}
        self.kube.post_event(SCHEDULE, meta, event.type, event.reason, event.message)


def _wanted(desired: dict) -> dict:
    """What of a rendered CronJob the live one must hold: our labels, owner and the spec."""
    return {"metadata": {k: desired["metadata"][k] for k in ("labels", "ownerReferences")}, "spec": desired["spec"]}
