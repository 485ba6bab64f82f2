"""Scale benchmark: one operator and 1,000 schedules on a real control plane.

    .venv/bin/python bench/bench_scale.py                  # 1,000 schedules, ~10 min
    .venv/bin/python bench/bench_scale.py --schedules 50   # a quick look (skips nothing)

On a control plane of its own (free loopback ports, audit log on unless --no-audit):
1. Baselines: a bare client creates the same 1,000 CronJobs the operator would render,
   sequentially and then with 8 threads; and the floor of the operator's contract: the
   same threads create each schedule and make exactly the operator's requests for it
   (create the CronJob, patch the status, post the Event), timed, as the operator is,
   until the bench's watches show every schedule Ready.
2. The operator (a process of its own, with a client certificate of its own, so the audit
   log tells its requests apart) watches a namespace into which 1,000 schedules are
   created with 8 threads; timed until every CronJob exists and every schedule is Ready, as
   watches show it (a poll would add load to what it measures).
3. Its API reads and writes per schedule (from the audit log; with --no-audit, only its
   writes, from its own counter), its RSS, and its CPU while
   quiet for --quiet seconds. For each timed phase, the CPU each process spent (API server,
   etcd, controller manager, operator, this client): on one machine they share its cores.
4. Every schedule is changed to fire at the same minute of the hour; timed until every
   CronJob carries the change, then from that minute until every status names the run, and
   how late after its own fire time the CronJob controller created each Job.
5. Every schedule written alike with ``H``, ``H(m-m+4) * * * *``: the operator renders each
   a concrete minute of five (about 200 a minute, denser than ``H 2 * * *`` spreads them
   over an hour: about 17 a minute), and each Job's lateness after its own fire time.
   Goal: every Job created within 60 s of its fire time.
6. kube-controller-manager restarted with the CronJob controller's rate raised
   (``--kube-api-qps=100 --kube-api-burst=200 --concurrent-cron-job-syncs=20``; defaults 20,
   30 and 5), and all 1,000 at one minute again.
Prints a table.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402

from ingestion_contract.spec import parse_spec  # noqa: E402
from ingestion_dev.cluster import ControlPlane, Ports  # noqa: E402
from ingestion_dev.operatorproc import OperatorProcess  # noqa: E402
from ingestion_operator.render import RenderSettings, render_cronjob  # noqa: E402
from ingestion_operator.resource import ScheduleResource  # noqa: E402
from ingestion_operator.status import derive_status  # noqa: E402

CRD = ROOT / "deploy" / "crds" / "ingestionschedules.ingestion.dev.yaml"
G, V, P = "ingestion.dev", "v1alpha1", "ingestionschedules"
USER = "bench-operator"
RAISED = ["--kube-api-qps=100", "--kube-api-burst=200", "--concurrent-cron-job-syncs=20"]  # defaults 20, 30, 5


def spec(schedule: str = "0 2 * * *") -> dict:
    return {"schedule": schedule, "timezone": "UTC",
            "target": {"bucket": "data.binance.vision", "anonymous": True, "symbols": ["BTCUSDT"],
                       "keyTemplate": "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip"},
            "storage": {"duckdb": {"claimName": "ingestion-data"}}}


def in_parallel(fn, items, threads: int) -> float:
    t0 = time.perf_counter()
    if threads == 1:
        for i in items:
            fn(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, items))
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuLedger:
    """CPU seconds of each control-plane process, the operator and this client, per phase: on
    one machine they share its cores, so a phase cannot be shorter than their sum over the cores."""

    def __init__(self, plane: ControlPlane):
        self.plane, self.extra = plane, {}

    def read(self) -> dict[str, float]:
        pids = {**self.plane.running(), **self.extra}
        out = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t = os.times()
        out["bench client"] = t.user + t.system
        return out

    def spent(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds each process spent since ``before`` (a :meth:`read`)."""
        after = self.read()
        return {k: after[k] - before.get(k, after[k]) for k in after}

    def row(self, what: str, spent: dict[str, float], wall: float) -> tuple[str, str, str]:
        total = sum(spent.values())
        cores = os.cpu_count() or 1
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        return (f"CPU during {what}", f"{total:.1f} s of {cores * wall:.1f} s",
                f"{parts}; at least {total / cores:.1f} s of wall on {cores} cores")


