"""Leader election with two real operator processes sharing one Lease, on the real control
plane, with the default timing (lease 15 s, renew deadline 10 s, retry 2 s).

The failover figures are printed (run with -s) and bounded by the protocol: a killed
leader's Lease is taken one lease duration after its last renewal; a released one on the
standby's next retry."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml

from ingestion_dev.campaign import reconciles
from ingestion_dev.tcpproxy import TcpProxy

from ..conftest import Cluster, Operator, kubectl
from ..kube import apply_schedule, cond, events, get, get_cronjob, ready

LEASE_DURATION, RETRY = 15.0, 2.0


def lease(cluster, name):
    from kubernetes import client

    return client.CoordinationV1Api(cluster.api_client).read_namespaced_lease(name, "default").spec


def posted_warning(posted) -> str:
    warnings = [r for t, r in posted if t == "Warning"]
    assert len(warnings) == 1, f"expected one Warning, got {warnings}"
    return warnings[0]


def wait_leader(op: Operator, timeout: float) -> float:
    """Seconds until ``op`` reports itself leader (polled every 0.1 s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if op.role() == "leader":
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"{op.name} did not lead within {timeout}s; log:\n{op.log.read_text()[-2000:]}")


@pytest.fixture
def pair(cluster, crd, tmp_path):
    name = f"leader-test-{uuid.uuid4().hex[:6]}"
    a = Operator(cluster, tmp_path, lease=name, name="a")
    b = Operator(cluster, tmp_path, lease=name, name="b")
    try:
        a.start(leading=True)
        b.start(leading=False)
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_one_leader_reconciles_and_the_standby_does_nothing(cluster, pair, namespace, wait_for):
    a, b = pair
    assert (a.role(), b.role()) == ("leader", "standby")
    apply_schedule(cluster, namespace, "lead")
    # a transition each way: invalid, then valid again
    kubectl(cluster, "patch", "isched", "lead", "-n", namespace, "--type", "merge", "-p", '{"spec": {"timezone": "Nowhere/Zone"}}')
    wait_for(lambda: cond(get(cluster, namespace, "lead"), "Ready").get("status") == "False", 30, "Ready=False")
    kubectl(cluster, "patch", "isched", "lead", "-n", namespace, "--type", "merge", "-p", '{"spec": {"timezone": "Asia/Tokyo"}}')
    wait_for(lambda: ready(cluster, namespace, "lead"), 30, "Ready again")
    wait_for(lambda: any(e["reason"] == "Recovered" for e in events(cluster, namespace, "lead")), 30, "the Recovered event")

    # Quiet: a change that needs no write is reconciled (positive signal) and writes nothing.
    writes, seen = a.writes(), reconciles(a)
    kubectl(cluster, "annotate", "isched", "lead", "-n", namespace, "touched=1")
    wait_for(lambda: reconciles(a) > seen, 30, "the leader to reconcile the touched schedule")
    assert a.writes() == writes

    posted = [(e["type"], e["reason"]) for e in events(cluster, namespace, "lead")]
    # one Event per transition: created, refused (its reason names the field's problem), recovered, updated
    assert sorted(posted) == sorted([("Normal", "CronJobCreated"), ("Warning", posted_warning(posted)),
                                     ("Normal", "Recovered"), ("Normal", "CronJobUpdated")]), posted
    m = b.metrics()
    assert m["ingestion_operator_leader"] == 0 and a.metrics()["ingestion_operator_leader"] == 1
    assert reconciles(b) == 0 and b.writes() == 0, "the standby reconciled or wrote"
    assert "ingestion_operator_reconciles_total" not in " ".join(k for k, v in m.items() if v)


def test_a_standby_takes_over_from_a_killed_leader_and_a_stopped_one(cluster, pair, namespace, wait_for):
    a, b = pair
    apply_schedule(cluster, namespace, "fo")
    before = lease(cluster, a.lease)
    assert before.holder_identity.startswith(Path("/proc/sys/kernel/hostname").read_text().strip())

    a.kill()  # SIGKILL: the Lease stays with a until it expires
    killed = wait_leader(b, 40)
    print(f"\nfailover after SIGKILL of the leader: {killed:.1f} s")
    assert LEASE_DURATION - RETRY - 1 <= killed <= LEASE_DURATION + RETRY + 3, killed
    kubectl(cluster, "patch", "isched", "fo", "-n", namespace, "--type", "merge", "-p", '{"spec": {"schedule": "0 4 * * *"}}')
    wait_for(lambda: get_cronjob(cluster, namespace, "fo")["spec"]["schedule"] == "0 4 * * *", 30, "the new leader's update")

    a.start(leading=False)  # back as a standby
    assert a.role() == "standby"
    b.stop()  # SIGTERM: b releases the Lease
    released = wait_leader(a, 20)
    print(f"failover after SIGTERM of the leader (Lease released): {released:.1f} s")
    assert released <= RETRY + 2, released
    assert "event=lease_released" in b.log.read_text()
    after = lease(cluster, a.lease)
    assert after.lease_transitions == (before.lease_transitions or 0) + 2
    kubectl(cluster, "patch", "isched", "fo", "-n", namespace, "--type", "merge", "-p", '{"spec": {"schedule": "0 5 * * *"}}')
    wait_for(lambda: get_cronjob(cluster, namespace, "fo")["spec"]["schedule"] == "0 5 * * *", 30, "the third leader's update")


