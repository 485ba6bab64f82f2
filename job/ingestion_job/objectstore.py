"""Object-storage mode: the store's tables as hive-partitioned Parquet in an S3 bucket.

Layout under ``<prefix>`` (one partition per schedule, so schedules never contend)::

    objects/schedule=<s>/version=<v>.parquet      availability snapshot of version v
    gaps/schedule=<s>/version=<v>.parquet         gaps snapshot of version v
    runs/schedule=<s>/run=<run id>.parquet        one file per run (a retried slot overwrites its own)
    loaded/schedule=<s>/symbol=<y>/date=<d>/data.parquet   loaded rows of one cell (overwritten on reload)
    _manifests/schedule=<s>.json                  {"version": v}: the commit point

A run works on a local DuckDB file hydrated from the current version, then uploads new
snapshot files and last the manifest: an S3 PUT is atomic, so readers and the next run see
either the old version or the new one, never a mix; a run killed before the manifest leaves
the old version in force. Parquet is written by DuckDB's COPY and uploaded with boto3 (the
httpfs extension is not needed).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from pathlib import Path

from ingestion_contract.spec import ObjectStoreStorage

from . import s3
from .store import Store, StoreError

TABLES = ("objects", "gaps")


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", s)


class ObjectStore(Store):
    def __init__(self, cfg: ObjectStoreStorage, schedule: str, credentials: tuple[str, str] | None = None):
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.schedule = schedule
        self._tmp = tempfile.TemporaryDirectory(prefix="ingestion-objectstore-")
        self.work = Path(self._tmp.name)
        self.s3 = s3.client(cfg.endpoint, cfg.region, credentials)
        super().__init__(self.work / "state.duckdb")
        self.version_loaded: str | None = None
        self._hydrate()

    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    # read the current version ---------------------------------------------------------------
    def _hydrate(self) -> None:
        manifest = self._get_json(f"{self.prefix}_manifests/schedule={_safe(self.schedule)}.json")
        if manifest:
            self.version_loaded = manifest["version"]
            for table in TABLES:
                self._load_file(table, f"{self.prefix}{table}/schedule={_safe(self.schedule)}/version={manifest['version']}.parquet")
        for key in self._list(f"{self.prefix}runs/schedule={_safe(self.schedule)}/"):
            self._load_file("runs", key)

    def _load_file(self, table: str, key: str) -> None:
        local = self.work / _safe(key)
        self._call(lambda: self.s3.download_file(self.bucket, key, str(local)), f"download {key}")
        self.con.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM read_parquet(?)", [str(local)])

    # publish a new version ------------------------------------------------------------------
    def write_run(self, objects, gaps, run, loads=()) -> int:
        written = super().write_run(objects, gaps, run, loads)
        version = _safe(run["finished_at"].astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ"))
        sched = _safe(self.schedule)
        for _, symbol, date, _, _ in loads:
            self._export(f"SELECT * FROM loaded WHERE schedule = ? AND symbol = ? AND date = ?", [self.schedule, symbol, date],
                         f"{self.prefix}loaded/schedule={sched}/symbol={_safe(symbol)}/date={date}/data.parquet")
        for table in TABLES:
            self._export(f"SELECT * FROM {table} WHERE schedule = ?", [self.schedule],
                         f"{self.prefix}{table}/schedule={sched}/version={version}.parquet")
        self._put_run(run)
        body = json.dumps({"version": version, "run_id": run["run_id"], "written_at": dt.datetime.now(dt.timezone.utc).isoformat()})
        self._call(lambda: self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}_manifests/schedule={sched}.json",
                                              Body=body.encode(), ContentType="application/json"), "write the manifest")
        if self.version_loaded:  # the old version is no longer referenced
            for table in TABLES:
                old = f"{self.prefix}{table}/schedule={sched}/version={self.version_loaded}.parquet"
                try:
                    self._call(lambda: self.s3.delete_object(Bucket=self.bucket, Key=old), f"delete {old}")
                except StoreError:
                    pass  # garbage left behind is harmless: nothing points at it
        self.version_loaded = version
        return written

    def write_run_record(self, run: dict) -> None:
        super().write_run_record(run)
        self._put_run(run)

    def begin_run(self, run: dict, now: dt.datetime) -> list[str]:
        stale = super().begin_run(run, now)
        for run_id in [*stale, run["run_id"]]:
            self._put_run({"run_id": run_id})
        return stale

    def add_warning(self, run_id: str, warning: str) -> None:
        super().add_warning(run_id, warning)
        self._put_run({"run_id": run_id})

    def release(self) -> None:
        """The working copy is this process's own file: nothing to let go of until close."""

    def acquire(self) -> None:
        pass

    def close(self) -> None:
        super().release()
        self._tmp.cleanup()

    def _put_run(self, run: dict) -> None:
        self._export("SELECT * FROM runs WHERE run_id = ?", [run["run_id"]],
                     f"{self.prefix}runs/schedule={_safe(self.schedule)}/run={_safe(run['run_id'])}.parquet")

    def _export(self, sql: str, params: list, key: str) -> None:
        local = self.work / f"out-{_safe(key)}"
        self.con.execute(f"COPY ({sql}) TO '{local}' (FORMAT parquet)", params)
        self._call(lambda: self.s3.upload_file(str(local), self.bucket, key), f"upload {key}")
        local.unlink()

    # S3 helpers -----------------------------------------------------------------------------
    def _get_json(self, key: str) -> dict | None:
        body = self._call(lambda: self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(), f"read {key}", missing_ok=True)
        return None if body is None else json.loads(body)

    def _list(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in self._call(lambda: list(pages), f"list {prefix}") for o in page.get("Contents") or []]

    def _call(self, fn, what: str, missing_ok: bool = False):
        return s3.guarded(fn, lambda code, message: StoreError(f"{self.where()}: {what}: {code} {message}".strip()), missing_ok)
