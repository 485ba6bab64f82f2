"""Object-store mode against the real S3 server: Delta tables written by delta-rs."""

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

import ingestion_contract as contract

from ..conftest import REPO
from ..samples import delta_table
from .conftest import EXE, PRIVATE, START as TODAY_START, TODAY, context, days_ago, run, run_cli


def object_spec(dataset, servers, prefix):
    spec = dataset.spec(["BTCUSDT", "ETHUSDT"], lookback=3, repair={"maxRepairsPerRun": 100, "load": "csv-zip"})
    spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": prefix, "endpoint": servers.s3.endpoint}}
    return spec


def keys(servers, prefix):
    s3 = servers.s3.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=PRIVATE, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents") or [])


def table(servers, prefix, name, version=None):
    return delta_table(servers, prefix, name, version, bucket=PRIVATE)


def _q(t, sql):
    con = duckdb.connect()
    con.register("t", t.to_pyarrow_table())
    return con.execute(sql).fetchall()


def test_runs_write_delta_tables_and_a_rerun_writes_only_what_changed(dataset, servers, tmp_path):
    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2, 4)])
    prefix = f"{dataset.prefix}-lake/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    first = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert first.outcome == "succeeded", first.error
    assert first.summary["gaps_repaired"] == 6 and first.summary["missing"] == 2
    k = keys(servers, prefix)
    assert {x[len(prefix):].split("/")[0] for x in k} == {"objects", "gaps", "runs", "loaded"}, k
    assert any(x.startswith(f"{prefix}objects/_delta_log/") for x in k)
    assert all("/schedule=lake/" in x for x in k if x.endswith(".parquet")), k  # partitioned by schedule
    objects = table(servers, prefix, "objects")
    assert _q(objects, "SELECT count(*), count(*) FILTER (WHERE present) FROM t") == [(8, 6)]
    assert _q(table(servers, prefix, "gaps"), "SELECT status, count(*) FROM t GROUP BY ALL ORDER BY ALL") == [
        ("open", 2), ("repaired", 6)]
    assert _q(table(servers, prefix, "loaded"), "SELECT count(DISTINCT (symbol, date)) FROM t") == [(6,)]
    assert _q(table(servers, prefix, "runs"), "SELECT outcome FROM t") == [("succeeded",)]
    versions = {n: table(servers, prefix, n).version() for n in ("objects", "gaps", "loaded", "runs")}

    # the second run hydrates from the tables: nothing to repair, and nothing changed but its run
    second = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert second.outcome == "succeeded" and second.summary["gaps_repaired"] == 0 and second.summary["bytes_fetched"] == 0
    after = {n: table(servers, prefix, n).version() for n in ("objects", "gaps", "loaded", "runs")}
    assert {n: after[n] - versions[n] for n in after} == {"objects": 0, "gaps": 0, "loaded": 0, "runs": 2}  # start, end
    # time travel: the version before the second run holds one run
    assert _q(table(servers, prefix, "runs", versions["runs"]), "SELECT count(*) FROM t") == [(1,)]
    assert _q(table(servers, prefix, "runs"), "SELECT count(*) FROM t") == [(2,)]

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


def start_writer(tmp_path, name, spec, creds, **failpoint):
    """`ingestion-job run --spec` in its own process, with failpoints (``INGESTION_FAILPOINTS``,
    ``INGESTION_FAILPOINT_RESUME``) from ``failpoint``; stderr goes to a file."""
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": "lake", "namespace": "data"}, "spec": spec}))
    env = {**os.environ, contract.STORE_KEY_ID_ENV: creds[0], contract.STORE_SECRET_ENV: creds[1],
           **{f"INGESTION_{k.upper()}": v for k, v in failpoint.items()}}
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen([EXE, "run", "--spec", str(f), "--as-of", TODAY.isoformat()],
                            stderr=log.open("w"), stdout=subprocess.DEVNULL, env=env)
    proc.log = log
    return proc


def wait_for_line(proc, text, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.log.read_text():
            return
        assert proc.poll() is None, proc.log.read_text()[-2000:]
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} after {timeout}s: {proc.log.read_text()[-2000:]}")


def with_symbols(spec, *symbols):
    return {**spec, "target": {**spec["target"], "symbols": list(symbols)}}


