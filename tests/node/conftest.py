"""A cluster with a real node, once per session: the control plane with kube-scheduler,
a node (containerd, kubelet, kube-proxy in a network namespace of its own), our two
images built from their Dockerfiles and loaded into it, and S3 and a Pushgateway bound to
the host's end of the node's veth pair, where pods reach them. A node that cannot start
fails the session with its reason; nothing here skips."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from kubernetes import client, config

from ingestion_dev import images
from ingestion_dev.cluster import ControlPlane, Ports
from ingestion_dev.processes import ProcessGroup
from ingestion_dev.services import start_pushgateway, start_seaweed


class RealCluster:
    def __init__(self, plane: ControlPlane, s3, pushgateway: str):
        self.plane = plane
        self.kubeconfig = plane.kubeconfig
        self.node = plane.node
        self.s3 = s3
        self.pushgateway = pushgateway
        self.api_client = config.new_client_from_config(config_file=str(plane.kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    def kubectl_env(self) -> dict:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("real")
    plane = ControlPlane(state / "plane", ports=Ports.free(), node=True)
    servers = ProcessGroup(state / "servers")
    try:
        # The images first: a build failure should not leave a node waiting.
        archives = [images.build("Dockerfile.operator", images.OPERATOR_IMAGE), images.build("Dockerfile.job", images.JOB_IMAGE)]
        plane.up(timeout=120, log=lambda m: print(m, file=sys.stderr))
        for archive in archives:
            plane.node.import_image(archive)
        host = plane.network.host_ip
        s3 = start_seaweed(servers, ["data.binance.vision"], host=host)
        pushgateway = start_pushgateway(servers, host=host)
        s3.client().create_bucket(Bucket="data.binance.vision")
        yield RealCluster(plane, s3, pushgateway)
    finally:
        servers.down(log=lambda m: None)
        plane.down(log=lambda m: None)
