"""Derive an IngestionSchedule's status from its spec, its CronJob and that CronJob's Jobs.

Pure: the same inputs give the same status, and a condition's ``lastTransitionTime`` is
carried over from the previous status unless the condition's status changed, so a
reconcile with nothing new produces a status equal to the live one (and no write).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import typing

from ingestion_contract import EXIT_MEANINGS
from ingestion_contract.cron import next_runs
from ingestion_contract.summary import is_complete, largest_causes

from . import names
from .resource import Problem, ScheduleResource

if typing.TYPE_CHECKING:
    from .upstream import Share

NEXT_RUNS = 5


@dataclasses.dataclass(frozen=True)
class Conditions:
    """The conditions of one reconcile, made once: the resource's generation, its previous
    conditions and the reconcile's clock. A condition's ``lastTransitionTime`` is carried over
    from the previous one of its type unless its status changed."""

    generation: int
    previous: list[dict]
    now: dt.datetime

    @classmethod
    def of(cls, body: dict, now: dt.datetime) -> "Conditions":
        """For a resource as the API server returned it."""
        return cls(body["metadata"].get("generation", 0), (body.get("status") or {}).get("conditions") or [], now)

    def __call__(self, type_: str, ok: bool | None, reason: str, message: str) -> dict:
        status = "Unknown" if ok is None else "True" if ok else "False"
        prior = next((c for c in self.previous if c.get("type") == type_), None)
        since = prior["lastTransitionTime"] if prior and prior.get("status") == status else iso(self.now)
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "observedGeneration": self.generation, "lastTransitionTime": since}


def parse_time(t: str | None) -> dt.datetime | None:
    """An RFC 3339 time (``Z`` or an offset) as an aware datetime; None stays None."""
    return dt.datetime.fromisoformat(t.replace("Z", "+00:00")) if t else None


def iso(t: dt.datetime | str | None) -> str | None:
    """RFC 3339 in UTC with a Z, whatever form the API client handed over."""
    if t is None:
        return None
    if isinstance(t, str):
        t = parse_time(t)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_container_ends(pod: dict) -> list[dict]:
    """The ``terminated`` states of the job's container in ``pod`` (where a run's coverage is
    its termination message)."""
    return [s["state"]["terminated"] for s in (pod.get("status") or {}).get("containerStatuses") or []
            if s.get("name") == names.JOB_CONTAINER and (s.get("state") or {}).get("terminated")]


def job_outcome(job: dict) -> tuple[str, str | None, str | None]:
    """(outcome, end time, failure reason) of a Job given as a dict."""
    st = job.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c["type"] in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded", iso(st.get("completionTime") or c.get("lastTransitionTime")), None
        if c["type"] in ("Failed", "FailureTarget"):
            reason = c.get("reason") or "Failed"
            code = re.search(r"exit code (\d+)", c.get("message") or "") if reason == "PodFailurePolicy" else None
            if code and int(code.group(1)) in EXIT_MEANINGS:  # the job's own word for how it ended
                reason = f"{EXIT_MEANINGS[int(code.group(1))]} (exit code {code.group(1)})"
            elif c.get("message"):
                reason = f"{reason}: {c['message']}"
            return "Failed", iso(c.get("lastTransitionTime")), reason
    return "Running", None, None


@dataclasses.dataclass(frozen=True)
class Blocked:
    """Why a run's pod cannot start (or no pod can be made): the Kubernetes reason and message."""

    reason: str
    message: str


# Container waits that do not end by themselves: a missing Secret or key, an image that cannot
# be pulled or is not on the node (imagePullPolicy Never), a runtime refusal.
BLOCKING_WAITS = frozenset({"CreateContainerConfigError", "CreateContainerError", "ImagePullBackOff", "ErrImagePull",
                            "ErrImageNeverPull", "InvalidImageName", "RunContainerError"})
START_GRACE = dt.timedelta(seconds=20)  # a run not started after this long is looked at
MOUNT_GRACE = dt.timedelta(seconds=60)  # a pod still ContainerCreating after this long: its events say why


def _age(obj: dict, now: dt.datetime) -> dt.timedelta:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return now - created if created else dt.timedelta(0)


