"""Fault campaigns against the real operator on a real control plane.

- :func:`sigkill_campaign`: schedules are created, updated and deleted at random while
  the operator is SIGKILLed at random points and started again. After every restart the
  operator must converge: every schedule has exactly its rendered CronJob and a complete,
  current status, and no CronJob outlives its schedule. A sampler checks throughout that
  no schedule ever owns two CronJobs.
- :func:`outage`: one control-plane process (kube-apiserver or etcd) is stopped and
  started again under a running operator, which must say so on ``/healthz`` while it lasts
  and recover without a restart of its own.

Used by ``tests/cluster/test_faults.py`` (20 kills) and ``bench/bench_faults.py`` (longer).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from .operatorproc import OperatorProcess, wait_for

GROUP, VERSION, PLURAL = "ingestion.dev", "v1alpha1", "ingestionschedules"
SCHEDULES = ["0 2 * * *", "*/15 * * * *", "30 6 * * MON-FRI", "0 0 1 * *", "@hourly", "0 */4 * * *", "5 4 * * SUN"]
ZONES = ["UTC", "Europe/London", "Asia/Tokyo", "America/New_York", "Australia/Sydney"]


def schedule_body(name: str, rng: random.Random) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "IngestionSchedule", "metadata": {"name": name},
        "spec": {
            "schedule": rng.choice(SCHEDULES), "timezone": rng.choice(ZONES), "enabled": rng.random() < 0.8,
            "target": {"bucket": "data.binance.vision", "anonymous": True, "symbols": ["BTCUSDT"],
                       "keyTemplate": "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip"},
            "storage": {"duckdb": {"claimName": "ingestion-data"}},
        },
    }


class Driver:
    """Random creates, updates and deletes of a pool of schedules, in a thread, pausable."""

    def __init__(self, api_client: client.ApiClient, namespace: str, pool: int, rng: random.Random):
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.names = [f"s{i}" for i in range(pool)]
        self.rng = rng
        self.ops: Counter[str] = Counter()
        self._go = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="campaign-driver", daemon=True)
        self._thread.start()

    def resume(self) -> None:
        self._idle.clear()
        self._go.set()

    def pause(self) -> None:
        """Return once the operation in flight (if any) has finished."""
        self._go.clear()
        self._idle.wait(30)

    def close(self) -> None:
        self._stop = True
        self._go.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop:
            if not self._go.is_set():
                self._idle.set()
                self._go.wait()
                continue
            try:
                self.step()
            except ApiException as e:
                if e.status not in (404, 409):  # raced with our own previous delete/create: fine
                    raise
            time.sleep(self.rng.uniform(0.02, 0.2))

    def step(self) -> None:
        name = self.rng.choice(self.names)
        try:
            live = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as e:
            if e.status != 404:
                raise
            live = None
        if live is None or live["metadata"].get("deletionTimestamp"):
            if live is None:
                self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, schedule_body(name, self.rng))
                self.ops["create"] += 1
            return
        if self.rng.random() < 0.25:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
            self.ops["delete"] += 1
            return
        change = self.rng.choice([{"schedule": self.rng.choice(SCHEDULES)}, {"timezone": self.rng.choice(ZONES)},
                                  {"enabled": not live["spec"].get("enabled", True)}])
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, {"spec": change})
        self.ops["update"] += 1


def not_converged(api_client: client.ApiClient, namespace: str) -> str | None:
    """What is not yet as it should be (None once converged)."""
    custom, batch = client.CustomObjectsApi(api_client), client.BatchV1Api(api_client)
    schedules = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    cronjobs = {c.metadata.name: c for c in batch.list_namespaced_cron_job(namespace).items}
    uids = set()
    for s in schedules:
        name, spec, st = s["metadata"]["name"], s["spec"], s.get("status") or {}
        if s["metadata"].get("deletionTimestamp"):
            continue
        uids.add(s["metadata"]["uid"])
        ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
        if st.get("observedGeneration") != s["metadata"]["generation"] or ready.get("status") != "True":
            return f"{name}: status not current (observedGeneration {st.get('observedGeneration')} of "\
                   f"{s['metadata']['generation']}, Ready {ready.get('status')} {ready.get('reason')})"
        cj = cronjobs.get(st.get("cronJobName") or name)
        if cj is None or not any(o.uid == s["metadata"]["uid"] for o in cj.metadata.owner_references or []):
            return f"{name}: no CronJob of its own"
        if (cj.spec.schedule, cj.spec.time_zone, cj.spec.suspend) != (spec["schedule"], spec.get("timezone", "UTC"),
                                                                      not spec.get("enabled", True)):
            return f"{name}: CronJob not in sync"
        if len(st.get("nextRuns") or []) != (5 if spec.get("enabled", True) else 0):
            return f"{name}: nextRuns {st.get('nextRuns')}"
    orphans = [n for n, c in cronjobs.items() if not any(o.uid in uids for o in c.metadata.owner_references or [])]
    if orphans:
        return f"CronJobs without a live schedule: {orphans}"
    return None


class CronJobSampler:
    """Lists the namespace's CronJobs every 0.1 s and keeps the most any one schedule owned."""

    def __init__(self, api_client: client.ApiClient, namespace: str):
        self.batch = client.BatchV1Api(api_client)
        self.namespace = namespace
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cronjob-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                items = self.batch.list_namespaced_cron_job(self.namespace).items
            except Exception:
                continue
            owners = Counter(o.uid for c in items for o in c.metadata.owner_references or [] if o.controller)
            self.most = max(self.most, max(owners.values(), default=0))
            self.samples += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def reconciles(op: OperatorProcess) -> float:
    return sum(v for k, v in op.metrics().items() if k.startswith("ingestion_operator_reconciles_total"))


