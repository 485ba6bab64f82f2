"""IngestionUpstream: a source's request budget, and who shares it.

* :class:`SharingIndex` keeps, per namespace, the upstreams and what each schedule reads from
  (its source, its own cap, its floor), kept by the informers of both resources (listed before
  any reconcile starts: :mod:`.handlers`), and read by every schedule reconcile: a schedule finds
  its upstream and its share without a list.
* :func:`derive_upstream_status` (pure) and :func:`running_backfills` (pure, from Jobs).
* :class:`UpstreamReconciler`: level-based like the others. It writes the upstream's status
  (sharers, shares, conditions) when it differs, and wakes every schedule of its source whose
  CronJob does not run at the cap it should (as the CronJob cache shows it): an upstream added,
  changed or deleted, or a sharer added or removed, re-renders exactly the schedules it moves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
from collections.abc import Mapping

import ingestion_contract as contract
from ingestion_contract import SpecError
from ingestion_contract.spec import parse_spec
from ingestion_contract.upstream import Source, UpstreamSpec, parse_upstream

from . import names
from .gateway import SCHEDULE, UPSTREAM, KeyedLocks
from .render import cronjob_name
from .resource import Problem
from .shares import SCHEDULE_KIND, BackfillSharer, ScheduleSharer, bytes_share, sharer_of, shares
from .status import Conditions, job_outcome, merge_patch

log = logging.getLogger("ingestion_operator")


@dataclasses.dataclass(frozen=True)
class Share:
    """A schedule's part of an upstream: its name, the requests per second its runs take, and
    the floor it needs (None: not known)."""

    upstream: str
    requests_per_second: int
    floor: int | None = None
    requests: int | None = None
    bytes_per_second: int | None = None  # its part of the upstream's maxBytesPerSecond, if set

    def as_status(self) -> dict:
        out = {"name": self.upstream, "requestsPerSecond": self.requests_per_second}
        if self.bytes_per_second is not None:
            out["bytesPerSecond"] = self.bytes_per_second
        if self.floor is not None:
            out["floor"] = self.floor
        return out

    @property
    def below_floor(self) -> bool:
        return self.floor is not None and self.requests_per_second < self.floor

    def floor_message(self, deadline: int) -> str:
        return (f"IngestionUpstream {self.upstream} gives this schedule {self.requests_per_second} requests/s; a run's "
                f"about {self.requests} requests need at least {self.floor}/s to finish within activeDeadlineSeconds "
                f"{deadline}: raise the upstream's maxRequestsPerSecond or scheduledShare, or the deadline")


class SharingIndex:
    """Per namespace: the valid upstreams (name -> spec) and the schedules' sharers (name ->
    :class:`ScheduleSharer`). Written by the informers' threads, read by reconciles on workers."""

    def __init__(self):
        self._lock = threading.Lock()
        self._upstreams: dict[str, dict[str, UpstreamSpec | None]] = {}
        self._schedules: dict[str, dict[str, ScheduleSharer]] = {}
        self._shown: dict[tuple[str, str], tuple[str, int] | None] = {}
        # each schedule's sharer as parsed at a version of its spec (uid, generation)
        self._parsed: dict[tuple[str, str], tuple[tuple, ScheduleSharer | None]] = {}

    def sharer(self, namespace: str, name: str, body: Mapping) -> ScheduleSharer | None:
        """The sharer of the schedule ``body`` shows. Parsed once per version of its spec: a
        spec cannot change without its generation, and every echo of a status write comes back
        through the schedules' event filter with the same one (half of a new schedule's events)."""
        meta = body.get("metadata") or {}
        version = (meta.get("uid"), meta.get("generation"))
        with self._lock:
            seen = self._parsed.get((namespace, name))
        if seen is not None and seen[0] == version and version[1] is not None:
            return seen[1]
        sharer = schedule_sharer(name, body.get("spec"))
        with self._lock:
            self._parsed[(namespace, name)] = (version, sharer)
        return sharer

    # -- writes (the informers' events, DELETED ones too); each returns the sources it moved ------------------------
    def put_upstream(self, namespace: str, name: str, spec: UpstreamSpec | None) -> set[Source]:
        with self._lock:
            mine = self._upstreams.setdefault(namespace, {})
            old = mine.get(name)
            mine[name] = spec
        return {s.source for s in (old, spec) if s is not None} if old != spec else set()

    def drop_upstream(self, namespace: str, name: str) -> set[Source]:
        with self._lock:
            old = self._upstreams.get(namespace, {}).pop(name, None)
        return {old.source} if old is not None else set()

    def put_schedule(self, namespace: str, name: str, sharer: ScheduleSharer | None,
                     shown: tuple[str, int] | None = None) -> set[Source]:
        """``shown``: the upstream and share the schedule's status names (what it was last given),
        kept apart: a status change moves no source."""
        with self._lock:
            mine = self._schedules.setdefault(namespace, {})
            old = mine.pop(name, None)
            if sharer is not None:
                mine[name] = sharer
            self._shown[(namespace, name)] = shown
            if sharer is None and shown is None:  # deleted (or disabled: parsed again, which is cheap then)
                self._parsed.pop((namespace, name), None)
        return {s.source for s in (old, sharer) if s is not None} if old != sharer else set()

    def shown(self, namespace: str, name: str) -> tuple[str, int] | None:
        with self._lock:
            return self._shown.get((namespace, name))

    # -- reads ---------------------------------------------------------------------------------
    def upstream_for(self, namespace: str, source: Source) -> tuple[str, UpstreamSpec] | None:
        """The upstream of ``source``: of two naming one source, the first by name."""
        with self._lock:
            found = sorted((n, s) for n, s in self._upstreams.get(namespace, {}).items() if s is not None and s.source == source)
        return found[0] if found else None

    def upstreams_of(self, namespace: str, sources: set[Source]) -> list[str]:
        """Every upstream (by name) naming one of ``sources``."""
        with self._lock:
            return sorted(n for n, s in self._upstreams.get(namespace, {}).items() if s is not None and s.source in sources)

    def readers(self, namespace: str, source: Source) -> list[ScheduleSharer]:
        with self._lock:
            return sorted((s for s in self._schedules.get(namespace, {}).values() if s.source == source), key=lambda s: s.name)

    def share_of(self, namespace: str, sharer: ScheduleSharer) -> Share | None:
        """The share of the schedule ``sharer`` (as its reconcile parsed it: it replaces the
        index's entry), None when no upstream names its source."""
        found = self.upstream_for(namespace, sharer.source)
        if found is None:
            return None
        name, spec = found
        others = [s for s in self.readers(namespace, sharer.source) if s.name != sharer.name]
        split = shares(spec, others + [sharer])
        share = split[(SCHEDULE_KIND, sharer.name)]
        return Share(name, share, sharer.floor, sharer.requests, bytes_share(spec, share))

    def cap_of(self, namespace: str, sharer: ScheduleSharer) -> int | None:
        """The cap the schedule's runs should take: its share, else its own."""
        share = self.share_of(namespace, sharer)
        return sharer.own if share is None else share.requests_per_second


