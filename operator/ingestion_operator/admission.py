"""The admission review of an IngestionSchedule: refuse what the operator would mark invalid,
and preview what an accepted one will do. Pure: an AdmissionReview in, its response out.

The API server calls the operator's webhook (:mod:`ingestion_operator.webhook`) after the
CRD's schema and CEL rules have passed, so what is left to refuse is what only the contract's
validator checks (cron syntax and ``H`` forms, IANA zones, expressions that never fire, the
key template's placeholders, URLs, the name's length). The refusal's message is exactly the
one a reconcile puts on ``Ready=False`` (:attr:`ScheduleResource.problem`): the same parse,
the same words. An accepted schedule gets admission warnings, which ``kubectl apply`` (and
``--dry-run=server``) prints as ``Warning: ...`` lines: its next fire times in its zone and in
UTC, the DST changes within a year that skip or repeat one, and what a run expects (cells,
requests).

The webhook is a preview and a first check, never the only one: its failurePolicy is Ignore,
so while no replica answers, applies go through unchecked and the reconcile's status (and its
Event) says what is wrong.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from ingestion_contract.cron import load_timezone, next_runs, offset_changes
from ingestion_contract.periods import most_cells
from ingestion_contract.spec import ScheduleSpec

from .resource import ScheduleResource
from .shares import requests_per_run

NEXT_RUNS = 3  # fire times a preview shows
DST_HORIZON_DAYS = 366  # how far ahead a preview looks for DST changes that skip or repeat a run
MAX_WARNING = 120  # characters of one warning line (kubectl prints each as one line)
MAX_WARNINGS = 12  # the API server keeps 4 KiB of warnings in all: 12 x 120 is well within


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the webhook answers: allowed or not, the refusal's reason and message, the warnings."""

    allowed: bool
    warnings: tuple[str, ...] = ()
    reason: str = ""
    message: str = ""


def review(request: Mapping, now: dt.datetime) -> Verdict:
    """The verdict on an AdmissionReview's ``request`` for an IngestionSchedule at ``now``.

    A CREATE or an UPDATE whose spec is invalid is refused with the status message. An UPDATE
    that leaves an invalid spec as it was (a label, an annotation; or a spec that became invalid
    while the webhook was away, or under older rules) is allowed, with the problem as a warning:
    refusing it would block changes that cannot make things worse. So is an object being deleted.
    """
    body = request.get("object") or {}
    meta = body.get("metadata") or {}
    body = {**body, "metadata": {**meta, "name": meta.get("name") or request.get("name") or "",
                                 "namespace": meta.get("namespace") or request.get("namespace") or ""}}
    schedule = ScheduleResource.from_body(body)
    problem = schedule.problem
    if problem is not None:
        old = request.get("oldObject") or {}
        if meta.get("deletionTimestamp") or (request.get("operation") == "UPDATE" and old.get("spec") == body.get("spec")):
            return Verdict(True, _fit([f"the spec is invalid ({problem.reason}), unchanged by this update: {problem.message}"]))
        return Verdict(False, reason=problem.reason, message=problem.message)
    return Verdict(True, _fit(preview(schedule.spec, schedule.namespace, schedule.name, now)))


def response(review_body: Mapping, now: dt.datetime) -> dict:
    """The AdmissionReview (admission.k8s.io/v1) answering ``review_body``."""
    request = review_body.get("request") or {}
    verdict = review(request, now)
    answer: dict = {"uid": request.get("uid", ""), "allowed": verdict.allowed}
    if verdict.warnings:
        answer["warnings"] = list(verdict.warnings)
    if not verdict.allowed:
        # 422 Invalid, as the API server's own validation answers; kubectl prints the message after
        # 'admission webhook "schedules.ingestion.dev" denied the request: '
        answer["status"] = {"code": 422, "reason": "Invalid", "message": verdict.message}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}


