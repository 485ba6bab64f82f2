"""The sandbox: everything a user needs to try the product on a machine with no cluster.

The control plane, the pod runner in exec mode (pods of Jobs run as local processes),
the IngestionSchedule CRD and the operator. Each part is a process recorded under the
state dir and stopped by ``down``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .cluster import REPO_ROOT, ClusterError, ControlPlane, port_in_use

OPERATOR_METRICS_PORT = 38080
OPERATOR_HEALTH_PORT = 38081
CRDS = REPO_ROOT / "deploy" / "crds"


def pod_runner_argv(plane: ControlPlane, mode: str) -> list[str]:
    venv_bin = str(Path(sys.executable).parent)
    return [
        sys.executable, "-m", "ingestion_dev.cli", "pod-runner",
        f"--kubeconfig={plane.kubeconfig}", f"--mode={mode}",
        f"--state-dir={plane.state_dir / 'pods'}", f"--extra-path={venv_bin}",
    ]


def operator_argv(plane: ControlPlane) -> list[str]:
    return [
        # as `python -m`, so /proc/PID/cmdline is exactly this argv (a console script's
        # shebang would prepend the interpreter and defeat the PID-file ownership check)
        sys.executable, "-m", "ingestion_operator.cli", "run", f"--kubeconfig={plane.kubeconfig}",
        "--bind=127.0.0.1", f"--metrics-port={OPERATOR_METRICS_PORT}", f"--health-port={OPERATOR_HEALTH_PORT}",
        "--job-image=ingestion-job:sandbox",
    ]


def kubectl(plane: ControlPlane, *args: str) -> None:
    exe = Path(sys.executable).parent / "kubectl"
    proc = subprocess.run([str(exe), f"--kubeconfig={plane.kubeconfig}", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")


def up(state_dir: Path) -> int:
    plane = ControlPlane(state_dir)
    busy = [p for p in (OPERATOR_METRICS_PORT, OPERATOR_HEALTH_PORT) if port_in_use(p)]
    if busy and not plane.running():
        raise ClusterError(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 (the operator's) are taken by another process")
    plane.up()
    try:
        plane.start_process("pod-runner", pod_runner_argv(plane, "exec"))
        kubectl(plane, "apply", "-f", str(CRDS))
        kubectl(plane, "wait", "--for=condition=Established", "crd/ingestionschedules.ingestion.dev", "--timeout=30s")
        plane.start_process("operator", operator_argv(plane))
        time.sleep(2.0)
        for name, log in (("pod-runner", "pod-runner.log"), ("operator", "operator.log")):
            if name not in plane.running():
                raise ClusterError(f"the {name} exited at once; see {plane.logs / log}")
    except BaseException:
        plane.down(log=lambda *_: None)
        raise
    print(f"""
sandbox is up (state in {plane.state_dir})
  export KUBECONFIG={plane.kubeconfig}
  kubectl apply -f examples/                     # IngestionSchedules; the operator makes their CronJobs
  kubectl get isched,cronjobs,jobs               # next runs, last success, Ready
  kubectl create job manual-1 --from=cronjob/binance-um-klines-daily
  curl -s 127.0.0.1:{OPERATOR_METRICS_PORT}/metrics | grep ingestion_operator_
  logs: {plane.logs}/ (operator.log, pod-runner.log); pod output: {plane.state_dir / 'pods' / 'logs'}/
  dev/sandbox status | down                      # down stops exactly what 'up' started
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