def test_a_leader_that_loses_the_api_server_stops_before_a_standby_takes_over(cluster, crd, tmp_path, namespace, wait_for):
    server = cluster.api_client.configuration.host  # https://127.0.0.1:PORT
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"https://{host}:{proxy.port}"
    cut_kubeconfig = tmp_path / "via-proxy.kubeconfig"
    cut_kubeconfig.write_text(yaml.safe_dump(cfg))
    name = f"leader-test-{uuid.uuid4().hex[:6]}"
    a = Operator(Cluster(cut_kubeconfig, None), tmp_path, lease=name, name="a")
    b = Operator(cluster, tmp_path, lease=name, name="b")
    try:
        a.start(leading=True)
        b.start(leading=False)
        apply_schedule(cluster, namespace, "part")

        proxy.cut()
        t0 = time.monotonic()
        status, body = wait_for(lambda: (h := a.healthz())[0] == 503 and h, 8, "the cut leader's /healthz to fail")
        assert "api: the API server is unreachable or not ready" in body
        assert a.healthz("/livez")[0] == 200  # liveness does not follow the API server: no restart for an outage
        wait_for(lambda: "event=leadership_lost" in a.log.read_text(), 20, "the cut leader to stop leading")
        stopped = time.monotonic() - t0
        wait_for(lambda: "event=stepped_down" in a.log.read_text(), 20, "the cut leader's kopf run to end")
        assert a.proc.poll() is None and a.log.read_text().count("event=standby ") == 2  # a standby again, same process
        took = stopped + wait_leader(b, 30)
        print(f"\nleader cut off from the API server: stopped leading after {stopped:.1f} s, "
              f"standby leading after {took:.1f} s")
        assert stopped < took, "two leaders at once"
        assert stopped <= 10 + RETRY + 2 and took <= LEASE_DURATION + RETRY + 3
        assert lease(cluster, name).holder_identity == b.identity()
        kubectl(cluster, "patch", "isched", "part", "-n", namespace, "--type", "merge", "-p", '{"spec": {"schedule": "0 6 * * *"}}')
        wait_for(lambda: get_cronjob(cluster, namespace, "part")["spec"]["schedule"] == "0 6 * * *", 30, "the new leader's update")
        proxy.restore()
        wait_for(lambda: a.role() == "standby", 30, "the stepped-down replica Ready as a standby once the API server is back")
        b.stop()  # SIGTERM: b releases the Lease, and the replica that stepped down leads again
        wait_leader(a, 20)
        kubectl(cluster, "patch", "isched", "part", "-n", namespace, "--type", "merge", "-p", '{"spec": {"schedule": "0 7 * * *"}}')
        wait_for(lambda: get_cronjob(cluster, namespace, "part")["spec"]["schedule"] == "0 7 * * *", 30, "its second term's update")
    finally:
        a.stop()
        b.stop()
        proxy.close()


def test_a_leader_renews_with_one_update_and_reads_only_when_somebody_else_wrote_the_lease(cluster):
    """client-go's fast path: a leader whose Lease is valid renews with one update carrying the
    resourceVersion of its own last write (no read); when another writer has been there since,
    that update is refused (409) and the same step reads the Lease and decides from what it says."""
    import datetime as dt

    from kubernetes import client

    from ingestion_operator.leader import LeaderElector, Timing

    name = f"leader-test-{uuid.uuid4().hex[:6]}"
    calls = []

    class Counted(client.CoordinationV1Api):
        def __getattribute__(self, attr):
            if attr.endswith("_namespaced_lease"):
                calls.append(attr.split("_")[0])
            return super().__getattribute__(attr)

    me = LeaderElector(cluster.api_client, "default", name, "me", Timing())
    me.api = Counted(me.api.api_client)
    assert me.acquire()
    assert calls == ["read", "create"]
    for _ in range(3):
        calls.clear()
        assert me.try_acquire_or_renew()
        assert calls == ["replace"]  # one request per renewal
    renewed = lease(cluster, name)
    assert renewed.holder_identity == "me" and renewed.lease_transitions == 0

    # another writer takes the Lease (as if ours had expired by its clock): the optimistic
    # update is refused, the read shows the new holder, and we do not lead on this step
    api = client.CoordinationV1Api(cluster.api_client)
    taken = api.read_namespaced_lease(name, "default")
    taken.spec.holder_identity, taken.spec.lease_transitions = "other", 1
    taken.spec.renew_time = dt.datetime.now(dt.timezone.utc)
    api.replace_namespaced_lease(name, "default", taken)
    calls.clear()
    assert not me.try_acquire_or_renew()
    assert calls == ["replace", "read"]
    assert lease(cluster, name).holder_identity == "other"  # nothing of ours was written over it
    api.delete_namespaced_lease(name, "default")
