"""The sandbox: everything a user needs to try the product on a machine with no cluster.

By default: the control plane with a real node (containerd, kubelet, kube-proxy; see
:mod:`ingestion_dev.node`), both images built from their Dockerfiles and loaded into it,
the operator installed by the Helm chart exactly as on kind, a local S3 server (SeaweedFS)
with generated Binance-Vision-shaped data (some days missing, some arriving late) and a
Pushgateway on the node's way to the host, a volume through a StorageClass, and a
schedule that fires every minute. With ``--pod-runner``: the same without containers
(pods run as local processes; the operator as a local process). Each part is recorded
under the state dir and removed by ``down``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import sampledata
from .cluster import ControlPlane, helm_binary
from .services import S3Server, start_pushgateway, start_seaweed
from .workspace import REPO_ROOT, ClusterError, port_in_use

OPERATOR_METRICS_PORT = 38080
OPERATOR_HEALTH_PORT = 38081
S3_PORT = 38333
PUSHGATEWAY_PORT = 39091
BUCKET = "data.binance.vision"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
INTERVALS = ["1h", "1d"]  # target.dimensions
LOOKBACK = 9
# target.archive: the last DAILY_DAYS days (from the first of their month) as daily files, the
# ARCHIVED_MONTHS months before them as monthly archives, in Binance Vision's layout
DAILY_DAYS = 10
ARCHIVED_MONTHS = 2
MISSING = {("ETHUSDT", 3, "1h"), ("SOLUSDT", 5, "1d")}   # (symbol, days ago, interval) never published
LATE = {("BTCUSDT", 2, "1h"), ("SOLUSDT", 1, "1d")}      # published ~90 s after the sandbox starts
SCHEDULE_NAME = "sandbox-every-minute"
CRDS = REPO_ROOT / "deploy" / "crds"
CHART = REPO_ROOT / "deploy" / "helm" / "ingestion-operator"
RELEASE, OPERATOR_NAMESPACE = "ingestion", "ingestion-system"


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


def kubectl(plane: ControlPlane, *args: str, input: str | None = None) -> None:
    exe = Path(sys.executable).parent / "kubectl"
    proc = subprocess.run([str(exe), f"--kubeconfig={plane.kubeconfig}", *args], capture_output=True, text=True, input=input)
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")


def boundary(today: dt.date) -> dt.date:
    """The first day the schedule expects as daily files (with lagDays 1)."""
    return (today - dt.timedelta(days=DAILY_DAYS)).replace(day=1)


def _cells(which: set | None = None, exclude: set = frozenset(), today: dt.date | None = None) -> list:
    """The daily files, (symbol, date, interval), from the boundary to yesterday."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    cells = [(s, n, i) for s in SYMBOLS for n in range(1, (today - boundary(today)).days + 1) for i in INTERVALS]
    if which is not None:
        cells = [c for c in cells if c in which]
    return [(s, today - dt.timedelta(days=n), i) for s, n, i in cells if (s, n, i) not in exclude]


def archives(today: dt.date | None = None) -> list:
    """The monthly archives, (symbol, first day of the month, interval), before the boundary."""
    months, m = [], boundary(today or dt.datetime.now(dt.timezone.utc).date())
    for _ in range(ARCHIVED_MONTHS):
        m = (m - dt.timedelta(days=1)).replace(day=1)
        months.append(m)
    return [(s, m, i) for s in SYMBOLS for m in sorted(months) for i in INTERVALS]


def seed_sample_data(s3) -> None:
    sampledata.upload(s3.client(), BUCKET, _cells(exclude=MISSING | LATE), rows=60, template=sampledata.KLINES_DAILY)
    sampledata.upload(s3.client(), BUCKET, archives(), rows=60, template=sampledata.KLINES_MONTHLY)


def late_arrivals(endpoint: str, delay: float = 90.0) -> None:
    """Publish the late objects after the first runs have seen them missing."""
    time.sleep(delay)
    sampledata.upload(S3Server(endpoint).client(), BUCKET, _cells(which=LATE), rows=60, template=sampledata.KLINES_DAILY)
    print(f"published {len(LATE)} late objects: {sorted(LATE)}", flush=True)


