"""Session fixtures: a real control plane (started here, or reused via KUBECONFIG).

A server that cannot start fails the run; nothing here skips. Under CI (CI=true) a
skipped test anywhere fails the session too, so a missing server can never pass as green.
"""

from __future__ import annotations

import functools
import os
import sys
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config

from ingestion_dev.cluster import ControlPlane, Ports
from ingestion_dev.operatorproc import OperatorProcess, wait_for
from ingestion_dev.sandbox import pod_runner_argv

# The venv's tools (kubectl matching the server's minor version, console scripts) first.
os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"


# The fixtures that start a server or a build, and the marker each gives the tests using it
# (directly or through another fixture), so `dev/test --fast` (-m "not slow markers") leaves
# them out. A test that starts one itself carries the marker in its module; under --fast,
# ingestion_dev.workspace.refuse_in_fast_loop fails whatever start was missed.
MARKER_OF_FIXTURE = {
    "cluster": "cluster", "own_plane": "cluster", "planes": "cluster",
    "servers": "servers",
    "real_cluster": "node",
    "helm": "build", "oracle": "build", "wheels": "build",
}
SLOW_MARKERS = ("cluster", "servers", "node", "build")


@pytest.hookimpl(tryfirst=True)  # before pytest's -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = MARKER_OF_FIXTURE.get(fixture)
            if marker and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
    _one_worker_for_the_node(items)
    if hasattr(config, "workerinput"):  # an xdist worker: the order the controller hands out work in
        _longest_first(items)


# Under dev/test's two workers (pytest-xdist), each module is one unit of work, so its module
# fixtures (an operator, schedules that tick) start once, on one worker; and these modules
# are one unit together, run one after another on one worker: they start real nodes, which
# share the host's network namespaces, links and routes (and count them: host_footprint),
# and build images. The list is checked: a module with a node test missing from it fails
# the collection.
ONE_WORKER = ("tests/node/", "tests/dev/test_node.py", "tests/dev/test_sandbox.py", "tests/dev/test_images.py")
RANK = {"node": 0, "cluster": 1, "servers": 2, "build": 3}


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0]


def _unit(nodeid: str) -> str:
    """The unit of work a test belongs to: "node" or its module."""
    module = _module(nodeid)
    return "node" if module.startswith(ONE_WORKER) else module


def _one_worker_for_the_node(items) -> None:
    strays = sorted({_module(i.nodeid) for i in items if i.get_closest_marker("node") and _unit(i.nodeid) != "node"})
    if strays:
        raise pytest.UsageError(f"tests on a real node outside tests/conftest.py ONE_WORKER: {', '.join(strays)}")


def _longest_first(items) -> None:
    """Units ordered by their slowest kind of test (a node, a control plane, servers, a build,
    none), the node's first: the longest-first heuristic for two workers."""
    rank: dict[str, int] = {}
    for item in items:
        marks = [RANK[m] for m in RANK if item.get_closest_marker(m) is not None] + [len(RANK)]
        unit = _unit(item.nodeid)
        rank[unit] = min(rank.get(unit, len(RANK)), *marks)
    items.sort(key=lambda item: rank[_unit(item.nodeid)])  # stable: collection order within a rank


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's load-by-scope scheduler, with a unit of work per module (``_unit``)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ByUnit(config, log)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") == "true" and skipped and exitstatus == 0:
        print(f"\nCI: {skipped} test(s) skipped; a test that cannot run is a failure here", file=sys.stderr)
        session.exitstatus = 1


class Cluster:
    """What tests get: a kubeconfig path, API clients, and where exec-mode pods keep files."""

    def __init__(self, kubeconfig: Path, pod_state: Path | None, audit_log: Path | None = None, etcd_url: str | None = None):
        self.kubeconfig = kubeconfig
        self.pod_state = pod_state
        self.audit_log = audit_log
        self.etcd_url = etcd_url  # plain HTTP on loopback (our own plane; None for a reused one)
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    def kubectl_env(self) -> dict:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    external = os.environ.get("KUBECONFIG")
    if external:
        # Reuse a running plane (e.g. the sandbox, whose pod runner executes pods).
        yield Cluster(Path(external), None)
        return
    state = tmp_path_factory.mktemp("plane")
    plane = ControlPlane(state, ports=Ports.free(), audit=True)
    try:
        plane.up(timeout=90, log=lambda m: print(m, file=sys.stderr))
        plane.start_process("pod-runner", pod_runner_argv(plane, "exec"))
        c = Cluster(plane.kubeconfig, state / "pods", plane.audit_log, f"http://127.0.0.1:{plane.ports.etcd_client}")
        _wait_for(lambda: _default_sa_ready(c), 60, "the default ServiceAccount and the runner's node")
        yield c
    finally:
        plane.down(log=lambda m: None)