def schedule_sharer(name: str, raw_spec: object) -> ScheduleSharer | None:
    """The sharer of a schedule as its watch shows it; None for an invalid or disabled one (it
    runs nothing: see :func:`ingestion_operator.shares.sharer_of`)."""
    try:
        return sharer_of(name, parse_spec(raw_spec))
    except SpecError:
        return None


def shown_share(status: object) -> tuple[str, int] | None:
    """The upstream and share a schedule's status names (``status.upstream``), if any."""
    up = (status or {}).get("upstream") if isinstance(status, Mapping) else None
    if not isinstance(up, Mapping) or not isinstance(up.get("name"), str) or not isinstance(up.get("requestsPerSecond"), int):
        return None
    return up["name"], up["requestsPerSecond"]


def upstream_spec(raw_spec: object) -> UpstreamSpec | None:
    try:
        return parse_upstream(raw_spec)
    except SpecError:
        return None


def rendered_cap(cronjob: dict | None) -> int | None | str:
    """The ``target.maxRequestsPerSecond`` a CronJob's runs take (its rendered job spec); the
    string "unknown" when it holds none that can be read."""
    try:
        containers = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        env = next(e["value"] for c in containers for e in c.get("env") or [] if e.get("name") == contract.SPEC_ENV)
        return json.loads(env)["target"].get("maxRequestsPerSecond")
    except (KeyError, TypeError, StopIteration, ValueError, AttributeError):
        return "unknown"