def settled(read, still: float = 0.5, timeout: float = 10.0) -> float:
    """What ``read()`` returns once it has not changed for ``still`` seconds (at most ``timeout``)."""
    last = read()
    since = t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            break
    return last


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def audit_counts(path: Path, since: float, until: float) -> Counter:
    """The operator's requests by verb between two wall-clock times (one per audit ID)."""
    seen, out = set(), Counter()
    with open(path) as f:
        for line in f:
            if USER not in line:
                continue
            ev = json.loads(line)
            if ev.get("user", {}).get("username") != USER or ev["auditID"] in seen:
                continue
            t = dt.datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if since <= t <= until:
                seen.add(ev["auditID"])
                out[ev["verb"]] += 1
    return out


class Mirror:
    """The latest copy of every object under some API paths, kept by watches, as `kubectl wait`
    keeps it. The bench learns the moment the last schedule is Ready without listing 1,000
    schedules and 1,000 CronJobs every half second: load on the API server that would compete
    with the operator it measures, and a wait rounded up to the poll. Which objects pass a test
    is kept as each event arrives, so a check costs nothing with 1,000 objects."""

    def __init__(self, api, paths: dict[str, str]):
        self.api, self.paths = api, paths
        self.objects: dict[str, dict[str, dict]] = {k: {} for k in paths}
        self.tests: dict[str, callable] = {}
        self.passing: dict[str, set[str]] = {k: set() for k in paths}
        self.changed = threading.Condition()
        self.error: BaseException | None = None
        self.synced: set[str] = set()
        for kind in paths:
            threading.Thread(target=self._follow, args=(kind,), daemon=True, name=f"mirror-{kind}").start()
        with self.changed:
            if not self.changed.wait_for(lambda: self.error is not None or self.synced == set(paths), 60):
                raise SystemExit("timed out after 60 s waiting for the watches to list")

    def _get(self, path: str, **query):
        return self.api.call_api(path, "GET", query_params=list(query.items()), auth_settings=["BearerToken"],
                                 _preload_content=False, _request_timeout=None)

    def _put(self, kind: str, name: str, obj: dict | None) -> None:
        if obj is None:
            self.objects[kind].pop(name, None)
        else:
            self.objects[kind][name] = obj
        test = self.tests.get(kind)
        if obj is not None and test is not None and test(obj):
            self.passing[kind].add(name)
        else:
            self.passing[kind].discard(name)

    def _follow(self, kind: str) -> None:
        path, rv = self.paths[kind], None
        try:
            while True:
                if rv is None:
                    listed = json.loads(self._get(path).data)
                    with self.changed:
                        for name in list(self.objects[kind]):
                            self._put(kind, name, None)
                        for o in listed["items"]:
                            self._put(kind, o["metadata"]["name"], o)
                        self.synced.add(kind)
                        self.changed.notify_all()
                    rv = listed["metadata"]["resourceVersion"]
                resp, buf = self._get(path, watch="1", resourceVersion=rv, allowWatchBookmarks="true"), b""
                for chunk in resp.stream(amt=None, decode_content=False):
                    *lines, buf = (buf + chunk).split(b"\n")
                    for line in filter(None, lines):
                        ev = json.loads(line)
                        if ev["type"] == "ERROR":  # 410 Gone: list again
                            rv = None
                            break
                        obj = ev["object"]
                        rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] == "BOOKMARK":
                            continue
                        with self.changed:
                            self._put(kind, obj["metadata"]["name"], None if ev["type"] == "DELETED" else obj)
                            self.changed.notify_all()
                    if rv is None:
                        break
        except BaseException as e:  # the bench must not wait forever on a dead watch
            with self.changed:
                self.error = e
                self.changed.notify_all()

    def until(self, n: int, need: dict, timeout: float, what: str, timed: dict | None = None) -> tuple[float, dict]:
        """Seconds until, for each kind in need, n of its objects pass its test; and, for each
        kind in timed, the seconds until n of its objects passed that kind's test by then."""
        t0, timed, reached = time.monotonic(), timed or {}, {}
        with self.changed:
            self.tests = {**timed, **need}
            for kind in self.tests:
                for name, obj in list(self.objects[kind].items()):
                    self._put(kind, name, obj)
            while True:
                reached.update({k: time.monotonic() - t0 for k in timed if k not in reached and len(self.passing[k]) >= n})
                if all(len(self.passing[k]) >= n for k in need):
                    return time.monotonic() - t0, reached
                if self.error is not None:
                    raise SystemExit(f"a watch failed while waiting for {what}: {self.error!r}")
                left = timeout - (time.monotonic() - t0)
                if left <= 0:
                    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
                self.changed.wait(left)