CONFLICT = "a concurrent writer committed first; redoing the commit on its version"


def test_a_writer_that_lost_the_race_redoes_its_commit_instead_of_overwriting(dataset, servers, tmp_path):
    """Writer B reads each table's version, then pauses before its commit; writer A commits
    to the same tables meanwhile. B's commit then fails on the server's conditional PUT
    (the log entry for that version exists), and B redoes it on A's version: both survive."""
    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT") for d in days_ago(1, 2)])
    prefix = f"{dataset.prefix}-race/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    assert run(context(with_symbols(spec, "BTCUSDT"), schedule="lake", store_credentials=creds), None).outcome == "succeeded"
    resume = tmp_path / "go"
    b = start_writer(tmp_path, "writer-b", with_symbols(spec, "ETHUSDT"), creds, failpoints="delta.merge",
                     failpoint_resume=str(resume))
    try:
        wait_for_line(b, "event=failpoint name=delta.merge")
        a = run(context(with_symbols(spec, "SOLUSDT"), schedule="lake", store_credentials=creds), None)
        assert a.outcome == "succeeded", a.error
        resume.touch()
        assert b.wait(60) == 0, b.log.read_text()[-2000:]
    finally:
        b.kill()
    assert CONFLICT in b.log.read_text()
    objects = table(servers, prefix, "objects")
    assert _q(objects, "SELECT symbol, count(*) FILTER (WHERE present) FROM t GROUP BY ALL ORDER BY ALL") == [
        ("BTCUSDT", 2), ("ETHUSDT", 2), ("SOLUSDT", 2)]
    assert _q(table(servers, prefix, "runs"), "SELECT outcome, count(*) FROM t GROUP BY ALL") == [("succeeded", 3)]


def _race_at(tmp_path, spec, creds, name, failpoint, *symbol_groups):
    """One writer process per group of symbols, all paused at ``failpoint`` (each has read the
    table's version there) and let go together. Returns their logs."""
    resume = tmp_path / f"go-{name}"
    procs = [start_writer(tmp_path, f"{name}-{i}", with_symbols(spec, *g), creds, failpoints=failpoint,
                          failpoint_resume=str(resume)) for i, g in enumerate(symbol_groups)]
    try:
        for p in procs:
            wait_for_line(p, f"event=failpoint name={failpoint}")
        resume.touch()
        codes = [p.wait(120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    logs = [p.log.read_text() for p in procs]
    assert codes == [0] * len(procs), [log[-1500:] for log in logs]
    return logs


def test_four_writers_committing_at_once_lose_nothing(dataset, servers, tmp_path):
    """Four processes (a backfill's shards: one schedule, a group of symbols each) are lined up
    at their first commit and let go together; every commit lands, none overwrites another."""
    groups = [("AAAUSDT", "BBBUSDT"), ("CCCUSDT", "DDDUSDT"), ("EEEUSDT", "FFFUSDT"), ("GGGUSDT", "HHHUSDT")]
    dataset.upload([(s, d) for g in groups for s in g for d in days_ago(1, 2, 4)])
    prefix = f"{dataset.prefix}-four/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    assert run(context(with_symbols(spec, "AAAUSDT"), schedule="lake", store_credentials=creds), None).outcome == "succeeded"
    logs = _race_at(tmp_path, spec, creds, "shard", "delta.merge", *groups)
    assert sum(CONFLICT in log for log in logs) >= 1  # they did race, and the losers redid their commits
    assert not [log for log in logs if "terminate called" in log]  # delta-rs's exit-time abort (issue 13) is not seen
    objects = table(servers, prefix, "objects")
    assert _q(objects, "SELECT count(*), count(*) FILTER (WHERE present), count(DISTINCT symbol) FROM t") == [(8 * 4, 8 * 3, 8)]
    # the third day of each window was never published: its gap stays open
    assert _q(table(servers, prefix, "gaps"), "SELECT status, count(*) FROM t GROUP BY ALL ORDER BY ALL") == [
        ("open", 8), ("repaired", 8 * 3)]
    assert _q(table(servers, prefix, "loaded"), "SELECT count(DISTINCT (symbol, date)) FROM t") == [(8 * 3,)]
    assert _q(table(servers, prefix, "runs"), "SELECT outcome, count(*) FROM t GROUP BY ALL") == [("succeeded", 5)]


def test_sigkill_between_two_table_commits_leaves_each_table_at_a_version_and_the_next_run_finishes(dataset, servers, tmp_path):
    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2, 4)])  # day 3 never published
    prefix = f"{dataset.prefix}-kill/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    proc = start_writer(tmp_path, "killed", spec, creds, failpoints="delta.commit")
    try:
        wait_for_line(proc, "event=failpoint name=delta.commit")  # objects committed; gaps and runs not yet
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert _q(table(servers, prefix, "objects"), "SELECT count(*) FILTER (WHERE present) FROM t") == [(6,)]
    assert _q(table(servers, prefix, "loaded"), "SELECT count(DISTINCT (symbol, date)) FROM t") == [(6,)]
    # the run's first commit created every table, empty; the gaps' own commit never happened
    assert keys(servers, f"{prefix}gaps/") == [f"{prefix}gaps/_delta_log/00000000000000000000.json"]
    assert _q(table(servers, prefix, "gaps"), "SELECT count(*) FROM t") == [(0,)]
    assert _q(table(servers, prefix, "runs"), "SELECT outcome FROM t") == [("running",)]
    # The next run finds the gaps still open, repairs them again (the loads are replaced, not
    # doubled), and commits every table.
    nxt = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert nxt.outcome == "succeeded" and nxt.summary["gaps_repaired"] == 6, nxt.error
    assert _q(table(servers, prefix, "gaps"), "SELECT status, count(*) FROM t GROUP BY ALL ORDER BY ALL") == [
        ("open", 2), ("repaired", 6)]
    loaded = table(servers, prefix, "loaded")
    assert _q(loaded, "SELECT count(*) = count(DISTINCT (symbol, date, open_time)) FROM t") == [(True,)]


