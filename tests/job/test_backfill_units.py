"""A backfill's units as the job runs them: each pod's shard of symbols over its chunk of
dates, committed on its own to real Delta tables on SeaweedFS; a unit run again repairs
nothing it committed; the schedule's own run counts are left alone."""

from __future__ import annotations

import datetime as dt
import pytest

import ingestion_contract as contract
from ingestion_contract import parse_backfill

from ..samples import delta_table
from .conftest import PRIVATE, context, run, scrape

SHARD_1, SHARD_0 = ("BTCUSDT", "ADAUSDT"), ("ETHUSDT", "SOLUSDT")  # part % 2: 3, 5 and 4, 0
FIRST = dt.date(2026, 3, 1)


def unit_context(spec: dict, bf, index: int, creds) -> contract.RunContext:
    return context(spec, schedule="daily", job_name="march", store_credentials=creds, backfill=("march", bf, index))


def test_units_commit_their_shard_and_chunk_alone_and_a_rerun_repairs_nothing(dataset, servers):
    symbols = SHARD_0 + SHARD_1
    days = [FIRST + dt.timedelta(days=i) for i in range(10)]
    absent = ("SOLUSDT", days[7])
    dataset.upload([(s, d) for s in symbols for d in days if (s, d) != absent])
    spec = dataset.spec(list(symbols), repair={"maxRepairsPerRun": 1000, "load": "csv-zip"})
    prefix = f"{dataset.prefix}-backfill/"
    spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": prefix, "endpoint": servers.s3.endpoint}}
    creds = (servers.s3.access_key, servers.s3.secret_key)
    bf = parse_backfill({"schedule": "daily", "from": days[0].isoformat(), "to": days[-1].isoformat(), "parallelism": 2,
                         "daysPerChunk": 5})
    assert bf.units == 4

    results = [run(unit_context(spec, bf, i, creds), None) for i in range(bf.units)]
    assert [r.outcome for r in results] == ["succeeded"] * 4
    assert [r.run_id for r in results] == [f"data/daily@backfill:march/{i}" for i in range(4)]
    # each unit: its shard's two symbols over its five days
    assert [(r.coverage.expected, r.coverage.repaired) for r in results] == [(10, 10), (10, 10), (10, 9), (10, 10)]
    assert results[2].coverage.missing == 1  # SOLUSDT (shard 0) on day 8 (chunk 1) is not in the source

    objects = delta_table(servers, prefix, "objects").to_pyarrow_table().to_pylist()
    assert len(objects) == 40 and sum(o["present"] for o in objects) == 39
    parts = {(o["symbol"], o["part"]) for o in objects}
    assert {p for s, p in parts if s in SHARD_0}.isdisjoint({p for s, p in parts if s in SHARD_1})
    runs = delta_table(servers, prefix, "runs").to_pyarrow_table().to_pylist()
    assert sorted((r["run_id"], r["trigger"], r["window_first"], r["window_last"]) for r in runs) == [
        (f"data/daily@backfill:march/{i}", "backfill", bf.unit(i).first, bf.unit(i).last) for i in range(4)]

    # Each unit pushed its cells in the backfill's own group; the schedule's group got nothing.
    lines = [line for line in scrape(servers.pushgateway) if 'namespace="data"' in line and 'schedule="daily"' in line]
    expected = sorted(line for line in lines if line.startswith('ingestion_backfill_unit_cells{') and 'state="expected"' in line)
    assert len(expected) == 4 and all('backfill="march"' in line and 'job="ingestion-backfill"' in line and
                                      line.endswith(" 10") for line in expected), expected
    assert sum('state="repaired"' in line and line.endswith(" 9") for line in lines) == 1
    assert not [line for line in lines if line.startswith("ingestion_run_success")]

    # A unit's pod replaced after its commit: the store holds its cells, so it repairs none.
    again = run(unit_context(spec, bf, 1, creds), None)
    assert (again.outcome, again.coverage.expected, again.coverage.repaired) == ("succeeded", 10, 0)
    runs = delta_table(servers, prefix, "runs").to_pyarrow_table().to_pylist()
    assert len(runs) == 4 and next(r for r in runs if r["run_id"].endswith("/1"))["attempt"] == 2

    # The schedule's own run over the same dates sees what the backfill committed: nothing to
    # repair, the one cell absent upstream still a gap.
    from ingestion_job.plan import Window

    own = run(context(spec, schedule="daily", job_name="manual-1", store_credentials=creds), None,
              dates=Window(days[0], days[-1]))
    assert (own.coverage.expected, own.coverage.present, own.coverage.repaired, own.coverage.gaps_open) == (40, 39, 0, 1)

    # The schedule's own success rate and freshness do not count a backfill's units.
    from ingestion_job.store import open_backend

    store = open_backend(unit_context(spec, bf, 0, creds), None)
    try:
        with store.locked():
            assert store.run_counts("daily") == {"succeeded": 1} and list(store.last_finished("daily")) == ["succeeded"]
    finally:
        store.close()