class Rows(list):
    """The table's rows, each also printed to stderr as it is measured (a bench cut short
    still shows what it measured)."""

    def append(self, row) -> None:
        print("| " + " | ".join(row) + " |", file=sys.stderr, flush=True)
        super().append(row)

    def extend(self, rows) -> None:
        for row in rows:
            self.append(row)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedules", type=int, default=1000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--quiet", type=float, default=60.0, help="seconds over which a quiet operator's CPU is measured")
    p.add_argument("--no-tick", action="store_true", help="skip the minute when every schedule fires")
    p.add_argument("--no-audit", action="store_true",
                   help="run the API server without its audit log (which writes a line per request before it answers); "
                        "the operator's reads are then not counted")
    a = p.parse_args()
    n, rows = a.schedules, Rows()
    names = [f"s{i:04d}" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plane = ControlPlane(tmp / "plane", ports=Ports.free(), audit=not a.no_audit)
        op = None
        try:
            plane.up(timeout=90, log=lambda m: print(m, file=sys.stderr))
            env = {"KUBECONFIG": str(plane.kubeconfig), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
            subprocess.run(["kubectl", "apply", "-f", str(CRD)], env=env, check=True, capture_output=True)
            # (120 s: with kubectl's default 30 s it exited 1 once beside the suite's other worker)
            subprocess.run(["kubectl", "wait", "--for=condition=Established", "--timeout=120s", f"crd/{P}.{G}"], env=env, check=True,
                           capture_output=True)
            plane.certs.issue(USER, USER, "system:masters")
            op_kubeconfig = tmp / "operator.kubeconfig"
            plane._write_kubeconfig(op_kubeconfig, USER)
            api = config.new_client_from_config(config_file=str(plane.kubeconfig))
            api.configuration.connection_pool_maxsize = a.threads * 2
            api = client.ApiClient(api.configuration)
            core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
            for ns in ("bare-seq", "bare-par", "bare-contract", "bare-contract-after", "fleet"):
                core.create_namespace({"metadata": {"name": ns}})

            # 1. Baselines: the operator's own rendering, created by a bare client.
            settings = RenderSettings(job_image="ingestion-job:bench")
            typed = parse_spec(spec())

            ledger = CpuLedger(plane)

            def bare(ns):
                def create(name):
                    body = render_cronjob(name, ns, typed, settings)
                    batch.create_namespaced_cron_job(ns, body)
                return create
            c = ledger.read()
            seq = in_parallel(bare("bare-seq"), names, 1)
            cpu_rows = [ledger.row("the sequential bare client", ledger.spent(c), seq)]
            c = ledger.read()
            par = in_parallel(bare("bare-par"), names, a.threads)
            cpu_rows.append(ledger.row(f"the {a.threads}-thread bare client", ledger.spent(c), par))
            rows.append((f"bare client: {n:,} CronJobs, sequential", f"{seq:.1f} s", f"{n / seq:.0f} /s"))
            rows.append((f"bare client: {n:,} CronJobs, {a.threads} threads", f"{par:.1f} s", f"{n / par:.0f} /s"))

            def is_ready(s: dict) -> bool:
                return (s.get("status") or {}).get("observedGeneration") == s["metadata"]["generation"] and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in s["status"].get("conditions", []))

            def watched(ns: str) -> Mirror:
                """The bench's observer of a namespace: watches of its schedules, CronJobs and Jobs."""
                return Mirror(api, {"schedules": f"/apis/{G}/{V}/namespaces/{ns}/{P}",
                                    "cronjobs": f"/apis/batch/v1/namespaces/{ns}/cronjobs",
                                    "jobs": f"/apis/batch/v1/namespaces/{ns}/jobs"})

            # 1b. The floor of the operator's contract: the same threads make, per schedule, the
            #     user's create and exactly the requests the operator makes for a new schedule
            #     (create the CronJob, which its watch-fed cache knows to be absent; patch the
            #     status; post the Event), with no queue and no operator. Timed as the operator
            #     is, until the bench's watches show every schedule Ready and every CronJob: the
            #     same observer in both phases, so the API server's work for it weighs on both.
            def contract_requests(name, ns):
                body = custom.create_namespaced_custom_object(G, V, ns, P, {
                    "apiVersion": f"{G}/{V}", "kind": "IngestionSchedule", "metadata": {"name": name}, "spec": spec()})
                cj = json.loads(batch.create_namespaced_cron_job(ns, render_cronjob(name, ns, typed, settings),
                                                                 _preload_content=False).data)
                status = derive_status(ScheduleResource.from_body(body), cj, [], dt.datetime.now(dt.timezone.utc), None, None)
                custom.patch_namespaced_custom_object_status(G, V, ns, P, name, {"status": status})
                core.create_namespaced_event(ns, {
                    "metadata": {"name": f"{name}.created", "namespace": ns},
                    "involvedObject": {"apiVersion": f"{G}/{V}", "kind": "IngestionSchedule", "name": name, "namespace": ns,
                                       "uid": body["metadata"]["uid"]},
                    "type": "Normal", "reason": "CronJobCreated", "message": f"CronJob {name} created",
                    "source": {"component": "ingestion-operator"}, "count": 1}, _preload_content=False).data
            def run_floor(ns: str) -> tuple[float, dict]:
                observer = watched(ns)
                c = ledger.read()
                t0 = time.monotonic()
                in_parallel(lambda name: contract_requests(name, ns), names, a.threads)
                observer.until(n, {"schedules": is_ready, "cronjobs": lambda c: True}, 900, "every floor schedule Ready")
                return time.monotonic() - t0, ledger.spent(c)
            floor, floor_spent = run_floor("bare-contract")
            cpu_rows.append(ledger.row("the floor", floor_spent, floor))
            rows.append((f"bare client: the operator's own requests for {n:,} new schedules (create the schedule, create "
                         f"the CronJob, patch the status, post the Event), {a.threads} threads",
                         f"{floor:.1f} s", f"{n / floor:.0f} schedules/s: the floor of the operator's contract"))

            # 2. The operator: n schedules created with the same threads, until all are Ready.
            from ingestion_dev.pki import PKI
            from ingestion_dev.workspace import free_ports

            pki = PKI(tmp / "webhook-pki")
            pki.issue("tls", "ingestion-webhook", ips=["127.0.0.1"], server=True)
            (webhook_port,) = free_ports(1)
            op = OperatorProcess(op_kubeconfig, tmp, namespaces=["fleet"], name="scale",
                                 extra=["--webhook-cert-dir", str(pki.dir), "--webhook-port", str(webhook_port)])
            op.start()
            pid = op.proc.pid
            ledger.extra["operator"] = pid
            wall0, writes0 = time.time(), op.writes()

            def create_schedule(name):
                custom.create_namespaced_custom_object(G, V, "fleet", P, {
                    "apiVersion": f"{G}/{V}", "kind": "IngestionSchedule", "metadata": {"name": name}, "spec": spec()})

            def raw_list(path: str) -> list[dict]:
                resp = api.call_api(path, "GET", auth_settings=["BearerToken"], _preload_content=False)
                return json.loads(resp.data)["items"]

            def all_ready(want_schedule=None) -> bool:
                """The same question asked of a fresh list: confirms what the watches said."""
                items = raw_list(f"/apis/{G}/{V}/namespaces/fleet/{P}")
                cjs = raw_list("/apis/batch/v1/namespaces/fleet/cronjobs")
                return (len(items) >= n and len(cjs) >= n and all(is_ready(s) for s in items)
                        and (not want_schedule or sum(c["spec"]["schedule"] == want_schedule for c in cjs) >= n))

            mirror = watched("fleet")

            c = ledger.read()
            t0 = time.monotonic()
            created = in_parallel(create_schedule, names, a.threads)
            mirror.until(n, {"schedules": is_ready, "cronjobs": lambda c: True}, 900, "every schedule Ready")
            took = time.monotonic() - t0
            converging = ledger.spent(c)
            cpu_rows.append(ledger.row("the operator's convergence", converging, took))
            if not all_ready():
                raise SystemExit("the watches showed every schedule Ready, a list does not")
            # A schedule is Ready with its status patch and its Event follows: count the writes of
            # the convergence once the operator's have stopped, not at the moment of Ready.
            writes1, wall1 = settled(op.writes), time.time()
            rows.append((f"operator: {n:,} schedules created ({a.threads} threads, {created:.1f} s) until every CronJob "
                         f"exists and every schedule is Ready", f"{took:.1f} s",
                         f"{took / par:.2f}x the {a.threads}-thread bare client, {took / seq:.2f}x the sequential one (goal <= 2x); "
                         f"{took / floor:.2f}x its contract's floor"))
            if a.no_audit:
                rows.append(("operator API writes per schedule while converging", f"{(writes1 - writes0) / n:.2f} writes",
                             "the operator's own count (no audit log, so its reads are not counted)"))
            else:
                verbs = audit_counts(plane.audit_log, wall0 - 1, wall1 + 1)
                reads = sum(v for k, v in verbs.items() if k in ("get", "list", "watch"))
                writes = sum(v for k, v in verbs.items() if k in ("create", "update", "patch", "delete"))
                rows.append(("operator API requests per schedule while converging", f"{reads / n:.2f} reads, {writes / n:.2f} writes",
                             ", ".join(f"{k} {v}" for k, v in sorted(verbs.items()))))
            rows.append(("operator CPU while converging", f"{converging['operator']:.1f} s",
                         f"{converging['operator'] / took * 100:.0f} % of a core"))
            # The machine's speed moves between phases; per second of the API server's CPU in the
            # same phase, it cancels out (the floor's client makes the same writes as the operator).
            rows.append(("operator CPU per second of the API server's while converging",
                         f"{converging['operator'] / max(converging['kube-apiserver'], 1e-9):.2f} s",
                         f"the floor's client: {floor_spent['bench client'] / max(floor_spent['kube-apiserver'], 1e-9):.2f} s "
                         "(it also makes the users' creates); the API server's CPU, operator's phase / floor's: "
                         f"{converging['kube-apiserver'] / max(floor_spent['kube-apiserver'], 1e-9):.2f}"))
            # 2b. The floor again, after the operator's phase: the machine's speed drifts over a
            #     run (the store holds more, the CPU runs hotter), and a floor measured only
            #     before would favour or burden the operator by that drift. Both floors are shown;
            #     the ratio is also given against their mean, the floor bracketing the operator.
            after, after_spent = run_floor("bare-contract-after")
            cpu_rows.append(ledger.row("the floor again, after the operator", after_spent, after))
            rows.append(("the same floor again, after the operator's phase", f"{after:.1f} s",
                         f"{n / after:.0f} schedules/s; the operator took {took / after:.2f}x this floor, "
                         f"{took / ((floor + after) / 2):.2f}x the mean of both floors (goal <= 1.25x)"))
            rows.extend(cpu_rows)

            # 3. Quiet.
            time.sleep(5)
            q0, qw0, w0 = cpu_seconds(pid), time.time(), op.writes()
            time.sleep(a.quiet)
            q1, qw1 = cpu_seconds(pid), time.time()
            if a.no_audit:
                requests = "not counted (no audit log)"
            else:
                requests = ", ".join(f"{k} {v}" for k, v in sorted(audit_counts(plane.audit_log, qw0, qw1).items())) or "none"
            rows.append((f"quiet operator holding {n:,} schedules ({a.quiet:.0f} s)", f"{(q1 - q0) / a.quiet * 100:.2f} % of a core",
                         f"{op.writes() - w0:.0f} writes to schedules, CronJobs, Events; requests: {requests}"))
            rss = rss_mb(pid)
            rows.append((f"operator RSS with {n:,} schedules", f"{rss:.0f} MB", f"goal < 150 MB: {'met' if rss < 150 else 'NOT met'}"))

            # 3b. The admission webhook: the same 1,000 applies (server-side dry-run creates, which
            #     go through admission and save nothing), one at a time, without it and with it.
            def dry_runs(label: str) -> list[float]:
                times = []
                for i in range(n):
                    body = {"apiVersion": f"{G}/{V}", "kind": "IngestionSchedule", "metadata": {"name": f"dry{i:04d}"},
                            "spec": spec("H 2 * * *")}
                    t = time.perf_counter()
                    resp = custom.create_namespaced_custom_object(G, V, "fleet", P, body, dry_run="All", _preload_content=False)
                    times.append(time.perf_counter() - t)
                    if label == "with" and i == 0 and "next run:" not in (resp.headers.get("Warning") or ""):
                        raise SystemExit(f"the webhook did not answer the first dry run: {resp.headers.get('Warning')!r}")
                return sorted(times)

            def pct(times: list[float], q: float) -> float:
                return times[min(len(times) - 1, int(len(times) * q))] * 1000

            dry_runs("warm-up")
            without = dry_runs("without")
            admission = client.AdmissionregistrationV1Api(api)
            hook = {"metadata": {"name": "bench-schedules"}, "webhooks": [{
                "name": "schedules.ingestion.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Ignore", "timeoutSeconds": 5,
                "rules": [{"apiGroups": [G], "apiVersions": [V], "operations": ["CREATE", "UPDATE"], "resources": [P],
                           "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "fleet"}},
                "clientConfig": {"url": f"https://127.0.0.1:{webhook_port}/validate",
                                 "caBundle": base64.b64encode(pki.ca.read_bytes()).decode()}}]}
            admission.create_validating_webhook_configuration(hook)
            deadline = time.monotonic() + 30
            while "next run:" not in (custom.create_namespaced_custom_object(
                    G, V, "fleet", P, {"apiVersion": f"{G}/{V}", "kind": "IngestionSchedule", "metadata": {"name": "probe"},
                                       "spec": spec()}, dry_run="All", _preload_content=False).headers.get("Warning") or ""):
                if time.monotonic() > deadline:
                    raise SystemExit("the webhook configuration was not in force after 30 s")
                time.sleep(0.5)
            c0 = cpu_seconds(pid)
            with_hook = dry_runs("with")
            hook_cpu = cpu_seconds(pid) - c0
            admission.delete_validating_webhook_configuration("bench-schedules")
            diff = pct(with_hook, 0.99) - pct(without, 0.99)
            rows.append((f"{n:,} applies (server-side dry-run creates, one at a time) with the admission webhook",
                         f"p99 {pct(with_hook, 0.99):.1f} ms, without it {pct(without, 0.99):.1f} ms",
                         f"p50 {pct(with_hook, 0.5):.1f} ms vs {pct(without, 0.5):.1f} ms; the webhook adds {diff:.1f} ms at p99 "
                         f"(goal <= 10 ms: {'met' if diff <= 10 else 'NOT met'}); operator CPU {hook_cpu:.1f} s for its {n:,} reviews"))

            # 4-6. Fire times: all at one minute; spread with H; all at one minute with the CronJob
            #      controller's own rate raised. Jobs stay active (no node runs their pods), and a
            #      schedule's next tick would be skipped (Forbid): each phase deletes them first.
            def fire_lateness(label: str, written: str, spread: int, statuses: bool) -> None:
                gone_by = time.monotonic() + 600
                while batch.list_namespaced_job("fleet", limit=1).items:
                    if time.monotonic() > gone_by:
                        raise SystemExit("the last phase's Jobs were not deleted within 600 s")
                    try:  # 1,000 Jobs may take the API server longer than its 60 s request timeout (504):
                        batch.delete_collection_namespaced_job("fleet", propagation_policy="Background")
                    except client.exceptions.ApiException as e:
                        if e.status != 504:
                            raise
                    time.sleep(1)  # what it deleted before the timeout stays deleted: ask again for the rest
                now = dt.datetime.now(dt.timezone.utc)
                first = (now + dt.timedelta(minutes=3 if now.second > 30 else 2)).replace(second=0, microsecond=0)
                if first.minute + spread > 60:  # H(a-b) stays within the hour
                    first = (first + dt.timedelta(minutes=60 - first.minute))
                expr = written.format(first=first.minute, last=first.minute + spread - 1)
                concrete = {name: parse_spec(spec(expr)).schedule_for("fleet", name) for name in names}
                t0 = time.monotonic()
                in_parallel(lambda name: custom.patch_namespaced_custom_object(G, V, "fleet", P, name, {"spec": {"schedule": expr}}),
                            names, a.threads)
                mirror.until(n, {"schedules": lambda s: s["spec"]["schedule"] == expr and is_ready(s),
                                 "cronjobs": lambda c: c["spec"]["schedule"] == concrete[c["metadata"]["name"]]},
                             900, "every CronJob changed")
                minutes = Counter(int(c.split()[0]) for c in concrete.values())
                rows.append((f"{n:,} schedules changed to `{expr}` ({label})", f"{time.monotonic() - t0:.1f} s",
                             f"until every CronJob carries its concrete expression and every status is current; "
                             f"{len(minutes)} fire minute(s), at most {max(minutes.values())} in one"))
                if dt.datetime.now(dt.timezone.utc) >= first:
                    raise SystemExit("the change took past the minute it was meant to fire; rerun with fewer schedules")
                time.sleep(max(0.0, (first - dt.datetime.now(dt.timezone.utc)).total_seconds()))
                c0 = cpu_seconds(pid)
                since = first.strftime("%Y-%m-%dT%H:%M:%SZ")
                need = {"jobs": lambda j: j["metadata"]["creationTimestamp"] >= since}
                if statuses:  # and every status names a Job of this minute (a Job is named by its minute)
                    minute = int(first.timestamp() // 60)
                    need["schedules"] = lambda s: int((((s.get("status") or {}).get("lastRun") or {}).get("job") or "x-0")
                                                      .rsplit("-", 1)[1]) >= minute
                took, _ = mirror.until(n, need, spread * 60 + 600, f"{n:,} Jobs of `{expr}`")
                late = []
                for j in mirror.objects["jobs"].values():
                    if j["metadata"]["creationTimestamp"] >= since:
                        fired = int(j["metadata"]["name"].rsplit("-", 1)[1]) * 60  # the CronJob controller names a Job by its minute
                        created = dt.datetime.fromisoformat(j["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
                        late.append(created - fired)
                late.sort()
                within = sum(1 for x in late if x <= 60)
                rows.append((f"the Jobs of `{expr}` ({label})", f"latest {late[-1]:.0f} s after its fire time",
                             f"median {late[len(late) // 2]:.0f} s, p99 {late[int(len(late) * 0.99) - 1]:.0f} s; {within:,} of {len(late):,} "
                             f"within 60 s of their own fire time (goal: all): {'met' if within == len(late) else 'NOT met'}; "
                             f"operator CPU {cpu_seconds(pid) - c0:.1f} s" + (f"; every status showed its run after {took:.1f} s"
                                                                              if statuses else "")))

            if not a.no_tick:
                fire_lateness("hourly, all at one minute", "{first} * * * *", 1, statuses=True)
                fire_lateness("hourly, spread by H over five minutes", "H({first}-{last}) * * * *", 5, statuses=False)
                plane.restart_controller_manager(RAISED)
                fire_lateness("hourly, all at one minute; " + " ".join(RAISED), "{first} * * * *", 1, statuses=False)
        finally:
            if op is not None:
                op.stop()
            plane.down(log=lambda m: None)
    print(f"{n:,} schedules, one operator, control plane on 127.0.0.1 ({os.cpu_count()} cores), "
          f"audit log {'off' if a.no_audit else 'on'}\n")
    print("| measurement | result | notes |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