def test_the_readmes_reader_block_reads_the_tables_a_run_wrote(dataset, servers):
    """The storage page (docs/user-guide/storage.md, once in the README) shows how to read the
    tables from DuckDB, Polars and an older version: that block, as written there, against
    tables a real run wrote."""
    import re

    readme = (REPO / "docs" / "user-guide" / "storage.md").read_text()
    block = re.search(r"<!-- delta-readers:begin -->\n```python\n(.*?)```\n<!-- delta-readers:end -->", readme, re.S).group(1)
    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2, 4)])
    prefix = f"{dataset.prefix}-readers"
    spec = object_spec(dataset, servers, prefix + "/")
    creds = (servers.s3.access_key, servers.s3.secret_key)
    assert run(context(spec, schedule="lake", store_credentials=creds), None).outcome == "succeeded"
    scope = {"endpoint": servers.s3.endpoint, "key": creds[0], "secret": creds[1], "bucket": PRIVATE, "prefix": prefix}
    exec(compile(block, "docs/user-guide/storage.md (delta-readers)", "exec"), scope)
    assert sorted(scope["per_symbol"]) == [("BTCUSDT", 3), ("ETHUSDT", 3)]
    assert sorted(scope["open_gaps"]["date"].to_list()) == sorted(days_ago(3, 3))  # never published
    assert scope["before"].num_rows == 1 and scope["before"].column("outcome").to_pylist() == ["running"]  # before its end


