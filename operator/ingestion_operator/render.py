"""Render the CronJob for an IngestionSchedule: a pure function, the operator-job contract.

The pod template carries the job-facing spec as JSON in one environment variable, the
identity of the run through the downward API, and credentials only as ``secretKeyRef``
(see :mod:`ingestion_contract.podenv`).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

import ingestion_contract as contract
from ingestion_contract.spec import MAX_NAME, JobSpec, ScheduleSpec, SecretRef

from . import names, quantity


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    job_image: str = names.DEFAULT_JOB_IMAGE
    image_pull_policy: str = "IfNotPresent"
    job_service_account: str | None = None
    default_pushgateway_url: str | None = None  # for schedules whose spec.metrics names none
    # the job container's requests and limits where a schedule's spec.resources is silent (the
    # chart's jobResources, through --job-resources); see job_resources
    job_resources: dict = dataclasses.field(default_factory=dict)


def cronjob_name(schedule_name: str) -> str:
    """The CronJob's name: the schedule's (validation refuses names longer than MAX_NAME)."""
    return schedule_name[:MAX_NAME].rstrip("-.")


def labels_for(schedule_name: str) -> dict:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_NAME: "ingestion-job",
        names.LABEL_SCHEDULE: schedule_name,
    }


def render_cronjob(name: str, namespace: str, spec: ScheduleSpec, settings: RenderSettings = RenderSettings(),
                   paused: bool = False) -> dict:
    """The CronJob for the IngestionSchedule ``namespace/name`` with a valid ``spec``;
    ``paused``: its spec.pause holds now (suspended like a disabled one)."""
    labels = labels_for(name)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob_name(name), "namespace": namespace, "labels": labels},
        "spec": {
            "schedule": spec.schedule_for(namespace, name),  # H resolved: the CronJob carries a concrete expression
            "timeZone": spec.timezone,
            "suspend": not spec.enabled or paused,
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
    """The pod of a schedule's run or of a backfill's unit."""
    resources = job_resources(settings.job_resources, spec.resources)
    # the only writable place (the root filesystem is read-only): staged loads, Delta's working copy
    scratch = {"sizeLimit": size} if (size := scratch_size(resources)) else {}
    volumes = [{"name": "tmp", "emptyDir": scratch}]
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
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod = {
        "restartPolicy": "Never",
        # the job never calls the API server: no token in its pods
        "automountServiceAccountToken": False,
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


RESOURCE_SIDES = ("requests", "limits")


def job_resources(defaults: dict, own: dict) -> dict:
    """The job container's resources: the operator's ``defaults`` (the chart's jobResources)
    with the schedule's ``own`` (``spec.resources``) over them, per resource name and side:
    a schedule that sets only ``limits.memory`` keeps every other default. Where it sets one
    side of a resource only and the default on the other side would cross it, that side
    follows the schedule's value (a memory limit below the default request lowers the
    request to it; a CPU request above the default limit raises the limit), as Kubernetes
    itself takes a missing request from the limit. Quantities are written the way the API
    server stores them (:mod:`.quantity`), so a re-read CronJob compares equal; one that is
    not a quantity is left for the API server to refuse, naming it."""
    out = dict(own)
    mine = {side: own.get(side) or {} for side in RESOURCE_SIDES}
    for side in RESOURCE_SIDES:
        if not isinstance(mine[side], dict):
            continue  # not a map: left for the API server to refuse, naming the field
        merged = {**(defaults.get(side) or {}), **mine[side]}
        if merged:
            out[side] = {name: _canonical(q) for name, q in merged.items()}
    requests, limits = out.get("requests"), out.get("limits")
    if isinstance(requests, dict) and isinstance(limits, dict):
        for name in requests.keys() & limits.keys():
            if _above(requests[name], limits[name]):
                if name in mine["limits"] and name not in mine["requests"]:
                    requests[name] = limits[name]
                elif name in mine["requests"] and name not in mine["limits"]:
                    limits[name] = requests[name]
    return out


def scratch_size(resources: dict) -> str | None:
    """The size limit of the job's ``/tmp`` volume: its container's ephemeral-storage (the
    limit, else the request), the room it has for anything it writes."""
    for side in ("limits", "requests"):
        if size := (resources.get(side) or {}).get("ephemeral-storage"):
            return size
    return None


def parse_job_resources(text: str) -> dict:
    """``--job-resources``: a JSON object of ``requests`` and ``limits`` (resource name to
    quantity), as in a Pod spec; "" is none. Raises ValueError naming the bad part."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at character {e.pos}): expected e.g. "
                         '{"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}') from None
    if not isinstance(raw, dict) or set(raw) - set(RESOURCE_SIDES):
        raise ValueError(f"expected an object of {' and '.join(RESOURCE_SIDES)}, got {text.strip()[:80]}")
    out: dict = {}
    for side in RESOURCE_SIDES:
        values = raw.get(side)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"{side}: expected an object of resource name to quantity, got {values!r}")
        for name, q in values.items():
            try:
                out.setdefault(side, {})[name] = quantity.canonical(q)
            except quantity.QuantityError as e:
                raise ValueError(f"{side}.{name}: {e}") from None
    for name in (out.get("requests") or {}).keys() & (out.get("limits") or {}).keys():
        if _above(out["requests"][name], out["limits"][name]):
            raise ValueError(f"requests.{name} {out['requests'][name]} is above limits.{name} {out['limits'][name]}")
    return out


def _above(request, limit) -> bool:
    try:
        return quantity.value(request) > quantity.value(limit)
    except quantity.QuantityError:
        return False


def _canonical(q):
    try:
        return quantity.canonical(q)
    except quantity.QuantityError:
        return q


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
