"""The contract between the operator and the job: what a job pod's environment holds.

The operator renders these variables into the CronJob's pod template; the job reads them
back with :func:`read_environment`. Both sides import the names from here, and a test
renders a pod template and parses it with this module, so a change one side cannot read
fails a test rather than a production run.

=================================  ===========================================================
``INGESTION_SPEC``                 JSON object: the job-facing part of the IngestionSchedule
                                   spec (keys in :data:`JOB_SPEC_KEYS`), with CRD defaults
``INGESTION_SCHEDULE``             the IngestionSchedule's name
``INGESTION_NAMESPACE``            the namespace (downward API)
``INGESTION_POD_NAME``             the pod's name (downward API)
``INGESTION_JOB_NAME``             the Job's name (downward API, label job-name); a Job made
                                   by a CronJob tick is named ``<cronjob>-<minutes since epoch>``
``INGESTION_SOURCE_ACCESS_KEY_ID``,  S3 source credentials (``secretKeyRef`` only), absent for
``INGESTION_SOURCE_SECRET_ACCESS_KEY``  anonymous access
``INGESTION_STORE_ACCESS_KEY_ID``,   object-store credentials (``secretKeyRef`` only)
``INGESTION_STORE_SECRET_ACCESS_KEY``
=================================  ===========================================================
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping

SPEC_ENV = "INGESTION_SPEC"
SCHEDULE_ENV = "INGESTION_SCHEDULE"
NAMESPACE_ENV = "INGESTION_NAMESPACE"
POD_NAME_ENV = "INGESTION_POD_NAME"
JOB_NAME_ENV = "INGESTION_JOB_NAME"
SOURCE_KEY_ID_ENV = "INGESTION_SOURCE_ACCESS_KEY_ID"
SOURCE_SECRET_ENV = "INGESTION_SOURCE_SECRET_ACCESS_KEY"
STORE_KEY_ID_ENV = "INGESTION_STORE_ACCESS_KEY_ID"
STORE_SECRET_ENV = "INGESTION_STORE_SECRET_ACCESS_KEY"

JOB_SPEC_KEYS = ("schedule", "timezone", "target", "repair", "storage", "metrics")
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


class ContractError(ValueError):
    """The environment does not hold what the operator promised; says which variable."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    schedule: str
    namespace: str
    spec: dict
    job_name: str | None
    pod_name: str | None
    scheduled_time: dt.datetime | None  # None for a manual run
    source_credentials: tuple[str, str] | None
    store_credentials: tuple[str, str] | None

    @property
    def trigger(self) -> str:
        return "scheduled" if self.scheduled_time else "manual"


def job_spec(spec: Mapping) -> dict:
    """The part of an IngestionSchedule spec that the job needs."""
    return {k: spec[k] for k in JOB_SPEC_KEYS if k in spec}


def scheduled_time_from_job_name(job_name: str | None, schedule: str) -> dt.datetime | None:
    """A CronJob tick names its Job ``<cronjob>-<scheduled time in minutes since epoch>``."""
    if not job_name:
        return None
    m = re.fullmatch(re.escape(schedule) + r"-(\d{8,10})", job_name)
    if not m:
        return None
    return dt.datetime.fromtimestamp(int(m.group(1)) * 60, tz=dt.timezone.utc)


def read_environment(env: Mapping[str, str]) -> RunContext:
    def need(name: str) -> str:
        value = env.get(name)
        if not value:
            raise ContractError(f"environment variable {name} is missing or empty")
        return value

    raw = need(SPEC_ENV)
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ContractError(f"{SPEC_ENV} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise ContractError(f"{SPEC_ENV} must be a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(JOB_SPEC_KEYS))
    if unknown:
        raise ContractError(f"{SPEC_ENV} has keys this job does not understand: {', '.join(unknown)}")
    schedule = need(SCHEDULE_ENV)
    job_name = env.get(JOB_NAME_ENV) or None

    def pair(key_env: str, secret_env: str) -> tuple[str, str] | None:
        if env.get(key_env) and env.get(secret_env):
            return env[key_env], env[secret_env]
        return None

    return RunContext(
        schedule=schedule,
        namespace=need(NAMESPACE_ENV),
        spec=spec,
        job_name=job_name,
        pod_name=env.get(POD_NAME_ENV) or None,
        scheduled_time=scheduled_time_from_job_name(job_name, schedule),
        source_credentials=pair(SOURCE_KEY_ID_ENV, SOURCE_SECRET_ENV),
        store_credentials=pair(STORE_KEY_ID_ENV, STORE_SECRET_ENV),
    )
