"""The control-plane command refuses clearly and stops only what it started."""

import socket
import subprocess
import sys

import pytest

from ingestion_dev.cluster import ControlPlane, Ports
from ingestion_dev.workspace import ClusterError, free_ports


def test_refuses_when_a_port_is_taken(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        a, b, c = free_ports(3)
        plane = ControlPlane(tmp_path, ports=Ports(a, b, taken, c), bin_dir=tmp_path)
        with pytest.raises(ClusterError, match=f"port\\(s\\) {taken} .* taken"):
            plane.up()


def test_a_node_refuses_a_state_dir_too_long_for_the_kubelets_sockets(tmp_path_factory):
    """Said before anything starts, not as "bind: invalid argument" deep in the kubelet's log."""
    tmp_path = tmp_path_factory.mktemp("g")  # short, whatever the worker's directory
    state = tmp_path / ("d" * (107 - len(f"{tmp_path.resolve()}/") - len("/node/kubelet/pod-resources/9999999999")))
    deeper = state.parent / (state.name + "xyz")
    with pytest.raises(ClusterError, match="is 3 bytes too long for a node: the kubelet's sockets under it would have "
                                           "110-byte paths, over a unix socket's 107"):
        ControlPlane(deeper, ports=Ports.free(), bin_dir=tmp_path, node=True).up()
    # one that just fits gets past this check (to the next: no binaries here)
    with pytest.raises(ClusterError, match="kube-apiserver|etcd"):
        ControlPlane(state, ports=Ports.free(), bin_dir=tmp_path, node=True).up()


def test_refuses_when_a_binary_is_missing(tmp_path):
    plane = ControlPlane(tmp_path / "state", ports=Ports.free(), bin_dir=tmp_path)
    with pytest.raises(ClusterError, match="kube-apiserver|etcd"):
        plane.up()


@pytest.mark.cluster
def test_down_stops_only_processes_it_started(tmp_path):
    plane = ControlPlane(tmp_path, ports=Ports.free())
    plane.start_process("sleeper", ["/bin/sleep", "300"])
    assert set(plane.running()) == {"sleeper"}
    # A stranger: same binary, different command line, its PID written into a PID file.
    stranger = subprocess.Popen(["/bin/sleep", "301"])
    try:
        (plane.run_dir / "stale.pid").write_text(
            f'{{"pid": {stranger.pid}, "exe": "/bin/sleep", "argv": ["/bin/sleep", "300"], "started": 0}}')
        assert plane.down(log=lambda m: None) == ["sleeper"]
        assert stranger.poll() is None, "down() signalled a process it did not start"
        assert plane.running() == {}
    finally:
        stranger.kill()
        stranger.wait()


def test_no_importable_module_named_operator_shadows_stdlib():
    out = subprocess.run([sys.executable, "-c", "import operator; print(operator.__file__)"],
                         capture_output=True, text=True, cwd="/", check=True)
    assert "/lib/python3" in out.stdout and "site-packages" not in out.stdout
