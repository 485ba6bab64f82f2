"""Shared samples and readers: a complete IngestionSchedule for the pure tests of the contract
and the operator, and the one reader of a run's DuckDB store."""

from __future__ import annotations

import time

import duckdb

SCHEDULE = {
    "apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionSchedule",
    "metadata": {"name": "binance-um-klines", "namespace": "data", "uid": "u-1", "generation": 3},
    "spec": {
        "schedule": "0 2 * * *", "timezone": "UTC", "enabled": True,
        "startingDeadlineSeconds": 300, "activeDeadlineSeconds": 3600, "backoffLimit": 2,
        "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "target": {"endpoint": None, "region": "ap-northeast-1", "bucket": "data.binance.vision", "anonymous": True,
                   "keyTemplate": "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip",
                   "checksumSuffix": ".CHECKSUM", "symbols": ["BTCUSDT", "ETHUSDT"], "lagDays": 1, "lookbackDays": 30},
        "repair": {"maxRepairsPerRun": 100, "load": "none"},
        "storage": {"duckdb": {"claimName": "ingestion-data", "path": "/data/ingestion.duckdb"}},
        "metrics": {"pushgatewayUrl": "http://pushgateway.monitoring:9091"},
    },
}


def store_rows(db, sql: str, *params, wait: float = 0.0) -> list[tuple]:
    """A query's rows from a DuckDB store, opened read-only and closed again. ``wait``: seconds
    to keep trying while a run holds the file's lock (DuckDB refuses a reader then)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            con = duckdb.connect(str(db), read_only=True)
        except duckdb.IOException:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
            continue
        try:
            return con.execute(sql, list(params)).fetchall()
        finally:
            con.close()


def delta_table(servers, prefix: str, name: str, version: int | None = None, bucket: str = "private-market-data"):
    """One of a store's Delta tables (objects, gaps, runs, loaded) under ``prefix``, read as the admin."""
    from deltalake import DeltaTable

    from ingestion_contract.spec import ObjectStoreStorage
    from ingestion_job.delta import storage_options

    cfg = ObjectStoreStorage(bucket=bucket, prefix=prefix, endpoint=servers.s3.endpoint)
    t = DeltaTable(f"s3://{bucket}/{prefix.rstrip('/')}/{name}",
                   storage_options=storage_options(cfg, (servers.s3.access_key, servers.s3.secret_key)))
    if version is not None:
        t.load_as_version(version)
    return t