def test_migrate_store_moves_the_old_format_into_delta_once(dataset, servers, tmp_path):
    """Data in the format of releases before Delta (a manifest naming Parquet snapshots) is
    moved by `ingestion-job migrate-store`; a rerun adds nothing; the next run uses it; and
    `--delete-old` removes the old files only."""
    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2)])
    prefix = f"{dataset.prefix}-old/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    # The old layout, written from a real run's DuckDB store as the old release wrote it.
    db = tmp_path / "old.duckdb"
    assert run(context(spec, schedule="lake"), db).outcome == "succeeded"
    s3c = servers.s3.client()
    con = duckdb.connect(str(db))

    def put(sql, key, *params):
        local = tmp_path / key.replace("/", "_")
        con.execute(f"COPY ({sql}) TO '{local}' (FORMAT parquet)", list(params))
        s3c.upload_file(str(local), PRIVATE, prefix + key)

    put("SELECT * FROM objects", "objects/schedule=lake/version=20261101T020000000000Z.parquet")
    put("SELECT * FROM gaps", "gaps/schedule=lake/version=20261101T020000000000Z.parquet")
    (run_id,), = con.execute("SELECT run_id FROM runs").fetchall()
    put("SELECT * FROM runs", "runs/schedule=lake/run=old-run.parquet")
    cells = con.execute("SELECT DISTINCT symbol, date FROM loaded ORDER BY ALL").fetchall()
    for symbol, date in cells:
        put("SELECT * FROM loaded WHERE symbol = ? AND date = ?", f"loaded/schedule=lake/symbol={symbol}/date={date}/data.parquet",
            symbol, date)
    s3c.put_object(Bucket=PRIVATE, Key=f"{prefix}_manifests/schedule=lake.json",
                   Body=json.dumps({"version": "20261101T020000000000Z"}).encode())
    want = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("objects", "gaps", "runs", "loaded")}
    con.close()
    assert len(cells) == 4 and want["objects"] == 4  # each symbol expected from its first object

    f = tmp_path / "lake.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": "lake"}, "spec": spec}))
    env = {**os.environ, contract.STORE_KEY_ID_ENV: creds[0], contract.STORE_SECRET_ENV: creds[1]}

    def migrate(*args):
        out = subprocess.run([EXE, "migrate-store", "--spec", str(f), *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert migrate() == (f"migrate-store: schedule lake: added objects {want['objects']}, gaps {want['gaps']}, runs 1, "
                         "loaded cells 4 to the Delta tables; old files kept (--delete-old removes them)")
    got = {t: _q(table(servers, prefix, t), "SELECT count(*) FROM t")[0][0] for t in want}
    assert got == want
    assert _q(table(servers, prefix, "runs"), "SELECT run_id FROM t") == [(run_id,)]
    versions = {t: table(servers, prefix, t).version() for t in want}
    assert migrate().startswith("migrate-store: schedule lake: added objects 0, gaps 0, runs 0, loaded cells 0")
    assert {t: table(servers, prefix, t).version() for t in want} == versions  # the rerun committed nothing

    nxt = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert nxt.outcome == "succeeded" and nxt.summary["gaps_repaired"] == 0 and nxt.summary["bytes_fetched"] == 0

    assert migrate("--delete-old").endswith(f"deleted {1 + 2 + 1 + 4} old file(s)")
    assert not [k for k in keys(servers, prefix) if "/version=" in k or "/run=" in k or "/symbol=" in k or "_manifests" in k]
    assert _q(table(servers, prefix, "objects"), "SELECT count(*) FROM t") == [(want["objects"],)]
    assert migrate() == "migrate-store: no old-format data for schedule lake"


def test_two_writers_creating_the_tables_at_once_both_land(dataset, servers, tmp_path):
    """Two writers racing to create the same tables (a run's first commit creates every table
    at once): the loser's create fails (CommitFailedError) and it opens the winner's table.
    Tables are created empty, and every row goes in by its own commit: nothing is doubled."""
    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2)])
    prefix = f"{dataset.prefix}-create/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    resume = tmp_path / "go"
    procs = [start_writer(tmp_path, f"creator-{s}", with_symbols(spec, s), creds, failpoints="delta.create",
                          failpoint_resume=str(resume)) for s in ("BTCUSDT", "ETHUSDT")]
    try:
        for p in procs:
            wait_for_line(p, "event=failpoint name=delta.create")
        assert keys(servers, prefix) == []  # both are about to create the tables
        resume.touch()
        codes = [p.wait(120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes == [0, 0], [p.log.read_text()[-1500:] for p in procs]
    # both were about to create the tables (their first commit): `runs` was created empty, and
    # both rows were committed into it, once each
    assert table(servers, prefix, "runs", 0).to_pyarrow_table().num_rows == 0
    assert _q(table(servers, prefix, "objects"), "SELECT symbol, count(*) FILTER (WHERE present) FROM t GROUP BY ALL ORDER BY ALL") == [
        ("BTCUSDT", 2), ("ETHUSDT", 2)]
    assert _q(table(servers, prefix, "runs"), "SELECT outcome, count(*) FROM t GROUP BY ALL") == [("succeeded", 2)]


def _runs_with_housekeeping(spec, servers, caplog, n):
    """``n`` runs; for each, its event=maintenance lines."""
    creds = (servers.s3.access_key, servers.s3.secret_key)
    seen = []
    for _ in range(n):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ingestion_job"):
            res = run(context(spec, schedule="lake", store_credentials=creds), None)
        assert res.outcome == "succeeded" and not res.warnings, (res.error, res.warnings)
        seen.append([r.getMessage() for r in caplog.records if r.getMessage().startswith("event=maintenance")])
    return seen


def _data_files(servers, prefix, name):
    return {k for k in keys(servers, f"{prefix}{name}/schedule=lake/") if k.endswith(".parquet")}


def test_housekeeping_compacts_a_partition_when_it_holds_enough_files_not_on_every_run(dataset, servers, caplog):
    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2)])
    prefix = f"{dataset.prefix}-house/"
    spec = object_spec(dataset, servers, prefix)
    spec["storage"]["objectStore"]["maintenance"] = {"compactAfterFiles": 16, "vacuumRetentionHours": 0,
                                                     "checkpointInterval": 3}
    seen = _runs_with_housekeeping(spec, servers, caplog, 16)
    # Each run adds one file to its partition of `runs` (its record; its end rewrites the file its
    # start wrote); nothing else changes. The 16th run finds 16 files and compacts them into
    # one, then vacuums 32: the 16 compacted and the 16 that the runs' ends replaced.
    assert [bool(s) for s in seen] == [False] * 15 + [True], seen
    assert len(seen[15]) == 1 and seen[15][0].startswith("event=maintenance table=runs files_before=16 files_after=1 vacuumed=32 ")
    runs = table(servers, prefix, "runs")
    # vacuumRetentionHours 0: what the table no longer uses is gone from the bucket, not only from the log
    assert _data_files(servers, prefix, "runs") == {u.split(f"{PRIVATE}/", 1)[1] for u in runs.file_uris()}
    assert len(runs.file_uris()) == 1
    # the next runs have too few files to compact again
    assert _runs_with_housekeeping(spec, servers, caplog, 2) == [[], []]
    runs = table(servers, prefix, "runs")
    assert _q(runs, "SELECT outcome, count(*) FROM t GROUP BY ALL") == [("succeeded", 18)]
    assert len(runs.file_uris()) == 3
    assert runs.metadata().configuration["delta.checkpointInterval"] == "3"
    assert any(k.endswith(".checkpoint.parquet") for k in keys(servers, f"{prefix}runs/_delta_log/"))


