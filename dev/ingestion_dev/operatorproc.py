"""The real operator as a subprocess (``ingestion-operator run``): started, probed through
/healthz and /metrics, stopped, SIGKILLed. Used by the tests and by the fault and scale
benchmarks."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class OperatorProcess:
    """The real operator as a subprocess (`ingestion-operator run`), restartable."""

    def __init__(self, kubeconfig: Path, log_dir: Path, namespaces: list[str] | None = None, lease: str | None = None,
                 extra: list[str] | None = None, name: str = "operator"):
        from ingestion_dev.workspace import free_ports

        self.kubeconfig = Path(kubeconfig)
        self.metrics_port, self.health_port = free_ports(2)
        self.log_dir = log_dir
        self.namespaces = namespaces or []
        # Each test operator elects itself through a Lease of its own, unless a test makes
        # several share one (leader election tests).
        self.lease = lease or f"test-operator-{uuid.uuid4().hex[:8]}"
        self.extra = extra or []
        self.name = name
        self.proc = None
        self.starts = 0

    def start(self, leading: bool = True):
        import subprocess

        self.starts += 1
        self.log = self.log_dir / f"{self.name}-{self.starts}.log"
        argv = [str(Path(sys.executable).parent / "ingestion-operator"), "run", "--kubeconfig", str(self.kubeconfig),
                "--bind", "127.0.0.1", "--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port),
                "--job-image", "ingestion-job:test", "--leader-election-namespace", "default",
                "--leader-election-id", self.lease, *self.extra]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        roles = ("leader",) if leading else ("standby", "leader")
        wait_for(lambda: self._died() or self.role() in roles, 30, f"the operator's health endpoint as {' or '.join(roles)}")
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def _died(self):
        return self.proc.poll() is not None

    def healthz(self, path: str = "/healthz") -> tuple[int, str]:
        """(status, body) of /healthz (readiness; or ``path``: /livez); (0, error) when nothing answers."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def _healthy(self) -> bool:
        return self.healthz()[0] == 200

    def role(self) -> str | None:
        """'leader' or 'standby' while healthy, else None."""
        status, body = self.healthz()
        return body.strip().removeprefix("ok (").removesuffix(")") if status == 200 else None

    def identity(self) -> str:
        """The candidate name this process logged when it started to stand by."""
        import re

        found = re.findall(r'event=standby lease=\S+ identity=([^\s"]+)', self.log.read_text())
        assert found, f"{self.name} logged no identity"
        return found[-1]

    def kill(self):
        """SIGKILL: no cleanup, the Lease is not released."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as {'name{labels}': value}."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def writes(self) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith("ingestion_operator_api_writes_total"))

    def log_events(self, event: str, **match: str) -> list[dict]:
        """The ``event=<event> key=value ...`` records this process has logged so far (JSON or
        plain lines), as dicts, filtered by ``match``: ``log_events("reconciled", namespace=ns,
        name="tz")``. A positive signal for tests: the operator has acted on that object."""
        import json

        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    line = json.loads(line).get("message", "")
                except ValueError:
                    continue
            if f"event={event} " not in f"{line} ":
                continue
            fields = dict(kv.split("=", 1) for kv in line[line.index(f"event={event}"):].split() if "=" in kv)
            if all(fields.get(k) == v for k, v in match.items()):
                out.append(fields)
        return out
