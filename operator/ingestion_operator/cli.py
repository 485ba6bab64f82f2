"""ingestion-operator command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _load_client(kubeconfig: str | None):
    from kubernetes import client, config

    if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return config.new_client_from_config(config_file=kubeconfig)
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


def cmd_run(args) -> int:
    import kopf
    from prometheus_client import disable_created_metrics, start_http_server

    from . import handlers  # noqa: F401  (registers the kopf handlers)
    from .reconcile import Reconciler
    from .render import RenderSettings

    kopf.configure(log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
                   verbose=args.verbose, log_refkey="object")
    api = _load_client(args.kubeconfig)
    settings = RenderSettings(job_image=args.job_image, image_pull_policy=args.image_pull_policy,
                              job_service_account=args.job_service_account or None,
                              default_pushgateway_url=args.default_pushgateway_url or None)
    memo = kopf.Memo(reconciler=Reconciler(api, settings))
    disable_created_metrics()
    try:
        start_http_server(args.metrics_port, addr=args.bind)
    except OSError as e:
        print(f"error: cannot serve metrics on {args.bind}:{args.metrics_port}: {e.strerror}", file=sys.stderr)
        return 2
    namespaces = args.namespace or [n for n in os.environ.get("WATCH_NAMESPACE", "").split(",") if n]
    logging.getLogger("ingestion_operator").info(
        "event=starting scope=%s metrics=%s:%s health=%s:%s job_image=%s",
        ",".join(namespaces) or "cluster", args.bind, args.metrics_port, args.bind, args.health_port, args.job_image)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{args.bind}:{args.health_port}/healthz",
        memo=memo,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from .names import DEFAULT_JOB_IMAGE

    p = argparse.ArgumentParser(prog="ingestion-operator", description="Reconcile IngestionSchedule resources into CronJobs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the operator (in a pod, or locally against KUBECONFIG)")
    r.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable); default: WATCH_NAMESPACE or cluster-wide")
    r.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster config, else KUBECONFIG/~/.kube/config")
    r.add_argument("--job-image", default=os.environ.get("INGESTION_JOB_IMAGE", DEFAULT_JOB_IMAGE))
    r.add_argument("--image-pull-policy", default=os.environ.get("INGESTION_JOB_IMAGE_PULL_POLICY", "IfNotPresent"))
    r.add_argument("--job-service-account", default=os.environ.get("INGESTION_JOB_SERVICE_ACCOUNT", ""))
    r.add_argument("--default-pushgateway-url", default=os.environ.get("INGESTION_DEFAULT_PUSHGATEWAY_URL", ""),
                   help="Pushgateway for schedules whose spec.metrics.pushgatewayUrl is empty")
    r.add_argument("--bind", default=os.environ.get("INGESTION_BIND_ADDRESS", "0.0.0.0"))
    r.add_argument("--metrics-port", type=int, default=int(os.environ.get("INGESTION_METRICS_PORT", "8080")))
    r.add_argument("--health-port", type=int, default=int(os.environ.get("INGESTION_HEALTH_PORT", "8081")))
    r.add_argument("--log-format", choices=["json", "plain"], default=os.environ.get("INGESTION_LOG_FORMAT", "json"))
    r.add_argument("--verbose", action="store_true")
    r.set_defaults(func=cmd_run)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
