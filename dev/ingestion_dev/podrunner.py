"""A test-only stand-in for the kubelet: it moves pods of Jobs to a terminal phase.

It watches pods in all namespaces, binds unscheduled ones to a fake node that it keeps
Ready, and then, per pod:

* ``complete``: marks the pod Succeeded at once with exit code 0 (scale tests);
* ``exec``: runs the container's real command as a local process with the pod's
  environment (plain values, ``secretKeyRef``, ``configMapKeyRef``, ``envFrom``, downward
  API ``fieldRef``) and sets Succeeded or Failed from its exit code;
* ``hold``: marks the pod Running and leaves it so (a run that never ends);
* ``fail``: marks the pod Failed with exit code 1.

The mode is the pod's annotation :data:`MODE_ANNOTATION`, else the same annotation on
its namespace, else the runner's default. In ``exec`` mode, each ``volumeMount`` is mapped to a local
folder under the runner's state dir: a mount path standing as a whole path in an
argument or env value (also inside a JSON value) is rewritten to that folder (a PVC maps to one folder per claim, so two
runs of a schedule see the same files). A pod deleted while its process runs has the
process killed, as the kubelet would.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

MODE_ANNOTATION = "ingestion.dev/pod-runner-mode"
NODE_NAME = "ingestion-dev-node"
# A real scheduler never places a pod on the runner's node unless the pod tolerates this.
TAINT = {"key": "ingestion.dev/pod-runner", "value": "true", "effect": "NoSchedule"}
OTHER_NODES_TTL = 5.0
MODES = ("complete", "exec", "hold", "fail")
HEARTBEAT_SECONDS = 15

log = logging.getLogger("podrunner")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- pure parts: environment and mount resolution ----------------------------------------
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, unknown stay."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, value)


def field_value(pod: dict, path: str) -> str:
    """The downward API's fieldRef.fieldPath on a pod given as a dict."""
    meta = pod.get("metadata") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName", "") or NODE_NAME,
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", ""),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path not in simple:
        raise ValueError(f"fieldRef {path!r} is not supported by the pod runner")
    return simple[path]