def test_shards_on_one_duckdb_file_take_turns_to_commit(dataset, servers, tmp_path):
    """Two unit processes at once on one DuckDB file (as two pods on one PVC): each holds the
    file only to read its start and to commit, so both land."""
    import os
    import subprocess

    import yaml

    from ..samples import store_rows
    from .conftest import EXE

    symbols = SHARD_0 + SHARD_1
    days = [FIRST + dt.timedelta(days=i) for i in range(6)]
    dataset.upload([(s, d) for s in symbols for d in days])
    spec = dataset.spec(list(symbols), repair={"maxRepairsPerRun": 1000, "load": "csv-zip"})
    bf = parse_backfill({"schedule": "daily", "from": days[0].isoformat(), "to": days[-1].isoformat(), "parallelism": 2})
    f = tmp_path / "daily.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": "daily", "namespace": "data"}, "spec": spec}))
    db = tmp_path / "store.duckdb"
    procs = [subprocess.Popen([EXE, "run", "--spec", str(f), "--db", str(db)], stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True,
                              env={**os.environ, contract.BACKFILL_ENV: contract.encode_unit_env("march", bf),
                                   contract.COMPLETION_INDEX_ENV: str(i)})
             for i in range(bf.units)]
    logs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert all("event=run_finished outcome=succeeded" in log and "expected=12 " in log for log in logs), logs
    assert store_rows(db, "SELECT count(*), count(*) FILTER (WHERE present) FROM objects") == [(24, 24)]
    assert store_rows(db, "SELECT run_id, trigger FROM runs ORDER BY run_id") == [
        ("data/daily@backfill:march/0", "backfill"), ("data/daily@backfill:march/1", "backfill")]


