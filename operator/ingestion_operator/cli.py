"""ingestion-operator command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def _load_client(kubeconfig: str | None):
    from kubernetes import client, config

    if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return config.new_client_from_config(config_file=kubeconfig)
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


def _lease_namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def lease_name(namespaces: list[str]) -> str:
    """One Lease per scope: operators that watch different namespaces do not compete."""
    if not namespaces:
        return "ingestion-operator"
    import hashlib

    return "ingestion-operator-" + hashlib.sha256(",".join(sorted(set(namespaces))).encode()).hexdigest()[:10]


def _tune_gc() -> None:
    """Python's cyclic garbage collector, set for a process that holds a large, long-lived
    heap and allocates in bursts. What the imports built (kopf, the Kubernetes client's models:
    most of the heap at start) is frozen out of every collection; a young collection runs after
    10,000 net allocations, not 700, and a full one after 100 of the middle ones. Measured with
    1,000 new schedules: with the defaults, the collector took 10-15 % of the operator's CPU
    (perf: 7 full collections of the whole heap and about 800 smaller ones), and the operator
    spent 0.65-0.68 s of CPU per second of the API server's; with this, 0.59-0.62 (two runs
    each, alternated; with no collector at all, 0.58-0.60). Cyclic garbage (each watch event's
    body, which kopf wraps in views that point back at it) is still collected, in fewer, larger
    rounds: RSS with 1,000 schedules 134-136 MB, against 126-132 MB.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def cmd_run(args) -> int:
    import socket
    import uuid

    from prometheus_client import disable_created_metrics, start_http_server

    from . import metrics
    from .health import Health
    from .leader import LeaderElector, Timing

    from .render import RenderSettings, parse_job_resources

    log = logging.getLogger("ingestion_operator")
    try:
        job_resources = parse_job_resources(args.job_resources)
    except ValueError as e:
        print(f"error: --job-resources: {e}", file=sys.stderr)
        return 2
    api = _load_client(args.kubeconfig)
    disable_created_metrics()
    health = Health(api)
    try:
        start_http_server(args.metrics_port, addr=args.bind)
        health.serve(args.bind, args.health_port)
    except OSError as e:
        print(f"error: cannot serve metrics and health on {args.bind}:{args.metrics_port},{args.health_port}: {e.strerror}",
              file=sys.stderr)
        return 2
    if args.webhook_cert_dir:  # every replica answers admission reviews, whatever its role
        from .webhook import WebhookServer

        try:
            WebhookServer(args.webhook_cert_dir).serve(args.bind, args.webhook_port)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            print(f"error: cannot serve the admission webhook on {args.bind}:{args.webhook_port} with the certificate in "
                  f"{args.webhook_cert_dir}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
            return 2
    namespaces = args.namespace or [n for n in os.environ.get("WATCH_NAMESPACE", "").split(",") if n]

    import kopf

    kopf.configure(log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
                   verbose=args.verbose, log_refkey="object")
    if not args.verbose:
        # kopf says "Handler 'on_schedule' succeeded." at info for every watch event of every
        # resource (a fifth of the operator's log lines and CPU for logging on a new fleet); our
        # own event= lines say what each reconcile did. Its warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from ingestion_contract.cron import tzdata_version

    tz_version, tz_source = tzdata_version()
    metrics.TZDATA.info({"version": tz_version, "source": tz_source})
    log.info("event=starting scope=%s metrics=%s:%s health=%s:%s webhook=%s job_image=%s job_resources=%s leader_elect=%s "
             "tzdata=%s tzdata_source=%s", ",".join(namespaces) or "cluster", args.bind, args.metrics_port, args.bind,
             args.health_port, f"{args.bind}:{args.webhook_port}" if args.webhook_cert_dir else "off",
             args.job_image, json.dumps(job_resources, separators=(",", ":")), str(args.leader_elect).lower(), tz_version,
             tz_source.replace(" ", "-"))
    elector = None
    if args.leader_elect:
        try:
            timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        identity = args.leader_election_identity or f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        elector = LeaderElector(api, _lease_namespace(args.leader_election_namespace), args.leader_election_id or lease_name(namespaces),
                                identity, timing, on_change=lambda leading: metrics.LEADER.set(1 if leading else 0))
    else:
        metrics.LEADER.set(1)

    from . import handlers  # noqa: F401  (registers the kopf handlers)
    from .backfill import BackfillReconciler
    from .reconcile import Reconciler
    from .upstream import UpstreamReconciler

    _tune_gc()

    settings = RenderSettings(job_image=args.job_image, image_pull_policy=args.image_pull_policy,
                              job_service_account=args.job_service_account or None,
                              default_pushgateway_url=args.default_pushgateway_url or None,
                              job_resources=job_resources)
    # Each term as leader is one kopf run with a fresh reconciler (no cache outlives a term). A
    # leader that cannot renew its Lease (the API server or etcd is away) stops leading within
    # the renew deadline, as client-go's do, but steps down to standby in this process rather
    # than exiting: an outage restarts no container, and the replica leads again when it can.
    while True:
        term = Term()
        if elector is not None and not _lead(elector, health, term, log):
            return 0
        health.role = "leader"
        reconciler = Reconciler(api, settings, pool_size=args.workers)
        if elector is not None:
            reconciler.kube.fence = lambda: elector.leading
        memo = kopf.Memo(reconciler=reconciler, backfills=BackfillReconciler(reconciler), upstreams=UpstreamReconciler(reconciler),
                         health=health, workers=args.workers, term=term, namespaces=namespaces)
        try:
            kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, memo=memo, stop_flag=term.flag)
        finally:
            health.loop = None
        if elector is None or not term.lost:  # a signal: stop, and let a standby lead at once
            if elector is not None and elector.release():
                log.info("event=lease_released lease=%s/%s", elector.namespace, elector.name)
            return 0
        log.info("event=stepped_down lease=%s/%s identity=%s", elector.namespace, elector.name, elector.identity)


