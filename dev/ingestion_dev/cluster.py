"""A real Kubernetes control plane as plain processes on loopback.

etcd, kube-apiserver and kube-controller-manager, built from the Go module proxy by
``dev/build-kube``, started with generated certificates, service-account keys and an
admin token, RBAC on. Every process is recorded in a PID file together with the binary
it runs; ``down`` stops exactly those processes (it checks ``/proc/PID/exe`` first, so a
stale PID that now belongs to something else is never signalled).

There is no kubelet: pods are moved along by :mod:`ingestion_dev.podrunner`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .processes import ProcessGroup
from .workspace import REPO_ROOT, ClusterError, free_ports, port_in_use

BUILD_SCRIPT = REPO_ROOT / "dev" / "build-kube"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_CIDR = "10.96.0.0/16"


@dataclasses.dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int

    @classmethod
    def fixed(cls) -> "Ports":
        """The sandbox's well-known ports (chosen to stay clear of a real cluster's)."""
        return cls(etcd_client=32379, etcd_peer=32380, apiserver=36443, controller_manager=30257)

    @classmethod
    def free(cls) -> "Ports":
        """Ports the kernel reports free right now (for parallel test sessions)."""
        return cls(*free_ports(4))


def build_binaries() -> Path:
    """Build (or find cached) binaries; returns their directory."""
    if not BUILD_SCRIPT.exists():
        raise ClusterError(f"missing build script {BUILD_SCRIPT}")
    proc = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"building the control plane failed (exit {proc.returncode}); see the output above")
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not (bin_dir / b).is_file()]
    if missing:
        raise ClusterError(f"build finished but {', '.join(missing)} missing in {bin_dir}")
    return bin_dir


def _run(cmd: list[str], **kw) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {proc.stdout.strip()}")


class ControlPlane(ProcessGroup):
    """One control plane rooted at ``state_dir`` (certs, data, logs, PID files, kubeconfig)."""

    def __init__(self, state_dir: Path, ports: Ports | None = None, bin_dir: Path | None = None, audit: bool = False):
        super().__init__(state_dir)
        self._ports = ports
        self.audit = audit
        self._bin_dir = bin_dir

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
    def ports(self) -> Ports:
        if self._ports is None:
            if self.meta_file.exists():
                self._ports = Ports(**json.loads(self.meta_file.read_text())["ports"])
            else:
                self._ports = Ports.fixed()
        return self._ports

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

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
        bin_dir = self._bin_dir or build_binaries()
        for b in BINARIES:
            if not os.access(bin_dir / b, os.X_OK):
                raise ClusterError(f"binary {bin_dir / b} is missing or not executable; run dev/build-kube")
        for d in (self.pki, self.logs, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        self.meta_file.write_text(json.dumps({"ports": dataclasses.asdict(self.ports), "bin_dir": str(bin_dir)}))
        t0 = time.monotonic()
        try:
            self._start("etcd", bin_dir, self._etcd_args())
            self._wait(lambda: self._http_ok(f"http://127.0.0.1:{self.ports.etcd_client}/health"), "etcd", timeout)
            self._start("kube-apiserver", bin_dir, self._apiserver_args())
            self._wait(lambda: self._api_ok("/readyz"), "kube-apiserver /readyz", timeout)
            self._write_kubeconfig()
            self._start("kube-controller-manager", bin_dir, self._controller_manager_args())
            self._wait(
                lambda: self._http_ok(f"https://127.0.0.1:{self.ports.controller_manager}/healthz", insecure=True),
                "kube-controller-manager /healthz",
                timeout,
            )
        except BaseException:
            self.down(log=lambda *_: None)
            raise
        log(f"control plane ready in {time.monotonic() - t0:.1f}s at {self.server}")

    def status(self) -> dict:
        running = self.running()
        return {
            "state_dir": str(self.state_dir),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "processes": running,
            "ready": all(b in running for b in BINARIES) and self._api_ok("/readyz"),
        }

    # -- processes --------------------------------------------------------------------
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
    def _http_ok(url: str, insecure: bool = False, headers: dict | None = None) -> bool:
        ctx = None
        if url.startswith("https"):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _api_ok(self, path: str) -> bool:
        try:
            token = self.token()
        except FileNotFoundError:
            return False
        return self._http_ok(self.server + path, insecure=True, headers={"Authorization": f"Bearer {token}"})

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
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports.apiserver}",
            f"--cert-dir={self.pki / 'apiserver'}",
            f"--token-auth-file={self.pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
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
            f"--root-ca-file={self.pki / 'apiserver' / 'apiserver.crt'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.controller_manager}",
            f"--cert-dir={self.pki / 'controller-manager'}",
            "--profiling=false",
            "--v=1",
        ]

    def _write_kubeconfig(self) -> None:
        import base64

        ca = (self.pki / "apiserver" / "apiserver.crt").read_bytes()
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ingestion-dev",
                    "cluster": {"server": self.server, "certificate-authority-data": base64.b64encode(ca).decode()},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token()}}],
            "contexts": [{"name": "ingestion-dev", "context": {"cluster": "ingestion-dev", "user": "admin"}}],
            "current-context": "ingestion-dev",
        }
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))
        self.kubeconfig.chmod(0o600)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
