"""The job's test data: one key prefix per test in the real S3 server of the session."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import urllib.request
import uuid

import pytest
import yaml

from ingestion_dev import sampledata
import ingestion_contract as contract

from ..conftest import PRIVATE, PUBLIC, Servers  # noqa: F401  (the servers fixture is session-wide)
from ..samples import store_rows

def _pinned_start() -> dt.datetime:
    """The instant the job tests' clock starts at: INGESTION_TEST_NOW (ISO 8601, e.g.
    ``2026-11-24T23:59:59.9Z``; tests/dev/test_midnight.py sets yesterday just before midnight)
    or the wall clock when the session imports this module."""
    pinned = os.environ.get("INGESTION_TEST_NOW")
    if pinned:
        return dt.datetime.fromisoformat(pinned.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    return dt.datetime.now(dt.timezone.utc)


START = _pinned_start()
TODAY = START.date()
_ticks = itertools.count(1)


def now() -> dt.datetime:
    """The tests' clock, handed to every run through the product's own ``now`` input: it stays
    on TODAY however long the session takes (each call is one microsecond later, so runs keep
    their order), so no date a test derives from TODAY goes stale across midnight."""
    return START + dt.timedelta(microseconds=next(_ticks))


def run(ctx, store_path, **kw):
    """``ingestion_job.run.run`` on the tests' clock (unless the test passes its own ``now``)."""
    from ingestion_job.run import run as run_job

    kw.setdefault("now", now())
    return run_job(ctx, store_path, **kw)


class Dataset:
    """One test's slice of the public bucket: a unique key prefix, its own symbols."""

    def __init__(self, servers: Servers, prefix: str):
        self.servers = servers
        self.prefix = prefix
        self.template = f"{prefix}/{sampledata.KEY_TEMPLATE}"

    def upload(self, cells, bucket=PUBLIC, checksum: bool = True, checksum_body: bytes | None = None):
        """Kline zips with their sha256 sidecars (none with ``checksum=False``; ``checksum_body``:
        a sidecar of that content instead, e.g. naming another sha256)."""
        cells = list(cells)
        s3 = self.servers.s3.client()
        sampledata.upload(s3, bucket, cells, template=self.template, checksums=checksum and checksum_body is None)
        if checksum_body is not None:
            for sym, d in cells:
                key = self.template.format(symbol=sym, date=d.isoformat())
                s3.put_object(Bucket=bucket, Key=key + ".CHECKSUM", Body=checksum_body)

    def put(self, symbol, date, body: bytes, template: str | None = None) -> str:
        """One object of any content and its sha256 sidecar; returns the key."""
        key = (template or self.template).format(symbol=symbol, date=date.isoformat())
        s3 = self.servers.s3.client()
        s3.put_object(Bucket=PUBLIC, Key=key, Body=body)
        s3.put_object(Bucket=PUBLIC, Key=key + ".CHECKSUM", Body=sampledata.checksum(body, key))
        return key

    def spec(self, symbols, lookback=7, endpoint=None, **extra):
        s = sampledata.spec(endpoint or self.servers.s3.endpoint, PUBLIC, symbols, lookback, **extra)
        s["target"]["keyTemplate"] = self.template
        s["metrics"] = {"pushgatewayUrl": self.servers.pushgateway}
        return s


@pytest.fixture
def dataset(servers):
    return Dataset(servers, f"t{uuid.uuid4().hex[:8]}")


def days_ago(*ns):
    return [TODAY - dt.timedelta(days=n) for n in ns]


