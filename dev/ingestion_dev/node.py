"""A real node for the local cluster: containerd, runc, CNI, kubelet and kube-proxy.

The node lives in a network namespace of its own, joined to the host by a veth pair, as
kind runs a node in a container. Every address a test or a pod reaches is then loopback,
the host's end of that pair, or a pod on the node's bridge. Nothing is routed anywhere
else: the host forwards nothing (it routes only the pods' /24 to the node, for the API
server's webhook calls), and the node only masquerades its pods towards the host.

Everything is per instance, so a sandbox and a test session can each run a node:

- the network namespace, the host's veth and the /24s it uses (an index from 1 to 250);
- containerd's root, state and sockets (``/run/ingestion-n<index>``), the CNI
  configuration and its IP leases;
- the kubelet's root directory and its cgroup root (``/ingestion-<index>``).

:meth:`Node.remove` takes away exactly what :meth:`Node.start` made: the processes of its
cgroups, its containerd shims, the mounts under its state folder, its cgroups, the
namespace and the veth pair. A test checks that nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .images import PAUSE_IMAGE
from .workspace import ClusterError

NODE_NAME = "ingestion-node"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")


def _ip(*args: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc


@dataclasses.dataclass(frozen=True)
class NodeNetwork:
    """The node's namespace and its veth pair; ``index`` makes every name and subnet unique."""

    index: int

    @property
    def netns(self) -> str:
        return f"ingestion-n{self.index}"

    @property
    def host_if(self) -> str:
        return f"ingn{self.index}"

    @property
    def host_ip(self) -> str:
        """The host's end: where pods reach the API server, S3 and the Pushgateway."""
        return f"10.213.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.213.{self.index}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.214.{self.index}.0/24"

    @classmethod
    def allocate(cls) -> "NodeNetwork":
        """The lowest index whose namespace, link and subnets nobody on this host uses."""
        netns = set(_ip("netns", "list").stdout.split())
        links = _ip("-br", "link").stdout
        addrs = _ip("-br", "addr").stdout
        for i in range(1, 251):
            n = cls(i)
            if n.netns not in netns and not re.search(rf"^{n.host_if}[@ ]", links, re.M) \
                    and f"10.213.{i}." not in addrs and f"10.214.{i}." not in addrs:
                return n
        raise ClusterError("no free node index (1-250): remove stale ingestion-n* network namespaces")

    def exists(self) -> bool:
        return self.netns in _ip("netns", "list").stdout.split()

    def create(self) -> None:
        _ip("netns", "add", self.netns)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("link", "set", "lo", "up", netns=self.netns)
            _ip("addr", "add", f"{self.node_ip}/24", "dev", "eth0", netns=self.netns)
            _ip("link", "set", "eth0", "up", netns=self.netns)
            _ip("route", "add", "default", "via", self.host_ip, netns=self.netns)
            # The API server (on the host) calls the operator's admission webhook at a pod's own
            # address (--enable-aggregator-routing): the pods' /24 is reached through the node.
            _ip("route", "add", self.pod_cidr, "via", self.node_ip, "dev", self.host_if)
            # Forwarding inside the node only (pod <-> node); the host's setting is untouched.
            subprocess.run(["ip", "netns", "exec", self.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> None:
        _ip("netns", "del", self.netns, check=False)  # takes the node's veth end, and so the pair, with it
        _ip("link", "del", self.host_if, check=False)


class Node:
    """The node's processes and files under ``<state>/node``; started and removed by the plane."""

    def __init__(self, state_dir: Path, network: NodeNetwork):
        self.dir = state_dir / "node"
        self.network = network

    # -- layout -----------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """containerd's sockets: a short path, as a unix socket's path has at most 107 bytes."""
        return Path(f"/run/ingestion-n{self.network.index}")

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/ingestion-{self.network.index}"

    def kubelet_config(self) -> Path:
        return self.dir / "kubelet-config.json"

    # -- configuration ----------------------------------------------------------------------
    def write_config(self, ca: Path, kubelet_port: int = 10250) -> None:
        for d in ("containerd/root", "containerd/state", "cni/net.d", "cni/ipam", "kubelet"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        c = self.dir / "containerd"
        (c / "config.toml").write_text(f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # this host lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.dir / 'cni' / 'net.d'}"
""")
        (self.dir / "cni" / "net.d" / "10-ingestion.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "ingestion", "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.network.pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}],
                          "dataDir": str(self.dir / "cni" / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ]}, indent=2))
        (self.dir / "resolv.conf").write_text("")  # no cluster DNS: pods reach servers by address
        self.kubelet_config().write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this host has a cgroup v1 hierarchy
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": self.network.node_ip, "port": kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True}, "x509": {"clientCAFile": str(ca)}},
            "authorization": {"mode": "Webhook"},
            "podCIDR": self.network.pod_cidr, "resolvConf": str(self.dir / "resolv.conf"),
            "failSwapOn": False, "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE for a negative score
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "maxPods": 60,
            "fileCheckFrequency": "5s", "syncFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
        }, indent=2))
        (self.dir / "kube-proxy-config.json").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "mode": "iptables", "hostnameOverride": NODE_NAME, "bindAddress": self.network.node_ip,
            "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256",
            "clusterCIDR": self.network.pod_cidr,
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }, indent=2))

    def containerd_argv(self) -> list[str]:
        return ["/usr/bin/containerd", "--config", str(self.dir / "containerd" / "config.toml"), "--log-level", "warn"]

    def kubelet_argv(self, bin_dir: Path) -> list[str]:
        return [str(bin_dir / "kubelet"), f"--config={self.kubelet_config()}", f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
                f"--hostname-override={NODE_NAME}", f"--node-ip={self.network.node_ip}", f"--root-dir={self.dir / 'kubelet'}",
                "--v=1"]

    def kube_proxy_argv(self, bin_dir: Path) -> list[str]:
        return [str(bin_dir / "kube-proxy"), f"--config={self.dir / 'kube-proxy-config.json'}", "--v=1"]

    def create_cgroups(self) -> None:
        """The kubelet's cgroup root in every hierarchy (the kubelet requires it to exist)."""
        for hierarchy in CGROUP_ROOT.iterdir():
            if not (hierarchy / "cgroup.procs").exists():
                continue
            d = hierarchy / self.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):  # a new v1 cpuset starts empty: inherit the parent's
                if (d / f).exists() and not (d / f).read_text().strip():
                    (d / f).write_text((hierarchy / f).read_text())

    # -- images -------------------------------------------------------------------------------
    def import_image(self, archive: Path) -> None:
        """Load an image archive (docker-archive, as ``buildah push`` writes it) into the node."""
        proc = subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", "images", "import", str(archive)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterError(f"ctr images import {archive} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    # -- removal ------------------------------------------------------------------------------
    def remove(self) -> list[str]:
        """Everything the node made, after its own processes (containerd, kubelet, kube-proxy) stopped."""
        removed = []
        killed = self._kill_cgroup_processes() + self._kill_shims()
        if killed:
            removed.append(f"{killed} container process(es)")
        n = self._unmount()
        if n:
            removed.append(f"{n} mount(s)")
        n = self._remove_cgroups()
        if n:
            removed.append(f"{n} cgroup(s)")
        if self.network.exists():
            removed.append(f"network namespace {self.network.netns}")
        self.network.destroy()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return removed

    def _cgroup_dirs(self) -> list[Path]:
        """This node's cgroups in every v1 controller (and the unified tree), deepest first."""
        out = []
        for hierarchy in CGROUP_ROOT.iterdir():
            base = hierarchy / self.cgroup_root.lstrip("/")
            if base.is_dir():
                out += sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
                out.append(base)
        return out

    def _kill_cgroup_processes(self) -> int:
        pids = set()
        for d in self._cgroup_dirs():
            try:
                pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except OSError:
                continue
        for pid in pids:
            _kill(pid)
        return len(pids)

    def _kill_shims(self) -> int:
        """containerd-shim processes serving this node's containerd (they outlive it)."""
        marker = str(self.socket).encode()
        count = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                _kill(int(entry.name))
                count += 1
        return count

    def _unmount(self) -> int:
        prefix = str(self.dir) + "/"
        count = 0
        for _ in range(5):  # a mount can hide another one below it
            points = [m for m in _mount_points() if m.startswith(prefix)]
            if not points:
                break
            for m in sorted(points, key=len, reverse=True):
                if subprocess.run(["umount", m], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", m], capture_output=True)
                count += 1
        return count

    def _remove_cgroups(self) -> int:
        count = 0
        deadline = time.monotonic() + 10
        for d in self._cgroup_dirs():
            while True:
                try:
                    d.rmdir()
                    count += 1
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy: processes are exiting
                    if time.monotonic() > deadline:
                        raise ClusterError(f"cgroup {d} is still in use after 10 s") from None
                    time.sleep(0.1)
        return count


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.append(line.split()[4].replace("\\040", " "))
    return points


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def local_storage(path: Path, claim: str, namespace: str, size: str = "1Gi") -> list[dict]:
    """A StorageClass for volumes on the node's disk, one local PersistentVolume of it at
    ``path`` (created here), and the claim ``namespace/claim`` that binds to it when its
    first pod is scheduled (WaitForFirstConsumer), as a cluster's default class would.

    The volume is reserved for its claim (``claimRef``) and the claim names its volume: with
    several such volumes of one class on a node (one test's namespaces left Available
    volumes behind), a claim would otherwise bind to whichever fits, and write elsewhere."""
    path.mkdir(parents=True, exist_ok=True)
    return [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "node-local"},
         "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"},
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"node-local-{claim}"},
         "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": "node-local",
                  "persistentVolumeReclaimPolicy": "Retain", "local": {"path": str(path)},
                  "claimRef": {"namespace": namespace, "name": claim},
                  "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                      {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "node-local", "volumeName": f"node-local-{claim}",
                  "resources": {"requests": {"storage": size}}}},
    ]


def host_footprint(state_dir: Path) -> dict:
    """What a node (or a sandbox) could leave on the host, seen from outside: processes naming
    the state dir or a node's shim socket, mounts under it, cgroups, /run entries, network
    namespaces, links and the routes through them. Tests compare it before ``up`` and after ``down``."""
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(state_dir).encode() in cmdline or b"/run/ingestion-n" in cmdline:  # the node's shims name its socket
                procs.append(int(entry.name))
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if str(state_dir) in line.split()[4]]
    cgroups = sorted(str(p) for p in CGROUP_ROOT.glob("*/ingestion-*"))
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout.split("\n")
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout.split("\n")
    return {"processes": procs, "mounts": mounts, "cgroups": cgroups, "run": sorted(map(str, Path("/run").glob("ingestion-n*"))),
            "netns": sorted(n for n in netns if n.startswith("ingestion-n")),
            "links": sorted(line.split()[0].split("@")[0] for line in links if line.startswith("ingn")),
            "routes": sorted(line.strip() for line in routes if " dev ingn" in line)}
