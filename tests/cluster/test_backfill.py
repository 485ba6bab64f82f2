"""An IngestionBackfill on the real control plane: the operator renders an Indexed Job, the
real Job controller runs it, the pod runner executes the real job per unit against real S3
(through a proxy that counts every request) into real Delta tables; a pod killed half way
through its unit is replaced and redoes only that unit; deleting the backfill deletes its
Job, not its results."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import yaml

from ingestion_dev import sampledata
from ingestion_dev.faultproxy import FaultProxy, busiest

from ..conftest import PRIVATE, PUBLIC, kubectl
from ..kube import backfill_yaml, cond, get_backfill, lake_secret
from ..samples import delta_table

SHARD_0, SHARD_1 = ("ETHUSDT", "SOLUSDT"), ("BTCUSDT", "ADAUSDT")  # part_of(symbol) % 2
FIRST, DAYS, PER_CHUNK = dt.date(2025, 1, 1), 75, 15  # 4 symbols x 75 days = 300 cells; 5 chunks x 2 shards = 10 units
CAP = 40  # requests per second to the source, both shards together
CHECKPOINT = 5  # a unit commits every 5 verified cells


def job(cluster, ns, name) -> dict | None:
    out = kubectl(cluster, "get", "job", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def pods(cluster, ns, name) -> list[dict]:
    return json.loads(kubectl(cluster, "get", "pods", "-n", ns, "-l", f"batch.kubernetes.io/job-name={name}", "-o", "json").stdout)["items"]


def index_of(pod: dict) -> int:
    return int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])


def test_a_backfill_shards_resumes_a_killed_unit_reports_progress_and_is_collected(cluster, operator, servers, namespaces, wait_for):
    assert cluster.pod_state, "needs the session's own control plane (its pod runner executes pods)"
    ns = namespaces("backfill")
    template = f"bf{uuid.uuid4().hex[:6]}/{sampledata.KEY_TEMPLATE}"
    days = [FIRST + dt.timedelta(days=i) for i in range(DAYS)]
    symbols = SHARD_0 + SHARD_1
    absent = {("SOLUSDT", days[20]), ("BTCUSDT", days[61])}
    cells = [(s, d) for s in symbols for d in days]
    sampledata.upload(servers.s3.client(), PUBLIC, [c for c in cells if c not in absent], template=template)
    proxy = FaultProxy(servers.s3.endpoint)
    prefix = f"bf-{uuid.uuid4().hex[:6]}/"
    secret = lake_secret(servers)
    schedule = {
        "apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionSchedule", "metadata": {"name": "daily"},
        "spec": {
            "schedule": "0 2 * * *", "enabled": False,  # no ticks: only the backfill runs
            "target": {"endpoint": proxy.endpoint, "bucket": PUBLIC, "anonymous": True, "keyTemplate": template,
                       "checksumSuffix": ".CHECKSUM", "symbols": list(symbols)},
            "repair": {"load": "csv-zip"},
            "storage": {"objectStore": {"bucket": PRIVATE, "prefix": prefix, "endpoint": servers.s3.endpoint,
                                        "credentialsSecret": {"name": "lake"}}},
        },
    }
    try:
        kubectl(cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([secret, schedule]))
        kubectl(cluster, "apply", "-n", ns, "-f", "-", input=backfill_yaml(
            "early-2025", "daily", days[0].isoformat(), days[-1].isoformat(), parallelism=2, daysPerChunk=PER_CHUNK,
            maxRequestsPerSecond=CAP, checkpointEvery=CHECKPOINT))
        t0 = time.monotonic()

        # Half way: two units committed, and a running unit has fetched enough of its cells for a
        # checkpoint or two, not all. Kill that pod.
        def running_unit_mid_fetch():
            j = job(cluster, ns, "early-2025")
            done = (j or {}).get("status", {}).get("completedIndexes") or ""
            if len(done.replace("-", ",").split(",")) < 2 or not done:
                return None
            for p in pods(cluster, ns, "early-2025"):
                if p["status"].get("phase") != "Running" or p["metadata"].get("deletionTimestamp"):
                    continue
                unit = index_of(p)
                shard, chunk = unit % 2, unit // 2
                mine = [(s, d) for s in (SHARD_0, SHARD_1)[shard] for d in days[chunk * PER_CHUNK:(chunk + 1) * PER_CHUNK]]
                fetched = [c for c in mine if proxy.times_of(key(template, *c))]
                if len(fetched) >= len(mine) - 5:
                    continue
                repaired = {(g["symbol"], g["date"]) for g in delta_rows(servers, prefix, "gaps") if g["status"] == "repaired"}
                if len(repaired & set(mine)) >= CHECKPOINT:  # a checkpoint of this pod committed
                    return p, unit, mine
            return None

        victim, killed_unit, killed_cells = wait_for(running_unit_mid_fetch, 120, "a unit half way through its fetches")
        kubectl(cluster, "delete", "pod", victim["metadata"]["name"], "-n", ns, "--wait=false")
        killed_at = time.monotonic()
        print("\n" + kubectl(cluster, "get", "ibf", "-n", ns).stdout)

        done = wait_for(lambda: (lambda b: b if cond(b, "Complete").get("status") == "True" or
                                 cond(b, "Failed").get("status") == "True" else None)(get_backfill(cluster, ns, "early-2025")),
                        300, "the backfill to finish")
        elapsed = time.monotonic() - t0
        st = done["status"]
        assert cond(done, "Complete")["status"] == "True", st
        p = st["progress"]
        assert (p["units"], p["unitsDone"], p["unitsFailed"], p["summary"], p["unitsProgress"]) == (10, 10, 0, "100%", "10/10"), p
        assert (p["cells"], p["cellsTotal"], p["cellsMissingUpstream"], p["cellsFailed"]) == ("300/300", 300, 2, 0), p
        assert [(s["chunksDone"], s["state"]) for s in st["shards"]] == [(5, "Complete"), (5, "Complete")]
        header, row = kubectl(cluster, "get", "ibf", "early-2025", "-n", ns).stdout.splitlines()
        assert header.split() == ["NAME", "SCHEDULE", "FROM", "TO", "PROGRESS", "UNITS", "CELLS", "FAILED", "COMPLETE", "AGE"], header
        assert row.split()[1:9] == ["daily", "2025-01-01", "2025-03-16", "100%", "10/10", "300/300", "0", "True"], row

        # The killed unit got a new pod; no other unit's cell was fetched twice, and no cell committed
        # before the kill was fetched again.
        (replacement,) = [p for p in pods(cluster, ns, "early-2025") if index_of(p) == killed_unit]
        assert replacement["metadata"]["name"] != victim["metadata"]["name"]
        attempts = {r["run_id"].rsplit("/", 1)[1]: r["attempt"] for r in delta_rows(servers, prefix, "runs")}
        assert attempts == {str(i): 2 if i == killed_unit else 1 for i in range(10)}, attempts  # the killed unit ran twice
        fetches = {c: len(proxy.times_of(key(template, *c))) for c in cells if c not in absent}
        assert all(n >= 1 for n in fetches.values())
        twice = {c for c, n in fetches.items() if n > 1}
        assert twice <= set(killed_cells), sorted(twice - set(killed_cells))[:5]
        committed_before = [c for c in cells if c not in killed_cells and c not in absent
                            and max(proxy.times_of(key(template, *c))) < killed_at]
        assert committed_before and all(fetches[c] == 1 for c in committed_before)
        # Within the killed unit: what its checkpoints committed (repaired at the killed pod's start,
        # before its replacement's) was not fetched again; what was refetched is at most the cells
        # verified since its last checkpoint (CHECKPOINT of them if the kill fell in a commit), plus
        # the 8 in flight: no cell starts while a checkpoint commits.
        gaps = {(g["symbol"], g["date"]): g["repaired_at"] for g in delta_rows(servers, prefix, "gaps")}
        replacement_start = next(r["started_at"] for r in delta_rows(servers, prefix, "runs")
                                 if r["run_id"].endswith(f"/{killed_unit}"))
        by_killed_pod = [c for c in killed_cells if c not in absent and gaps[c] < replacement_start]
        assert len(by_killed_pod) >= CHECKPOINT and all(fetches[c] == 1 for c in by_killed_pod), by_killed_pod
        assert len(twice) <= CHECKPOINT + 8, sorted(twice)
        # The cap held: each shard's share (CAP / 2) is evenly spaced, so no second of the run saw
        # more than CAP requests (a slot of slack per shard at a window's edge, and one for a
        # request its thread sent a moment late).
        arrivals = proxy.times_of("")
        most = busiest(arrivals, 1.0)
        assert CAP / 2 < most <= CAP + 4, most
        assert len(arrivals) / elapsed <= CAP
        print(f"backfill of 300 cells in {elapsed:.1f} s; unit {killed_unit} killed, {len(by_killed_pod)} of its cells "
              f"checkpointed before, {len(twice)} fetched twice; "
              f"{len(arrivals)} requests, {most} in the busiest second (cap {CAP})")
        print(kubectl(cluster, "get", "ibf", "-n", ns).stdout)

        # The results are in the Delta tables: 300 cells, 298 present, each loaded once.
        objects = delta_rows(servers, prefix, "objects")
        assert len(objects) == 300 and sum(o["present"] for o in objects) == 298
        loaded = delta_rows(servers, prefix, "loaded")
        assert len({(r["symbol"], r["date"]) for r in loaded}) == 298

        # Deleting the backfill deletes its Job and pods (garbage collection); the tables stay.
        kubectl(cluster, "delete", "ibf", "early-2025", "-n", ns)
        wait_for(lambda: job(cluster, ns, "early-2025") is None and not pods(cluster, ns, "early-2025"), 60, "the Job collected")
        assert len(delta_rows(servers, prefix, "objects")) == 300
    finally:
        proxy.close()


def key(template: str, symbol: str, date: dt.date) -> str:
    return template.format(symbol=symbol, date=date.isoformat())



def delta_rows(servers, prefix: str, name: str) -> list[dict]:
    return delta_table(servers, prefix, name, bucket=PRIVATE).to_pyarrow_table().to_pylist()


def test_a_backfill_over_archives_and_daily_files_counts_each_cell_once(cluster, operator, servers, namespaces, wait_for):
    """A schedule of daily files and monthly archives (target.archive): the operator counts a
    backfill's cells as its units expect them (the months before the boundary counted back from
    its to, the days after), and the units' reports add up to that total on the real Job."""
    assert cluster.pod_state, "needs the session's own control plane (its pod runner executes pods)"
    ns = namespaces("archive")
    prefix = f"bfa{uuid.uuid4().hex[:6]}"
    daily_t, monthly_t = f"{prefix}/{sampledata.KLINES_DAILY}", f"{prefix}/{sampledata.KLINES_MONTHLY}"
    last = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    previous = (last.replace(day=1) - dt.timedelta(days=1)).replace(day=1)  # the boundary: its first day
    m2 = (previous - dt.timedelta(days=1)).replace(day=1)
    m1 = (m2 - dt.timedelta(days=1)).replace(day=1)
    symbols, absent = ["BTCUSDT", "ETHUSDT"], ("ETHUSDT", m2, "1d")
    days = [previous + dt.timedelta(days=i) for i in range((last - previous).days + 1)]
    s3 = servers.s3.client()
    sampledata.upload(s3, PUBLIC, [(s, m, "1d") for s in symbols for m in (m1, m2) if (s, m, "1d") != absent],
                      template=monthly_t)
    sampledata.upload(s3, PUBLIC, [(s, d, "1d") for s in symbols for d in days], template=daily_t)
    lake = f"bfa-{uuid.uuid4().hex[:6]}/"
    secret = lake_secret(servers)
    schedule = {
        "apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionSchedule", "metadata": {"name": "klines"},
        "spec": {
            "schedule": "0 2 * * *", "enabled": False,
            "target": {"endpoint": servers.s3.endpoint, "bucket": PUBLIC, "anonymous": True, "keyTemplate": daily_t,
                       "checksumSuffix": ".CHECKSUM", "symbols": symbols, "dimensions": {"interval": ["1d"]},
                       "archive": {"keyTemplate": monthly_t, "dailyDays": last.day + 5}},
            "repair": {"load": "csv-zip"},
            "storage": {"objectStore": {"bucket": PRIVATE, "prefix": lake, "endpoint": servers.s3.endpoint,
                                        "credentialsSecret": {"name": "lake"}}},
        },
    }
    kubectl(cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([secret, schedule]))
    kubectl(cluster, "apply", "-n", ns, "-f", "-", input=backfill_yaml("history", "klines", m1.isoformat(), last.isoformat(),
                                                                        daysPerChunk=31))
    done = wait_for(lambda: (lambda b: b if cond(b, "Complete").get("status") == "True" or
                             cond(b, "Failed").get("status") == "True" else None)(get_backfill(cluster, ns, "history")),
                    300, "the backfill to finish")
    assert cond(done, "Complete")["status"] == "True", done["status"]
    total = len(symbols) * (2 + len(days))  # two months before the boundary, and each day from it
    p = done["status"]["progress"]
    assert (p["cells"], p["cellsTotal"], p["cellsMissingUpstream"], p["cellsFailed"]) == (f"{total}/{total}", total, 1, 0), p
    objects = delta_rows(servers, lake, "objects")
    assert sorted({(o["period"], o["date"]) for o in objects if o["period"] == "monthly"}) == [("monthly", m1), ("monthly", m2)]
    assert {o["date"] for o in objects if o["period"] == "daily"} == set(days)
