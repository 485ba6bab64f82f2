"""Validation of an IngestionSchedule spec beyond what the CRD schema and CEL can check.

The CRD refuses most bad input at the door. What it cannot check (cron syntax, IANA zone
names) or what a CRD applied without CEL might let through is checked here, so the
operator never renders a CronJob the API server would reject or the job could not run.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlparse

from .cron import CronError, load_timezone, parse

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
KEY_PLACEHOLDERS = ("symbol", "date")


@dataclasses.dataclass(frozen=True)
class FieldError:
    field: str
    value: object
    problem: str

    def __str__(self) -> str:
        return f"spec.{self.field}={self.value!r}: {self.problem}"


def validate(spec: dict) -> list[FieldError]:
    """Every problem with the spec, each naming the field, the value and what is accepted."""
    errors: list[FieldError] = []
    schedule = spec.get("schedule")
    try:
        parse(schedule or "")
    except CronError as e:
        errors.append(FieldError("schedule", schedule, str(e)))
    tz = spec.get("timezone", "UTC")
    try:
        load_timezone(tz)
    except CronError as e:
        errors.append(FieldError("timezone", tz, str(e)))

    target = spec.get("target") or {}
    template = target.get("keyTemplate", "")
    names = _PLACEHOLDER.findall(template)
    unknown = sorted(set(names) - set(KEY_PLACEHOLDERS))
    if unknown or not all(p in names for p in KEY_PLACEHOLDERS):
        errors.append(FieldError("target.keyTemplate", template,
                                 "must contain {symbol} and {date} and no other placeholders"))
    if bool(target.get("symbols")) == bool(target.get("discover")):
        errors.append(FieldError("target.symbols", target.get("symbols"),
                                 "set exactly one of target.symbols (non-empty) or target.discover=true"))
    if target.get("anonymous") and target.get("credentialsSecret"):
        errors.append(FieldError("target.anonymous", True, "excludes target.credentialsSecret"))
    for field, url in (("target.endpoint", target.get("endpoint")),
                       ("storage.objectStore.endpoint", ((spec.get("storage") or {}).get("objectStore") or {}).get("endpoint")),
                       ("metrics.pushgatewayUrl", (spec.get("metrics") or {}).get("pushgatewayUrl"))):
        if url and not _is_http_url(url):
            errors.append(FieldError(field, url, "must be an http:// or https:// URL"))
    for field in ("lagDays", "lookbackDays"):
        if int(target.get(field, 0)) < 0:
            errors.append(FieldError(f"target.{field}", target.get(field), "must be >= 0"))

    storage = spec.get("storage") or {}
    if ("duckdb" in storage) == ("objectStore" in storage):
        errors.append(FieldError("storage", sorted(storage), "set exactly one of storage.duckdb or storage.objectStore"))
    duck = storage.get("duckdb")
    if duck is not None:
        path = duck.get("path", "/data/ingestion.duckdb")
        if not path.startswith("/") or path.rstrip("/").count("/") < 2:
            errors.append(FieldError("storage.duckdb.path", path, "must be absolute and inside a folder, e.g. /data/ingestion.duckdb"))
    for field in ("startingDeadlineSeconds", "backoffLimit", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if field in spec and int(spec[field]) < 0:
            errors.append(FieldError(field, spec[field], "must be >= 0"))
    if "activeDeadlineSeconds" in spec and int(spec["activeDeadlineSeconds"]) < 1:
        errors.append(FieldError("activeDeadlineSeconds", spec["activeDeadlineSeconds"], "must be >= 1"))
    return errors


def _is_http_url(url: str) -> bool:
    u = urlparse(url)
    return u.scheme in ("http", "https") and bool(u.netloc)
