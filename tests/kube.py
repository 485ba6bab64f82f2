"""Helpers for tests on the control plane: schedule YAML, reads of schedules, CronJobs and
Events, and namespaces for the pod runner's modes. One place, so no test module imports
another."""

from __future__ import annotations

import json

import yaml

from ingestion_contract import SPEC_ENV

from .conftest import _wait_for, kubectl


def schedule_yaml(name: str, **spec) -> str:
    body = {
        "apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionSchedule", "metadata": {"name": name},
        "spec": {
            "schedule": "0 2 * * *",
            "target": {"bucket": "data.binance.vision", "anonymous": True, "symbols": ["BTCUSDT"],
                       "keyTemplate": "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip"},
            "storage": {"duckdb": {"claimName": "ingestion-data"}},
            **spec,
        },
    }
    return yaml.safe_dump(body)


def lake_secret(servers, name: str = "lake") -> dict:
    """The Secret holding the test S3 server's keys, as a schedule's credentialsSecret names it."""
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {
        "AWS_ACCESS_KEY_ID": base64.b64encode(servers.s3.access_key.encode()).decode(),
        "AWS_SECRET_ACCESS_KEY": base64.b64encode(servers.s3.secret_key.encode()).decode()}}


def backfill_yaml(name: str, schedule: str, first: str, last: str, **spec) -> str:
    body = {"apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionBackfill", "metadata": {"name": name},
            "spec": {"schedule": schedule, "from": first, "to": last, **spec}}
    return yaml.safe_dump(body)


def upstream_yaml(name: str, bucket: str = "data.binance.vision", **spec) -> str:
    body = {"apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionUpstream", "metadata": {"name": name},
            "spec": {"bucket": bucket, **spec}}
    return yaml.safe_dump(body)


def get_upstream(cluster, ns, name) -> dict:
    return json.loads(kubectl(cluster, "get", "iup", name, "-n", ns, "-o", "json").stdout)


def get_backfill(cluster, ns, name) -> dict:
    return json.loads(kubectl(cluster, "get", "ibf", name, "-n", ns, "-o", "json").stdout)


def get(cluster, ns, name) -> dict:
    return json.loads(kubectl(cluster, "get", "isched", name, "-n", ns, "-o", "json").stdout)


def get_cronjob(cluster, ns, name) -> dict | None:
    out = kubectl(cluster, "get", "cronjob", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def cond(obj, type_) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def ready(cluster, ns, name, status="True"):
    obj = get(cluster, ns, name)
    c = cond(obj, "Ready")
    if c.get("status") == status and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
        return obj
    return None


def last_run(cluster, ns, name, outcome, trigger) -> dict | None:
    """The schedule once status shows this run; a scheduled success also waits for
    lastSuccessfulTime, mirrored from the CronJob, whose controller records it a moment later."""
    obj = get(cluster, ns, name)
    st = obj.get("status") or {}
    run = st.get("lastRun") or {}
    if (run.get("outcome"), run.get("trigger")) != (outcome, trigger):
        return None
    if outcome == "Succeeded" and trigger == "scheduled" and not st.get("lastSuccessfulTime"):
        return None
    return obj


def events(cluster, ns, name) -> list[dict]:
    out = kubectl(cluster, "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return json.loads(out.stdout)["items"]


def apply_schedule(cluster, ns, name, status="True", timeout=30, **spec) -> dict:
    """``kubectl apply`` a schedule, then wait until its Ready condition is ``status`` for its
    current generation; returns the schedule."""
    kubectl(cluster, "apply", "-n", ns, "-f", "-", input=schedule_yaml(name, **spec))
    return _wait_for(lambda: ready(cluster, ns, name, status=status), timeout, f"{ns}/{name} Ready={status}")


def plain_cronjob(name: str, schedule: str, suspend_jobs: bool = False, **metadata) -> dict:
    """A CronJob that is not ours (a foreign one, a probe, a witness of a tick); with
    ``suspend_jobs`` its Jobs are created suspended and start no pod."""
    job = {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    if suspend_jobs:
        job["suspend"] = True
    return {"metadata": {"name": name, **metadata}, "spec": {"schedule": schedule, "jobTemplate": {"spec": job}}}


def env_target(pod_spec: dict) -> dict:
    """The target of the job spec a pod runs (its INGESTION_SPEC)."""
    env = pod_spec["containers"][0]["env"]
    return json.loads(next(e["value"] for e in env if e["name"] == SPEC_ENV))["target"]


def env_cap(pod_spec: dict) -> int | None:
    return env_target(pod_spec)["maxRequestsPerSecond"]


def caps(cluster, ns, names) -> dict:
    out = {}
    for name in names:
        cj = get_cronjob(cluster, ns, name)
        out[name] = env_cap(cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]) if cj else "absent"
    return out


def job(cluster, ns, name) -> dict | None:
    out = kubectl(cluster, "get", "job", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None
