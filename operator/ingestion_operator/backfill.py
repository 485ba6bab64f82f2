"""IngestionBackfill: a schedule's date range run once, as one Indexed Job.

Pure parts (:func:`render_backfill_job`, :func:`derive_backfill_status`) and the imperative
shell (:class:`BackfillReconciler`), level-based like the schedule's reconcile: whatever
woke it (the backfill, its Job, a recheck), it reads the backfill, its Job and the Job's
pods, and writes only what differs.

* **The Job** is rendered once, from the schedule's spec as it is then, with completion
  index ``i`` = shard ``i % parallelism``, chunk ``i // parallelism``
  (:mod:`ingestion_contract.backfill`). It is owned by the backfill: deleting the backfill
  deletes the Job and its pods (garbage collection); what the units committed stays.
* **Progress** comes from the Job (``completedIndexes``, ``failedIndexes``, ``active``) and
  from each finished pod's termination message (the run's coverage of its unit).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import kopf
from kubernetes.client.rest import ApiException

import ingestion_contract as contract
from ingestion_contract import BackfillSpec, Coverage, SpecError, parse_backfill
from ingestion_contract.spec import ScheduleSpec

from . import names
from .render import RenderSettings, render_pod_spec
from .gateway import BACKFILL, SCHEDULE, KeyedLocks, owned_by
from .resource import Problem, ScheduleResource
from .status import Conditions, condition_of, iso, job_container_ends, job_outcome, merge_patch

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
    target = dataclasses.replace(target, max_requests_per_second=bf.shard_requests_per_second(target.max_requests_per_second))
    repair = dataclasses.replace(schedule.repair, max_repairs_per_run=UNLIMITED_REPAIRS)
    return dataclasses.replace(schedule, target=target, repair=repair)


def render_backfill_job(name: str, namespace: str, bf: BackfillSpec, schedule_name: str, schedule: ScheduleSpec,
                        settings: RenderSettings = RenderSettings()) -> dict:
    """The Indexed Job of the backfill ``namespace/name``: one completion per unit, one pod
    per shard at a time; each pod's own deadline is the schedule's activeDeadlineSeconds."""
    spec = backfill_schedule_spec(bf, schedule)
    labels = backfill_labels(name)
    pod = render_pod_spec(schedule_name, spec, settings)
    pod["activeDeadlineSeconds"] = spec.active_deadline_seconds
    pod["containers"][0]["env"].append({"name": contract.BACKFILL_ENV, "value": contract.encode_unit_env(name, bf)})
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
            "podFailurePolicy": {"rules": [{"action": "FailIndex", "onExitCodes": {
                "containerName": names.JOB_CONTAINER, "operator": "In", "values": [contract.EXIT_USAGE]}}]},
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


def unit_coverage(pods: list[dict]) -> dict[int, Coverage]:
    """Per completion index, the coverage the newest pod that finished its unit reported."""
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
    return {i: c for i, (_, c) in found.items()}


def derive_backfill_status(body: dict, bf: BackfillSpec | None, job: dict | None, pods: list[dict], now: dt.datetime,
                           problem: Problem | None = None, cells_total: int | None = None) -> dict:
    """The backfill's status from its Job and pods (pure; equal inputs give an equal status)."""
    live = dict(body.get("status") or {})
    condition = Conditions.of(body, now)
    generation = condition.generation
    if problem is not None or bf is None:
        problem = problem or Problem("", "")
        keep = {k: v for k, v in live.items() if k in ("progress", "shards", "jobName", "startTime", "completionTime")}
        return {**keep, "observedGeneration": generation, "conditions": [
            condition("Complete", False, problem.reason, problem.message),
            condition("Failed", problem.reason in ("InvalidSpec", "JobConflict"), problem.reason, problem.message)]}
    units = bf.units
    st = (job or {}).get("status") or {}
    done, failed = parse_indexes(st.get("completedIndexes")), parse_indexes(st.get("failedIndexes"))
    covered = unit_coverage(pods)
    got = [covered[i] for i in sorted(done | failed) if i in covered]
    cells_done = sum(c.expected for i, c in covered.items() if i in done)
    cells_failed = sum(c.unrepaired for i, c in covered.items() if i in done)
    total = cells_total if cells_total is not None else (cells_done if len(done) == units else None)
    percent = int(100 * len(done) / units) if units else 100
    progress = {
        "units": units, "unitsDone": len(done), "unitsFailed": len(failed), "unitsRunning": st.get("active", 0) or 0,
        "percent": percent, "summary": f"{percent}%", "unitsProgress": f"{len(done)}/{units}",
        "cellsDone": cells_done, "cells": f"{cells_done}/{total if total is not None else '?'}",
        "cellsRepaired": sum(c.repaired for c in got), "cellsMissingUpstream": sum(c.missing for i, c in covered.items() if i in done),
        "cellsFailed": cells_failed, "bytes": sum(c.bytes for c in got),
    }
    if total is not None:
        progress["cellsTotal"] = total
    shards = []
    for shard in range(bf.parallelism):
        mine = set(range(shard, units, bf.parallelism))
        n_done, n_failed = len(mine & done), len(mine & failed)
        state = ("Failed" if n_failed else "Complete") if n_done + n_failed == len(mine) else \
            "Running" if job is not None else "Pending"
        shards.append({"shard": shard, "chunks": len(mine), "chunksDone": n_done, "chunksFailed": n_failed, "state": state})
    outcome, end, why = job_outcome(job) if job is not None else ("Pending", None, None)
    complete = outcome == "Succeeded"
    if complete:
        c_reason, c_msg = "AllUnitsDone", f"{units} units, {cells_done} cells: {progress['cellsRepaired']} repaired, " \
                                          f"{progress['cellsMissingUpstream']} not in the source, {cells_failed} failed"
    elif outcome == "Failed":
        c_reason, c_msg = "Failed", why or "the Job failed"
    else:
        c_reason, c_msg = "InProgress", f"{len(done)} of {units} units done"
    status = {
        "observedGeneration": generation, "jobName": (job or {}).get("metadata", {}).get("name") or live.get("jobName"),
        "progress": progress, "shards": shards,
        "conditions": [condition("Complete", complete, c_reason, c_msg),
                       condition("Failed", outcome == "Failed", "Failed" if outcome == "Failed" else "NotFailed",
                                 (why or "the Job failed") if outcome == "Failed" else "")],
    }
    if st.get("startTime"):
        status["startTime"] = iso(st["startTime"])
    if end:
        status["completionTime"] = end
    return {k: v for k, v in status.items() if v is not None}


