"""Fault campaign (issue 10): the operator SIGKILLed at random points while schedules
change, and the API server and etcd restarted under a running operator.

The same code runs longer in ``bench/bench_faults.py``."""

from __future__ import annotations

import sys

import pytest

from ingestion_dev.campaign import not_converged, outage, schedule_body, sigkill_campaign
from ingestion_dev.cluster import ControlPlane, Ports
from ingestion_dev.operatorproc import OperatorProcess, wait_for

from ..conftest import CRD


def test_twenty_sigkills_while_schedules_change(cluster, crd, namespace, tmp_path):
    r = sigkill_campaign(cluster.api_client, cluster.kubeconfig, namespace, tmp_path, kills=20, seed=20261124,
                         log=lambda m: print(m, file=sys.stderr))
    print(f"\n20 SIGKILLs: converged after each restart in {min(r['converge_s']):.1f}-{max(r['converge_s']):.1f} s; "
          f"operations {r['ops']}; {r['samples']} CronJob samples")
    assert len(r["converge_s"]) == 20
    assert set(r["ops"]) == {"create", "update", "delete"} and sum(r["ops"].values()) >= 40, r["ops"]
    assert r["samples"] >= 100 and r["most_cronjobs_per_schedule"] == 1, r
    assert r["schedules"] >= 1 and r["writes_after_quiet_restart"] == 0, r


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory):
    """A control plane of this module's own: its API server and etcd are restarted."""
    plane = ControlPlane(tmp_path_factory.mktemp("faults-plane"), ports=Ports.free())
    try:
        plane.up(timeout=90, log=lambda m: print(m, file=sys.stderr))
        yield plane
    finally:
        plane.down(log=lambda m: None)


def test_api_server_and_etcd_restarts_under_a_running_operator(own_plane, tmp_path):
    import random
    import subprocess

    from kubernetes import client, config

    env = {"KUBECONFIG": str(own_plane.kubeconfig), "PATH": f"{sys.exec_prefix}/bin:/usr/bin:/bin"}
    subprocess.run(["kubectl", "apply", "-f", str(CRD)], env=env, check=True, capture_output=True)
    subprocess.run(["kubectl", "wait", "--for=condition=Established", "crd/ingestionschedules.ingestion.dev", "--timeout=30s"],
                   env=env, check=True, capture_output=True)
    api = config.new_client_from_config(config_file=str(own_plane.kubeconfig))
    body = schedule_body("s0", random.Random(1))
    body["spec"].update(schedule="0 2 * * *", enabled=True)
    client.CustomObjectsApi(api).create_namespaced_custom_object("ingestion.dev", "v1alpha1", "default", "ingestionschedules", body)
    # Leading through an outage needs a renew deadline longer than the outage (the default
    # 10 s would make it step down and exit, as tests/cluster/test_leader.py shows).
    op = OperatorProcess(own_plane.kubeconfig, tmp_path, namespaces=["default"],
                         extra=["--lease-duration=60", "--renew-deadline=40", "--retry-period=2"])
    op.start()
    try:
        wait_for(lambda: not_converged(api, "default") is None, 60, "the first convergence")
        for component in ("kube-apiserver", "etcd"):
            r = outage(own_plane, component, 5, op, api, "default", "s0")
            print(f"\n{component} down {r['down_s']:.1f} s: /healthz failed {r['healthz_failed_probes']} probes "
                  f"({r['healthz_sample']}), ok {r['healthz_ok_after_s']:.1f} s after the restart, "
                  f"a change applied {r['change_applied_s']:.1f} s later")
            assert r["same_process"], f"the operator restarted:\n{op.log.read_text()[-3000:]}"
            assert r["healthz_failed_probes"] >= 1 and r["healthz_sample"][0].startswith("api: the API server is unreachable or not ready")
            assert r["change_applied_s"] < 60
            wait_for(lambda: not_converged(api, "default") is None, 30, f"convergence after the {component} outage")
        # the informers' watches broke with the API server and were resumed, and said so
        broken = {k: v for k, v in op.metrics().items() if k.startswith("ingestion_operator_watch_errors_total")}
        assert sum(broken.values()) >= 1 and op.log_events("watch_retry"), broken
    finally:
        op.stop()