def test_housekeeping_keeps_what_time_travel_needs_within_the_retention(dataset, servers, caplog):
    dataset.upload([(s, d) for s in ("BTCUSDT",) for d in days_ago(1)])
    prefix = f"{dataset.prefix}-keep/"
    spec = object_spec(dataset, servers, prefix)
    spec["storage"]["objectStore"]["maintenance"] = {"compactAfterFiles": 16}  # vacuumRetentionHours: 168
    seen = _runs_with_housekeeping(spec, servers, caplog, 16)
    assert seen[:15] == [[]] * 15 and len(seen[15]) == 1 and " vacuumed=0 " in seen[15][0], seen
    runs = table(servers, prefix, "runs")
    (optimize,) = [h["version"] for h in runs.history() if h["operation"] == "OPTIMIZE"]
    before = optimize - 1
    assert _q(table(servers, prefix, "runs", before), "SELECT count(*) FROM t") == [(16,)]  # still readable
    assert len(_data_files(servers, prefix, "runs")) > len(runs.file_uris())  # the old files are kept


def test_a_failed_housekeeping_step_is_a_warning_not_a_failed_run(dataset, servers, monkeypatch):
    """The run's data is committed before housekeeping; the next run tries it again."""
    from ingestion_job.delta import DeltaStore

    def broken(self):  # as DeltaStore.maintain reports a table whose housekeeping failed
        return [{"table": "runs", "files": 16, "compacted": False, "vacuumed": 0,
                 "error": f"{self.where()}: maintenance of table runs: throttled", "duration_ms": 5}]

    monkeypatch.setattr(DeltaStore, "maintain", broken)
    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    prefix = f"{dataset.prefix}-hkfail/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    res = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert res.outcome == "succeeded" and res.warnings == [f"maintenance: s3://{PRIVATE}/{prefix}: maintenance of table runs: throttled"]
    assert _q(table(servers, prefix, "runs"), "SELECT outcome, warnings FROM t") == [("succeeded", res.warnings[0])]


