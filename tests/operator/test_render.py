"""render_cronjob: the CronJob and pod template an IngestionSchedule becomes."""

import copy
import json

import pytest
from hypothesis import given, strategies as st

from ingestion_dev.podrunner import resolve_env
import ingestion_contract as contract
from ingestion_operator import names
from ingestion_contract import parse_spec
from ingestion_operator.backfill import render_backfill_job
from ingestion_operator.render import RenderSettings, cronjob_name, job_resources, parse_job_resources, render_cronjob

from ..samples import SCHEDULE

def render_body(body, settings):
    return render_cronjob(body["metadata"]["name"], body["metadata"]["namespace"], parse_spec(body["spec"]), settings)


def render(settings=RenderSettings(job_image="registry.local/ingestion-job:1"), **spec_changes):
    s = copy.deepcopy(SCHEDULE)
    s["spec"].update(spec_changes)
    return render_body(s, settings)


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
    assert json.loads(env[contract.SPEC_ENV])["metrics"] == {"pushgatewayUrl": "http://pg.monitoring:9091", "dimensionLabels": 16}
    env = {e["name"]: e.get("value") for e in pod(render_body(SCHEDULE, settings))["containers"][0]["env"]}
    assert json.loads(env[contract.SPEC_ENV])["metrics"]["pushgatewayUrl"] == "http://pushgateway.monitoring:9091"


# -- the job pod's footprint: no API token, requests and limits, a bounded scratch volume ---------
CHART_DEFAULTS = {"requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
                  "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "4Gi"}}
WITH_DEFAULTS = RenderSettings(job_resources=CHART_DEFAULTS)


def backfill_pod(settings, **spec_changes):
    s = copy.deepcopy(SCHEDULE)
    s["spec"].update(spec_changes)
    bf = contract.parse_backfill({"schedule": "binance-um-klines", "from": "2026-01-01", "to": "2026-01-31", "parallelism": 2})
    return render_backfill_job("jan", "data", bf, "binance-um-klines", parse_spec(s["spec"]), settings)["spec"]["template"]["spec"]


@pytest.mark.parametrize("pod_of", [lambda st, **kw: pod(render(st, **kw)), backfill_pod], ids=["cronjob", "backfill"])
def test_job_pods_mount_no_token_and_carry_the_default_resources(pod_of):
    p = pod_of(WITH_DEFAULTS)
    assert p["automountServiceAccountToken"] is False  # the job never calls the API server
    assert p["containers"][0]["resources"] == CHART_DEFAULTS
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}} in p["volumes"]
    own = pod_of(WITH_DEFAULTS, resources={"limits": {"memory": "8Gi"}})
    assert own["containers"][0]["resources"]["limits"]["memory"] == "8Gi"


def test_a_schedules_resources_win_per_resource_and_side():
    assert job_resources(CHART_DEFAULTS, {"limits": {"memory": "4Gi"}, "requests": {"cpu": "1"}}) == {
        "requests": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "4Gi"}}
    # other keys of a container's resources pass through
    assert job_resources(CHART_DEFAULTS, {"claims": [{"name": "gpu"}]})["claims"] == [{"name": "gpu"}]
    assert job_resources({}, {}) == {} and job_resources({}, {"limits": {"cpu": "1"}}) == {"limits": {"cpu": "1"}}


def test_one_side_set_by_the_schedule_moves_a_default_it_would_cross():
    # a limit below the default request: the request follows it (as Kubernetes defaults a request to the limit)
    low = job_resources(CHART_DEFAULTS, {"limits": {"memory": "256Mi"}})
    assert low["requests"]["memory"] == low["limits"]["memory"] == "256Mi"
    # a request above the default limit: the limit follows it
    high = job_resources(CHART_DEFAULTS, {"requests": {"cpu": "4", "ephemeral-storage": "10Gi"}})
    assert high["limits"]["cpu"] == "4" and high["limits"]["ephemeral-storage"] == "10Gi"
    # both set and crossed: the schedule's own mistake, left for the API server to refuse by name
    both = job_resources(CHART_DEFAULTS, {"requests": {"cpu": "4"}, "limits": {"cpu": "1"}})
    assert (both["requests"]["cpu"], both["limits"]["cpu"]) == ("4", "1")


def test_quantities_are_rendered_as_the_api_server_stores_them():
    r = job_resources({"requests": {"memory": "1024Mi", "cpu": 0.5}}, {"limits": {"cpu": 2, "memory": "2048Mi"}})
    assert r == {"requests": {"memory": "1Gi", "cpu": "500m"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    # not a quantity, or not a map: passed on for the API server's own message
    assert job_resources({}, {"limits": {"cpu": "lots"}}) == {"limits": {"cpu": "lots"}}
    assert job_resources(CHART_DEFAULTS, {"limits": "big"})["limits"] == "big"


@pytest.mark.parametrize("resources, size", [
    ({}, None),
    ({"requests": {"ephemeral-storage": "1Gi"}}, "1Gi"),
    ({"requests": {"ephemeral-storage": "1Gi"}, "limits": {"ephemeral-storage": "3Gi"}}, "3Gi"),
    ({"limits": {"memory": "1Gi"}}, None),
])
def test_the_scratch_volume_is_sized_from_ephemeral_storage(resources, size):
    p = pod(render(RenderSettings(job_resources=resources)))
    assert next(v for v in p["volumes"] if v["name"] == "tmp")["emptyDir"] == ({"sizeLimit": size} if size else {})


def test_without_defaults_a_schedule_renders_its_own_resources_only():
    assert pod(render())["containers"][0]["resources"] == {}
    assert pod(render(resources={"limits": {"memory": "1Gi"}}))["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}


def test_job_resources_flag_is_checked_before_anything_starts():
    assert parse_job_resources("") == {}
    assert parse_job_resources('{"requests": {"memory": "1024Mi"}, "limits": {"cpu": 2}}') == {
        "requests": {"memory": "1Gi"}, "limits": {"cpu": "2"}}
    for bad, message in [("{", "not JSON"), ('{"limit": {}}', "expected an object of requests and limits"),
                         ('{"limits": []}', "limits: expected an object"), ('{"limits": {"cpu": "1 core"}}', "limits.cpu: '1 core'"),
                         ('{"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}', "requests.cpu 2 is above limits.cpu 1")]:
        with pytest.raises(ValueError, match=message):
            parse_job_resources(bad)


def test_h_renders_a_concrete_expression_that_status_shows_too():
    import datetime as dt

    from ingestion_operator.resource import ScheduleResource
    from ingestion_operator.status import derive_status

    body = {**SCHEDULE, "spec": {**SCHEDULE["spec"], "schedule": "H(0-29) 2 * * *"}}
    spec = parse_spec(body["spec"])
    cj = render_cronjob("daily", "data", spec)
    minute, rest = cj["spec"]["schedule"].split(" ", 1)
    assert rest == "2 * * *" and 0 <= int(minute) <= 29
    assert render_cronjob("daily", "data", spec)["spec"]["schedule"] == cj["spec"]["schedule"]  # stable
    other = render_cronjob("hourly", "data", spec)["spec"]["schedule"]
    assert other.endswith(" 2 * * *")  # another name may pick another minute, in the same range
    res = ScheduleResource.from_body({**body, "metadata": {**body["metadata"], "name": "daily", "namespace": "data"}})
    now = dt.datetime(2026, 12, 6, 12, tzinfo=dt.timezone.utc)
    st = derive_status(res, None, [], now)
    assert st["nextRuns"][0] == f"2026-12-07T02:{int(minute):02d}:00Z"
