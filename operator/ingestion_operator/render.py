"""Render the CronJob for an IngestionSchedule: a pure function, the operator-job contract.

The pod template carries the job-facing spec as JSON in one environment variable, the
identity of the run through the downward API, and credentials only as ``secretKeyRef``
(see :mod:`ingestion_contract.podenv`).
"""

from __future__ import annotations

import dataclasses
import posixpath

import ingestion_contract as contract
from ingestion_contract.spec import MAX_NAME, JobSpec, ScheduleSpec, SecretRef

from . import names


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    job_image: str = names.DEFAULT_JOB_IMAGE
    image_pull_policy: str = "IfNotPresent"
    job_service_account: str | None = None
    default_pushgateway_url: str | None = None  # for schedules whose spec.metrics names none


def cronjob_name(schedule_name: str) -> str:
    """The CronJob's name: the schedule's (validation refuses names longer than MAX_NAME)."""
    return schedule_name[:MAX_NAME].rstrip("-.")


def labels_for(schedule_name: str) -> dict:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_NAME: "ingestion-job",
        names.LABEL_SCHEDULE: schedule_name,
    }


def render_cronjob(name: str, namespace: str, spec: ScheduleSpec, settings: RenderSettings = RenderSettings()) -> dict:
    """The CronJob for the IngestionSchedule ``namespace/name`` with a valid ``spec``."""
    labels = labels_for(name)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob_name(name), "namespace": namespace, "labels": labels},
        "spec": {
            "schedule": spec.schedule,
            "timeZone": spec.timezone,
            "suspend": not spec.enabled,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": spec.starting_deadline_seconds,
            "successfulJobsHistoryLimit": spec.successful_jobs_history_limit,
            "failedJobsHistoryLimit": spec.failed_jobs_history_limit,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "backoffLimit": spec.backoff_limit,
                    "activeDeadlineSeconds": spec.active_deadline_seconds,
                    # a partial run or a refused spec would end the same in a new pod: no retry
                    "podFailurePolicy": {"rules": pod_failure_rules("FailJob", contract.NO_RETRY_EXIT_CODES)},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": render_pod_spec(name, spec, settings),
                    },
                },
            },
        },
    }


def pod_failure_rules(action: str, codes) -> list[dict]:
    """A run's Job's podFailurePolicy: ``action`` (FailJob, FailIndex) for the exit ``codes`` a
    new pod would only repeat; and no count against the retries for a run that was stopped
    from outside: one that was asked to (SIGTERM: exit code 4, it committed what it had), or a
    pod disrupted (evicted, preempted: the DisruptionTarget condition). Its new pod goes on."""
    return [{"action": action, "onExitCodes": {"containerName": names.JOB_CONTAINER, "operator": "In", "values": list(codes)}},
            {"action": "Ignore", "onExitCodes": {"containerName": names.JOB_CONTAINER, "operator": "In",
                                                 "values": [contract.EXIT_INTERRUPTED]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]


def render_pod_spec(schedule_name: str, spec: ScheduleSpec, settings: RenderSettings) -> dict:
    volumes = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    duck = spec.storage.duckdb
    if duck:
        volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": duck.claim_name}})
        mounts.append({"name": "store", "mountPath": posixpath.dirname(duck.path)})
    container = {
        "name": names.JOB_CONTAINER,
        "image": spec.image or settings.job_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(names.JOB_COMMAND),
        "env": render_env(schedule_name, with_defaults(spec.job(), settings)),
        "volumeMounts": mounts,
        # the run's coverage summary, read back by the operator from the pod's status
        "terminationMessagePath": contract.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
        "resources": spec.resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": names.RUN_AS_USER,
            "runAsGroup": names.RUN_AS_USER,
            "fsGroup": names.RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if settings.job_service_account:
        pod["serviceAccountName"] = settings.job_service_account
    return pod


def with_defaults(job: JobSpec, settings: RenderSettings) -> JobSpec:
    """The job's spec with the operator's defaults filled in where the schedule is silent."""
    if settings.default_pushgateway_url and not job.metrics.pushgateway_url:
        return dataclasses.replace(job, metrics=dataclasses.replace(job.metrics, pushgateway_url=settings.default_pushgateway_url))
    return job


def render_env(schedule_name: str, job: JobSpec) -> list[dict]:
    def field(path: str) -> dict:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    env = [
        {"name": contract.SPEC_ENV, "value": contract.encode_job_spec(job)},
        {"name": contract.SCHEDULE_ENV, "value": schedule_name},
        {"name": contract.NAMESPACE_ENV, **field("metadata.namespace")},
        {"name": contract.POD_NAME_ENV, **field("metadata.name")},
        {"name": contract.JOB_NAME_ENV, **field(f"metadata.labels['{contract.JOB_NAME_LABEL}']")},
        {"name": contract.TERMINATION_MESSAGE_ENV, "value": contract.TERMINATION_MESSAGE_PATH},
    ]
    env += _secret_env(job.target.credentials_secret, contract.SOURCE_KEY_ID_ENV, contract.SOURCE_SECRET_ENV)
    store = job.storage.object_store
    env += _secret_env(store and store.credentials_secret, contract.STORE_KEY_ID_ENV, contract.STORE_SECRET_ENV)
    return env


def _secret_env(ref: SecretRef | None, key_env: str, secret_env: str) -> list[dict]:
    if not ref:
        return []

    def item(env_name: str, key: str) -> dict:
        return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}}

    return [item(key_env, ref.access_key_id_key), item(secret_env, ref.secret_access_key_key)]