def running_backfills(jobs: list[dict], upstream: str) -> list[BackfillSharer]:
    """The backfills whose Jobs took a share of ``upstream`` (their annotations) and still run."""
    out = []
    for job in jobs:
        ann = (job.get("metadata") or {}).get("annotations") or {}
        if ann.get(names.ANNOTATION_UPSTREAM) != upstream or job_outcome(job)[0] != "Running":
            continue
        try:
            share = int(ann.get(names.ANNOTATION_UPSTREAM_SHARE, ""))
        except ValueError:
            continue
        out.append(BackfillSharer((job["metadata"].get("labels") or {}).get(names.LABEL_BACKFILL) or job["metadata"]["name"],
                                  share))
    return sorted(out, key=lambda b: b.name)


def derive_upstream_status(body: dict, spec: UpstreamSpec | None, now: dt.datetime, problem: Problem | None = None,
                           schedules: list[ScheduleSharer] = (), backfills: list[BackfillSharer] = ()) -> dict:
    """The upstream's status (pure): its pools, every sharer's share, Ready (valid, and the one
    upstream of its source) and Degraded (a schedule's share below its floor, or more schedules
    than requests in their pool)."""
    condition = Conditions.of(body, now)
    status: dict = {"observedGeneration": condition.generation}
    if spec is None or problem is not None:
        problem = problem or Problem("InvalidSpec", "the spec is not valid")
        status.update(sharerCount=0, sharers=[], conditions=[
            condition("Ready", False, problem.reason, f"{problem.message}; its sharers run with their own settings"),
            condition("Degraded", True, problem.reason, problem.message)])
        if spec is not None:
            status["source"] = str(spec.source)
        return status
    split = shares(spec, schedules, backfills)
    floors = {s.name: s for s in schedules}
    sharers, below = [], []
    for (kind, name), share in split.items():
        item = {"kind": kind, "name": name, "share": share}
        if (b := bytes_share(spec, share)) is not None:
            item["bytesPerSecond"] = b
        floor = floors[name].floor if kind == SCHEDULE_KIND else None
        if floor is not None:
            item["floor"] = floor
            if share < floor:
                below.append(f"{name} gets {share}/s, needs {floor}/s")
        sharers.append(item)
    pool, n = spec.scheduled_requests_per_second, len(schedules)
    held = sum(b.share for b in backfills)
    status.update(source=str(spec.source), scheduledRequestsPerSecond=pool, backfillRequestsPerSecond=spec.backfill_requests_per_second,
                  split=f"{pool}/{spec.backfill_requests_per_second}", sharerCount=len(sharers), sharers=sharers)
    ready = condition("Ready", True, "SharesRendered",
                      f"{n} schedule(s) share {pool} requests/s; {len(backfills)} running backfill(s) hold {held} of "
                      f"{spec.backfill_requests_per_second}")
    if n > pool:
        degraded = condition("Degraded", True, "Overcommitted",
                             f"{n} schedules read from it and their pool is {pool} requests/s: each gets 1, {n - pool} more "
                             "than the pool; raise maxRequestsPerSecond or scheduledShare")
    elif below:
        degraded = condition("Degraded", True, "BelowFloor",
                             "shares below what a run needs to finish within its activeDeadlineSeconds: " + "; ".join(below))
    else:
        degraded = condition("Degraded", False, "AsExpected", "every schedule's share is at least its floor")
    status["conditions"] = [ready, degraded]
    return status


