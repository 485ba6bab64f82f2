"""Fault campaign, the long version of tests/cluster/test_faults.py.

    .venv/bin/python bench/bench_faults.py                 # 100 SIGKILLs, then API server and etcd outages
    .venv/bin/python bench/bench_faults.py --kills 5       # a quick look

On a control plane of its own (started here on free loopback ports): schedules are
created, updated and deleted at random while the operator is SIGKILLed at random points;
after every restart the operator must converge (every schedule has its own CronJob in sync
and a current, Ready status; no CronJob outlives its schedule; no schedule ever owns two
CronJobs). Then kube-apiserver and etcd are each stopped for --outage seconds under the
running operator. Prints a table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402

from ingestion_dev.campaign import not_converged, outage, schedule_body, sigkill_campaign  # noqa: E402
from ingestion_dev.cluster import ControlPlane, Ports  # noqa: E402
from ingestion_dev.operatorproc import OperatorProcess, wait_for  # noqa: E402

CRD = ROOT / "deploy" / "crds" / "ingestionschedules.ingestion.dev.yaml"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--pool", type=int, default=8, help="schedule names the driver creates, updates and deletes")
    p.add_argument("--outage", type=float, default=5.0, help="seconds each of kube-apiserver and etcd stays down")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plane = ControlPlane(tmp / "plane", ports=Ports.free())
        try:
            plane.up(timeout=90, log=lambda m: print(m, file=sys.stderr))
            env = {"KUBECONFIG": str(plane.kubeconfig), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
            subprocess.run(["kubectl", "apply", "-f", str(CRD)], env=env, check=True, capture_output=True)
            subprocess.run(["kubectl", "wait", "--for=condition=Established", "--timeout=120s", "crd/ingestionschedules.ingestion.dev"],
                           env=env, check=True, capture_output=True)
            api = config.new_client_from_config(config_file=str(plane.kubeconfig))
            client.CoreV1Api(api).create_namespace({"metadata": {"name": "campaign"}})
            t0 = time.monotonic()
            r = sigkill_campaign(api, plane.kubeconfig, "campaign", tmp, kills=a.kills, seed=a.seed, pool=a.pool,
                                 log=lambda m: print(m, file=sys.stderr))
            c = r["converge_s"]
            rows.append(("SIGKILL at a random point, restart", f"{a.kills} kills, {sum(r['ops'].values())} changes "
                         f"({r['ops']}) in {time.monotonic() - t0:.0f} s",
                         f"converged after every restart: median {statistics.median(c):.1f} s, max {max(c):.1f} s; "
                         f"most CronJobs one schedule owned: {r['most_cronjobs_per_schedule']} ({r['samples']} samples); "
                         f"writes on a quiet restart: {r['writes_after_quiet_restart']:.0f}"))
            body = schedule_body("s0", random.Random(a.seed))
            body["spec"].update(schedule="0 2 * * *", enabled=True)
            custom = client.CustomObjectsApi(api)
            custom.create_namespaced_custom_object("ingestion.dev", "v1alpha1", "default", "ingestionschedules", body)
            op = OperatorProcess(plane.kubeconfig, tmp, namespaces=["default"], name="outage",
                                 extra=["--lease-duration=60", "--renew-deadline=40", "--retry-period=2"])
            op.start()
            try:
                wait_for(lambda: not_converged(api, "default") is None, 60, "the first convergence")
                for component in ("kube-apiserver", "etcd"):
                    o = outage(plane, component, a.outage, op, api, "default", "s0")
                    rows.append((f"{component} stopped and started", f"down {o['down_s']:.1f} s",
                                 f"/healthz failed {o['healthz_failed_probes']} probes, ok {o['healthz_ok_after_s']:.1f} s after "
                                 f"the restart; next change applied in {o['change_applied_s']:.1f} s; "
                                 f"operator restarted: {'no' if o['same_process'] else 'YES'}"))
            finally:
                op.stop()
        finally:
            plane.down(log=lambda m: None)
    print("| fault | campaign | result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