def pod_blocked(pod: dict, now: dt.datetime, events: list[dict] = ()) -> Blocked | None:
    """Why ``pod`` (of a run) cannot start, once it has waited longer than START_GRACE; None
    while it may still start by itself (scheduling, pulling, creating its container)."""
    st = pod.get("status") or {}
    if st.get("phase") not in (None, "Pending") or (pod.get("metadata") or {}).get("deletionTimestamp") or \
            _age(pod, now) < START_GRACE:
        return None
    for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in BLOCKING_WAITS:
            return Blocked(waiting["reason"], waiting.get("message") or waiting["reason"])
    for cond in st.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return Blocked(cond.get("reason") or "Unschedulable", cond.get("message") or "the pod cannot be scheduled")
    if _age(pod, now) >= MOUNT_GRACE:
        mount = newest_event(events, ("FailedMount", "FailedAttachVolume"))
        if mount is not None:
            return Blocked(mount["reason"], mount.get("message") or mount["reason"])
    return None


def newest_event(events: list[dict], reasons: tuple[str, ...]) -> dict | None:
    """The newest of ``events`` with one of ``reasons`` (by lastTimestamp, eventTime, creation)."""
    found = [e for e in events if e.get("reason") in reasons]
    when = lambda e: e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp") or ""  # noqa: E731
    return max(found, key=when, default=None)


def job_blocked(job: dict, pods: list[dict], now: dt.datetime, job_events: list[dict] = (),
                pod_events: dict[str, list[dict]] | None = None) -> Blocked | None:
    """Why the running Job ``job`` has no pod that can start: one of its pods is blocked
    (:func:`pod_blocked`), or it has none at all and the Job controller said why it made none
    (``FailedCreate``: a quota that requires limits, an admission webhook, a missing
    ServiceAccount). None while it runs, or may still."""
    if job_outcome(job)[0] != "Running" or ((job.get("status") or {}).get("ready") or 0) > 0:
        return None
    live = [p for p in pods if (p.get("status") or {}).get("phase") in (None, "Pending")
            and not (p.get("metadata") or {}).get("deletionTimestamp")]
    for pod in live:
        found = pod_blocked(pod, now, (pod_events or {}).get(pod["metadata"]["name"], []))
        if found is not None:
            return found
    if not live and not any((p.get("status") or {}).get("phase") == "Running" for p in pods) and _age(job, now) >= START_GRACE:
        refused = newest_event(job_events, ("FailedCreate",))
        if refused is not None:
            return Blocked("FailedCreate", refused.get("message") or "the Job controller could not create a pod")
    return None


def _short(reason: str) -> str:
    """The head of a Job's reason ("Partial (exit code 3)", "BackoffLimitExceeded"): what goes
    before the run's own words."""
    code = re.search(r"\(exit code \d+\)$", reason)
    head = reason.split(":")[0]
    return f"{head} {code.group(0)}" if code and code.group(0) not in head else head


def run_of(job: dict, ends: dict[str, str] | None = None, blocked: Blocked | None = None) -> dict:
    """``job`` as status.lastRun: its outcome (``Blocked`` while its pod cannot start), and
    for one that did not succeed its reason, in the run's own words where the run (its
    termination message) or the pod it never started (``blocked``) gave them (``message``)."""
    meta = job["metadata"]
    manual = (meta.get("annotations") or {}).get(names.ANNOTATION_INSTANTIATE) == "manual"
    outcome, end, reason = job_outcome(job)
    message = (ends or {}).get(meta["name"])
    if outcome == "Running" and blocked is not None:
        outcome, reason, message = "Blocked", blocked.reason, blocked.message
    elif outcome == "Succeeded":
        message = None
    run = {
        "job": meta["name"],
        "trigger": "manual" if manual else "scheduled",
        "outcome": outcome,
        "start": iso((job.get("status") or {}).get("startTime") or meta.get("creationTimestamp")),
    }
    if end:
        run["end"] = end
    if message and reason:
        run["reason"] = f"{_short(reason)}: {message}" if outcome == "Failed" else f"{reason}: {message}"
        run["message"] = message
    elif reason:
        run["reason"] = reason
    return run


def newest_job(jobs: list[dict]) -> dict | None:
    """The newest Job (by creation time, then name)."""
    return max(jobs, key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]), default=None)


def last_run(jobs: list[dict], ends: dict[str, str] | None = None, blocked: Blocked | None = None) -> dict | None:
    """The newest Job (by creation time, then name) as status.lastRun (``blocked``: why that
    Job, if running, cannot start)."""
    job = newest_job(jobs)
    return run_of(job, ends, blocked) if job is not None else None


def last_finished_run(jobs: list[dict], ends: dict[str, str] | None = None) -> dict | None:
    """The newest Job that has ended, as status.lastRun would show it: what Degraded judges,
    so a new run starting changes nothing until it ends."""
    job = _newest_finished(jobs)
    return run_of(job, ends) if job is not None else None


