"""ingestion-dev: bring up and tear down the local control plane and sandbox."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cluster import REPO_ROOT, ClusterError, ControlPlane, Ports

DEFAULT_STATE = REPO_ROOT / ".sandbox"


def _plane(args) -> ControlPlane:
    ports = Ports.free() if getattr(args, "free_ports", False) else None
    return ControlPlane(Path(args.state_dir), ports=ports)


def cmd_cluster(args) -> int:
    plane = _plane(args)
    if args.action == "up":
        plane.up()
        print(f"kubeconfig: {plane.kubeconfig}")
        print(f"  export KUBECONFIG={plane.kubeconfig}")
        print("  kubectl get namespaces")
        print(f"logs: {plane.logs}/   stop with: dev/cluster down")
    elif args.action == "down":
        if not plane.down():
            print(f"nothing running from {plane.state_dir}")
    else:
        st = plane.status()
        print(json.dumps(st, indent=2))
        return 0 if st["ready"] else 3
    return 0


def cmd_pod_runner(args) -> int:
    from . import podrunner

    return podrunner.main(args.kubeconfig, args.mode, args.state_dir, args.extra_path)


def cmd_sandbox(args) -> int:
    from . import sandbox

    return sandbox.main(args.action, Path(args.state_dir))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ingestion-dev", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cluster", help="etcd + kube-apiserver + kube-controller-manager on 127.0.0.1")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--state-dir", default=str(DEFAULT_STATE), help="certs, data, logs, PID files (default: %(default)s)")
    c.add_argument("--free-ports", action="store_true", help="pick free ports instead of the fixed sandbox ports")
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
    s.set_defaults(func=cmd_sandbox)

    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
