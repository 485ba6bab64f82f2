"""Pure parts of the pod runner: env resolution, $(VAR) expansion, volume mapping."""

import pytest

from ingestion_dev.podrunner import expand, field_value, map_mounts, resolve_env, rewrite_paths

POD = {
    "metadata": {"name": "p-1", "namespace": "data", "uid": "u-1", "labels": {"app": "x"},
                 "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-11-24T02:00:00Z"}},
    "spec": {"serviceAccountName": "runner", "volumes": [
        {"name": "store", "persistentVolumeClaim": {"claimName": "ingestion-data"}},
        {"name": "tmp", "emptyDir": {}},
    ]},
}
SECRETS = {"creds": {"key": "AK", "secret": "SK"}}
CMS = {"spec": {"SCHEDULE": "0 2 * * *", "TZ": "UTC"}}


def read(store):
    def reader(name):
        if name not in store:
            raise KeyError(name)
        return store[name]
    return reader


@pytest.mark.parametrize("value,expected", [
    ("$(A)-$(B)", "1-2"),
    ("$(MISSING)", "$(MISSING)"),
    ("$$(A)", "$(A)"),
    ("plain", "plain"),
])
def test_expand(value, expected):
    assert expand(value, {"A": "1", "B": "2"}) == expected


def test_resolve_env_every_source_in_order():
    container = {
        "envFrom": [{"configMapRef": {"name": "spec"}, "prefix": "CFG_"}],
        "env": [
            {"name": "A", "value": "a"},
            {"name": "B", "value": "$(A)b"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
            {"name": "TZ", "valueFrom": {"configMapKeyRef": {"name": "spec", "key": "TZ"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "SCHED", "valueFrom": {"fieldRef": {"fieldPath":
                "metadata.annotations['batch.kubernetes.io/cronjob-scheduled-timestamp']"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        ],
    }
    env = resolve_env(POD, container, read(SECRETS), read(CMS))
    assert env == {"CFG_SCHEDULE": "0 2 * * *", "CFG_TZ": "UTC", "A": "a", "B": "ab", "KEY": "AK",
                   "TZ": "UTC", "NS": "data", "SCHED": "2026-11-24T02:00:00Z"}


def test_missing_required_secret_is_a_config_error():
    container = {"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "absent"}}}]}
    with pytest.raises(KeyError, match="creds/absent"):
        resolve_env(POD, container, read(SECRETS), read(CMS))


def test_unsupported_field_path_is_named():
    with pytest.raises(ValueError, match="status.podIPs"):
        field_value(POD, "status.podIPs")


def test_mounts_map_pvcs_by_claim_and_rewrite_paths(tmp_path):
    container = {"volumeMounts": [{"name": "store", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp/work/"}]}
    mounts = map_mounts(POD, container, tmp_path)
    assert mounts == {"/data": tmp_path / "pvc" / "data" / "ingestion-data",
                      "/tmp/work": tmp_path / "pods" / "data" / "p-1" / "tmp"}
    assert rewrite_paths("/data/ingestion.duckdb", mounts) == str(tmp_path / "pvc/data/ingestion-data/ingestion.duckdb")
    assert rewrite_paths("/database", mounts) == "/database"
    assert rewrite_paths("--flag", mounts) == "--flag"


def test_mount_paths_inside_json_values_are_rewritten(tmp_path):
    mounts = {"/data": tmp_path / "pvc", "/tmp": tmp_path / "tmp"}
    spec = '{"storage":{"duckdb":{"path":"/data/x.duckdb"}},"note":"/database and /tmpfs stay"}'
    out = rewrite_paths(spec, mounts)
    assert f'"path":"{tmp_path}/pvc/x.duckdb"' in out
    assert '"/database and /tmpfs stay"' in out