def _newest_finished(jobs: list[dict]) -> dict | None:
    return newest_job([j for j in jobs if job_outcome(j)[0] in ("Succeeded", "Failed")])


def newest_finished_job(jobs: list[dict]) -> str | None:
    """The name of the newest Job that has ended (Complete or Failed): its pod carries the
    run's coverage summary."""
    job = _newest_finished(jobs)
    return job["metadata"]["name"] if job is not None else None


def complete_condition(coverage: dict | None, condition: Conditions) -> dict:
    """``Complete``: every expected cell of the last reported window is present and no gap is open."""
    if not coverage:
        return condition("Complete", None, "NoCoverageYet", "no run has reported its coverage yet")
    c = coverage
    if is_complete(c["present"], c["expected"], c["gapsOpen"]):
        return condition("Complete", True, "AllPresent", f"all {c['expected']} expected cells present, no gap open (Job {c['job']})")
    oldest = f", the oldest from {c['oldestOpenGap']}" if c.get("oldestOpenGap") else ""
    ranked = largest_causes(c.get("gapsByCause") or {}, n=3)
    causes = f" ({', '.join(f'{k} {n}' for k, n in ranked[:2])}{', ...' if len(ranked) > 2 else ''})" if ranked else ""
    return condition("Complete", False, "CellsMissing",
                     f"{c['present']} of {c['expected']} expected cells present ({c['percent']}%), {c['gapsOpen']} gap(s) open"
                     f"{causes}{oldest} (Job {c['job']})")


def last_success(cronjob: dict | None, jobs: list[dict]) -> str | None:
    """When a run last succeeded: the CronJob's ``lastSuccessfulTime`` or the newest Succeeded
    Job's end, whichever is later (a manual run counts too)."""
    times = [iso(((cronjob or {}).get("status") or {}).get("lastSuccessfulTime"))]
    times += [end for outcome, end, _ in map(job_outcome, jobs) if outcome == "Succeeded"]
    return max((t for t in times if t), default=None)


def stale_deadline(schedule: ScheduleResource, cronjob: dict | None, jobs: list[dict], now: dt.datetime) -> dt.datetime | None:
    """When the schedule turns Stale if no run succeeds first: the last success (or, before
    the first, the schedule's creation; or the end of a pause, if later) plus its freshness
    limit. None while it is disabled, paused or invalid: no run is expected then."""
    return _deadline(schedule, last_success(cronjob, jobs), now)


def _deadline(schedule: ScheduleResource, success: str | None, now: dt.datetime) -> dt.datetime | None:
    spec = schedule.spec
    if spec is None or not schedule.enabled or spec.paused(now):
        return None
    since = parse_time(success or schedule.created)
    resumed = spec.pause.ends() if spec.pause is not None else None
    if since is not None and resumed is not None and resumed > since:
        since = resumed  # a pause that ended by itself: freshness counts from its end
    return None if since is None else since + spec.stale_after()


def stale_condition(schedule: ScheduleResource, cronjob: dict | None, jobs: list[dict], problem: Problem | None,
                    condition: Conditions) -> dict:
    """``Stale``: no run has succeeded within the freshness limit (spec.staleAfterSeconds)."""
    success = last_success(cronjob, jobs)
    deadline = None if problem is not None else _deadline(schedule, success, condition.now)
    if deadline is None:
        why = ("the spec is not valid" if schedule.spec is None else
               "the schedule is not Ready" if problem is not None else "spec.enabled is false" if not schedule.enabled
               else "it is paused (spec.pause)")
        why += ": no run is expected"
        return condition("Stale", None, "NotJudged", f"{why}, so freshness is not judged")
    limit = _duration(schedule.spec.stale_after())
    if condition.now < deadline:
        if success:
            return condition("Stale", False, "RecentSuccess", f"a run succeeded at {success}; stale after {iso(deadline)} "
                             f"(limit {limit})")
        return condition("Stale", False, "NoSuccessYet", f"no run has succeeded yet; stale after {iso(deadline)} "
                         f"(limit {limit} from creation)")
    if success:
        return condition("Stale", True, "NoRecentSuccess", f"no run has succeeded since {success}, longer than the "
                         f"limit of {limit}")
    return condition("Stale", True, "NeverSucceeded", f"no run has succeeded since the schedule was created at "
                     f"{iso(schedule.created)}, longer than the limit of {limit}")


