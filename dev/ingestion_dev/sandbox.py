"""The sandbox: everything a user needs to try the product on a machine with no cluster.

Today: the control plane and the pod runner in exec mode (pods of Jobs run as local
processes). Each part is a process recorded under the state dir and stopped by ``down``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .cluster import ClusterError, ControlPlane


def pod_runner_argv(plane: ControlPlane, mode: str) -> list[str]:
    venv_bin = str(Path(sys.executable).parent)
    return [
        sys.executable, "-m", "ingestion_dev.cli", "pod-runner",
        f"--kubeconfig={plane.kubeconfig}", f"--mode={mode}",
        f"--state-dir={plane.state_dir / 'pods'}", f"--extra-path={venv_bin}",
    ]


def up(state_dir: Path) -> int:
    plane = ControlPlane(state_dir)
    plane.up()
    plane.start_process("pod-runner", pod_runner_argv(plane, "exec"))
    time.sleep(1.0)
    if "pod-runner" not in plane.running():
        raise ClusterError(f"the pod runner exited at once; see {plane.logs / 'pod-runner.log'}")
    print(f"""
sandbox is up (state in {plane.state_dir})
  export KUBECONFIG={plane.kubeconfig}
  kubectl get nodes,pods -A          # pods of Jobs run as local processes; logs in {plane.state_dir / 'pods' / 'logs'}
  dev/sandbox status                 # what runs, with PIDs
  dev/sandbox down                   # stops exactly what 'up' started
""")
    return 0


def main(action: str, state_dir: Path) -> int:
    plane = ControlPlane(state_dir)
    if action == "up":
        return up(state_dir)
    if action == "down":
        if not plane.down():
            print(f"nothing running from {plane.state_dir}")
        return 0
    st = plane.status()
    print(json.dumps(st, indent=2))
    return 0 if st["ready"] else 3
