"""Smoke tests: Kubernetes' own CronJob machinery works on our process control plane.

The CronJobs are created together by one module fixture so that they share the same
minute ticks: the whole module takes about two minutes of wall time, not one per test.
"""

from __future__ import annotations

import subprocess

import pytest
from kubernetes import client

from ..conftest import MODE as RUNNER_MODE

# Exits 0 only if the pod runner resolved every kind of env source correctly.
CHECK_ENV = (
    'test "$PLAIN" = plain-value && test "$FROM_SECRET" = s3cr3t && test "$FROM_CM" = cm-value '
    '&& test "$POD_NS" = "$EXPECT_NS" && test -n "$POD_NAME" && test "$EXPANDED" = "x-plain-value"'
)


def cronjob(name: str, ns: str, *, mode: str, command: list[str], tz: str = "Europe/London") -> dict:
    env = [
        {"name": "PLAIN", "value": "plain-value"},
        {"name": "EXPANDED", "value": "x-$(PLAIN)"},
        {"name": "EXPECT_NS", "value": ns},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "smoke", "key": "token"}}},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "smoke", "key": "greeting"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "* * * * *",
            "timeZone": tz,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 120,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"annotations": {RUNNER_MODE: mode}},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "main", "image": "busybox", "command": command, "env": env}],
                        },
                    },
                }
            },
        },
    }


@pytest.fixture(scope="module")
def smoke_ns(cluster, module_namespaces):
    ns = module_namespaces("smoke")
    cluster.core.create_namespaced_secret(ns, {"metadata": {"name": "smoke"}, "stringData": {"token": "s3cr3t"}})
    cluster.core.create_namespaced_config_map(ns, {"metadata": {"name": "smoke"}, "data": {"greeting": "cm-value"}})
    cluster.batch.create_namespaced_cron_job(ns, cronjob("runs", ns, mode="exec", command=["sh", "-c", CHECK_ENV]))
    cluster.batch.create_namespaced_cron_job(ns, cronjob("holds", ns, mode="hold", command=["true"]))
    return ns


def jobs_of(cluster, ns: str, cronjob_name: str) -> list[client.V1Job]:
    jobs = cluster.batch.list_namespaced_job(ns).items
    return [j for j in jobs if any(o.name == cronjob_name for o in (j.metadata.owner_references or []))]


def succeeded(job: client.V1Job) -> bool:
    return any(c.type == "Complete" and c.status == "True" for c in (job.status.conditions or []))


def test_cronjob_with_timezone_fires_and_completes_through_exec_runner(cluster, smoke_ns, wait_for):
    jobs = wait_for(lambda: jobs_of(cluster, smoke_ns, "runs"), 75, "the first tick of CronJob 'runs'")
    job = jobs[0]
    ann = job.metadata.annotations or {}
    assert "batch.kubernetes.io/cronjob-scheduled-timestamp" in ann
    done = wait_for(lambda: succeeded(cluster.batch.read_namespaced_job(job.metadata.name, smoke_ns)), 30,
                    f"Job {job.metadata.name} to complete (its pod checks every env source)")
    assert done
    pods = cluster.core.list_namespaced_pod(smoke_ns, label_selector=f"job-name={job.metadata.name}").items
    assert pods and pods[0].status.phase == "Succeeded"
    term = pods[0].status.container_statuses[0].state.terminated
    assert term.exit_code == 0 and term.reason == "Completed"
    cj = wait_for(lambda: (c := cluster.batch.read_namespaced_cron_job("runs", smoke_ns)).status.last_successful_time and c,
                  30, "CronJob status.lastSuccessfulTime")
    assert cj.status.last_schedule_time is not None


def test_manual_job_from_cronjob_completes(cluster, smoke_ns, wait_for):
    out = subprocess.run(
        ["kubectl", "create", "job", "manual-1", "--from=cronjob/runs", "-n", smoke_ns],
        env=cluster.kubectl_env(), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    job = cluster.batch.read_namespaced_job("manual-1", smoke_ns)
    assert job.metadata.annotations["cronjob.kubernetes.io/instantiate"] == "manual"
    wait_for(lambda: succeeded(cluster.batch.read_namespaced_job("manual-1", smoke_ns)), 30, "manual-1 to complete")


def test_failing_command_marks_pod_and_job_failed(cluster, namespace, wait_for):
    body = cronjob("fails", namespace, mode="exec", command=["sh", "-c", "exit 3"])
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "fails"}, "spec": body["spec"]["jobTemplate"]["spec"]}
    # no secret/configmap in this namespace: drop those env entries so only the exit code matters
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if "valueFrom" not in e or "fieldRef" in e["valueFrom"]]
    cluster.batch.create_namespaced_job(namespace, job)

    def failed():
        j = cluster.batch.read_namespaced_job("fails", namespace)
        return any(c.type == "Failed" and c.status == "True" for c in (j.status.conditions or []))

    wait_for(failed, 45, "Job 'fails' to be Failed")
    pod = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=fails").items[0]
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_forbid_skips_a_tick_while_a_run_is_active(cluster, smoke_ns, wait_for):
    first = wait_for(lambda: jobs_of(cluster, smoke_ns, "holds"), 75, "the first tick of CronJob 'holds'")
    assert len(first) == 1
    # The held pod never finishes, so the next minute's tick must be skipped, with an event.
    def skipped_event():
        evs = cluster.core.list_namespaced_event(smoke_ns, field_selector="involvedObject.name=holds").items
        return [e for e in evs if e.reason == "JobAlreadyActive"]

    evs = wait_for(skipped_event, 80, "a JobAlreadyActive event from the CronJob controller")
    assert "Forbid" in evs[0].message
    assert len(jobs_of(cluster, smoke_ns, "holds")) == 1
    cj = cluster.batch.read_namespaced_cron_job("holds", smoke_ns)
    assert len(cj.status.active or []) == 1