def resolve_env(pod: dict, container: dict, read_secret, read_config_map) -> dict[str, str]:
    """The container's environment, resolved in order like the kubelet does.

    ``read_secret(name) -> dict[str, str]`` and ``read_config_map(name)`` return decoded
    data of the pod's namespace, or raise KeyError when missing.
    """
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            ref = src["configMapRef"]
            data = _optional(read_config_map, ref["name"], ref.get("optional"))
        else:
            ref = src["secretRef"]
            data = _optional(read_secret, ref["name"], ref.get("optional"))
        env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        vf = item["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
            kind, ref = ("secretKeyRef", vf["secretKeyRef"]) if "secretKeyRef" in vf else ("configMapKeyRef", vf["configMapKeyRef"])
            reader = read_secret if kind == "secretKeyRef" else read_config_map
            data = _optional(reader, ref["name"], ref.get("optional"))
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise KeyError(f"{kind} {ref['name']}/{ref['key']}: key not found")
            env[name] = data[ref["key"]]
        else:
            raise ValueError(f"env {name}: valueFrom {sorted(vf)} is not supported by the pod runner")
    return env


def _optional(reader, name: str, optional: bool | None) -> dict[str, str]:
    try:
        return reader(name)
    except KeyError:
        if optional:
            return {}
        raise


def map_mounts(pod: dict, container: dict, root: Path) -> dict[str, Path]:
    """mountPath -> local folder; PVCs by claim name, other volumes per pod."""
    meta = pod["metadata"]
    volumes = {v["name"]: v for v in (pod["spec"].get("volumes") or [])}
    out = {}
    for vm in container.get("volumeMounts") or []:
        vol = volumes.get(vm["name"], {})
        if "persistentVolumeClaim" in vol:
            local = root / "pvc" / meta["namespace"] / vol["persistentVolumeClaim"]["claimName"]
        else:
            local = root / "pods" / meta["namespace"] / meta["name"] / vm["name"]
        if vm.get("subPath"):
            local = local / vm["subPath"]
        out[vm["mountPath"].rstrip("/") or "/"] = local
    return out


def rewrite_paths(value: str, mounts: dict[str, Path]) -> str:
    """Map mount paths to their local folders wherever they stand as a whole path in the
    value: the whole value, or inside it (e.g. a JSON spec holding "/data/x.duckdb").
    One pass, longest mount first, so a replacement is never rewritten again."""
    names = sorted((m for m in mounts if m != "/"), key=len, reverse=True)
    if not names:
        return value
    pattern = r"(?<![\w./-])(" + "|".join(map(re.escape, names)) + r")(?=/|$|[\"'\s,;:])"
    return re.sub(pattern, lambda m: str(mounts[m.group(1)]), value)


# -- the runner ---------------------------------------------------------------------------
class PodRunner:
    def __init__(self, api: client.CoreV1Api, mode: str, state_dir: Path, extra_path: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.api = api
        self.mode = mode
        self.state_dir = Path(state_dir)
        self.extra_path = extra_path
        self.procs: dict[str, subprocess.Popen] = {}
        self.handled: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._other_nodes: tuple[float, bool] = (0.0, False)

    # node ------------------------------------------------------------------------------
    def ensure_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME, "type": "ingestion-dev"}},
            "spec": {"taints": [TAINT]},
        }
        try:
            self.api.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        self.heartbeat()

    def heartbeat(self) -> None:
        now = _now()
        status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "PodRunnerReady",
                    "message": "ingestion-dev pod runner is alive",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        }
        self.api.patch_node_status(NODE_NAME, {"status": status})

    def _heartbeat_loop(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            try:
                self.heartbeat()
            except ApiException as e:  # the next beat may get through
                log.warning("event=heartbeat_failed status=%s", e.status)

    # pods ------------------------------------------------------------------------------
    def run_forever(self) -> None:
        self.ensure_node()
        threading.Thread(target=self._heartbeat_loop, daemon=True).start()
        log.info("event=started mode=%s node=%s", self.mode, NODE_NAME)
        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(self.api.list_pod_for_all_namespaces, timeout_seconds=60,
                                   _request_timeout=90):
                    self.on_event(ev["type"], self.api.api_client.sanitize_for_serialization(ev["object"]))
                    if self.stop.is_set():
                        break
            except ApiException as e:
                if e.status != 410:
                    log.warning("event=watch_error status=%s reason=%s", e.status, e.reason)
                    time.sleep(1)
            except Exception as e:  # a dropped connection: resume the watch
                log.warning("event=watch_error error=%r", e)
                time.sleep(1)

    def on_event(self, kind: str, pod: dict) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        phase = (pod.get("status") or {}).get("phase")
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            self._kill(key)
            if kind != "DELETED" and pod["spec"].get("nodeName") == NODE_NAME:
                self._finalize_delete(meta)
            return
        if phase in ("Succeeded", "Failed"):
            return
        node = pod["spec"].get("nodeName")
        if node and node != NODE_NAME:
            return  # the scheduler gave it to another (real) node
        if not node and self.other_nodes():
            return  # a cluster with real nodes: its scheduler places pods, not the runner
        with self.lock:
            if key in self.handled:
                return
            self.handled.add(key)
        mode = (meta.get("annotations") or {}).get(MODE_ANNOTATION) or self._namespace_mode(meta["namespace"])
        if mode not in MODES:
            mode = "fail"
        threading.Thread(target=self._handle, args=(pod, mode), daemon=True, name=key).start()

    def other_nodes(self) -> bool:
        """Whether the cluster has a node besides the runner's (checked every few seconds)."""
        checked, present = self._other_nodes
        if time.monotonic() - checked > OTHER_NODES_TTL:
            try:
                present = any(n.metadata.name != NODE_NAME for n in self.api.list_node().items)
            except ApiException as e:
                log.warning("event=list_nodes_failed status=%s", e.status)
            self._other_nodes = (time.monotonic(), present)
        return present

    def _namespace_mode(self, namespace: str) -> str:
        try:
            ns = self.api.read_namespace(namespace)
        except ApiException:
            return self.mode
        return (ns.metadata.annotations or {}).get(MODE_ANNOTATION) or self.mode

    def _handle(self, pod: dict, mode: str) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            if not pod["spec"].get("nodeName"):
                self.api.create_namespaced_pod_binding(
                    name, ns,
                    {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                     "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME}},
                    _preload_content=False,
                )
            started = _now()
            self._set_running(pod, started)
            log.info("event=pod_started namespace=%s pod=%s mode=%s", ns, name, mode)
            if mode == "hold":
                return
            message = None
            if mode == "complete":
                code, reason = 0, "Completed"
            elif mode == "fail":
                code, reason = 1, "Error"
            else:
                code, reason, message = self._exec(pod)
            self._set_terminated(pod, started, code, reason, message)
            log.info("event=pod_finished namespace=%s pod=%s exit_code=%s", ns, name, code)
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile
                return
            log.warning("event=pod_error namespace=%s pod=%s status=%s body=%s", ns, name, e.status, e.body)
        except Exception as e:
            log.exception("event=pod_error namespace=%s pod=%s error=%r", ns, name, e)

    def _exec(self, pod: dict) -> tuple[int, str, str | None]:
        """Run the first container as a local process; (exit code, reason, termination message).
        The container's terminationMessagePath, wherever an env value names it, becomes a local
        file whose first 4,096 bytes are the message, as the kubelet reads it."""
        meta = pod["metadata"]
        ns, key = meta["namespace"], f"{meta['namespace']}/{meta['name']}"
        container = pod["spec"]["containers"][0]
        logs = self.state_dir / "logs" / ns
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{meta['name']}.log"
        try:
            env = resolve_env(pod, container, lambda n: self._secret(ns, n), lambda n: self._config_map(ns, n))
        except (KeyError, ValueError) as e:
            log_path.write_text(f"pod runner: CreateContainerConfigError: {e}\n")
            return 1, "CreateContainerConfigError", None
        mounts = map_mounts(pod, container, self.state_dir)
        for local in mounts.values():
            local.mkdir(parents=True, exist_ok=True)
        env = {k: rewrite_paths(v, mounts) for k, v in env.items()}
        termination = logs / f"{meta['name']}.termination-log"
        termination.unlink(missing_ok=True)
        message_path = container.get("terminationMessagePath") or "/dev/termination-log"
        env = {k: str(termination) if v == message_path else v for k, v in env.items()}
        argv = [rewrite_paths(expand(a, env), mounts) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not argv:
            log_path.write_text("pod runner: the container has no command; an image entrypoint cannot be run here\n")
            return 128, "ContainerCannotRun", None
        path = os.environ.get("PATH", "")
        if self.extra_path:
            path = f"{self.extra_path}:{path}"
        full_env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "HOSTNAME": meta["name"], **env}
        exe = shutil.which(argv[0], path=path) or argv[0]
        workdir = rewrite_paths(container.get("workingDir") or "", mounts) or str(self.state_dir)
        with open(log_path, "ab") as out:
            try:
                proc = subprocess.Popen([exe, *argv[1:]], env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=workdir, start_new_session=True)
            except OSError as e:
                out.write(f"pod runner: cannot start {argv[0]!r}: {e}\n".encode())
                return 127, "ContainerCannotRun", None
            with self.lock:
                self.procs[key] = proc
            code = proc.wait()
        with self.lock:
            self.procs.pop(key, None)
        if code < 0:  # killed by a signal, as the kubelet reports it
            code = 128 - code
        message = termination.read_bytes()[:4096].decode(errors="replace") if termination.exists() else None
        return code, "Completed" if code == 0 else "Error", message or None

    def _secret(self, ns: str, name: str) -> dict[str, str]:
        import base64

        return self._data("secret", self.api.read_namespaced_secret, ns, name, lambda v: base64.b64decode(v).decode())

    def _config_map(self, ns: str, name: str) -> dict[str, str]:
        return self._data("configmap", self.api.read_namespaced_config_map, ns, name, str)

    @staticmethod
    def _data(kind: str, read, ns: str, name: str, decode) -> dict[str, str]:
        """An object's .data, decoded; KeyError (a container config error) when missing."""
        try:
            obj = read(name, ns)
        except ApiException as e:
            if e.status == 404:
                raise KeyError(f"{kind} {ns}/{name} not found") from None
            raise
        return {k: decode(v) for k, v in (obj.data or {}).items()}

    def _container_names(self, pod: dict) -> list[tuple[str, str]]:
        return [(c["name"], c.get("image", "")) for c in pod["spec"]["containers"]]

    def _set_running(self, pod: dict, started: str) -> None:
        statuses = [
            {"name": n, "image": img, "imageID": "", "ready": True, "restartCount": 0, "started": True,
             "state": {"running": {"startedAt": started}}}
            for n, img in self._container_names(pod)
        ]
        self._patch_status(pod, {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": started,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
            "containerStatuses": statuses,
        })

    def _set_terminated(self, pod: dict, started: str, code: int, reason: str, message: str | None = None) -> None:
        finished = _now()
        terminated = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}
        statuses = [
            {"name": n, "image": img, "imageID": "", "ready": False, "restartCount": 0, "started": False,
             "state": {"terminated": {**terminated, **({"message": message} if message and i == 0 else {})}}}
            for i, (n, img) in enumerate(self._container_names(pod))
        ]
        self._patch_status(pod, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": finished}],
            "containerStatuses": statuses,
        })

    def _patch_status(self, pod: dict, status: dict) -> None:
        meta = pod["metadata"]
        self.api.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})

    def _kill(self, key: str) -> None:
        with self.lock:
            proc = self.procs.get(key)
        if proc and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _finalize_delete(self, meta: dict) -> None:
        """Without a kubelet nothing confirms a graceful delete; do it as the kubelet would."""
        try:
            self.api.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=0,
                                           body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                       preconditions={"uid": meta["uid"]}))
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("event=finalize_failed pod=%s/%s status=%s", meta["namespace"], meta["name"], e.status)


def main(kubeconfig: str, mode: str, state_dir: str, extra_path: str | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s level=%(levelname)s %(name)s %(message)s")
    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    runner = PodRunner(api, mode, Path(state_dir), extra_path)

    def on_signal(*_):
        runner.stop.set()
        for key in list(runner.procs):
            runner._kill(key)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.run_forever()
    return 0

