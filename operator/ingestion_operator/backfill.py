"""IngestionBackfill: a schedule's date range run once, as one Indexed Job.

Pure parts (:func:`render_backfill_job`, :func:`derive_backfill_status`) and the imperative
shell (:class:`BackfillReconciler`), level-based like the schedule's reconcile: whatever
woke it (the backfill, its Job, a recheck), it reads the backfill, its Job and the Job's
pods, and writes only what differs.

* **The Job** is rendered once, from the schedule's spec as it is then, with completion
  index ``i`` = shard ``i % parallelism``, chunk ``i // parallelism``
  (:mod:`ingestion_contract.backfill`). It is owned by the backfill: deleting the backfill
  deletes the Job and its pods (garbage collection); what the units committed stays.
* **Its share of an upstream**: when an IngestionUpstream names the schedule's source, the
  Job is made with what the running backfills left of the upstream's backfill pool as its cap
  (annotated on the Job, which is the record), and keeps it to its end: a Job's pods cannot be
  changed, so a later change of the budget reaches the next backfill, not this one. With less
  than one request per shard left the backfill waits (``WaitingForUpstream``).
* **Progress** comes from the Job (``completedIndexes``, ``failedIndexes``, ``active``) and
  from each finished pod's termination message (the run's coverage of its unit).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

import kopf
from kubernetes.client.rest import ApiException

import ingestion_contract as contract
from ingestion_contract import BackfillSpec, Coverage, SpecError, parse_backfill
from ingestion_contract.backfill import shard_of
from ingestion_contract.cron import load_timezone
from ingestion_contract.periods import archive_boundary, cells_in
from ingestion_contract.spec import ScheduleSpec
from ingestion_contract.upstream import source_of

from . import names
from .render import RenderSettings, pod_failure_rules, render_pod_spec
from .gateway import BACKFILL, SCHEDULE, UPSTREAM, KeyedLocks, owned_by
from .resource import Problem, ScheduleResource
from .shares import backfill_take, bytes_share, with_share
from .status import Conditions, condition_of, iso, job_container_ends, job_outcome, merge_patch
from .upstream import running_backfills

log = logging.getLogger("ingestion_operator")
UNLIMITED_REPAIRS = 2**31 - 1  # a unit repairs every cell it can within its time budget
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def backfill_labels(name: str) -> dict:
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_NAME: "ingestion-job", names.LABEL_BACKFILL: name}


def backfill_schedule_spec(bf: BackfillSpec, schedule: ScheduleSpec) -> ScheduleSpec:
    """The schedule's spec as the backfill runs it: its symbols (if it names any), each
    shard's share of the request cap, and no cap on repairs per run."""
    target = schedule.target
    if bf.symbols:
        ranged = {s: s for s in target.symbol_ranges}  # a named symbol keeps its range
        target = dataclasses.replace(target, symbols=tuple(s for s in bf.symbols if s not in ranged),
                                     symbol_ranges=tuple(ranged[s] for s in bf.symbols if s in ranged), discover=False)
    target = dataclasses.replace(target, max_requests_per_second=bf.shard_requests_per_second(target.max_requests_per_second),
                                 max_bytes_per_second=target.max_bytes_per_second and max(target.max_bytes_per_second // bf.parallelism, 1))
    repair = dataclasses.replace(schedule.repair, max_repairs_per_run=UNLIMITED_REPAIRS)
    return dataclasses.replace(schedule, target=target, repair=repair)


def render_backfill_job(name: str, namespace: str, bf: BackfillSpec, schedule_name: str, schedule: ScheduleSpec,
                        settings: RenderSettings = RenderSettings(), created: str | None = None) -> dict:
    """The Indexed Job of the backfill ``namespace/name``: one completion per unit, one pod
    per shard at a time; each pod's own deadline is the schedule's activeDeadlineSeconds.
    ``created``: the backfill's creationTimestamp (a unit's repairs are counted since then)."""
    spec = backfill_schedule_spec(bf, schedule)
    labels = backfill_labels(name)
    pod = render_pod_spec(schedule_name, spec, settings)
    pod["activeDeadlineSeconds"] = spec.active_deadline_seconds
    pod["containers"][0]["env"].append({"name": contract.BACKFILL_ENV, "value": contract.encode_unit_env(name, bf, created)})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": bf.units,
            "parallelism": bf.parallelism,
            "backoffLimitPerIndex": bf.retries_per_chunk,
            # a refused spec fails the same in every pod: fail that unit at once
            "podFailurePolicy": {"rules": pod_failure_rules("FailIndex", [contract.EXIT_USAGE])},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def parse_indexes(text: str | None) -> set[int]:
    """The Job status' index list ("0-3,7") as a set."""
    out: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


def unit_coverage(pods: list[dict]) -> dict[int, tuple[str, Coverage]]:
    """Per completion index, (when it finished, the coverage) of the newest pod that reported
    one (a unit's report counts every attempt's repairs: see the job's ``repaired_since``)."""
    found: dict[int, tuple[str, Coverage]] = {}
    for pod in pods:
        index = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION)
        if index is None or not index.isdigit():
            continue
        for term in job_container_ends(pod):
            cov = Coverage.decode(term.get("message"))
            if cov is not None:
                when = term.get("finishedAt") or ""
                if int(index) not in found or when >= found[int(index)][0]:
                    found[int(index)] = (when, cov)
    return found


REPORT_KEYS = ("expected", "present", "missing", "repaired", "unrepaired", "bytes")


def kept_reports(live: dict, pods: list[dict], finished: set[int]) -> dict[str, dict]:
    """The reports of finished units, kept on the status (``status.reports``, by index) once
    read: a unit's pod deleted after it finished (by hand, by pod garbage collection) takes
    its termination message with it, and its cells would go uncounted. A newer pod's report
    replaces a kept one."""
    kept = {k: v for k, v in (live.get("reports") or {}).items() if isinstance(v, dict)}
    for index, (when, cov) in unit_coverage(pods).items():
        if index in finished and (str(index) not in kept or when >= kept[str(index)].get("at", "")):
            kept[str(index)] = {**{k: getattr(cov, k) for k in REPORT_KEYS}, "at": when}
    return {k: kept[k] for k in sorted(kept, key=int) if int(k) in finished}


def unit_cells(bf: BackfillSpec, symbols: tuple[str, ...] | None, variants: int = 1,
               period: str = "daily", archive_days: int | None = None) -> dict[int, int] | None:
    """Cells of each unit: its shard's symbols x their ``variants`` (the combinations of
    target.dimensions' values) x its chunk's days, or the months that end in them; with
    target.archive (``archive_days``: its dailyDays), the months before the boundary counted back
    from the backfill's last date and the days after it (None while symbols are discovered)."""
    if not symbols:
        return None
    per_shard = [variants * sum(1 for s in symbols if shard_of(s, bf.parallelism) == shard) for shard in range(bf.parallelism)]
    boundary = archive_boundary(bf.last, archive_days) if archive_days else None
    out = {}
    for i in range(bf.units):
        u = bf.unit(i)
        out[i] = per_shard[u.shard] * cells_in(u.first, u.last, period, boundary)
    return out


def cell_counts(units: int, done: set[int], failed: set[int], reports: dict[str, dict],
                cells: dict[int, int] | None) -> dict[str, int | None]:
    """Every cell of the backfill counted once, in one of: verified (held, present and
    verified; ``repaired`` of them by this backfill), missing upstream, failed, pending (its
    unit not finished), unreported (its unit finished, its report gone with its pod). With
    the cells per unit known they add up to the total; without (discovered symbols) pending is
    unknown (None)."""
    verified = repaired = missing = bad = unreported = pending = nbytes = 0
    total = 0 if cells is not None else None
    for i in range(units):
        n = cells.get(i, 0) if cells is not None else None
        r = reports.get(str(i))
        if r is not None and (i in done or i in failed):
            ok, no = max(r["present"] - r["unrepaired"], 0), r["unrepaired"]
            if n is not None:
                n = max(n, ok + no)  # a report of more cells than the unit has (its symbols changed): its own count
            verified, bad, repaired, nbytes = verified + ok, bad + no, repaired + r["repaired"], nbytes + r["bytes"]
            missing += (n - ok - no) if n is not None else r["missing"]
        elif i in failed:
            bad += n or 0
        elif i in done:
            unreported += n or 0
        else:
            pending += n or 0
        if total is not None:
            total += n
    return {"verified": verified, "repaired": repaired, "missing": missing, "failed": bad, "unreported": unreported,
            "pending": pending if cells is not None else None, "total": total, "bytes": nbytes}


def derive_backfill_status(body: dict, bf: BackfillSpec | None, job: dict | None, pods: list[dict], now: dt.datetime,
                           problem: Problem | None = None, cells: dict[int, int] | None = None,
                           clamped: str | None = None) -> dict:
    """The backfill's status from its Job and pods (pure; equal inputs give an equal status).
    ``cells``: each unit's cells (:func:`unit_cells`); ``clamped``: why ``to`` was cut short."""
    live = dict(body.get("status") or {})
    condition = Conditions.of(body, now)
    generation = condition.generation
    if problem is not None or bf is None:
        problem = problem or Problem("", "")
        keep = {k: v for k, v in live.items() if k in ("progress", "shards", "jobName", "startTime", "completionTime",
                                                        "reports", "effectiveTo", "upstream")}
        return {**keep, "observedGeneration": generation, "conditions": [
            condition("Complete", False, problem.reason, problem.message),
            condition("Failed", problem.reason in FINAL_PROBLEMS, problem.reason, problem.message)]}
    units = bf.units
    st = (job or {}).get("status") or {}
    done, failed = parse_indexes(st.get("completedIndexes")), parse_indexes(st.get("failedIndexes"))
    reports = kept_reports(live, pods, done | failed)
    n = cell_counts(units, done, failed, reports, cells)
    finished_cells = n["verified"] + n["missing"] + n["failed"]
    percent = int(100 * len(done) / units) if units else 100
    progress = {
        "units": units, "unitsDone": len(done), "unitsFailed": len(failed), "unitsRunning": st.get("active", 0) or 0,
        "percent": percent, "summary": f"{percent}%", "unitsProgress": f"{len(done)}/{units}",
        "cellsDone": finished_cells, "cells": f"{finished_cells}/{n['total'] if n['total'] is not None else '?'}",
        "cellsVerified": n["verified"], "cellsRepaired": n["repaired"], "cellsMissingUpstream": n["missing"],
        "cellsFailed": n["failed"], "bytes": n["bytes"],
    }
    if n["total"] is not None:
        progress.update(cellsTotal=n["total"], cellsPending=n["pending"])
    if n["unreported"]:
        progress["cellsUnreported"] = n["unreported"]
    shards = []
    for shard in range(bf.parallelism):
        mine = set(range(shard, units, bf.parallelism))
        n_done, n_failed = len(mine & done), len(mine & failed)
        state = ("Failed" if n_failed else "Complete") if n_done + n_failed == len(mine) else \
            "Running" if job is not None else "Pending"
        shards.append({"shard": shard, "chunks": len(mine), "chunksDone": n_done, "chunksFailed": n_failed, "state": state})
    outcome, end, why = job_outcome(job) if job is not None else ("Pending", None, None)
    complete = outcome == "Succeeded"
    counted = (f"{n['verified']} verified ({n['repaired']} repaired by it), {n['missing']} not in the source, "
               f"{n['failed']} failed" + (f", {n['unreported']} unreported (their pods were deleted before "
                                          f"their reports were read)" if n["unreported"] else ""))
    of_total = f"{n['total']} cells" if n["total"] is not None else "cells"
    if complete:
        c_reason, c_msg = "AllUnitsDone", f"{units} units, {of_total}: {counted}"
    elif outcome == "Failed":
        c_reason, c_msg = "Failed", f"{why or 'the Job failed'}; {of_total}: {counted}"
    else:
        pending = f", {n['pending']} pending" if n["pending"] is not None else ", the rest pending"
        c_reason, c_msg = "InProgress", f"{len(done)} of {units} units done; {of_total}: {counted}{pending}"
    if clamped:
        c_msg += f" ({clamped})"
    status = {
        "observedGeneration": generation, "jobName": (job or {}).get("metadata", {}).get("name") or live.get("jobName"),
        "progress": progress, "shards": shards, "reports": reports, "effectiveTo": bf.to_date,
        "conditions": [condition("Complete", complete, c_reason, c_msg),
                       condition("Failed", outcome == "Failed", "Failed" if outcome == "Failed" else "NotFailed",
                                 (why or "the Job failed") if outcome == "Failed" else "")],
    }
    ann = ((job or {}).get("metadata") or {}).get("annotations") or {}
    if ann.get(names.ANNOTATION_UPSTREAM) and ann.get(names.ANNOTATION_UPSTREAM_SHARE, "").isdigit():
        status["upstream"] = {"name": ann[names.ANNOTATION_UPSTREAM], "requestsPerSecond": int(ann[names.ANNOTATION_UPSTREAM_SHARE])}
    if st.get("startTime"):
        status["startTime"] = iso(st["startTime"])
    if end:
        status["completionTime"] = end
    return {k: v for k, v in status.items() if v is not None}


FINAL_PROBLEMS = ("InvalidSpec", "JobConflict", "RangeNotDue")


def _job_env(job: dict, name: str) -> object | None:
    for c in (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
        for e in c.get("env") or []:
            if e.get("name") == name and e.get("value"):
                try:
                    return json.loads(e["value"])
                except ValueError:
                    return None
    return None


def job_unit_env(job: dict) -> dict | None:
    """The ``INGESTION_BACKFILL`` the Job was created with (its units, its effective ``to``)."""
    found = _job_env(job, contract.BACKFILL_ENV)
    return found if isinstance(found, dict) else None


def job_symbols(job: dict) -> tuple[str, ...] | None:
    """The symbols the Job's pods run (its rendered spec: the schedule's may have changed since)."""
    try:
        return contract.parse_job_spec(_job_env(job, contract.SPEC_ENV)).target.all_symbols
    except SpecError:
        return None


def due_range(bf: BackfillSpec, spec: ScheduleSpec, now: dt.datetime) -> tuple[BackfillSpec, str | None, Problem | None]:
    """The backfill as it runs: ``to`` cut to the last date that is due (today in the
    schedule's zone minus lagDays; a later one would only be a not-due gap), with the reason
    why, or a problem when no date of it is due yet."""
    due = now.astimezone(load_timezone(spec.timezone)).date() - dt.timedelta(days=spec.target.lag_days)
    why = f"the last date due: today in {spec.timezone} minus lagDays {spec.target.lag_days}"
    if bf.first > due:
        return bf, None, Problem("RangeNotDue", f"spec.from={bf.from_date}: after {due.isoformat()}, {why}; no date of "
                                 "the range is due yet")
    if bf.last <= due:
        return bf, None, None
    return (dataclasses.replace(bf, to_date=due.isoformat()),
            f"to {bf.to_date} cut to {due.isoformat()}, {why}", None)


class BackfillReconciler:
    """Brings one backfill in line, through the schedule reconciler's gateway, settings and
    timer (the same retry policy, echo record and worker pool)."""

    RECHECK_SECONDS = 30  # a backfill waiting for its schedule looks again

    def __init__(self, reconciler):
        self.r = reconciler
        self.kube = reconciler.kube
        self._lock = KeyedLocks()
        self._upstream_lock = KeyedLocks()  # per (namespace, upstream): one backfill takes a share at a time
        reconciler.runs[BACKFILL.name] = lambda namespace, name, work: self.reconcile(namespace, name, trigger="recheck")

    def forget(self, namespace: str, name: str) -> None:
        self.kube.forget_write(BACKFILL.name, namespace, name)
        self.r.timer.set((BACKFILL.name, namespace, name), None)

    def reconcile(self, namespace: str, name: str, body: dict | None = None, trigger: str = "backfill") -> None:
        with self._lock((namespace, name)):
            result, conflicts = self.kube.with_retries(
                lambda fresh: self._reconcile_once(namespace, name, None if fresh else body),
                on_gone=lambda: self.forget(namespace, name))
            log.info("event=backfill_reconciled namespace=%s name=%s trigger=%s result=%s conflicts=%d", namespace, name,
                     trigger, result, conflicts)

    def _reconcile_once(self, namespace: str, name: str, body: dict | None) -> str:
        r, kube = self.r, self.kube
        if body is None:
            body = kube.read(BACKFILL, namespace, name)
            if body is None:
                self.forget(namespace, name)
                return "gone"
        if body["metadata"].get("deletionTimestamp"):
            return "deleting"
        problem, bf, action = None, None, None
        try:
            bf = parse_backfill(body.get("spec"))
        except SpecError as e:
            problem = Problem("InvalidSpec", str(e))
        job = kube.read_job(namespace, name) if bf is not None else None
        if job is not None and not owned_by(job, body["metadata"].get("uid")):
            problem, job = Problem("JobConflict", f"Job {name} already exists and is not owned by this IngestionBackfill"), None
        live = dict(body.get("status") or {})
        if job is None and problem is None and any((condition_of(live, t) or {}).get("status") == "True"
                                                   for t in ("Complete", "Failed")):
            return "finished"  # its Job was deleted after it ended (by hand, or a TTL): nothing to redo
        schedule = self._read_schedule(namespace, bf.schedule) if bf is not None and problem is None else None
        cells, clamped = None, None
        if bf is not None and problem is None:
            spec = schedule.spec if schedule is not None else None
            made = job_unit_env(job) if job is not None else None
            if made is not None and made.get("to") and made["to"] != bf.to_date:  # the range it was created with
                clamped = f"to {bf.to_date} cut to {made['to']}, the last date due when its Job was created"
                bf = dataclasses.replace(bf, to_date=made["to"])
            elif job is None and spec is not None:
                bf, clamped, problem = due_range(bf, spec, r.clock())
            if spec is not None and problem is None:
                cells = unit_cells(bf, (job_symbols(job) if job is not None else None) or bf.symbols or spec.target.all_symbols,
                                   len(spec.target.dimensions.variants()), spec.target.period,
                                   spec.target.archive and spec.target.archive.daily_days)
            if job is None and problem is None:
                if schedule is None:
                    problem = Problem("ScheduleNotFound", f"IngestionSchedule {bf.schedule} not found in namespace {namespace}")
                elif spec is None:
                    problem = Problem("ScheduleInvalid", f"IngestionSchedule {bf.schedule} is invalid: {schedule.problem.message}")
                else:
                    job, action, problem = self._create_job(namespace, name, body, bf, spec)
        pods = kube.pods(namespace, f"{contract.JOB_NAME_LABEL}={name}") if job is not None else []
        new = derive_backfill_status(body, bf, job, pods, r.clock(), problem, cells, clamped)
        if new != live:
            kube.patch_status(BACKFILL, namespace, name, merge_patch(live, new))
        for type_, reason_, message in self._events(live, new, action, name):
            self._event(body, type_, reason_, message)
        if problem is not None and problem.reason in ("ScheduleNotFound", "ScheduleInvalid", "JobRejected", "WaitingForUpstream"):
            r.timer.set((BACKFILL.name, namespace, name), r.clock() + dt.timedelta(seconds=self.RECHECK_SECONDS))
        return action or (problem.reason if problem else "unchanged" if new == live else "status")

    def _create_job(self, namespace: str, name: str, body: dict, bf: BackfillSpec,
                    spec: ScheduleSpec) -> tuple[dict | None, str | None, Problem | None]:
        """Make the backfill's Job: (job, action, problem). When an IngestionUpstream names the
        schedule's source, the backfill takes its share of the backfills' pool now, for good (a
        Job's pods cannot be changed): decided and made under the upstream's lock, so two
        backfills never take the same requests; with too little left it waits."""
        found = self.r.sharing.upstream_for(namespace, source_of(spec.target.endpoint, spec.target.bucket))
        if found is None:
            return self._make_job(namespace, name, body, bf, spec, None)
        upstream, up = found
        with self._upstream_lock((namespace, upstream)):
            running = [b for b in running_backfills(self.kube.jobs(namespace, names.LABEL_BACKFILL), upstream) if b.name != name]
            take = backfill_take(up, bf.max_requests_per_second or spec.target.max_requests_per_second, bf.parallelism, running)
            if take is None:
                held = ", ".join(f"{b.name} {b.share}" for b in running) or "none"
                return None, None, Problem("WaitingForUpstream", (
                    f"IngestionUpstream {upstream} leaves backfills {up.backfill_requests_per_second} requests/s "
                    f"(scheduledShare {up.scheduled_share}%), held by running backfills ({held}); each of this "
                    f"backfill's {bf.parallelism} shard(s) needs at least 1: it starts when enough is free"))
            spec = with_share(spec, take, bytes_share(up, take))  # and its part of the byte budget, if any
            made = self._make_job(namespace, name, body, dataclasses.replace(bf, max_requests_per_second=take), spec,
                                  (upstream, take))
        self.r.timer.set((UPSTREAM.name, namespace, upstream), self.r.clock())  # its status lists the new sharer
        return made

    def _make_job(self, namespace: str, name: str, body: dict, bf: BackfillSpec, spec: ScheduleSpec,
                  share: tuple[str, int] | None) -> tuple[dict | None, str | None, Problem | None]:
        desired = render_backfill_job(name, namespace, bf, bf.schedule, spec, self.r.settings,
                                      body["metadata"].get("creationTimestamp"))
        if share is not None:
            desired["metadata"]["annotations"] = {names.ANNOTATION_UPSTREAM: share[0],
                                                  names.ANNOTATION_UPSTREAM_SHARE: str(share[1])}
        kopf.adopt(desired, owner=body)
        try:
            return self.kube.create_job(namespace, desired), "JobCreated", None
        except ApiException as e:
            if e.status not in (400, 422):  # a 409: made meanwhile (by us, a moment ago), read it again
                raise
            return None, None, Problem("JobRejected", f"the API server rejected the Job: {e.reason}")

    @staticmethod
    def _events(live: dict, new: dict, action: str | None, name: str) -> list[tuple[str, str, str]]:
        """One Event per transition: the Job made, the backfill complete (Normal) or failed
        (Warning), or held up by a problem (Warning, once per problem: a failed backfill's
        Complete condition says the same and posts nothing more)."""
        out = []
        if action:
            out.append(("Normal", action, f"Job {name}: {new['progress']['units']} units, {len(new['shards'])} shards"
                        + (f", to {new['effectiveTo']}" if new.get("effectiveTo") else "")))
        was_done, done = condition_of(live, "Complete"), condition_of(new, "Complete")
        was_failed, failed = condition_of(live, "Failed"), condition_of(new, "Failed")
        if done and done["status"] == "True" and (was_done or {}).get("status") != "True":
            out.append(("Normal", "Completed", done["message"]))
        if failed and failed["status"] == "True":
            if (was_failed or {}).get("status") != "True" or (was_failed or {}).get("reason") != failed["reason"]:
                out.append(("Warning", failed["reason"], failed["message"]))
        elif done and done["status"] == "False" and done["reason"] != "InProgress" and \
                ((was_done or {}).get("reason"), (was_done or {}).get("message")) != (done["reason"], done["message"]):
            out.append(("Warning", done["reason"], done["message"]))
        return out

    def _read_schedule(self, namespace: str, name: str) -> ScheduleResource | None:
        body = self.kube.read(SCHEDULE, namespace, name)
        return ScheduleResource.from_body(body) if body is not None else None

    def _event(self, body: dict, type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        self.kube.post_event(BACKFILL, meta, type_, reason, message)
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "event=%s namespace=%s backfill=%s message=%r",
                reason, meta["namespace"], meta["name"], message)
