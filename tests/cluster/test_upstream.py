"""An IngestionUpstream on the real control plane, driven with kubectl as a user would: three
schedules of one source get their shares rendered into their CronJobs' job spec (one's own cap
lowering its share), a schedule of another source is left alone, a backfill takes its share
when its Job is made and a second one waits for the pool, a budget change re-renders every
sharer, and deleting the upstream gives each schedule back its own settings."""

from __future__ import annotations

import time


from ..conftest import kubectl
from ..kube import (backfill_yaml, caps, cond, env_cap, env_target, get, get_backfill, get_cronjob, get_upstream, job, schedule_yaml,
                    upstream_yaml)

ANN_SHARE = "ingestion.dev/upstream-requests-per-second"


def test_an_upstream_shares_its_budget_and_every_sharer_follows_it(cluster, operator, namespaces, wait_for):
    ns = namespaces("upstream", mode="hold")  # backfill pods stay Running: their shares stay held
    bad = kubectl(cluster, "apply", "-n", ns, "-f", "-", check=False,
                  input=upstream_yaml("bad", endpoint="minio:9000", maxRequestsPerSecond=5, scheduledShare=101))
    assert bad.returncode != 0 and "spec.endpoint must be an http:// or https:// URL" in bad.stderr  # the CRD's CEL rule
    assert "spec.scheduledShare" in bad.stderr and "less than or equal to 100" in bad.stderr
    kubectl(cluster, "apply", "-n", ns, "-f", "-", input=upstream_yaml("binance", maxRequestsPerSecond=20, maxBytesPerSecond=20_000))
    for name, extra in (("a", {}), ("b", {"maxRequestsPerSecond": 2}), ("c", {})):
        target = {"bucket": "data.binance.vision", "anonymous": True, "symbols": ["BTCUSDT"],
                  "keyTemplate": "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip", **extra}
        kubectl(cluster, "apply", "-n", ns, "-f", "-", input=schedule_yaml(name, target=target))
    other = {"endpoint": "http://minio.storage:9000", "bucket": "data.binance.vision", "symbols": ["BTCUSDT"],
             "keyTemplate": "{symbol}/{date}.zip"}
    kubectl(cluster, "apply", "-n", ns, "-f", "-", input=schedule_yaml("elsewhere", target=other))

    # 1. 70 % of 20 is the schedules' 14: b keeps its own 2, a and c split the 12 left.
    want = {"a": 6, "b": 2, "c": 6, "elsewhere": None}
    wait_for(lambda: caps(cluster, ns, want) == want, 30, f"CronJobs at {want}")
    assert get(cluster, ns, "a")["status"]["upstream"] == {"name": "binance", "requestsPerSecond": 6, "bytesPerSecond": 6000, "floor": 1}
    # the byte budget in proportion to the requests, rendered into each CronJob's job spec
    assert env_target(get_cronjob(cluster, ns, "b")["spec"]["jobTemplate"]["spec"]["template"]["spec"])["maxBytesPerSecond"] == 2000
    assert "upstream" not in get(cluster, ns, "elsewhere")["status"]
    up = wait_for(lambda: (u := get_upstream(cluster, ns, "binance")).get("status", {}).get("sharerCount") == 3 and u, 30,
                  "the upstream's three sharers")
    assert [(s["kind"], s["name"], s["share"]) for s in up["status"]["sharers"]] == [
        ("IngestionSchedule", "a", 6), ("IngestionSchedule", "b", 2), ("IngestionSchedule", "c", 6)]
    table = kubectl(cluster, "get", "iup", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "SOURCE", "BUDGET", "SHARERS", "SPLIT", "READY", "AGE"]
    assert table[1].split()[:6] == ["binance", "s3://data.binance.vision", "20", "3", "14/6", "True"]

    # 2. A backfill takes the backfills' 6 when its Job is made (3 a shard); a second one waits.
    kubectl(cluster, "apply", "-n", ns, "-f", "-", input=backfill_yaml("bf1", "a", "2026-01-01", "2026-01-02", parallelism=2))
    j = wait_for(lambda: job(cluster, ns, "bf1"), 30, "bf1's Job")
    assert j["metadata"]["annotations"][ANN_SHARE] == "6" and env_cap(j["spec"]["template"]["spec"]) == 3
    assert env_target(j["spec"]["template"]["spec"])["maxBytesPerSecond"] == 3000  # 6,000 for its 6, split by 2 shards
    wait_for(lambda: get_backfill(cluster, ns, "bf1").get("status", {}).get("upstream") == {"name": "binance", "requestsPerSecond": 6},
             30, "bf1's share in its status")
    kubectl(cluster, "apply", "-n", ns, "-f", "-", input=backfill_yaml("bf2", "c", "2026-01-01", "2026-01-02"))
    waiting = wait_for(lambda: (c := cond(get_backfill(cluster, ns, "bf2"), "Complete")).get("reason") == "WaitingForUpstream" and c,
                       30, "bf2 waiting for the pool")
    assert "bf1 6" in waiting["message"] and job(cluster, ns, "bf2") is None
    wait_for(lambda: get_upstream(cluster, ns, "binance")["status"].get("sharerCount") == 4, 30, "bf1 among the sharers")

    # 3. A bigger budget re-renders every schedule; bf1 keeps its 6, bf2 takes the 6 now left.
    t0 = time.monotonic()
    kubectl(cluster, "patch", "iup", "binance", "-n", ns, "--type", "merge", "-p", '{"spec": {"maxRequestsPerSecond": 40}}')
    want = {"a": 13, "b": 2, "c": 13, "elsewhere": None}
    wait_for(lambda: caps(cluster, ns, want) == want, 30, f"CronJobs at {want}")
    rerendered = time.monotonic() - t0
    j2 = wait_for(lambda: job(cluster, ns, "bf2"), 60, "bf2's Job once the pool has room")
    assert j2["metadata"]["annotations"][ANN_SHARE] == "6" and env_cap(j2["spec"]["template"]["spec"]) == 6
    assert job(cluster, ns, "bf1")["metadata"]["annotations"][ANN_SHARE] == "6"

    # 4. Deleted: every schedule back to its own settings, status.upstream gone.
    t0 = time.monotonic()
    kubectl(cluster, "delete", "iup", "binance", "-n", ns)
    want = {"a": None, "b": 2, "c": None, "elsewhere": None}
    wait_for(lambda: caps(cluster, ns, want) == want, 30, f"CronJobs at their own {want}")
    print(f"\nbudget change to CronJobs re-rendered: {rerendered:.1f} s; upstream deleted to own settings: "
          f"{time.monotonic() - t0:.1f} s (polling every 0.5 s)")
    wait_for(lambda: all("upstream" not in get(cluster, ns, n)["status"] for n in "abc"), 30, "status.upstream gone")
