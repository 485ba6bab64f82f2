"""The real node: pods run in containers, two nodes live side by side, and 'down' leaves
nothing behind (processes, mounts, cgroups, namespaces, links)."""

from __future__ import annotations

import functools

import pytest
from kubernetes import client, config

from ingestion_dev.cluster import ControlPlane, Ports
from ingestion_dev.images import PAUSE_IMAGE
from ingestion_dev.node import NODE_NAME, host_footprint
from ingestion_dev.operatorproc import wait_for
from ingestion_dev.podrunner import NODE_NAME as RUNNER_NODE
from ingestion_dev.sandbox import pod_runner_argv


wait_for = functools.partial(wait_for, interval=0.3)


@pytest.fixture
def tmp_path(tmp_path_factory):
    """A short one: the nodes' state lives under it, and the kubelet's unix sockets under a
    test-named directory of xdist's worker (popen-gwN) would pass a socket's 107 bytes."""
    return tmp_path_factory.mktemp("n")


def sleeper(name: str) -> dict:
    """A pod whose container runs until it is killed (the pause image, as a plain container)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
                     "terminationGracePeriodSeconds": 1}}


def running(core: client.CoreV1Api, name: str) -> bool:
    pod = core.read_namespaced_pod(name, "default")
    return pod.status.phase == "Running" and pod.spec.node_name == NODE_NAME


@pytest.fixture
def planes(tmp_path):
    started = []

    def start(name: str) -> ControlPlane:
        plane = ControlPlane(tmp_path / name, ports=Ports.free(), node=True)
        started.append(plane)
        plane.up(timeout=120, log=lambda m: None)
        return plane

    yield start
    for plane in started:
        plane.down(log=lambda m: None)


@pytest.mark.node
def test_two_nodes_side_by_side_run_pods_and_leave_nothing_behind(planes, tmp_path):
    """Also: a pod runner in the same cluster takes no pod the scheduler gave to the real node."""
    before = host_footprint(tmp_path)
    a, b = planes("a"), planes("b")
    assert a.network.index != b.network.index and a.network.netns != b.network.netns
    cores = [client.CoreV1Api(config.new_client_from_config(config_file=str(p.kubeconfig))) for p in (a, b)]
    # A pod runner beside a's real node (in 'complete' mode, which would end the pod at once)
    # must leave the scheduler's pods to the real node.
    a.start_process("pod-runner", pod_runner_argv(a, "complete"))
    wait_for(lambda: any(n.metadata.name == RUNNER_NODE for n in cores[0].list_node().items), 30, "the pod runner's node")
    for core in cores:
        wait_for(lambda core=core: core.read_namespaced_service_account("default", "default"), 60, "the default ServiceAccount")
        core.create_namespaced_pod("default", sleeper("sleeper"))
    for core in cores:
        wait_for(lambda core=core: running(core, "sleeper"), 60, "the sleeper pod Running on the real node")

    during = host_footprint(tmp_path)
    assert len(during["netns"]) == len(before["netns"]) + 2 and len(during["links"]) == len(before["links"]) + 2
    # each node's pods are routed through it (the API server calls the chart's webhook at a pod's address)
    assert all(any(r.startswith(f"{p.network.pod_cidr} via {p.network.node_ip} ") for r in during["routes"]) for p in (a, b))
    assert during["mounts"] and during["cgroups"] and during["processes"]

    a.down(log=lambda m: None)
    # b is untouched by a's down: its pod still runs
    assert running(cores[1], "sleeper")
    b.down(log=lambda m: None)
    after = host_footprint(tmp_path)
    # nothing left that was not there before (a node's down also removes what a killed
    # earlier run of the same index left, so 'after' may hold less than 'before')
    left = {k: sorted(set(after[k]) - set(before[k])) for k in after}
    assert not any(left.values()), left


@pytest.mark.node
def test_a_node_that_cannot_start_fails_with_the_reason_and_cleans_up(tmp_path, monkeypatch):
    from ingestion_dev import node as node_module
    from ingestion_dev.workspace import ClusterError

    before = host_footprint(tmp_path)
    monkeypatch.setattr(node_module.Node, "kubelet_argv", lambda self, bin_dir: [str(bin_dir / "kubelet"), "--no-such-flag"])
    plane = ControlPlane(tmp_path / "broken", ports=Ports.free(), node=True)
    with pytest.raises(ClusterError, match="kubelet exited with code"):
        plane.up(timeout=60, log=lambda m: None)
    assert host_footprint(tmp_path) == before
