"""Object-storage mode against the real S3 server: partitioned Parquet, a manifest commit."""

import json
import os

import duckdb

import ingestion_contract as contract

from .conftest import PRIVATE, context, days_ago, run, run_cli


def object_spec(dataset, servers, prefix):
    spec = dataset.spec(["BTCUSDT", "ETHUSDT"], lookback=3, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": prefix, "endpoint": servers.s3.endpoint}}
    return spec


def keys(servers, prefix):
    s3 = servers.s3.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=PRIVATE, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents") or [])


def read_table(servers, tmp_path, key):
    local = tmp_path / key.replace("/", "_")
    servers.s3.client().download_file(PRIVATE, key, str(local))
    return duckdb.sql(f"SELECT * FROM read_parquet('{local}')")


def test_runs_write_partitioned_parquet_committed_by_a_manifest(dataset, servers, tmp_path):
    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2, 4)])
    prefix = f"{dataset.prefix}-lake/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    first = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert first.outcome == "succeeded", first.error
    assert first.summary["gaps_repaired"] == 6 and first.summary["missing"] == 2
    k = keys(servers, prefix)
    assert f"{prefix}_manifests/schedule=lake.json" in k
    assert len([x for x in k if x.startswith(f"{prefix}objects/schedule=lake/version=")]) == 1
    assert len([x for x in k if x.startswith(f"{prefix}runs/schedule=lake/run=")]) == 1
    assert len([x for x in k if x.startswith(f"{prefix}loaded/schedule=lake/symbol=")]) == 6
    objects_key = next(x for x in k if x.startswith(f"{prefix}objects/"))
    assert read_table(servers, tmp_path, objects_key).aggregate("count(*), count(*) FILTER (WHERE present)").fetchall() == [(8, 6)]

    # the second run hydrates from the manifest: nothing to repair, old version replaced
    second = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert second.outcome == "succeeded" and second.summary["gaps_repaired"] == 0 and second.summary["bytes_fetched"] == 0
    k2 = keys(servers, prefix)
    assert len([x for x in k2 if x.startswith(f"{prefix}objects/schedule=lake/version=")]) == 1
    assert len([x for x in k2 if x.startswith(f"{prefix}runs/schedule=lake/run=")]) == 2

    # `report --spec` reads the object store the spec names, with the pod's store credentials
    env = {**os.environ, contract.STORE_KEY_ID_ENV: creds[0], contract.STORE_SECRET_ENV: creds[1]}
    out = run_cli(tmp_path, "lake", spec, "--format", "json", command="report", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {a["symbol"]: (a["present"], a["expected"]) for a in data["availability"]} == {"BTCUSDT": (3, 4), "ETHUSDT": (3, 4)}
    assert [r["outcome"] for r in data["recent_runs"]] == ["succeeded", "succeeded"]
    assert data["success_rate"]["rate"] == 1.0


def test_unwritable_object_store_fails_the_run_with_one_line(dataset, servers):
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    spec = object_spec(dataset, servers, "x/")
    res = run(context(spec, schedule="lake"), None)  # no store credentials: anonymous is refused
    assert res.outcome == "failed" and "s3://private-market-data/x/" in res.error and "\n" not in res.error