def sandbox_schedule(s3_endpoint: str, pushgateway: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionSchedule",
        "metadata": {"name": SCHEDULE_NAME, "namespace": "default"},
        "spec": {
            "schedule": "* * * * *", "timezone": "UTC", "startingDeadlineSeconds": 120, "activeDeadlineSeconds": 300,
            "backoffLimit": 1,
            "target": {"endpoint": s3_endpoint, "region": "us-east-1", "bucket": BUCKET, "anonymous": True,
                       "keyTemplate": sampledata.KLINES_DAILY, "checksumSuffix": ".CHECKSUM", "symbols": SYMBOLS,
                       "dimensions": {"interval": INTERVALS},
                       "archive": {"keyTemplate": sampledata.KLINES_MONTHLY, "dailyDays": DAILY_DAYS},
                       "lagDays": 1, "lookbackDays": LOOKBACK},
            "repair": {"maxRepairsPerRun": 500, "load": "csv-zip"},
            "storage": {"duckdb": {"claimName": "sandbox-data", "path": "/data/sandbox.duckdb"}},
            "metrics": {"pushgatewayUrl": pushgateway},
        },
    })


def up(state_dir: Path, pod_runner: bool = False) -> int:
    """The sandbox on a real node (the default), or with the pod runner (no root needed
    for containers, faster to start)."""
    return (_up_pod_runner if pod_runner else _up_real_node)(state_dir)


def _up_real_node(state_dir: Path) -> int:
    """Control plane and a real node; the operator installed by the chart, as users run it."""
    from . import images
    from .node import local_storage

    t0 = time.monotonic()
    plane = ControlPlane(state_dir, node=True)
    if plane.running():
        raise ClusterError(f"a sandbox is already running from {plane.state_dir}; run 'dev/sandbox down' first")
    print("building the images (cached after the first time) ...", flush=True)
    archives = [images.build("Dockerfile.operator", images.OPERATOR_IMAGE), images.build("Dockerfile.job", images.JOB_IMAGE)]
    plane.up()
    try:
        for archive in archives:
            plane.node.import_image(archive)
        host = plane.network.host_ip  # where pods reach the host's servers
        s3 = start_seaweed(plane, [BUCKET], s3_port=S3_PORT, host=host)
        pushgateway = start_pushgateway(plane, PUSHGATEWAY_PORT, host=host)
        seed_sample_data(s3)
        plane.start_process("late-arrivals", [sys.executable, "-m", "ingestion_dev.cli", "late-arrivals", s3.endpoint])
        helm = helm_binary()
        # upgrade --install: a sandbox started again keeps its etcd, and with it the release
        args = [helm, f"--kubeconfig={plane.kubeconfig}", "upgrade", "--install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE,
                "--create-namespace", "--wait", "--timeout", "180s"]
        for value in [*images.chart_values(), f"defaultPushgatewayUrl={pushgateway}"]:
            args += ["--set", value]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterError(f"helm upgrade --install failed: {proc.stderr.strip()[-2000:]}")
        volume = plane.node.dir / "volumes" / "sandbox-data"
        kubectl(plane, "apply", "-f", "-", input=yaml.safe_dump_all(local_storage(volume, "sandbox-data", "default")))
        kubectl(plane, "apply", "-f", "-", input=sandbox_schedule(s3.endpoint, pushgateway))
    except BaseException:
        plane.down(log=lambda *_: None)
        raise
    print(f"""
sandbox is up in {time.monotonic() - t0:.0f}s (state in {plane.state_dir}); a real node runs every pod
  schedule '{SCHEDULE_NAME}' runs every minute against s3://{BUCKET} at {s3.endpoint}
  ({len(SYMBOLS)} symbols x {len(INTERVALS)} intervals: daily files from {boundary(dt.datetime.now(dt.timezone.utc).date())}, monthly archives of the {ARCHIVED_MONTHS} months before;
   {len(MISSING)} daily files never published, {len(LATE)} arrive ~90 s from now)

  export KUBECONFIG={plane.kubeconfig} PATH=$PWD/.venv/bin:$PATH
  kubectl get isched,cronjobs,jobs,pods -o wide                # next runs, last run, Ready; pods on {plane.status()['node']['name']}
  kubectl logs job/<job>                                      # a run's summary line
  kubectl create job manual-1 --from=cronjob/{SCHEDULE_NAME}  # a run now
  .venv/bin/ingestion-job report --db {volume / 'sandbox.duckdb'}
  curl -s {pushgateway}/metrics | grep '^ingestion_'     # the runs' metrics
  kubectl -n {OPERATOR_NAMESPACE} port-forward deploy/{RELEASE}-ingestion-operator 8080  # then: curl -s 127.0.0.1:8080/metrics
  logs: {plane.logs}/
  dev/sandbox status | down                                   # down removes exactly what 'up' made
""")
    return 0


