"""An upstream's budget, measured (issue 27 point 5): three schedules and a two-shard backfill
read one source through a proxy that notes when every request arrives. The operator splits
the upstream's N requests a second (70 % for schedules: 5, 5 and 4; the backfills' 6, 3 a
shard), the real jobs run at their shares at the same time, and together they stay within N:
no stretch of the run saw more than N a second plus one second's worth (a token bucket of
rate N and burst N), while every run still finished in time with every cell repaired."""

from __future__ import annotations

import datetime as dt
import uuid

import yaml

from ingestion_dev import sampledata
from ingestion_dev.faultproxy import FaultProxy, busiest, over_budget

from ..conftest import PRIVATE, PUBLIC, kubectl
from ..kube import backfill_yaml, caps, cond, get, get_backfill, get_upstream, job, lake_secret, upstream_yaml

N = 20  # the upstream's requests a second
SYMBOLS = [f"B{i}USDT" for i in range(8)]
DAYS = 6  # schedules: lagDays 1, lookbackDays 5; the backfill: the same six days, 3 a unit
SHARERS = ("a", "b", "c", "lake")


def test_three_schedules_and_a_two_shard_backfill_stay_within_the_upstreams_budget(cluster, operator, servers, namespaces, wait_for):
    assert cluster.pod_state, "needs the session's own control plane (its pod runner executes pods)"
    ns = namespaces("budget")
    run = uuid.uuid4().hex[:6]
    today = dt.datetime.now(dt.timezone.utc).date()
    days = [today - dt.timedelta(days=n) for n in range(1, DAYS + 1)]
    # Each sharer reads keys of its own (so the proxy can tell them apart), all from one bucket.
    templates = {name: f"up{run}-{name}/{sampledata.KEY_TEMPLATE}" for name in SHARERS}
    s3 = servers.s3.client()
    for name, template in templates.items():
        # today too: a manual run just after midnight has a window a day later
        sampledata.upload(s3, PUBLIC, [(s, d) for s in SYMBOLS for d in [today, *days]], template=template)
    proxy = FaultProxy(servers.s3.endpoint)
    secret = lake_secret(servers)

    def schedule(name: str) -> dict:
        storage = ({"objectStore": {"bucket": PRIVATE, "prefix": f"up{run}/", "endpoint": servers.s3.endpoint,
                                    "credentialsSecret": {"name": "lake"}}} if name == "lake"
                   else {"duckdb": {"claimName": f"{name}-data"}})
        return {"apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionSchedule", "metadata": {"name": name},
                "spec": {"schedule": "0 2 * * *", "enabled": name != "lake",  # runs by hand here; lake: the backfill's
                         "target": {"endpoint": proxy.endpoint, "bucket": PUBLIC, "anonymous": True,
                                    "keyTemplate": templates[name], "checksumSuffix": ".CHECKSUM", "symbols": SYMBOLS,
                                    "lagDays": 1, "lookbackDays": DAYS - 1},
                         "repair": {"load": "csv-zip", "maxRepairsPerRun": 100}, "storage": storage}}

    try:
        kubectl(cluster, "apply", "-n", ns, "-f", "-", input=upstream_yaml("vision", bucket=PUBLIC, endpoint=proxy.endpoint,
                                                                          maxRequestsPerSecond=N))
        kubectl(cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([secret, *(schedule(n) for n in SHARERS)]))
        # 70 % of 20 for the three enabled schedules, the remainder to the first by name.
        want = {"a": 5, "b": 5, "c": 4}
        wait_for(lambda: caps(cluster, ns, want) == want, 30, f"CronJobs at {want}")
        assert all(cond(get(cluster, ns, n), "Degraded").get("reason") != "ShareBelowFloor" for n in "abc")

        # All at once: a manual run of each schedule and the backfill's first two units.
        for name in "abc":
            kubectl(cluster, "create", "job", f"{name}-now", f"--from=cronjob/{name}", "-n", ns)
        kubectl(cluster, "apply", "-n", ns, "-f", "-", input=backfill_yaml(
            "older", "lake", days[-1].isoformat(), days[0].isoformat(), parallelism=2, daysPerChunk=3))
        bf = wait_for(lambda: job(cluster, ns, "older"), 30, "the backfill's Job")
        assert bf["metadata"]["annotations"]["ingestion.dev/upstream-requests-per-second"] == "6"

        def finished(name: str) -> str | None:
            for c in (job(cluster, ns, name) or {}).get("status", {}).get("conditions") or []:
                if c["status"] == "True" and c["type"] in ("Complete", "Failed"):
                    return c["type"]
            return None

        outcomes = {n: wait_for(lambda n=n: finished(n), 180, f"Job {n}") for n in ("a-now", "b-now", "c-now", "older")}
        assert outcomes == dict.fromkeys(outcomes, "Complete"), outcomes
        for name in "abc":
            st = wait_for(lambda name=name: (s := get(cluster, ns, name)["status"]).get("lastRun", {}).get("job") == f"{name}-now" and s,
                          60, f"{name}'s run in its status")
            assert st["lastRun"]["outcome"] == "Succeeded" and st["coverage"]["present"] == len(SYMBOLS) * DAYS, st
            assert st["upstream"]["name"] == "vision"
        done = wait_for(lambda: (lambda b: b if cond(b, "Complete").get("status") == "True" else None)(get_backfill(cluster, ns, "older")),
                        60, "the backfill Complete")
        assert done["status"]["progress"]["cellsTotal"] == len(SYMBOLS) * DAYS
        assert done["status"]["progress"]["cells"] == f"{len(SYMBOLS) * DAYS}/{len(SYMBOLS) * DAYS}", done["status"]["progress"]

        # What the source saw.
        arrivals = proxy.times_of("")
        per_sharer = {name: sorted(t for p, ts in proxy.arrivals.items() if p.split("/")[2:3] == [templates[name].split("/")[0]]
                                   for t in ts) for name in SHARERS}
        assert all(len(per_sharer[n]) == 2 * len(SYMBOLS) * DAYS for n in SHARERS), {n: len(v) for n, v in per_sharer.items()}
        together = (max(v[0] for v in per_sharer.values()), min(v[-1] for v in per_sharer.values()))
        assert together[1] - together[0] >= 5, f"the sharers overlapped only {together[1] - together[0]:.1f} s"
        during = [t for t in arrivals if together[0] <= t <= together[1]]
        rate_together = len(during) / (together[1] - together[0])
        worst = over_budget(arrivals, N, N)
        print(f"\n{len(arrivals)} requests in {arrivals[-1] - arrivals[0]:.1f} s; all four sharers at once for "
              f"{together[1] - together[0]:.1f} s at {rate_together:.1f}/s; busiest 1 s: {busiest(arrivals, 1.0)}, "
              f"busiest 5 s: {busiest(arrivals, 5.0)} (budget {N}/s); per sharer: "
              + ", ".join(f"{n} {len(v) / (v[-1] - v[0]):.1f}/s" for n, v in per_sharer.items()))
        assert worst is None, f"{worst[0]} requests in {worst[1]:.2f} s: more than {worst[2]} ({N}/s and a burst of {N})"
        assert busiest(arrivals, 1.0) <= 2 * N
        assert rate_together <= N
        # The budget was used, not merely not passed: the sharers together came near it.
        assert rate_together >= 0.5 * N, rate_together
        up = get_upstream(cluster, ns, "vision")
        print(kubectl(cluster, "get", "iup", "-n", ns).stdout)
        assert cond(up, "Ready")["status"] == "True"
    finally:
        proxy.close()