class UpstreamReconciler:
    """Brings one upstream's status in line and wakes the schedules its budget moves, through
    the schedule reconciler's gateway, timer and CronJob cache."""

    def __init__(self, reconciler):
        self.r = reconciler
        self.kube = reconciler.kube
        self.index: SharingIndex = reconciler.sharing
        self._lock = KeyedLocks()
        reconciler.runs[UPSTREAM.name] = lambda namespace, name, work: self.reconcile(namespace, name, body=work.body,
                                                                                  trigger=work.trigger)
        reconciler.gone[UPSTREAM.name] = self._gone

    def soon(self, namespace: str, sources: set[Source], wake: bool = False) -> None:
        """Something moved these sources (a schedule or an upstream came, went or changed):
        reconcile each of their upstreams in a moment (the timer coalesces a burst into one);
        with ``wake``, also wake their schedules now (an upstream deleted or made invalid has no
        reconcile of its own to do it)."""
        for name in self.index.upstreams_of(namespace, sources):
            self.r.timer.set((UPSTREAM.name, namespace, name), self.r.clock())
        if wake:
            for source in sources:
                self.wake_schedules(namespace, source)

    def _gone(self, namespace: str, name: str) -> None:
        self.forget(namespace, name)
        log.info("event=upstream_deleted namespace=%s name=%s (its schedules return to their own settings)", namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        self.kube.forget_write(UPSTREAM.name, namespace, name)
        self.r.timer.set((UPSTREAM.name, namespace, name), None)

    def reconcile(self, namespace: str, name: str, body: dict | None = None, trigger: str = "upstream") -> None:
        with self._lock((namespace, name)):
            result, conflicts = self.kube.with_retries(lambda fresh: self._reconcile_once(namespace, name, None if fresh else body),
                                                       on_gone=lambda: self.forget(namespace, name))
        log.info("event=upstream_reconciled namespace=%s name=%s trigger=%s result=%s conflicts=%d", namespace, name, trigger,
                 result, conflicts)

    def _reconcile_once(self, namespace: str, name: str, body: dict | None) -> str:
        # 1. Load the upstream.
        if body is None:
            body = self.kube.read(UPSTREAM, namespace, name)
            if body is None:
                self.forget(namespace, name)
                return "gone"
        if body["metadata"].get("deletionTimestamp"):
            return "deleting"
        # 2. Parse it; the first upstream (by name) of a source holds it.
        problem, spec = None, None
        try:
            spec = parse_upstream(body.get("spec"))
        except SpecError as e:
            problem = Problem("InvalidSpec", str(e))
        if spec is not None:
            holder = self.index.upstream_for(namespace, spec.source)
            if holder is not None and holder[0] != name:
                problem = Problem("DuplicateSource", f"IngestionUpstream {holder[0]} already names {spec.source}")
        # 3. Its sharers: the schedules of its source (the index), its running backfills (their Jobs).
        schedules, backfills = [], []
        if problem is None:
            schedules = self.index.readers(namespace, spec.source)
            backfills = running_backfills(self.kube.jobs(namespace, names.LABEL_BACKFILL), name)
        # 4. Status, written when it changed.
        live = dict(body.get("status") or {})
        new = derive_upstream_status(body, spec, self.r.clock(), problem, schedules, backfills)
        if new != live:
            self.kube.patch_status(UPSTREAM, namespace, name, merge_patch(live, new))
        # 5. Wake the schedules whose CronJobs do not run at their cap yet.
        woken = self.wake_schedules(namespace, spec.source) if spec is not None else 0
        return ("status" if new != live else "unchanged") + (f"+{woken}woken" if woken else "")

    def wake_schedules(self, namespace: str, source: Source) -> int:
        """Reconcile (in a moment, on the workers) every schedule of ``source`` whose CronJob, as
        the cache shows it, runs at another cap than its share (or its own, with no upstream),
        or whose status names another upstream or share (a schedule whose own cap equals its
        share has the same CronJob either way)."""
        woken = 0
        for sharer in self.index.readers(namespace, source):
            cached = self.r.cronjobs.get(namespace, cronjob_name(sharer.name))
            share = self.index.share_of(namespace, sharer)
            cap = sharer.own if share is None else share.requests_per_second
            expected = None if share is None else (share.upstream, share.requests_per_second)
            if cached is not None and (rendered_cap(cached) != cap or self.index.shown(namespace, sharer.name) != expected):
                self.r.timer.set((SCHEDULE.name, namespace, sharer.name), self.r.clock())
                woken += 1
        return woken

