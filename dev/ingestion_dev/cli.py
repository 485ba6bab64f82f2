"""ingestion-dev: the local control plane, the sandbox and the other dev commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cluster import ControlPlane, Ports
from .workspace import REPO_ROOT, ClusterError

DEFAULT_STATE = REPO_ROOT / ".sandbox"


def cmd_cluster(args) -> int:
    plane = ControlPlane(Path(args.state_dir), ports=Ports.free() if args.free_ports else None,
                         node=True if args.action == "up" and args.node else None)
    if args.action != "up":
        return _down_or_status(plane, args.action)
    plane.up()
    print(f"kubeconfig: {plane.kubeconfig}")
    print(f"  export KUBECONFIG={plane.kubeconfig}")
    print("  kubectl get namespaces")
    print(f"logs: {plane.logs}/   stop with: dev/cluster down")
    return 0


def cmd_sandbox(args) -> int:
    if args.action != "up":
        return _down_or_status(ControlPlane(Path(args.state_dir)), args.action)
    from . import sandbox

    return sandbox.up(Path(args.state_dir), pod_runner=args.pod_runner)


def _down_or_status(plane: ControlPlane, action: str) -> int:
    if action == "down":
        if not plane.down():
            print(f"nothing running from {plane.state_dir}")
        return 0
    st = plane.status()
    print(json.dumps(st, indent=2))
    return 0 if st["ready"] else 3


def cmd_pod_runner(args) -> int:
    from . import podrunner

    return podrunner.main(args.kubeconfig, args.mode, args.state_dir, args.extra_path)


def cmd_late_arrivals(args) -> int:
    from . import sandbox

    sandbox.late_arrivals(args.endpoint)
    return 0


def cmd_crd_reference(args) -> int:
    from . import crdref

    if args.write:
        for page in crdref.write():
            print(f"refreshed {page.relative_to(crdref.REPO_ROOT)}")
    else:
        print(crdref.table())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ingestion-dev", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cluster", help="etcd + kube-apiserver + kube-controller-manager on 127.0.0.1")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--state-dir", default=str(DEFAULT_STATE), help="certs, data, logs, PID files (default: %(default)s)")
    c.add_argument("--free-ports", action="store_true", help="pick free ports instead of the fixed sandbox ports")
    c.add_argument("--node", action="store_true",
                   help="with 'up': also kube-scheduler and a real node (containerd, kubelet, kube-proxy) in a network namespace")
    c.set_defaults(func=cmd_cluster)

    r = sub.add_parser("pod-runner", help="complete or execute pods of Jobs (there is no kubelet)")
    r.add_argument("--kubeconfig", required=True)
    r.add_argument("--mode", choices=["complete", "exec", "hold", "fail"], default="exec")
    r.add_argument("--state-dir", required=True, help="where exec mode keeps volumes and pod logs")
    r.add_argument("--extra-path", help="prepended to PATH for executed commands")
    r.set_defaults(func=cmd_pod_runner)

    s = sub.add_parser("sandbox", help="the control plane plus everything a schedule needs, with sample data")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument("--state-dir", default=str(DEFAULT_STATE))
    s.add_argument("--pod-runner", action="store_true",
                   help="with 'up': run pods as local processes instead of on a real node (faster; no containers)")
    s.set_defaults(func=cmd_sandbox)

    la = sub.add_parser("late-arrivals", help="(started by 'sandbox up') publish the sandbox's late objects after ~90 s")
    la.add_argument("endpoint", help="the sandbox's S3 endpoint")
    la.set_defaults(func=cmd_late_arrivals)

    d = sub.add_parser("crd-reference", help="print the IngestionSchedule reference table, generated from the CRD")
    d.add_argument("--write", action="store_true",
                   help="refresh the reference pages in docs/reference/ (IngestionSchedule, IngestionBackfill) between their markers")
    d.set_defaults(func=cmd_crd_reference)

    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