class Term:
    """One term as leader: ``flag`` stops its kopf run, set when the Lease is ``lost`` or (by
    the cleanup handler) when kopf stops for a signal, so that kopf's thread waiting on it ends
    and the run can return."""

    def __init__(self):
        import threading

        self.flag = threading.Event()
        self.lost = False

    def end(self, lost: bool = False) -> None:
        self.lost = self.lost or lost
        self.flag.set()


def _lead(elector, health, term: Term, log) -> bool:
    """Stand by until ``elector`` holds its Lease (True), or a signal says stop (False); then
    renew it, ending ``term`` when a renewal has not succeeded for the renew deadline."""
    import signal
    import threading

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    health.role = "standby"
    log.info("event=standby lease=%s/%s identity=%s", elector.namespace, elector.name, elector.identity)
    t0 = time.monotonic()
    try:
        if not elector.acquire(stop):
            log.info("event=stopped role=standby")
            return False
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    log.info("event=leading lease=%s/%s identity=%s waited_seconds=%.1f", elector.namespace, elector.name, elector.identity,
             time.monotonic() - t0)

    def on_lost():
        log.error("event=leadership_lost lease=%s/%s identity=%s: no renewal for %gs; stepping down to standby",
                  elector.namespace, elector.name, elector.identity, elector.timing.renew_deadline)
        term.end(lost=True)

    elector.start_renewing(on_lost=on_lost)
    return True


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
    r.add_argument("--job-resources", default=os.environ.get("INGESTION_JOB_RESOURCES", ""),
                   help="requests and limits of every job container where a schedule's spec.resources is silent, per "
                        'resource: JSON, e.g. \'{"requests": {"cpu": "250m"}, "limits": {"memory": "2Gi"}}\' '
                        "(the chart's jobResources); its ephemeral-storage also sizes the job's /tmp")
    r.add_argument("--default-pushgateway-url", default=os.environ.get("INGESTION_DEFAULT_PUSHGATEWAY_URL", ""),
                   help="Pushgateway for schedules whose spec.metrics.pushgatewayUrl is empty")
    r.add_argument("--bind", default=os.environ.get("INGESTION_BIND_ADDRESS", "0.0.0.0"))
    r.add_argument("--metrics-port", type=int, default=int(os.environ.get("INGESTION_METRICS_PORT", "8080")))
    r.add_argument("--health-port", type=int, default=int(os.environ.get("INGESTION_HEALTH_PORT", "8081")))
    r.add_argument("--webhook-port", type=int, default=int(os.environ.get("INGESTION_WEBHOOK_PORT", "9443")),
                   help="port of the validating admission webhook (HTTPS, POST /validate), served by every replica")
    r.add_argument("--webhook-cert-dir", default=os.environ.get("INGESTION_WEBHOOK_CERT_DIR", ""),
                   help="folder holding the webhook's tls.crt and tls.key (reloaded when they change); "
                        "default: no webhook")
    r.add_argument("--log-format", choices=["json", "plain"], default=os.environ.get("INGESTION_LOG_FORMAT", "json"))
    r.add_argument("--workers", type=int, default=int(os.environ.get("INGESTION_WORKERS", "32")),
                   help="schedules reconciled at once (default 32)")
    r.add_argument("--verbose", action="store_true")
    le = r.add_argument_group("leader election (one replica reconciles; the others stand by)")
    le.add_argument("--leader-elect", action=argparse.BooleanOptionalAction,
                    default=os.environ.get("INGESTION_LEADER_ELECT", "true").lower() not in ("0", "false", "no"),
                    help="elect a leader through a coordination.k8s.io Lease (default: on)")
    le.add_argument("--leader-election-namespace", default=os.environ.get("INGESTION_LEADER_ELECTION_NAMESPACE", ""),
                    help="namespace of the Lease; default: POD_NAMESPACE, else the pod's own namespace, else default")
    le.add_argument("--leader-election-id", default=os.environ.get("INGESTION_LEADER_ELECTION_ID", ""),
                    help="name of the Lease; default: ingestion-operator (cluster-wide) or one per watched scope")
    le.add_argument("--leader-election-identity", default="",
                    help="this candidate's name in the Lease; default: POD_NAME (or the host name) plus a random suffix, "
                         "so a restarted process waits for its old term to expire")
    le.add_argument("--lease-duration", type=float, default=15.0, help="seconds a standby waits before taking an unrenewed Lease")
    le.add_argument("--renew-deadline", type=float, default=10.0, help="seconds the leader keeps leading without a renewal")
    le.add_argument("--retry-period", type=float, default=2.0, help="seconds between attempts to acquire or renew")
    r.set_defaults(func=cmd_run)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