def _default_sa_ready(c: Cluster) -> bool:
    try:
        c.core.read_namespaced_service_account("default", "default")
        c.core.read_node("ingestion-dev-node")
        return True
    except client.ApiException:
        return False


_wait_for = functools.partial(wait_for, interval=0.5)  # the tests poll the API server every 0.5 s


@pytest.fixture
def wait_for():
    return _wait_for


def make_namespace(cluster: Cluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace({"metadata": {"name": name, "labels": {"ingestion.dev/test": "true"}}})
    _wait_for(lambda: _sa_exists(cluster, name), 30, f"default ServiceAccount in {name}")
    return name


def _sa_exists(cluster: Cluster, ns: str) -> bool:
    try:
        cluster.core.read_namespaced_service_account("default", ns)
        return True
    except client.ApiException:
        return False


MODE = "ingestion.dev/pod-runner-mode"  # how the pod runner ends a namespace's pods


class Namespaces:
    """Namespaces made for a test (or a module), each deleted when it ends, pass or fail:
    ``namespaces("gc", mode="hold")``."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.made: list[str] = []

    def __call__(self, prefix: str, mode: str | None = None) -> str:
        ns = make_namespace(self.cluster, prefix)
        self.made.append(ns)
        if mode:
            self.cluster.core.patch_namespace(ns, {"metadata": {"annotations": {MODE: mode}}})
        return ns

    def delete_all(self) -> None:
        for ns in self.made:
            try:
                self.cluster.core.delete_namespace(ns)
            except client.ApiException as e:
                if e.status != 404:
                    raise
        self.made.clear()


@pytest.fixture
def namespaces(cluster):
    made = Namespaces(cluster)
    try:
        yield made
    finally:
        made.delete_all()


@pytest.fixture(scope="module")
def module_namespaces(cluster):
    made = Namespaces(cluster)
    try:
        yield made
    finally:
        made.delete_all()


@pytest.fixture
def namespace(namespaces, request) -> str:
    return namespaces("t-" + request.node.name.lower().replace("_", "-")[:30].strip("-"))


REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "deploy" / "crds" / "ingestionschedules.ingestion.dev.yaml"
BACKFILL_CRD = REPO / "deploy" / "crds" / "ingestionbackfills.ingestion.dev.yaml"
UPSTREAM_CRD = REPO / "deploy" / "crds" / "ingestionupstreams.ingestion.dev.yaml"
CHART = REPO / "deploy" / "helm" / "ingestion-operator"


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned Helm binary (built once from the Go module proxy; a failed build fails the tests)."""
    from ingestion_dev.cluster import helm_binary

    return helm_binary()


def kubectl(cluster: Cluster, *args: str, check: bool = True, input: str | None = None):
    import subprocess

    out = subprocess.run(["kubectl", *args], env=cluster.kubectl_env(), capture_output=True, text=True,
                         timeout=60, input=input)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out


class Operator(OperatorProcess):
    """The real operator as a subprocess, on a test's cluster."""

    def __init__(self, cluster: Cluster, log_dir: Path, **kw):
        self.cluster = cluster
        super().__init__(cluster.kubeconfig, log_dir, **kw)


@pytest.fixture(scope="session")
def crd(cluster):
    kubectl(cluster, "apply", "-f", str(CRD), "-f", str(BACKFILL_CRD), "-f", str(UPSTREAM_CRD))
    kubectl(cluster, "wait", "--for=condition=Established", "crd/ingestionschedules.ingestion.dev",
            "crd/ingestionbackfills.ingestion.dev", "crd/ingestionupstreams.ingestion.dev", "--timeout=30s")
    return CRD


@pytest.fixture(scope="module")
def operator(cluster, crd, tmp_path_factory):
    op = Operator(cluster, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


# -- S3 (SeaweedFS) and the Pushgateway, once per session -------------------------------------
PUBLIC = "data.binance.vision"
PRIVATE = "private-market-data"


class Servers:
    def __init__(self, s3, pushgateway):
        self.s3 = s3
        self.pushgateway = pushgateway


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    from ingestion_dev.processes import ProcessGroup
    from ingestion_dev.services import start_pushgateway, start_seaweed

    group = ProcessGroup(tmp_path_factory.mktemp("servers"))
    try:
        s3 = start_seaweed(group, [PUBLIC])
        pg = start_pushgateway(group)
        client = s3.client()
        for b in (PUBLIC, PRIVATE):
            client.create_bucket(Bucket=b)
        yield Servers(s3, pg)
    finally:
        group.down(log=lambda m: None)