@pytest.mark.parametrize("store,sig", [("duckdb", "SIGKILL"), ("delta", "SIGKILL"), ("duckdb", "SIGTERM"), ("delta", "SIGTERM")])
def test_a_unit_killed_half_way_resumes_past_its_checkpoints(dataset, servers, tmp_path, store, sig):
    """A unit commits every checkpointEvery verified cells; SIGKILLed after some checkpoints, its
    next pod repairs only the cells no checkpoint committed. SIGTERMed (its pod deleted), it
    starts nothing more, commits what it verified and exits 4, so the Job runs the unit again
    rather than count it done. Either way the unit's report counts every cell its attempts
    repaired, once (the backfill's cellsRepaired)."""
    import os
    import re
    import signal
    import subprocess
    import time

    import yaml

    from ..samples import store_rows
    from .conftest import EXE

    days = [FIRST + dt.timedelta(days=i) for i in range(10)]
    dataset.upload([(s, d) for s in SHARD_0 for d in days])
    spec = dataset.spec(list(SHARD_0), repair={"maxRepairsPerRun": 1000, "load": "csv-zip"})
    spec["target"]["maxRequestsPerSecond"] = 12  # two requests a cell: about 6 cells a second
    bf = parse_backfill({"schedule": "daily", "from": days[0].isoformat(), "to": days[-1].isoformat(), "daysPerChunk": 10,
                         "checkpointEvery": 4})
    prefix = f"{dataset.prefix}-ckpt/"
    if store == "delta":
        spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": prefix, "endpoint": servers.s3.endpoint}}
    f = tmp_path / "daily.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": "daily", "namespace": "data"}, "spec": spec}))
    db = tmp_path / "store.duckdb"
    where = ["--db", str(db)] if store == "duckdb" else []
    created = "2020-01-01T00:00:00Z"  # the backfill's creation: before any repair of this fresh store
    message = tmp_path / "termination-log"
    env = {**os.environ, contract.BACKFILL_ENV: contract.encode_unit_env("march", bf, created), contract.COMPLETION_INDEX_ENV: "0",
           contract.STORE_KEY_ID_ENV: servers.s3.access_key, contract.STORE_SECRET_ENV: servers.s3.secret_key,
           contract.TERMINATION_MESSAGE_ENV: str(message)}

    def rows(sql):
        if store == "duckdb":
            return store_rows(db, sql)
        import duckdb

        con = duckdb.connect()
        for name in ("gaps", "loaded", "runs", "objects"):
            con.register(name, delta_table(servers, prefix, name).to_pyarrow_table())
        return con.execute(sql).fetchall()

    log = tmp_path / "unit.log"
    proc = subprocess.Popen([EXE, "run", "--spec", str(f), *where], stderr=log.open("w"), stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while "committed=8" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.02)
    proc.send_signal(getattr(signal, sig))
    proc.wait(timeout=60)
    text = log.read_text()
    committed = max(int(n) for n in re.findall(r"event=checkpoint cells=\d+ committed=(\d+)", text))
    repaired = rows("SELECT count(*) FROM gaps WHERE status = 'repaired'")[0][0]
    if sig == "SIGKILL":
        assert 8 <= committed < 20 and "event=run_finished" not in text, text[-2000:]
        assert repaired == committed
    else:  # it committed what it had verified (the checkpoints' and the cells in flight), left the rest open
        assert proc.returncode == contract.EXIT_INTERRUPTED, text[-2000:]
        assert "event=run_interrupted" in text and "event=run_finished" in text, text[-2000:]
        assert committed <= repaired < 20, (committed, repaired)
        outcome, reason = contract.end_reason(message.read_text())
        assert reason.startswith(f"interrupted (SIGTERM): committed, {20 - repaired} cell(s) left for the next pod"), reason
        assert contract.Coverage.decode(message.read_text()).repaired == repaired
        assert rows("SELECT count(*) FROM gaps WHERE status = 'open' AND last_error LIKE '%asked to stop (SIGTERM)%'") == [
            (20 - repaired,)]

    again = subprocess.run([EXE, "run", "--spec", str(f), *where], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    # the unit's report: the 20 cells it repaired, this attempt's and the killed one's
    assert "expected=20 present=20 missing=0 repaired=20 " in again.stderr, again.stderr[-2000:]
    cov = contract.Coverage.decode(message.read_text())
    assert (cov.expected, cov.present, cov.repaired, cov.unrepaired) == (20, 20, 20, 0)
    assert rows("SELECT count(*), count(DISTINCT (symbol, date)) FROM gaps WHERE status = 'repaired'") == [(20, 20)]
    assert rows("SELECT count(*), count(DISTINCT (symbol, date)) FROM objects") == [(20, 20)]
    assert rows("SELECT count(DISTINCT (symbol, date)) FROM loaded") == [(20,)]
    assert rows("SELECT attempt, outcome, gaps_repaired FROM runs") == [(2, "succeeded", 20)]


def test_units_compacting_at_once_never_double_a_partition(dataset, servers, tmp_path):
    """Eight units of one shard at once, each checkpointing every 2 cells and compacting when 16
    files are due. delta-rs commits two OPTIMIZEs planned on one version both (every row twice);
    the housekeeping lease makes one writer compact at a time, so no row is doubled."""
    import collections
    import os
    import subprocess

    import yaml

    from .conftest import EXE

    days = [FIRST + dt.timedelta(days=i) for i in range(48)]
    dataset.upload([(s, d) for s in SHARD_0 for d in days])
    spec = dataset.spec(list(SHARD_0), repair={"maxRepairsPerRun": 1000, "load": "csv-zip"})
    prefix = f"{dataset.prefix}-compact/"
    spec["storage"] = {"objectStore": {"bucket": PRIVATE, "prefix": prefix, "endpoint": servers.s3.endpoint,
                                       "maintenance": {"compactAfterFiles": 16}}}
    bf = parse_backfill({"schedule": "daily", "from": days[0].isoformat(), "to": days[-1].isoformat(), "daysPerChunk": 6,
                         "checkpointEvery": 2})
    f = tmp_path / "daily.yaml"
    f.write_text(yaml.safe_dump({"metadata": {"name": "daily", "namespace": "data"}, "spec": spec}))
    env = {**os.environ, contract.BACKFILL_ENV: contract.encode_unit_env("m", bf),
           contract.STORE_KEY_ID_ENV: servers.s3.access_key, contract.STORE_SECRET_ENV: servers.s3.secret_key}
    procs = [subprocess.Popen([EXE, "run", "--spec", str(f)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              env={**env, contract.COMPLETION_INDEX_ENV: str(i)}) for i in range(bf.units)]
    logs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [log[-1500:] for log in logs]
    assert sum("event=maintenance table=" in log for log in logs) >= 1  # compactions did happen
    for name in ("objects", "gaps"):
        rows = delta_table(servers, prefix, name).to_pyarrow_table().to_pylist()
        counts = collections.Counter((r["symbol"], r["date"]) for r in rows)
        assert len(counts) == 96 and max(counts.values()) == 1, (name, len(rows))
    loaded = delta_table(servers, prefix, "loaded").to_pyarrow_table()
    assert loaded.num_rows == 96 * 5  # five kline rows a cell, each once


def test_the_housekeeping_lease_is_one_writers_at_a_time_and_taken_over_once_expired(dataset, servers, monkeypatch):
    from ingestion_contract.spec import ObjectStoreStorage
    from ingestion_job import delta

    cfg = ObjectStoreStorage(bucket=PRIVATE, prefix=f"{dataset.prefix}-lease/", endpoint=servers.s3.endpoint)
    creds = (servers.s3.access_key, servers.s3.secret_key)
    a, b = delta.DeltaStore(cfg, "daily", creds), delta.DeltaStore(cfg, "daily", creds)
    try:
        with a.housekeeping_lease("gaps") as held_a:
            assert held_a
            with b.housekeeping_lease("gaps") as held_b:
                assert not held_b  # the server refused the second create (If-None-Match)
            with b.housekeeping_lease("objects") as other_table:
                assert other_table
        with b.housekeeping_lease("gaps") as held_b:
            assert held_b  # released
        monkeypatch.setattr(delta, "LEASE_SECONDS", -1)  # a lease that expired at once: a writer died holding it
        with a.housekeeping_lease("runs") as held_a:
            assert held_a
            with b.housekeeping_lease("runs") as taken_over:
                assert taken_over
    finally:
        a.close()
        b.close()


def test_no_cell_starts_while_a_checkpoint_commits(dataset, servers, tmp_path):
    """Repair keeps at most one cell per worker in flight and starts none while ``on_repaired``
    (a unit's checkpoint commit) runs, so a slow commit cannot let the fetches run ahead of what
    is committed: a unit killed in it loses at most the batch being committed and the cells in
    flight. Before, every cell was queued at once and the workers ran on through the commit."""
    import logging
    import time

    from ingestion_contract.spec import Repair, parse_job_spec
    from ingestion_dev.faultproxy import FaultProxy
    from ingestion_job.plan import Cell
    from ingestion_job.repair import repair
    from ingestion_job.source import S3Source

    days = [FIRST + dt.timedelta(days=i) for i in range(40)]
    dataset.upload([("BTCUSDT", d) for d in days])
    proxy = FaultProxy(servers.s3.endpoint)  # it records which objects were asked for
    try:
        source = S3Source(parse_job_spec(dataset.spec(["BTCUSDT"], endpoint=proxy.endpoint)).target, concurrency=16)
        upstream = {"BTCUSDT": source.list_symbol("BTCUSDT")}
        fetched = lambda: sum(1 for d in days if proxy.times_of(upstream["BTCUSDT"][d].key))  # noqa: E731
        seen = []

        def slow_commit(repaired):
            time.sleep(0.2)
            seen.append((len(repaired), fetched()))

        done, late = repair(source, [Cell("BTCUSDT", d) for d in days], upstream, Repair(load="none"), tmp_path,
                            logging.LoggerAdapter(logging.getLogger("ingestion_job"), {}), slow_commit)
        repaired, failed = done.repaired, done.failed
    finally:
        proxy.close()
    assert (len(repaired), failed, late) == (40, {}, set())
    # After each 0.2 s "commit": the cells taken so far plus at most the 7 others in flight
    # (8 workers), never more; the first commit would have seen all 40 fetched before.
    assert len(seen) == 40 and all(n <= done + 7 for done, n in seen), seen
    assert any(n > done for done, n in seen), seen  # and cells were in flight: the workers ran at once
