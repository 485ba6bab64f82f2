"""`ingestion-job migrate-store`: move one schedule's data from the old object-store format
(releases before Delta Lake) into the Delta tables, once.

The old format, under the same ``<prefix>``: a JSON manifest
``_manifests/schedule=<s>.json`` naming the current version, snapshots
``objects|gaps/schedule=<s>/version=<v>.parquet``, one ``runs/schedule=<s>/run=<id>.parquet``
per run, and ``loaded/schedule=<s>/symbol=<y>/date=<d>/data.parquet`` per loaded cell.

Idempotent and safe to rerun, or to run after new Delta runs: rows the Delta tables already
hold (by key; loaded: by cell) win over the old ones, so only what is missing is added.
The old files are left in place unless ``--delete-old``; they are deleted only after every
Delta commit succeeded, the manifest first, so a rerun never reads half-deleted data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from ingestion_contract.spec import ObjectStoreStorage

from . import s3
from .delta import DeltaStore
from .store import LATER_KEYS, StoreError


def _safe(s: str) -> str:  # the old format's key escaping
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", s)


def _is_old(key: str) -> bool:
    """An old-format file (Delta's own data files are ``part-*.parquet`` beside ``_delta_log``)."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(("version=", "run=")) or (name == "data.parquet" and "/symbol=" in key)


@dataclasses.dataclass
class Migration:
    found: bool = False
    rows: dict = dataclasses.field(default_factory=dict)  # table -> old rows the Delta tables did not hold
    loaded_cells: int = 0
    deleted: int = 0

    def line(self, schedule: str) -> str:
        if not self.found:
            return f"migrate-store: no old-format data for schedule {schedule}" + (
                f"; deleted {self.deleted} leftover old file(s)" if self.deleted else "")
        added = ", ".join(f"{t} {n}" for t, n in self.rows.items())
        return (f"migrate-store: schedule {schedule}: added {added}, loaded cells {self.loaded_cells} to the Delta tables"
                + (f"; deleted {self.deleted} old file(s)" if self.deleted else "; old files kept (--delete-old removes them)"))


def migrate(cfg: ObjectStoreStorage, schedule: str, credentials: tuple[str, str] | None, delete_old: bool = False) -> Migration:
    client = s3.client(cfg.endpoint, cfg.region, credentials)
    prefix = cfg.prefix if not cfg.prefix or cfg.prefix.endswith("/") else cfg.prefix + "/"
    sched = _safe(schedule)
    where = f"s3://{cfg.bucket}/{prefix}"

    def call(fn, what, missing_ok=False):
        return s3.guarded(fn, lambda code, message: StoreError(f"{where}: {what}: {code} {message}".strip()), missing_ok)

    def listing(p: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket, Prefix=p)
        return [o["Key"] for page in call(lambda: list(pages), f"list {p}") for o in page.get("Contents") or []]

    manifest_key = f"{prefix}_manifests/schedule={sched}.json"
    body = call(lambda: client.get_object(Bucket=cfg.bucket, Key=manifest_key)["Body"].read(), f"read {manifest_key}",
                missing_ok=True)
    result = Migration(found=body is not None)
    if body is not None:
        version = json.loads(body)["version"]
        store = DeltaStore(cfg, schedule, credentials)
        try:
            con = store.local.con

            def download(key: str) -> Path:
                local = store.local.path.parent / _safe(key)
                call(lambda: client.download_file(cfg.bucket, key, str(local)), f"download {key}")
                return local

            def read(key: str, table: str) -> None:
                added = store.insert_local(table, pq.read_table(download(key)), keep_existing=True)
                result.rows[table] = result.rows.get(table, 0) + added

            for table in ("objects", "gaps"):
                result.rows.setdefault(table, 0)
                read(f"{prefix}{table}/schedule={sched}/version={version}.parquet", table)
            result.rows.setdefault("runs", 0)
            for key in listing(f"{prefix}runs/schedule={sched}/run="):
                read(key, "runs")
            for table in ("objects", "gaps", "runs"):
                store.sync(table)

            held: set[tuple[str, str]] = set()
            loaded = store.delta_table("loaded")
            if loaded is not None:
                held = {(r["symbol"], r["date"].isoformat()) for r in loaded.to_pyarrow_table(
                    columns=["symbol", "date"], filters=[("schedule", "=", schedule)]).to_pylist()}
            cells = []
            for key in listing(f"{prefix}loaded/schedule={sched}/"):
                m = re.search(r"/symbol=([^/]+)/date=(\d{4}-\d{2}-\d{2})/data\.parquet$", key)
                if not m or (m.group(1), m.group(2)) in held:
                    continue
                local = download(key)
                if not cells and loaded is None:  # no Delta table yet: the first old file gives the columns
                    con.execute("CREATE TABLE loaded AS SELECT * FROM read_parquet(?) LIMIT 0", [str(local)]).fetchall()
                    for column, default in LATER_KEYS.items():  # a cell's columns the old format did not have
                        con.execute(f"ALTER TABLE loaded ADD COLUMN IF NOT EXISTS {column} VARCHAR DEFAULT '{default}'")
                con.execute("INSERT INTO loaded BY NAME SELECT * FROM read_parquet(?)", [str(local)]).fetchall()
                cells.append((m.group(1), dt.date.fromisoformat(m.group(2)), "daily"))
            store.sync_loaded(cells)
            result.loaded_cells = len(cells)
        finally:
            store.close()
    if delete_old:
        old_keys = [k for table in ("objects", "gaps", "runs", "loaded") for k in listing(f"{prefix}{table}/schedule={sched}/")
                    if _is_old(k)]
        for key in [manifest_key] * (body is not None) + old_keys:
            call(lambda: client.delete_object(Bucket=cfg.bucket, Key=key), f"delete {key}")
            result.deleted += 1
    return result