# -- the preview -------------------------------------------------------------------------------
def preview(spec: ScheduleSpec, namespace: str, name: str, now: dt.datetime) -> list[str]:
    """What a user wants to know before saving a valid schedule, one short line each."""
    expr = spec.schedule_for(namespace, name)
    lines = []
    if expr != spec.schedule:
        lines.append(f"H: {spec.schedule!r} fires as {expr!r} for {namespace}/{name}")
    if not spec.enabled:
        lines.append("spec.enabled is false: the CronJob is suspended and none of these runs starts")
    elif spec.paused(now):
        until = spec.pause.until
        lines.append(f"paused until {until}: no run starts before then" if until
                     else "paused (spec.pause, no end): no run starts until the pause is removed")
    runs = next_runs(expr, spec.timezone, now, NEXT_RUNS)
    lines += [f"next run: {when(t, spec.timezone)}" for t in runs]
    lines += [dst_line(change, spec.timezone) for change in offset_changes(expr, spec.timezone, now, DST_HORIZON_DAYS)]
    lines.append(run_size(spec))
    return lines


def when(t: dt.datetime, timezone: str) -> str:
    """A fire time in the schedule's zone and in UTC: ``2026-12-07 02:17 Europe/Berlin (01:17 UTC)``;
    the UTC date too when it is another day."""
    utc = t.astimezone(dt.timezone.utc)
    if timezone == "UTC":
        return f"{utc:%Y-%m-%d %H:%M} UTC"
    local = t.astimezone(load_timezone(timezone))
    same_day = local.date() == utc.date()
    return f"{local:%Y-%m-%d %H:%M} {timezone} ({utc:%H:%M} UTC)" if same_day else \
        f"{local:%Y-%m-%d %H:%M} {timezone} ({utc:%Y-%m-%d %H:%M} UTC)"


def dst_line(change, timezone: str) -> str:
    """One DST change that skips or repeats fire times of the schedule."""
    first, last, n = change.wall[0], change.wall[-1], len(change.wall)
    span = f"{first:%Y-%m-%d %H:%M}" + (f" to {last:%H:%M}" if n > 1 else "") + f" {timezone}"
    if change.kind == "skipped":
        return f"DST: {span} does not exist; that run is skipped" if n == 1 else \
            f"DST: {span} do not exist; {n} runs are skipped"
    if n == 1:
        return f"DST: {span} occurs twice; it runs at " + " and ".join(f"{f:%H:%M}" for f in change.fires) + " UTC"
    return f"DST: {span} occur twice; {n} runs happen twice"


def run_size(spec: ScheduleSpec) -> str:
    """The cells a run expects and its requests (an estimate: ``shares.requests_per_run``)."""
    t = spec.target
    days = most_cells(t.lookback_days + 1, t.period)  # days, or the most months the window holds
    unit = "month" if t.period == "monthly" else "day"
    span = f"{'at most ' if t.period == 'monthly' else ''}{days} {unit}{'s' if days != 1 else ''}"
    each = "".join(f" x {len(values)} {name}" for name, values in t.dimensions)
    if t.discover:
        return (f"a run expects {span}{each} x each symbol it discovers (unknown until a run "
                "lists them); requests: unknown too")
    symbols, variants = len(t.all_symbols), len(t.dimensions.variants())
    # a ranged symbol's dates may end inside the window; a window holds 3 or 4 months of 101 days
    bound = "at most " if any(s.ranged for s in t.all_symbols) or t.period == "monthly" else ""
    archives = (f"; the months before the last {t.archive.daily_days} days as archives (a new symbol's history, "
                "a catch-up, a backfill)" if t.archive else "")
    return (f"a run expects {bound}{symbols * variants * days} cells ({symbols} symbol{'s' if symbols != 1 else ''}{each} x "
            f"{span.removeprefix('at most ')}), about {requests_per_run(spec)} requests{archives}")


def _fit(lines: list[str]) -> tuple[str, ...]:
    """At most MAX_WARNINGS lines of at most MAX_WARNING characters each."""
    cut = [line if len(line) <= MAX_WARNING else line[:MAX_WARNING - 3] + "..." for line in lines]
    return tuple(cut[:MAX_WARNINGS])