def _duration(d: dt.timedelta) -> str:
    """A duration as kubectl prints one: 49h0m0s, 5m0s."""
    s = int(d.total_seconds())
    h, rest = divmod(s, 3600)
    return (f"{h}h" if h else "") + f"{rest // 60}m{rest % 60}s"


def derive_status(
    schedule: ScheduleResource,
    cronjob: dict | None,
    jobs: list[dict],
    now: dt.datetime,
    problem: Problem | None = None,
    coverage: dict | None = None,
    ends: dict[str, str] | None = None,
    blocked: Blocked | None = None,
    upstream: "Share | None" = None,
) -> dict:
    """The status for ``schedule``; ``problem`` is a validation or apply error, if any;
    ``coverage``: what the newest run that reported one said about its window; ``ends``: the
    runs' own one-line reasons by Job (their termination messages); ``blocked``: why the
    newest Job, running, cannot start; ``upstream``: its share of the IngestionUpstream of its
    source, if one names it."""
    generation = schedule.generation
    condition = Conditions(generation, schedule.status.get("conditions") or [], now)
    enabled = schedule.enabled
    cj_status = (cronjob or {}).get("status") or {}
    status: dict = {"observedGeneration": generation}
    if cronjob:
        status["cronJobName"] = cronjob["metadata"]["name"]

    spec = schedule.spec
    paused = spec is not None and spec.paused(now)
    if paused:
        status["pause"] = {k: v for k, v in (("reason", spec.pause.reason), ("until", spec.pause.until),
                                             ("by", paused_by(schedule.body))) if v}
    if problem is None and spec is not None and enabled and not paused:
        status["nextRuns"] = [iso(t) for t in next_runs(spec.schedule_for(schedule.namespace, schedule.name), spec.timezone,
                                                        now, NEXT_RUNS)]
    else:
        status["nextRuns"] = []
    for src, dst in (("lastScheduleTime", "lastScheduleTime"), ("lastSuccessfulTime", "lastSuccessfulTime")):
        if cj_status.get(src):
            status[dst] = iso(cj_status[src])
    status["active"] = len(cj_status.get("active") or [])
    run = last_run(jobs, ends, blocked)
    if run:
        status["lastRun"] = run
    if coverage:
        status["coverage"] = coverage
    if upstream is not None and problem is None:
        status["upstream"] = upstream.as_status()

    if problem is not None:
        ready = condition("Ready", False, problem.reason, problem.message)
    elif cronjob is None:
        ready = condition("Ready", False, "CronJobMissing", "the CronJob does not exist yet")
    else:
        ready = condition("Ready", True, "CronJobInSync", f"CronJob {cronjob['metadata']['name']} matches the spec")
    if not enabled:
        suspended = condition("Suspended", True, "Disabled", "spec.enabled is false: the CronJob is suspended, no runs start")
    elif paused:
        pause = status["pause"]
        suspended = condition("Suspended", True, "Paused",
                              f"paused{' by ' + pause['by'] if pause.get('by') else ''}: {pause['reason']}; "
                              + (f"resumes by itself at {iso(spec.pause.ends())}" if pause.get("until") else
                                 "until spec.pause is removed"))
    else:
        suspended = condition("Suspended", False, "Enabled", "runs start on schedule")
    if problem is not None:
        degraded = condition("Degraded", True, problem.reason, problem.message)
    elif run and run["outcome"] == "Blocked":
        degraded = condition("Degraded", True, "RunBlocked", f"Job {run['job']} cannot start: {run['reason']}")
    elif (finished := last_finished_run(jobs, ends)) and finished["outcome"] == "Failed":
        # until a run succeeds: the next run starting changes nothing
        degraded = condition("Degraded", True, "LastRunFailed",
                             f"Job {finished['job']} failed: {finished.get('reason', '')}".rstrip(": "))
    elif upstream is not None and upstream.below_floor:  # it runs, but its runs may not finish in time
        degraded = condition("Degraded", True, "ShareBelowFloor", upstream.floor_message(spec.active_deadline_seconds))
    else:
        degraded = condition("Degraded", False, "AsExpected", "no problem seen")
    status["conditions"] = [ready, suspended, degraded, complete_condition(coverage, condition),
                            stale_condition(schedule, cronjob, jobs, problem, condition)]
    return status


def paused_by(body) -> str | None:
    """The field manager that last set ``spec.pause`` (from managedFields), if the API server says."""
    found = [(e.get("time") or "", e.get("manager")) for e in (body.get("metadata") or {}).get("managedFields") or []
             if "f:pause" in ((e.get("fieldsV1") or {}).get("f:spec") or {})]
    return max(found)[1] if found else None