def test_writers_of_disjoint_symbol_parts_do_not_contend_and_of_one_part_redo(dataset, servers, tmp_path):
    """objects, gaps and loaded are partitioned by schedule and part (a bucket of the symbol),
    and each commit names its parts: two writers that read the same version of `objects` and
    commit together both land without a redo when their symbols are in different parts, and
    one redoes its commit when they share a part."""
    from ingestion_job.delta import part_of

    assert part_of("BTCUSDT") != part_of("SOLUSDT") and part_of("ETHUSDT") == part_of("XRPUSDT")
    dataset.upload([(s, d) for s in ("BTCUSDT", "SOLUSDT", "ETHUSDT", "XRPUSDT") for d in days_ago(1, 2)])
    creds = (servers.s3.access_key, servers.s3.secret_key)
    results = {}
    for case, groups in (("disjoint", (("BTCUSDT",), ("SOLUSDT",))), ("shared", (("ETHUSDT",), ("XRPUSDT",)))):
        prefix = f"{dataset.prefix}-{case}/"
        spec = object_spec(dataset, servers, prefix)
        assert run(context(with_symbols(spec, "BNBUSDT"), schedule="lake", store_credentials=creds), None).outcome != "failed"
        logs = _race_at(tmp_path, spec, creds, case, "delta.merge:objects", *groups)
        results[case] = sum(f"{prefix}objects: {CONFLICT}" in log for log in logs)
        objects = table(servers, prefix, "objects")
        assert _q(objects, "SELECT symbol, count(*) FILTER (WHERE present) FROM t WHERE symbol <> 'BNBUSDT' "
                           "GROUP BY ALL ORDER BY ALL") == [(g[0], 2) for g in sorted(groups)]
        assert {x.split("/part=")[1].split("/")[0] for x in keys(servers, f"{prefix}objects/schedule=lake/")} == {
            str(part_of(s)) for s in ("BNBUSDT", *(g[0] for g in groups))}
    assert results == {"disjoint": 0, "shared": 1}


EXIT_PROBE = """
import atexit, json, sys
from deltalake import DeltaTable
from ingestion_job.cli import entry
held = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2])).to_pyarrow_table()  # still held at exit
atexit.register(lambda: print("interpreter teardown ran", file=sys.stderr))
sys.argv = ["ingestion-job", *sys.argv[3:]]
entry()
"""


