"""render_cronjob: the CronJob and pod template an IngestionSchedule becomes."""

import copy
import json

import pytest
from hypothesis import given, strategies as st

from ingestion_dev.podrunner import resolve_env
import ingestion_contract as contract
from ingestion_operator import names
from ingestion_contract import parse_spec
from ingestion_operator.render import RenderSettings, cronjob_name, render_cronjob

from ..samples import SCHEDULE

def render_body(body, settings):
    return render_cronjob(body["metadata"]["name"], body["metadata"]["namespace"], parse_spec(body["spec"]), settings)


def render(**spec_changes):
    s = copy.deepcopy(SCHEDULE)
    s["spec"].update(spec_changes)
    return render_body(s, RenderSettings(job_image="registry.local/ingestion-job:1"))


def pod(cj):
    return cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_cronjob_carries_schedule_policy_and_limits():
    cj = render()
    spec = cj["spec"]
    assert spec["schedule"] == "0 2 * * *" and spec["timeZone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 300
    assert spec["suspend"] is False
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 3600
    # a partial run (3) or a refused spec (2) fails the Job at once: a new pod would end the same
    # a run stopped from outside (SIGTERM: exit 4; an eviction) is not counted against the retries
    assert job["podFailurePolicy"] == {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "ingest", "operator": "In", "values": [2, 3]}},
        {"action": "Ignore", "onExitCodes": {"containerName": "ingest", "operator": "In", "values": [4]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}
    assert pod(cj)["restartPolicy"] == "Never"


def test_disabled_means_suspended():
    assert render(enabled=False)["spec"]["suspend"] is True


def test_labels_tie_cronjob_jobs_and_pods_to_the_schedule():
    cj = render()
    for meta in (cj["metadata"], cj["spec"]["jobTemplate"]["metadata"], cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]):
        assert meta["labels"][names.LABEL_SCHEDULE] == "binance-um-klines"
        assert meta["labels"][names.LABEL_MANAGED_BY] == names.MANAGED_BY


def test_pod_is_non_root_with_read_only_root_filesystem():
    p = pod(render())
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] == names.RUN_AS_USER
    c = p["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # writable scratch space
    assert c["image"] == "registry.local/ingestion-job:1" and c["command"] == ["ingestion-job", "run"]


def test_duckdb_mode_mounts_the_claim_at_the_files_folder():
    p = pod(render())
    assert {"name": "store", "persistentVolumeClaim": {"claimName": "ingestion-data"}} in p["volumes"]
    assert {"name": "store", "mountPath": "/data"} in p["containers"][0]["volumeMounts"]


def test_object_store_mode_has_no_claim_and_credentials_only_by_secret_ref():
    cj = render(storage={"objectStore": {"bucket": "lake", "prefix": "ingest/", "credentialsSecret": {"name": "lake-creds"}}},
                target={**SCHEDULE["spec"]["target"], "anonymous": False, "credentialsSecret": {"name": "src", "accessKeyIdKey": "id", "secretAccessKeyKey": "key"}})
    p = pod(cj)
    assert all("persistentVolumeClaim" not in v for v in p["volumes"])
    env = {e["name"]: e for e in p["containers"][0]["env"]}
    assert env[contract.SOURCE_KEY_ID_ENV]["valueFrom"] == {"secretKeyRef": {"name": "src", "key": "id"}}
    assert env[contract.SOURCE_SECRET_ENV]["valueFrom"] == {"secretKeyRef": {"name": "src", "key": "key"}}
    assert env[contract.STORE_KEY_ID_ENV]["valueFrom"]["secretKeyRef"] == {"name": "lake-creds", "key": "AWS_ACCESS_KEY_ID"}
    assert all("value" not in e for n, e in env.items() if "ACCESS_KEY" in n)


def test_long_names_fit_cronjob_limits():
    assert len(cronjob_name("x" * 80)) == 52


def test_rendering_is_deterministic():
    assert json.dumps(render(), sort_keys=True) == json.dumps(render(), sort_keys=True)


def _pod_runner_env(cj, secrets=None):
    """Resolve the rendered env the way a kubelet (here: the pod runner) would."""
    p = pod(cj)
    live_pod = {"metadata": {"name": "binance-um-klines-29400000-abcde", "namespace": "data",
                             "labels": {contract.JOB_NAME_LABEL: "binance-um-klines-29400000"}}, "spec": p}

    def read_secret(name):
        return (secrets or {})[name]

    return resolve_env(live_pod, p["containers"][0], read_secret, lambda n: {})


def test_contract_round_trip_operator_renders_what_the_job_reads():
    cj = render()
    ctx = contract.read_environment(_pod_runner_env(cj))
    assert ctx.spec == contract.job_spec(SCHEDULE["spec"])
    assert ctx.schedule == "binance-um-klines" and ctx.namespace == "data"
    assert ctx.trigger == "scheduled"
    assert ctx.scheduled_time.isoformat() == "2025-11-24T16:00:00+00:00"  # 29,400,000 minutes after the epoch
    assert ctx.source_credentials is None


def test_contract_round_trip_with_credentials():
    cj = render(target={**SCHEDULE["spec"]["target"], "anonymous": False, "credentialsSecret": {"name": "src"}})
    env = _pod_runner_env(cj, {"src": {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}})
    assert contract.read_environment(env).source_credentials == ("AK", "SK")


@given(st.sampled_from(["target", "repair", "storage", "metrics", "timezone"]))
def test_a_spec_key_the_job_cannot_read_fails_the_contract(key):
    cj = render()
    env = _pod_runner_env(cj)
    spec = json.loads(env[contract.SPEC_ENV])
    spec["somethingNew"] = spec.get(key)
    env[contract.SPEC_ENV] = json.dumps(spec)
    with pytest.raises(contract.ContractError, match="somethingNew"):
        contract.read_environment(env)


@pytest.mark.parametrize("missing", [contract.SPEC_ENV, contract.SCHEDULE_ENV, contract.NAMESPACE_ENV])
def test_missing_contract_variable_is_named(missing):
    env = _pod_runner_env(render())
    del env[missing]
    with pytest.raises(contract.ContractError, match=missing):
        contract.read_environment(env)


def test_manual_job_name_means_manual_trigger():
    env = _pod_runner_env(render())
    env[contract.JOB_NAME_ENV] = "manual-1"
    assert contract.read_environment(env).trigger == "manual"


def test_default_pushgateway_fills_only_a_silent_spec():
    s = copy.deepcopy(SCHEDULE)
    s["spec"].pop("metrics")
    settings = RenderSettings(default_pushgateway_url="http://pg.monitoring:9091")
    env = {e["name"]: e.get("value") for e in pod(render_body(s, settings))["containers"][0]["env"]}
    assert json.loads(env[contract.SPEC_ENV])["metrics"] == {"pushgatewayUrl": "http://pg.monitoring:9091"}
    env = {e["name"]: e.get("value") for e in pod(render_body(SCHEDULE, settings))["containers"][0]["env"]}
    assert json.loads(env[contract.SPEC_ENV])["metrics"]["pushgatewayUrl"] == "http://pushgateway.monitoring:9091"