def context(spec: dict, schedule: str = "demo", namespace: str = "data", job_name: str | None = None,
            credentials: tuple[str, str] | None = None, store_credentials: tuple[str, str] | None = None,
            backfill: tuple[str, contract.BackfillSpec, int] | None = None) -> contract.RunContext:
    """Through the same env contract a pod uses; ``backfill``: (name, spec, completion index) of a unit's pod."""
    env = {contract.SPEC_ENV: json.dumps(spec), contract.SCHEDULE_ENV: schedule, contract.NAMESPACE_ENV: namespace}
    if backfill:
        name, bf, index = backfill
        env[contract.BACKFILL_ENV], env[contract.COMPLETION_INDEX_ENV] = contract.encode_unit_env(name, bf), str(index)
    if job_name:
        env[contract.JOB_NAME_ENV] = job_name
    if credentials:
        env[contract.SOURCE_KEY_ID_ENV], env[contract.SOURCE_SECRET_ENV] = credentials
    if store_credentials:
        env[contract.STORE_KEY_ID_ENV], env[contract.STORE_SECRET_ENV] = store_credentials
    return contract.read_environment(env)


rows = store_rows  # the job tests' name for the one store reader


def scrape(url):
    """The ``ingestion_*`` lines the Pushgateway exposes."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return [line for line in text.splitlines() if line.startswith("ingestion_")]


def pushed(url: str, schedule: str) -> dict[str, float]:
    """{metric{labels}: value} of one schedule's pushed group (labels without job/instance/namespace/schedule)."""
    out = {}
    for line in scrape(url):
        if f'schedule="{schedule}"' not in line:
            continue
        name, value = line.rsplit(" ", 1)
        metric, _, labels = name.partition("{")
        keep = [lv for lv in labels.rstrip("}").split(",") if lv and lv.split("=")[0] not in ("instance", "job", "namespace", "schedule")]
        out[metric + ("{" + ",".join(keep) + "}" if keep else "")] = float(value)
    return out


def pushed_causes(metrics: dict[str, float]) -> dict[str, int]:
    """``ingestion_gaps_open{cause}`` of a pushed group (see :func:`pushed`), every cause."""
    return {k.split('cause="')[1].rstrip('"}'): int(v) for k, v in metrics.items() if k.startswith("ingestion_gaps_open{")}


@contextlib.contextmanager
def holding(db, seconds: float = 60):
    """Another process holds ``db`` open for writing (DuckDB's file lock) for ``seconds`` or
    until the block ends; yields the process (its pid names the holder)."""
    code = f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('ok', flush=True); time.sleep({seconds})"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        yield holder
    finally:
        holder.kill()
        holder.wait()


EXE = os.path.join(os.path.dirname(sys.executable), "ingestion-job")


def run_cli(tmp_path, name: str, spec: dict, *args: str, command: str = "run", **kw) -> subprocess.CompletedProcess:
    """`ingestion-job COMMAND --spec FILE ARGS` with the spec written as the IngestionSchedule ``name``.
    A ``run`` gets ``--as-of TODAY`` (the product's own date input) unless it names its dates."""
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": name}, "spec": spec}))
    if command == "run" and not {"--as-of", "--dates"} & set(args):
        args = (*args, "--as-of", TODAY.isoformat())
    return subprocess.run([EXE, command, "--spec", str(f), *args], capture_output=True, text=True, **kw)


def table_reader(servers: Servers, db, lake_prefix: str):
    """``q(table, sql)``: the rows of ``sql`` over ``t``, one of the store's tables, read from
    the DuckDB file ``db``, or (``db`` None) from the Delta tables under ``lake_prefix`` of the
    private bucket: a test of both modes asks one question of either."""
    from ..samples import delta_table

    def q(table: str, sql: str) -> list[tuple]:
        if db is not None:
            return rows(db, sql.replace("FROM t", f"FROM {table}"))
        import duckdb

        con = duckdb.connect()
        con.register("t", delta_table(servers, lake_prefix, table, bucket=PRIVATE).to_pyarrow_table())
        return con.execute(sql).fetchall()

    return q


def kill_at_failpoint(argv: list[str], name: str) -> None:
    """Run ``argv`` (an ``ingestion-job`` command) with the failpoint ``name`` set, and SIGKILL it
    once it pauses there; fails if it never gets there."""
    import signal

    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env={**os.environ, "INGESTION_FAILPOINTS": name})
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if f"event=failpoint name={name}" in line:
                break
        assert any(f"event=failpoint name={name}" in x for x in seen), "".join(seen)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