class BackfillReconciler:
    """Brings one backfill in line, through the schedule reconciler's gateway, settings and
    timer (the same retry policy, echo record and worker pool)."""

    RECHECK_SECONDS = 30  # a backfill waiting for its schedule looks again

    def __init__(self, reconciler):
        self.r = reconciler
        self.kube = reconciler.kube
        self._lock = KeyedLocks()
        reconciler.due[BACKFILL.name] = lambda namespace, name: self.reconcile(namespace, name, trigger="recheck")

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
        problem, bf, action, cells_total = None, None, None, None
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
        if bf is not None and problem is None:
            spec = schedule.spec if schedule is not None else None
            if spec is not None:
                symbols = bf.symbols or spec.target.all_symbols
                cells_total = len(symbols) * bf.days if symbols else None
            if job is None:
                if schedule is None:
                    problem = Problem("ScheduleNotFound", f"IngestionSchedule {bf.schedule} not found in namespace {namespace}")
                elif spec is None:
                    problem = Problem("ScheduleInvalid", f"IngestionSchedule {bf.schedule} is invalid: {schedule.problem.message}")
                else:
                    desired = render_backfill_job(name, namespace, bf, bf.schedule, spec, r.settings)
                    kopf.adopt(desired, owner=body)
                    try:
                        job = kube.create_job(namespace, desired)
                        action = "JobCreated"
                    except ApiException as e:
                        if e.status not in (400, 422):  # a 409: made meanwhile (by us, a moment ago), read it again
                            raise
                        problem = Problem("JobRejected", f"the API server rejected the Job: {e.reason}")
        pods = kube.pods(namespace, f"{contract.JOB_NAME_LABEL}={name}") if job is not None else []
        new = derive_backfill_status(body, bf, job, pods, r.clock(), problem, cells_total)
        if new != live:
            kube.patch_status(BACKFILL, namespace, name, merge_patch(live, new))
        for type_, reason_, message in self._events(live, new, action, name):
            self._event(body, type_, reason_, message)
        if problem is not None and problem.reason in ("ScheduleNotFound", "ScheduleInvalid", "JobRejected"):
            r.timer.set((BACKFILL.name, namespace, name), r.clock() + dt.timedelta(seconds=self.RECHECK_SECONDS))
        return action or (problem.reason if problem else "unchanged" if new == live else "status")

    @staticmethod
    def _events(live: dict, new: dict, action: str | None, name: str) -> list[tuple[str, str, str]]:
        out = []
        if action:
            out.append(("Normal", action, f"Job {name}: {new['progress']['units']} units, {len(new['shards'])} shards"))
        for type_, kind in (("Complete", "Normal"), ("Failed", "Warning")):
            was, now = condition_of(live, type_), condition_of(new, type_)
            if now and now["status"] == "True" and (was or {}).get("status") != "True":
                out.append((kind, "Completed" if type_ == "Complete" else now["reason"], now["message"]))
        was, now = condition_of(live, "Complete"), condition_of(new, "Complete")
        if now and now["status"] == "False" and now["reason"] not in ("InProgress",) and \
                ((was or {}).get("reason"), (was or {}).get("message")) != (now["reason"], now["message"]):
            out.append(("Warning", now["reason"], now["message"]))
        return out

    def _read_schedule(self, namespace: str, name: str) -> ScheduleResource | None:
        body = self.kube.read(SCHEDULE, namespace, name)
        return ScheduleResource.from_body(body) if body is not None else None

    def _event(self, body: dict, type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        self.kube.post_event(BACKFILL, meta, type_, reason, message)
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "event=%s namespace=%s backfill=%s message=%r",
                reason, meta["namespace"], meta["name"], message)