def sigkill_campaign(api_client: client.ApiClient, kubeconfig: Path, namespace: str, log_dir: Path, kills: int,
                     seed: int = 1, pool: int = 6, log=print) -> dict:
    """SIGKILL the operator ``kills`` times at random points while a driver changes schedules."""
    rng = random.Random(seed)
    # A stable identity: a restarted process renews its own Lease at once, as the same
    # pod's restarted container does, instead of waiting for it to expire.
    op = OperatorProcess(kubeconfig, log_dir, namespaces=[namespace], name="campaign",
                         extra=[f"--leader-election-identity=campaign-{seed}"])
    driver = Driver(api_client, namespace, pool, rng)
    sampler = CronJobSampler(api_client, namespace)
    converge_s = []
    try:
        op.start()
        for i in range(kills):
            driver.resume()
            time.sleep(rng.uniform(0.1, 2.5))
            op.kill()
            driver.pause()
            t0 = time.monotonic()
            op.start()
            problem = None

            def done():
                nonlocal problem
                problem = not_converged(api_client, namespace)
                return problem is None
            try:
                wait_for(done, 60, "convergence", interval=0.2)
            except AssertionError:
                raise AssertionError(f"kill {i + 1}: did not converge in 60 s: {problem}\n{op.log.read_text()[-3000:]}")
            converge_s.append(time.monotonic() - t0)
            log(f"kill {i + 1}/{kills}: converged {converge_s[-1]:.1f} s after the restart ({dict(driver.ops)})")
        # Status is exact, not merely present: a restart with nothing changed writes nothing.
        count = len(client.CustomObjectsApi(api_client).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])
        op.stop()
        op.start()
        wait_for(lambda: reconciles(op) >= count, 60, "the restarted operator to reconcile every schedule", interval=0.2)
        quiet_writes = op.writes()
    finally:
        driver.close()
        sampler.close()
        op.stop()
    return {"kills": kills, "ops": dict(driver.ops), "converge_s": converge_s, "most_cronjobs_per_schedule": sampler.most,
            "samples": sampler.samples, "writes_after_quiet_restart": quiet_writes, "schedules": count}


def outage(plane, component: str, down: float, op: OperatorProcess, api_client: client.ApiClient, namespace: str,
           name: str, sig: int = signal.SIGTERM) -> dict:
    """Stop ``component`` for ``down`` seconds under a running operator; then change the
    schedule ``name`` and time until the operator has acted on it."""
    pid = op.proc.pid
    failed: list[str] = []
    stop = threading.Event()

    def probe():
        while not stop.wait(0.3):
            status, body = op.healthz()
            if status != 200:
                failed.append(body.strip())

    prober = threading.Thread(target=probe, daemon=True)
    argv = plane.stop_process(component, sig)
    t0 = time.monotonic()
    prober.start()
    time.sleep(down)
    plane.start_process(component, argv)
    up = time.monotonic()
    wait_for(lambda: plane._api_ok("/readyz"), 60, f"{component} back and the API ready", interval=0.2)
    api_ready = time.monotonic() - up
    wait_for(lambda: op.healthz()[0] == 200, 60, "the operator's /healthz to recover", interval=0.2)
    healthy = time.monotonic() - up
    stop.set()
    prober.join(5)
    custom = client.CustomObjectsApi(api_client)
    batch = client.BatchV1Api(api_client)
    current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)["spec"]["schedule"]
    new = SCHEDULES[(SCHEDULES.index(current) + 1) % len(SCHEDULES)]
    t1 = time.monotonic()
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"schedule": new}})
    wait_for(lambda: batch.read_namespaced_cron_job(name, namespace).spec.schedule == new, 120,
             f"the operator to act on a change after the {component} outage", interval=0.2)
    return {"component": component, "down_s": up - t0, "api_ready_after_s": api_ready,
            "healthz_failed_probes": len(failed), "healthz_sample": failed[:1], "healthz_ok_after_s": healthy,
            "change_applied_s": time.monotonic() - t1, "same_process": op.proc.poll() is None and op.proc.pid == pid}