def test_the_job_command_never_ends_in_the_exit_time_abort(dataset, servers, tmp_path):
    """A Python process that has read a Delta table and exits normally aborts now and then in
    Arrow's thread pools' teardown: `terminate called without an active exception`, SIGABRT
    (5 of 20 runs of that script here, with the table held or dropped and collected). The
    job's command skips the teardown once its work is flushed: the same process, ending
    through it, exits 0 every time."""
    from ingestion_contract.spec import ObjectStoreStorage
    from ingestion_job.delta import storage_options

    dataset.upload([("BTCUSDT", d) for d in days_ago(1)])
    prefix = f"{dataset.prefix}-exit/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    assert run(context(spec, schedule="lake", store_credentials=creds), None).outcome == "succeeded"
    f = tmp_path / "lake.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": "lake", "namespace": "data"}, "spec": spec}))
    opts = storage_options(ObjectStoreStorage(bucket=PRIVATE, prefix=prefix, endpoint=servers.s3.endpoint), creds)
    env = {**os.environ, contract.STORE_KEY_ID_ENV: creds[0], contract.STORE_SECRET_ENV: creds[1]}
    python = str(Path(EXE).parent / "python")
    ends = []
    for _ in range(20):
        p = subprocess.run([python, "-c", EXIT_PROBE, f"s3://{PRIVATE}/{prefix}objects", json.dumps(opts), "--help"],
                           capture_output=True, text=True, env=env, timeout=60)
        ends.append((p.returncode, "terminate called" in p.stderr or "teardown ran" in p.stderr,
                     p.stdout.startswith("usage: ingestion-job")))
    assert ends == [(0, False, True)] * 20, ends
    # the same holds when the command returns normally (not through SystemExit): no teardown at all
    p = subprocess.run([python, "-c", EXIT_PROBE, f"s3://{PRIVATE}/{prefix}objects", json.dumps(opts),
                        "report", "--spec", str(f), "--format", "json"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["availability"], p.stderr[-2000:]
    assert "interpreter teardown ran" not in p.stderr


def test_tables_created_before_parts_keep_working_unparted(dataset, servers, tmp_path):
    """A table of the first Delta layout (partitioned by schedule only, no `part` column) is
    merged into as it is: no `part` column appears, no row is doubled."""
    from deltalake import write_deltalake
    from ingestion_contract.spec import ObjectStoreStorage
    from ingestion_job.delta import storage_options
    from ingestion_job.store import open_store

    d1, d2 = days_ago(1, 2)
    dataset.upload([("BTCUSDT", d) for d in (d1, d2)])
    prefix = f"{dataset.prefix}-unparted/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    store = open_store(tmp_path / "schema.duckdb")
    schema = store.con.sql("SELECT * FROM objects").to_arrow_table().schema
    store.close()
    key = dataset.template.format(symbol="BTCUSDT", date=d1.isoformat())
    old = pa.Table.from_pylist([{"schedule": "lake", "symbol": "BTCUSDT", "date": d1, "key": key, "present": True,
                                 "size": 1, "etag": "old", "last_modified": None, "first_seen_at": None}], schema)
    opts = storage_options(ObjectStoreStorage(bucket=PRIVATE, prefix=prefix, endpoint=servers.s3.endpoint), creds)
    write_deltalake(f"s3://{PRIVATE}/{prefix}objects", old, partition_by=["schedule"], storage_options=opts)
    res = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert res.outcome == "succeeded", res.error
    objects = table(servers, prefix, "objects")
    assert objects.metadata().partition_columns == ["schedule"] and "part" not in objects.schema().to_arrow().names
    assert _q(objects, "SELECT date, count(*) FROM t WHERE present GROUP BY ALL ORDER BY ALL") == [(d2, 1), (d1, 1)]
    assert "part" in table(servers, prefix, "gaps").metadata().partition_columns  # a new table gets parts



def test_tables_written_before_dimensions_gain_the_variant_without_doubling_a_row(dataset, servers, tmp_path):
    """Tables of a release before dimensions have no ``variant`` column: the job adds it, and
    merges into the rows they hold (their variant is '') instead of beside them; a load
    replaces its cell's rows written before."""
    from deltalake import write_deltalake
    from ingestion_contract.spec import ObjectStoreStorage
    from ingestion_job.delta import storage_options, with_part
    from ingestion_job.store import open_store

    d1, d2 = days_ago(1, 2)
    dataset.upload([("BTCUSDT", d) for d in (d1, d2)])
    prefix = f"{dataset.prefix}-predim/"
    spec = object_spec(dataset, servers, prefix)
    spec["target"]["symbols"] = ["BTCUSDT"]
    creds = (servers.s3.access_key, servers.s3.secret_key)
    opts = storage_options(ObjectStoreStorage(bucket=PRIVATE, prefix=prefix, endpoint=servers.s3.endpoint), creds)
    store = open_store(tmp_path / "schema.duckdb")
    key = dataset.template.format(symbol="BTCUSDT", date=d1.isoformat())
    rows = {"objects": {"schedule": "lake", "symbol": "BTCUSDT", "date": d1, "key": key, "present": True, "size": 1,
                        "etag": "old", "last_modified": None, "first_seen_at": None},
            "gaps": {"schedule": "lake", "symbol": "BTCUSDT", "date": d1, "key": key, "status": "open",
                     "reason": "fetch-failed", "detected_at": TODAY_START, "attempts": 1, "changes": 0}}
    for name, row in rows.items():
        schema = store.con.sql(f"SELECT * EXCLUDE (variant) FROM {name}").to_arrow_table().schema
        write_deltalake(f"s3://{PRIVATE}/{prefix}{name}", with_part(pa.Table.from_pylist([row], schema)),
                        partition_by=["schedule", "part"], storage_options=opts)
    store.close()
    # d1's rows as that release loaded them: its kline columns (one row, open_time 1), no variant
    import pyarrow.parquet as pq
    from ingestion_dev import sampledata
    from ingestion_job.staging import stage

    staged, _ = stage(sampledata.kline_zip("BTCUSDT", d1), key, "csv-zip", tmp_path / "old", d1)
    kl = pq.read_table(staged).slice(0, 1)
    kl = kl.set_column(kl.column_names.index("open_time"), "open_time", pa.array([1], kl.schema.field("open_time").type))
    old_load = pa.table({"schedule": ["lake"], "symbol": ["BTCUSDT"], "date": pa.array([d1], pa.date32()),
                         **{c: kl[c] for c in kl.column_names}})
    write_deltalake(f"s3://{PRIVATE}/{prefix}loaded", with_part(old_load), partition_by=["schedule", "part"],
                    storage_options=opts)
    res = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert res.outcome == "succeeded", res.error
    assert res.summary["gaps_repaired"] == 2
    for name in ("objects", "gaps"):
        assert _q(table(servers, prefix, name), "SELECT coalesce(variant, '<none>'), date, count(*) FROM t GROUP BY ALL "
                                                "ORDER BY ALL") == [("", d2, 1), ("", d1, 1)], name
    loaded = _q(table(servers, prefix, "loaded"), "SELECT date, coalesce(variant, '<none>'), count(*), min(open_time) > 1 FROM t "
                                                   "GROUP BY ALL ORDER BY ALL")
    assert loaded == [(d2, "", 5, True), (d1, "", 5, True)]  # the old row of d1 replaced, not kept beside

def test_tables_say_what_they_hold_and_a_changed_table_fails_the_run_in_one_line(dataset, servers):
    """Issue 24, point 7: the columns the job never leaves empty are NOT NULL in the Delta
    schemas, so another engine's writer that would leave one empty is refused at its own commit
    (delta-rs here, as Spark would be) and later runs go on; a table another writer changed (a
    column's type) fails the run with one line naming the table, the column and the problem,
    and the failed run is still recorded."""
    from deltalake import write_deltalake

    dataset.upload([(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in days_ago(1, 2, 4)])
    prefix = f"{dataset.prefix}-nn/"
    spec = object_spec(dataset, servers, prefix)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    assert run(context(spec, schedule="lake", store_credentials=creds), None).outcome == "succeeded"
    nullable = {t: {f.name: f.nullable for f in table(servers, prefix, t).schema().fields} for t in ("objects", "gaps", "runs")}
    assert {c for c, n in nullable["gaps"].items() if not n} == {"schedule", "symbol", "variant", "period", "date", "key",
                                                                  "status", "detected_at", "attempts", "part"}
    assert not nullable["objects"]["present"] and nullable["objects"]["size"] and not nullable["runs"]["outcome"]
    assert not {f.name: f.nullable for f in table(servers, prefix, "loaded").schema().fields}["symbol"]

    gaps = table(servers, prefix, "gaps")
    row = gaps.to_pyarrow_table().slice(0, 1)
    no_status = row.set_column(row.schema.get_field_index("status"), "status", pa.array([None], pa.string()))
    version = gaps.version()
    try:
        write_deltalake(gaps, no_status, mode="append")
        raise AssertionError("a row without status was committed")
    except Exception as e:  # refused by the writer itself
        assert "failed validation" in str(e) or "nullable" in str(e).lower(), e
    assert table(servers, prefix, "gaps").version() == version
    assert run(context(spec, schedule="lake", store_credentials=creds), None).outcome == "succeeded"

    # another writer rewrites the table with attempts as a string: the next run fails, in one line
    changed = gaps.to_pyarrow_table()
    changed = changed.set_column(changed.schema.get_field_index("attempts"), "attempts",
                                 changed["attempts"].cast(pa.string()))
    write_deltalake(table(servers, prefix, "gaps"), changed, mode="overwrite", schema_mode="overwrite")
    res = run(context(spec, schedule="lake", store_credentials=creds), None)
    assert res.outcome == "failed" and "\n" not in res.error, res.error
    assert res.error.endswith("table gaps: column attempts is string, the job writes integer (changed by another writer?)"), res.error
    runs = table(servers, prefix, "runs").to_pyarrow_table().to_pylist()
    (last,) = [r for r in runs if r["run_id"] == res.run_id]
    assert last["outcome"] == "failed" and "column attempts is string" in last["error"]
