"""A backfill's units as the job runs them: each pod's shard of symbols over its chunk of
dates, committed on its own to real Delta tables on SeaweedFS; a unit run again repairs
nothing it committed; the schedule's own run counts are left alone."""

from __future__ import annotations

import datetime as dt
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
    from ingestion_job.run import open_backend

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