def _up_pod_runner(state_dir: Path) -> int:
    plane = ControlPlane(state_dir)
    busy = [p for p in (OPERATOR_METRICS_PORT, OPERATOR_HEALTH_PORT, S3_PORT, PUSHGATEWAY_PORT) if port_in_use(p)]
    if busy and not plane.running():
        raise ClusterError(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 (the sandbox's fixed ports) are taken by another process")
    plane.up()
    try:
        plane.start_process("pod-runner", pod_runner_argv(plane, "exec"))
        kubectl(plane, "apply", "-f", str(CRDS))
        kubectl(plane, "wait", "--for=condition=Established", "crd/ingestionschedules.ingestion.dev", "--timeout=30s")
        plane.start_process("operator", operator_argv(plane))
        s3 = start_seaweed(plane, [BUCKET], s3_port=S3_PORT)
        pushgateway = start_pushgateway(plane, PUSHGATEWAY_PORT)
        seed_sample_data(s3)
        plane.start_process("late-arrivals", [sys.executable, "-m", "ingestion_dev.cli", "late-arrivals", s3.endpoint])
        kubectl(plane, "apply", "-f", "-", input=sandbox_schedule(s3.endpoint, pushgateway))
        time.sleep(2.0)
        for name, log in (("pod-runner", "pod-runner.log"), ("operator", "operator.log")):
            if name not in plane.running():
                raise ClusterError(f"the {name} exited at once; see {plane.logs / log}")
    except BaseException:
        plane.down(log=lambda *_: None)
        raise
    db = plane.state_dir / "pods" / "pvc" / "default" / "sandbox-data" / "sandbox.duckdb"
    print(f"""
sandbox is up (state in {plane.state_dir}); pods run as local processes (the pod runner)
  schedule '{SCHEDULE_NAME}' runs every minute against s3://{BUCKET} at http://127.0.0.1:{S3_PORT}
  ({len(SYMBOLS)} symbols x {len(INTERVALS)} intervals: daily files from {boundary(dt.datetime.now(dt.timezone.utc).date())}, monthly archives of the {ARCHIVED_MONTHS} months before;
   {len(MISSING)} daily files never published, {len(LATE)} arrive ~90 s from now)

  export KUBECONFIG={plane.kubeconfig}
  kubectl get isched,cronjobs,jobs                            # next runs, last run, Ready
  kubectl create job manual-1 --from=cronjob/{SCHEDULE_NAME}  # a run now
  .venv/bin/ingestion-job report --db {db}
  curl -s 127.0.0.1:{PUSHGATEWAY_PORT}/metrics | grep '^ingestion_'     # the runs' metrics
  curl -s 127.0.0.1:{OPERATOR_METRICS_PORT}/metrics | grep '^ingestion_operator_'
  kubectl apply -f examples/                                  # more schedules (they point at the real Binance bucket)
  logs: {plane.logs}/ ; each run's output: {plane.state_dir / 'pods' / 'logs' / 'default'}/
  dev/sandbox status | down                                   # down stops exactly what 'up' started
""")
    return 0
