"""A real Kubernetes control plane as plain processes on loopback.

etcd, kube-apiserver and kube-controller-manager, built from the Go module proxy by
``dev/build-kube``, started with generated certificates, service-account keys and an
admin token, RBAC on. Every process is recorded in a PID file together with the binary
it runs; ``down`` stops exactly those processes (it checks ``/proc/PID/exe`` first, so a
stale PID that now belongs to something else is never signalled).

Pods run in one of two ways. Without a node, :mod:`ingestion_dev.podrunner` moves them
along as local processes (fast tests of scheduling and status). With ``node=True`` the
plane also runs kube-scheduler and a real node (:mod:`ingestion_dev.node`: containerd,
kubelet and kube-proxy in a network namespace of their own); the API server then listens
on the host's end of the node's veth pair, where pods reach it through the ``kubernetes``
Service, and every component authenticates with a certificate of the plane's own CA.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .node import NODE_NAME, Node, NodeNetwork
from .pki import PKI
from .processes import ProcessGroup
from .workspace import REPO_ROOT, ClusterError, free_ports, port_in_use, refuse_in_fast_loop

BUILD_SCRIPT = REPO_ROOT / "dev" / "build-kube"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
NODE_BINARIES = ("kube-scheduler", "kubelet", "kube-proxy")
NODE_PROGRAMS = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables"}
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the kubernetes Service: the first address of SERVICE_CIDR


@dataclasses.dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int = 30259

    @classmethod
    def fixed(cls) -> "Ports":
        """The sandbox's well-known ports (chosen to stay clear of a real cluster's)."""
        return cls(etcd_client=32379, etcd_peer=32380, apiserver=36443, controller_manager=30257, scheduler=30259)

    @classmethod
    def free(cls) -> "Ports":
        """Ports the kernel reports free right now (for parallel test sessions)."""
        return cls(*free_ports(5))


def build_binaries() -> Path:
    """Build (or find cached) binaries; returns their directory."""
    refuse_in_fast_loop("the Kubernetes build")
    if not BUILD_SCRIPT.exists():
        raise ClusterError(f"missing build script {BUILD_SCRIPT}")
    proc = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"building the control plane failed (exit {proc.returncode}); see the output above")
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES + NODE_BINARIES if not (bin_dir / b).is_file()]
    if missing:
        raise ClusterError(f"build finished but {', '.join(missing)} missing in {bin_dir}")
    return bin_dir


def helm_binary() -> str:
    """The pinned Helm, built once from the Go module proxy by dev/build-helm (cached)."""
    refuse_in_fast_loop("the Helm build")
    proc = subprocess.run([str(REPO_ROOT / "dev" / "build-helm")], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ClusterError("building helm failed (dev/build-helm); see the output above")
    return proc.stdout.strip().splitlines()[-1]


def _run(cmd: list[str], **kw) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {proc.stdout.strip()}")


class ControlPlane(ProcessGroup):
    """One control plane rooted at ``state_dir`` (certs, data, logs, PID files, kubeconfig)."""

    def __init__(self, state_dir: Path, ports: Ports | None = None, bin_dir: Path | None = None, audit: bool = False,
                 node: bool | None = None):
        super().__init__(state_dir)
        self._ports = ports
        self.audit = audit
        self._bin_dir = bin_dir
        meta = json.loads(self.meta_file.read_text()) if self.meta_file.exists() else {}
        self.network = NodeNetwork(meta["node_index"]) if meta.get("node_index") else None
        self.with_node = bool(self.network) if node is None else node

    # -- layout -----------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per request (Metadata level), when started with audit=True."""
        return self.logs / "audit.log"

    @property
    def meta_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def certs(self) -> PKI:
        return PKI(self.pki / "ca")

    @property
    def node(self) -> Node | None:
        return Node(self.state_dir, self.network) if self.network else None

    @property
    def address(self) -> str:
        """Where the API server listens: 127.0.0.1, or with a node the host's end of its veth pair."""
        return self.network.host_ip if self.network else "127.0.0.1"

    @property
    def ports(self) -> Ports:
        if self._ports is None:
            if self.meta_file.exists():
                self._ports = Ports(**json.loads(self.meta_file.read_text())["ports"])
            else:
                self._ports = Ports.fixed()
        return self._ports

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.ports.apiserver}"

    def token(self) -> str:
        return (self.pki / "admin.token").read_text().strip()

    # -- lifecycle --------------------------------------------------------------------
    def up(self, timeout: float = 60.0, log=print) -> None:
        """Start all three processes and wait until the API is ready and usable."""
        running = self.running()
        if running:
            raise ClusterError(
                f"a control plane is already running from {self.state_dir} "
                f"({', '.join(f'{n} pid {p}' for n, p in running.items())}); run 'down' first"
            )
        busy = [p for p in dataclasses.astuple(self.ports) if port_in_use(p)]
        if busy:
            raise ClusterError(
                f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are taken by another process; "
                "stop it or choose other ports"
            )
        if self.with_node:
            # The kubelet binds unix sockets under its root dir (pod-resources/<10 digits>); a
            # socket's path has at most 107 bytes, and past that the kubelet exits with "bind:
            # invalid argument" in its log.
            longest = len(str(self.state_dir.resolve() / "node" / "kubelet" / "pod-resources" / ("9" * 10)).encode())
            if longest > 107:
                raise ClusterError(f"the state dir {self.state_dir} is {longest - 107} bytes too long for a node: the kubelet's "
                                   f"sockets under it would have {longest}-byte paths, over a unix socket's 107")
        bin_dir = self._bin_dir or build_binaries()
        for b in BINARIES + (NODE_BINARIES if self.with_node else ()):
            if not os.access(bin_dir / b, os.X_OK):
                raise ClusterError(f"binary {bin_dir / b} is missing or not executable; run dev/build-kube")
        if self.with_node:
            missing = sorted({pkg for prog, pkg in NODE_PROGRAMS.items() if not shutil.which(prog)})
            if missing:
                raise ClusterError(f"a node needs the Debian packages {', '.join(missing)}: run dev/bootstrap (as root)")
        for d in (self.pki, self.logs, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            if self.with_node:
                self.network = NodeNetwork.allocate()
                self.network.create()
            self.meta_file.write_text(json.dumps({"ports": dataclasses.asdict(self.ports), "bin_dir": str(bin_dir),
                                                  "node_index": self.network.index if self.network else None}))
            self._write_credentials()
            self._start("etcd", bin_dir, self._etcd_args())
            self._wait(lambda: self._http_ok(f"http://127.0.0.1:{self.ports.etcd_client}/health"), "etcd", timeout)
            self._start("kube-apiserver", bin_dir, self._apiserver_args())
            self._wait(lambda: self._api_ok("/readyz"), "kube-apiserver /readyz", timeout)
            self._write_kubeconfig()
            self._start("kube-controller-manager", bin_dir, self._controller_manager_args())
            self._wait(
                lambda: self._http_ok(f"https://127.0.0.1:{self.ports.controller_manager}/healthz"),
                "kube-controller-manager /healthz",
                timeout,
            )
            if self.with_node:
                self._start_node(bin_dir, timeout)
        except BaseException:
            self.down(log=lambda *_: None)
            raise
        log(f"control plane ready in {time.monotonic() - t0:.1f}s at {self.server}")

    def down(self, log=print) -> list[str]:
        """Stop the processes, then remove what the node made (mounts, cgroups, network)."""
        stopped = super().down(log=log)
        node = self.node
        if node is not None:
            for what in node.remove():
                log(f"removed {what}")
                stopped.append(what)
        return stopped

    def status(self) -> dict:
        running = self.running()
        wanted = BINARIES + (NODE_BINARIES + ("containerd",) if self.network else ())
        return {
            "state_dir": str(self.state_dir),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "node": {"name": NODE_NAME, "netns": self.network.netns, "address": self.network.node_ip} if self.network else None,
            "processes": running,
            "ready": all(b in running for b in wanted) and self._api_ok("/readyz"),
        }

    # -- the node ---------------------------------------------------------------------
    def _start_node(self, bin_dir: Path, timeout: float) -> None:
        """kube-scheduler on the host; containerd, kubelet and kube-proxy in the node's namespace."""
        from .images import pause_image

        node = self.node
        for who, cn, org in (("kube-scheduler", "system:kube-scheduler", None), ("kubelet", f"system:node:{NODE_NAME}", "system:nodes"),
                             ("kube-proxy", "system:kube-proxy", None)):
            self.certs.issue(who, cn, org)
        self._write_kubeconfig(self.pki / "kube-scheduler.kubeconfig", "kube-scheduler")
        self._start("kube-scheduler", bin_dir, [
            f"--kubeconfig={self.pki / 'kube-scheduler.kubeconfig'}", "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.scheduler}", f"--cert-dir={self.pki / 'kube-scheduler-serving'}", "--v=1"])
        node.write_config(self.certs.ca)
        node.create_cgroups()
        self._write_kubeconfig(node.dir / "kubelet.kubeconfig", "kubelet")
        self._write_kubeconfig(node.dir / "kube-proxy.kubeconfig", "kube-proxy")
        self.start_process("containerd", node.containerd_argv(), netns=self.network.netns)
        self._wait(lambda: node.socket.exists(), "containerd's socket", timeout)
        node.import_image(pause_image())
        self.start_process("kubelet", node.kubelet_argv(bin_dir), netns=self.network.netns)
        self.start_process("kube-proxy", node.kube_proxy_argv(bin_dir), netns=self.network.netns)
        self._wait(self._node_ready, f"node {NODE_NAME} Ready", timeout)

    def _node_ready(self) -> bool:
        body = self._api_get(f"/api/v1/nodes/{NODE_NAME}")
        try:
            conditions = json.loads(body)["status"]["conditions"] if body else []
        except (ValueError, KeyError):
            return False
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # -- processes --------------------------------------------------------------------
    def restart_controller_manager(self, extra: list[str] = (), timeout: float = 60.0) -> None:
        """Stop kube-controller-manager and start it again with ``extra`` flags after its own
        (e.g. ``--kube-api-qps=100``), waiting for its /healthz; benchmarks compare settings."""
        argv = self.stop_process("kube-controller-manager")
        self._procs.pop("kube-controller-manager", None)
        bin_dir = Path(argv[0]).parent
        self._start("kube-controller-manager", bin_dir, [*self._controller_manager_args(), *extra])
        self._wait(lambda: self._http_ok(f"https://127.0.0.1:{self.ports.controller_manager}/healthz"),
                   "kube-controller-manager /healthz", timeout)

    def _start(self, name: str, bin_dir: Path, args: list[str]) -> int:
        return self.start_process(name, [str(bin_dir / name), *args])

    def _wait(self, ok, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                name = dead[0]
                tail = _tail(self.logs / f"{name}.log")
                raise ClusterError(f"{name} exited with code {self._procs[name].returncode} while waiting for {what}:\n{tail}")
            if ok():
                return
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.logs}")

    # -- health -----------------------------------------------------------------------
    @staticmethod
    def _http_get(url: str, headers: dict | None = None) -> bytes | None:
        """The body of a 200 answer (a local health probe: the certificate is not checked), else None."""
        ctx = None
        if url.startswith("https"):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
                return r.read() if r.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _http_ok(self, url: str) -> bool:
        return self._http_get(url) is not None

    def _api_get(self, path: str) -> bytes | None:
        try:
            token = self.token()
        except FileNotFoundError:
            return None
        return self._http_get(self.server + path, headers={"Authorization": f"Bearer {token}"})

    def _api_ok(self, path: str) -> bool:
        return self._api_get(path) is not None

    # -- configuration ----------------------------------------------------------------
    def _write_credentials(self) -> None:
        sa_key = self.pki / "sa.key"
        if not sa_key.exists():
            _run(["openssl", "genrsa", "-out", str(sa_key), "2048"])
            _run(["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(self.pki / "sa.pub")])
        token_file = self.pki / "admin.token"
        if not token_file.exists():
            token_file.write_text(secrets.token_hex(24) + "\n")
            token_file.chmod(0o600)
        (self.pki / "tokens.csv").write_text(f'{self.token()},admin,admin,"system:masters"\n')
        # The serving certificate names every address a client uses: loopback, the node's way
        # in, and the kubernetes Service (in-cluster clients).
        ips = sorted({"127.0.0.1", self.address, SERVICE_IP})
        self.certs.issue("apiserver", "kube-apiserver", ips=ips, server=True,
                         dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                              "kubernetes.default.svc.cluster.local"])
        self.certs.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")

    def _etcd_args(self) -> list[str]:
        p = self.ports
        peer = f"http://127.0.0.1:{p.etcd_peer}"
        return [
            "--name=dev",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p.etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{p.etcd_client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=dev={peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync",  # a throw-away dev store: durability buys nothing here
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        return [
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.ports.apiserver}",
            f"--tls-cert-file={self.certs.cert('apiserver')}",
            f"--tls-private-key-file={self.certs.key('apiserver')}",
            f"--client-ca-file={self.certs.ca}",
            f"--token-auth-file={self.pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={self.certs.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={self.certs.key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # With a node, the kubernetes Service's endpoints name the API server (a lease per
            # server); without one nothing needs them, and a loopback address cannot be one.
            f"--endpoint-reconciler-type={'lease' if self.network else 'none'}",
            # Admission webhooks (the chart's) at a Service's endpoints, not its address: kube-proxy
            # lives in the node's namespace, and the host routes only the pods' /24 to it.
            *(["--enable-aggregator-routing=true"] if self.network else []),
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self._audit_args(),
        ]

    def _audit_args(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.pki / "audit-policy.yaml"
        policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
                          "rules:\n  - level: Metadata\n")
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
                "--audit-log-mode=blocking"]

    def _controller_manager_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--controllers=*",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.certs.ca}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.controller_manager}",
            f"--cert-dir={self.pki / 'controller-manager'}",
            "--profiling=false",
            "--v=1",
        ]

    def _write_kubeconfig(self, path: Path | None = None, identity: str | None = None) -> None:
        """The admin kubeconfig (a token in system:masters), or one for ``identity``'s client certificate."""
        import base64

        path = path or self.kubeconfig
        user = {"token": self.token()} if identity is None else {
            "client-certificate": str(self.certs.cert(identity)), "client-key": str(self.certs.key(identity))}
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ingestion-dev",
                    "cluster": {"server": self.server, "certificate-authority-data": base64.b64encode(self.certs.ca.read_bytes()).decode()},
                }
            ],
            "users": [{"name": identity or "admin", "user": user}],
            "contexts": [{"name": "ingestion-dev", "context": {"cluster": "ingestion-dev", "user": identity or "admin"}}],
            "current-context": "ingestion-dev",
        }
        path.write_text(json.dumps(cfg, indent=2))
        path.chmod(0o600)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