def merge_patch(live: object, new: object) -> object:
    """The JSON merge patch (RFC 7386) that turns ``live`` into ``new``: keys that went
    away are nulled at every depth (a run that succeeded after a failure loses the old
    ``lastRun.reason``), lists are replaced whole, unchanged keys are left out."""
    if not isinstance(live, dict) or not isinstance(new, dict):
        return new
    patch: dict = {k: None for k in live if k not in new}
    for k, v in new.items():
        if k not in live:
            patch[k] = v
        elif live[k] != v:
            patch[k] = merge_patch(live[k], v)
    return patch


def condition_of(status: dict, type_: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def transition_events(live: dict, new: dict, problem: Problem | None, action: str | None) -> list[Event]:
    """The Events a reconcile posts, one per transition, comparing the live status with the new
    one (so a reconcile that changes nothing, or a restarted operator, posts nothing): Ready
    turning False or True, a run failing or blocked (Warning; each failed run is one, a blocked
    run is one whatever its pod's state flips between) and Degraded clearing (Normal), Stale
    turning True (Warning) or clearing (Normal), its upstream share falling below its floor
    (Warning), and one per CronJob write (``action``)."""
    events = []
    was_ready, now_ready = condition_of(live, "Ready"), condition_of(new, "Ready")
    if problem is not None:
        if was_ready is None or was_ready.get("status") != "False" or was_ready.get("message") != problem.message:
            events.append(Event("Warning", problem.reason, problem.message))
    elif was_ready is not None and was_ready.get("status") == "False" and now_ready and now_ready["status"] == "True":
        events.append(Event("Normal", "Recovered", f"spec is valid again; CronJob {new.get('cronJobName')} is in sync"))
    if problem is None:
        before, after = _run_trouble(live), _run_trouble(new)
        degraded = condition_of(new, "Degraded") or {}
        if after is not None and after != before:
            events.append(Event("Warning", "RunBlocked" if after[0] == "RunBlocked" else "RunFailed", degraded["message"]))
        elif after is None and before is not None and degraded.get("status") == "False":
            run = new.get("lastRun") or {}
            events.append(Event("Normal", "RunSucceeded" if run.get("outcome") == "Succeeded" else "RunUnblocked",
                                f"Job {run.get('job')} {'succeeded' if run.get('outcome') == 'Succeeded' else 'started'}: "
                                f"the schedule is no longer degraded"))
    was_low = (condition_of(live, "Degraded") or {}).get("reason") == "ShareBelowFloor"
    low = condition_of(new, "Degraded") or {}
    if low.get("reason") == "ShareBelowFloor" and not was_low:  # its runs may not finish in time from now on
        events.append(Event("Warning", "ShareBelowFloor", low["message"]))
    was_paused, now_paused = live.get("pause"), new.get("pause")
    if now_paused and (not was_paused or (was_paused.get("reason"), was_paused.get("until")) !=
                       (now_paused.get("reason"), now_paused.get("until"))):
        events.append(Event("Normal", "Paused", (condition_of(new, "Suspended") or {}).get("message", "paused")))
    elif was_paused and not now_paused:
        end = f" (its end was {was_paused['until']})" if was_paused.get("until") else ""
        events.append(Event("Normal", "Resumed", f"the pause is over{end}: {was_paused.get('reason')}; runs start on "
                            "schedule again"))
    was_stale, now_stale = (condition_of(live, "Stale") or {}).get("status"), condition_of(new, "Stale")
    if now_stale and now_stale["status"] == "True" and was_stale != "True":
        events.append(Event("Warning", "Stale", now_stale["message"]))
    elif now_stale and was_stale == "True" and now_stale["status"] != "True":
        events.append(Event("Normal", "Fresh" if now_stale["status"] == "False" else now_stale["reason"], now_stale["message"]))
    if action:
        events.append(Event("Normal", action, f"CronJob {new.get('cronJobName')} {action.lower().replace('cronjob', '')}".strip()))
    return events


def _run_trouble(status: dict) -> tuple | None:
    """What makes a status Degraded by its runs, as one Event's key: a failed run by its
    message (naming the Job), a blocked one by its Job."""
    d = condition_of(status, "Degraded")
    if not d or d.get("status") != "True" or d.get("reason") not in ("RunBlocked", "LastRunFailed"):
        return None
    if d["reason"] == "RunBlocked":
        return ("RunBlocked", (status.get("lastRun") or {}).get("job"))
    return ("LastRunFailed", d.get("message"))
