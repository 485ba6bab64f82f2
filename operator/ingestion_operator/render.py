"""Render the CronJob for an IngestionSchedule: a pure function, the operator-job contract.

The pod template carries the job-facing spec as JSON in one environment variable, the
identity of the run through the downward API, and credentials only as ``secretKeyRef``
(see :mod:`ingestion_job.contract`).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

from ingestion_job import contract

from . import names


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    job_image: str = names.DEFAULT_JOB_IMAGE
    image_pull_policy: str = "IfNotPresent"
    job_service_account: str | None = None
    default_pushgateway_url: str | None = None  # for schedules whose spec.metrics names none


def cronjob_name(schedule_name: str) -> str:
    # Job names are <cronjob>-<8+ digit minute stamp> and must fit in 63 characters,
    # which the API server enforces as a 52-character CronJob name.
    return schedule_name[:52].rstrip("-.")


def labels_for(schedule_name: str) -> dict:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_NAME: "ingestion-job",
        names.LABEL_SCHEDULE: schedule_name,
    }


def render_cronjob(schedule: dict, settings: RenderSettings = RenderSettings()) -> dict:
    """The CronJob for a (defaulted, validated) IngestionSchedule object."""
    meta, spec = schedule["metadata"], schedule["spec"]
    name = meta["name"]
    labels = labels_for(name)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob_name(name), "namespace": meta["namespace"], "labels": labels},
        "spec": {
            "schedule": spec["schedule"],
            "timeZone": spec.get("timezone", "UTC"),
            "suspend": not spec.get("enabled", True),
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": spec.get("startingDeadlineSeconds", 300),
            "successfulJobsHistoryLimit": spec.get("successfulJobsHistoryLimit", 3),
            "failedJobsHistoryLimit": spec.get("failedJobsHistoryLimit", 3),
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "backoffLimit": spec.get("backoffLimit", 2),
                    "activeDeadlineSeconds": spec.get("activeDeadlineSeconds", 3600),
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": render_pod_spec(name, spec, settings),
                    },
                },
            },
        },
    }


def render_pod_spec(schedule_name: str, spec: dict, settings: RenderSettings) -> dict:
    volumes = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    duck = (spec.get("storage") or {}).get("duckdb")
    if duck:
        volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": duck["claimName"]}})
        mounts.append({"name": "store", "mountPath": posixpath.dirname(duck.get("path", "/data/ingestion.duckdb"))})
    container = {
        "name": names.JOB_CONTAINER,
        "image": spec.get("image") or settings.job_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(names.JOB_COMMAND),
        "env": render_env(schedule_name, with_defaults(spec, settings)),
        "volumeMounts": mounts,
        "resources": spec.get("resources") or {},
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


def with_defaults(spec: dict, settings: RenderSettings) -> dict:
    """The spec with the operator's defaults filled in where the schedule is silent."""
    if settings.default_pushgateway_url and not (spec.get("metrics") or {}).get("pushgatewayUrl"):
        return {**spec, "metrics": {**(spec.get("metrics") or {}), "pushgatewayUrl": settings.default_pushgateway_url}}
    return spec


def render_env(schedule_name: str, spec: dict) -> list[dict]:
    def field(path: str) -> dict:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    env = [
        {"name": contract.SPEC_ENV, "value": json.dumps(contract.job_spec(spec), sort_keys=True, separators=(",", ":"))},
        {"name": contract.SCHEDULE_ENV, "value": schedule_name},
        {"name": contract.NAMESPACE_ENV, **field("metadata.namespace")},
        {"name": contract.POD_NAME_ENV, **field("metadata.name")},
        {"name": contract.JOB_NAME_ENV, **field(f"metadata.labels['{contract.JOB_NAME_LABEL}']")},
    ]
    env += _secret_env(spec.get("target", {}).get("credentialsSecret"), contract.SOURCE_KEY_ID_ENV, contract.SOURCE_SECRET_ENV)
    store = (spec.get("storage") or {}).get("objectStore") or {}
    env += _secret_env(store.get("credentialsSecret"), contract.STORE_KEY_ID_ENV, contract.STORE_SECRET_ENV)
    return env


def _secret_env(ref: dict | None, key_env: str, secret_env: str) -> list[dict]:
    if not ref:
        return []

    def item(env_name: str, key: str) -> dict:
        return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": key}}}

    return [
        item(key_env, ref.get("accessKeyIdKey", "AWS_ACCESS_KEY_ID")),
        item(secret_env, ref.get("secretAccessKeyKey", "AWS_SECRET_ACCESS_KEY")),
    ]
