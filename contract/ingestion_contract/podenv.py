"""The contract between the operator and the job: what a job pod's environment holds.

The operator renders these variables into the CronJob's pod template; the job reads them
back with :func:`read_environment`. Both sides import the names from here, and a test
renders a pod template and parses it with this module, so a change one side cannot read
fails a test rather than a production run.

=================================  ===========================================================
``INGESTION_SPEC``                 JSON object: the job-facing part of the IngestionSchedule
                                   spec (:class:`~ingestion_contract.spec.JobSpec`), every
                                   field present, defaults filled
``INGESTION_SCHEDULE``             the IngestionSchedule's name
``INGESTION_NAMESPACE``            the namespace (downward API)
``INGESTION_POD_NAME``             the pod's name (downward API)
``INGESTION_JOB_NAME``             the Job's name (downward API, label job-name); a Job made
                                   by a CronJob tick is named ``<cronjob>-<minutes since epoch>``
``INGESTION_SOURCE_ACCESS_KEY_ID``,  S3 source credentials (``secretKeyRef`` only), absent for
``INGESTION_SOURCE_SECRET_ACCESS_KEY``  anonymous access
``INGESTION_STORE_ACCESS_KEY_ID``,   object-store credentials (``secretKeyRef`` only)
``INGESTION_STORE_SECRET_ACCESS_KEY``
``INGESTION_BACKFILL``             only in a backfill's pods: JSON naming the backfill and its
                                   grid (:mod:`ingestion_contract.backfill`); with the Job
                                   controller's ``JOB_COMPLETION_INDEX`` it names the unit
=================================  ===========================================================
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping

from .backfill import BackfillUnit, read_unit
from .spec import JobSpec, ScheduleSpec, SpecError, parse_job_spec, parse_spec, to_json

SPEC_ENV = "INGESTION_SPEC"
SCHEDULE_ENV = "INGESTION_SCHEDULE"
NAMESPACE_ENV = "INGESTION_NAMESPACE"
POD_NAME_ENV = "INGESTION_POD_NAME"
JOB_NAME_ENV = "INGESTION_JOB_NAME"
SOURCE_KEY_ID_ENV = "INGESTION_SOURCE_ACCESS_KEY_ID"
SOURCE_SECRET_ENV = "INGESTION_SOURCE_SECRET_ACCESS_KEY"
STORE_KEY_ID_ENV = "INGESTION_STORE_ACCESS_KEY_ID"
STORE_SECRET_ENV = "INGESTION_STORE_SECRET_ACCESS_KEY"

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

# How a run ends, as its container's exit code. The operator renders a podFailurePolicy that
# fails the Job at once on the codes a retried pod cannot change, and names them in status.
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4
EXIT_MEANINGS = {
    EXIT_FAILED: "Failed: the run failed (the source or the store could not be used); its log's last line says why",
    EXIT_USAGE: "InvalidSpec: the job refused its spec or environment; its log's last line names the field",
    EXIT_PARTIAL: "Partial: the run committed, but some repairs failed; their gaps stay open with the reason",
    EXIT_INTERRUPTED: "Interrupted: the run was asked to stop (SIGTERM: its pod deleted, evicted or drained); it committed "
                      "what it had verified, and a new pod runs it again",
}
NO_RETRY_EXIT_CODES = (EXIT_USAGE, EXIT_PARTIAL)  # a new pod would do the same: fail the Job, wait for the next tick


class ContractError(ValueError):
    """The environment does not hold what the operator promised; says which variable."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    schedule: str
    namespace: str
    spec: JobSpec
    job_name: str | None
    pod_name: str | None
    scheduled_time: dt.datetime | None  # None for a manual run
    source_credentials: tuple[str, str] | None
    store_credentials: tuple[str, str] | None
    backfill: BackfillUnit | None = None  # a unit of an IngestionBackfill

    @property
    def trigger(self) -> str:
        return "backfill" if self.backfill else "scheduled" if self.scheduled_time else "manual"


def job_spec(spec: Mapping | ScheduleSpec) -> JobSpec:
    """The part of an IngestionSchedule spec (raw or parsed) that the job needs."""
    return (spec if isinstance(spec, ScheduleSpec) else parse_spec(spec)).job()


def encode_job_spec(spec: JobSpec) -> str:
    """The value of ``INGESTION_SPEC``: compact, sorted JSON, so rendering is deterministic."""
    return json.dumps(to_json(spec), sort_keys=True, separators=(",", ":"))


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
        spec = parse_job_spec(json.loads(raw))
    except json.JSONDecodeError as e:
        raise ContractError(f"{SPEC_ENV} is not valid JSON: {e}") from None
    except SpecError as e:
        raise ContractError(f"{SPEC_ENV} does not hold a spec this job can run: {e}") from None
    schedule = need(SCHEDULE_ENV)
    job_name = env.get(JOB_NAME_ENV) or None
    try:
        backfill = read_unit(env)
    except ValueError as e:
        raise ContractError(str(e)) from None

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
        scheduled_time=None if backfill else scheduled_time_from_job_name(job_name, schedule),
        source_credentials=pair(SOURCE_KEY_ID_ENV, SOURCE_SECRET_ENV),
        store_credentials=pair(STORE_KEY_ID_ENV, STORE_SECRET_ENV),
        backfill=backfill,
    )
