"""The Helm chart: lint, template, install on the real control plane, and least-privilege
RBAC proven by the API server's audit log."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import yaml

from ingestion_operator.backfill import backfill_labels
from ingestion_operator.render import labels_for, parse_job_resources

from ..conftest import BACKFILL_CRD, CHART, CRD, REPO, UPSTREAM_CRD, Operator, kubectl



def template(helm, *sets, namespace="ingestion-system", check=True):
    args = [helm, "template", "ingestion", str(CHART), "--namespace", namespace, "--kube-version", "1.36.3"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    return out


def test_chart_copies_match_their_sources():
    assert (CHART / "crds" / CRD.name).read_text() == CRD.read_text()
    assert (CHART / "crds" / BACKFILL_CRD.name).read_text() == BACKFILL_CRD.read_text()
    assert (CHART / "crds" / UPSTREAM_CRD.name).read_text() == UPSTREAM_CRD.read_text()
    assert (CHART / "dashboards" / "ingestion.json").read_text() == (REPO / "deploy" / "grafana" / "ingestion.json").read_text()


def test_helm_lint(helm):
    out = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_plain_helm_template_renders_the_chart(helm):
    """dev/build-helm links Helm's Makefile ldflags: a plain `helm template` (no --kube-version)
    assumes the Kubernetes of Helm's client-go, not v1.20, which the chart's kubeVersion refuses."""
    out = subprocess.run([helm, "template", "ingestion", str(CHART)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert subprocess.run([helm, "version", "--template", "{{.Version}}"], capture_output=True, text=True).stdout == "v3.22.0"


def test_template_cluster_wide(helm):
    docs = template(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding",
                     "Secret", "Service", "Service", "ServiceAccount", "ValidatingWebhookConfiguration"]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"] == dep["spec"]["selector"]
    lease_role = next(d for d in docs if d["kind"] == "Role")
    assert lease_role["metadata"]["namespace"] == "ingestion-system"
    assert {v for r in lease_role["rules"] for v in r["verbs"]} == {"create", "get", "update"}
    assert all(r.get("resourceNames") == ["ingestion-ingestion-operator"] for r in lease_role["rules"] if r["verbs"] != ["create"])
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    # liveness: the process and its loop; readiness: and the API server (kube-score pod-probes-identical)
    assert (c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"]) == ("/livez", "/readyz")
    assert "--job-image=ghcr.io/ingestion-operator/ingestion-job:0.1.0" in c["args"]
    assert "--default-pushgateway-url=http://prometheus-pushgateway.monitoring:9091" in c["args"]
    assert {"--leader-elect", "--leader-election-id=ingestion-ingestion-operator", "--lease-duration=15"} <= set(c["args"])
    assert {e["name"] for e in c["env"]} == {"POD_NAME", "POD_NAMESPACE"}
    # the job pods' default requests and limits, as the operator reads its flag
    flag = next(a.split("=", 1)[1] for a in c["args"] if a.startswith("--job-resources="))
    assert parse_job_resources(flag) == {"requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
                                         "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "4Gi"}}
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}
    assert pod["affinity"]["podAntiAffinity"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and json.loads(cm["data"]["ingestion.json"])["panels"]


def test_template_namespaced_has_roles_only_in_watched_namespaces(helm):
    docs = template(helm, "clusterWide=false", "watchNamespaces={data,market}")
    roles = [(d["kind"], d["metadata"]["namespace"]) for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole")]
    assert sorted(roles) == [("Role", "data"), ("Role", "ingestion-system"), ("Role", "market"),
                             ("RoleBinding", "data"), ("RoleBinding", "ingestion-system"), ("RoleBinding", "market")]
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=data" in args and "--namespace=market" in args


def test_optional_parts_and_refusals(helm):
    docs = template(helm, "persistence.enabled=true", "metrics.serviceMonitor.enabled=true")
    assert {"PersistentVolumeClaim", "ServiceMonitor"} <= {d["kind"] for d in docs}
    bad = template(helm, "clusterWide=false", check=False)
    assert bad.returncode != 0 and "watchNamespaces must list namespaces" in bad.stderr
    bad = template(helm, "leaderElection.enabled=false", check=False)
    assert bad.returncode != 0 and "replicaCount > 1 needs leaderElection.enabled" in bad.stderr
    single = template(helm, "leaderElection.enabled=false", "replicaCount=1")
    assert {d["kind"] for d in single}.isdisjoint({"PodDisruptionBudget", "Role"})
    assert "--no-leader-elect" in next(d for d in single if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    bad = template(helm, "logFormat=xml", check=False)
    assert bad.returncode != 0 and "logFormat" in bad.stderr
    bad = template(helm, "jobResources.limits.memory=2 GB", check=False)
    assert bad.returncode != 0 and "/jobResources/limits/memory" in bad.stderr


def _openssl(*args: str, input: str) -> str:
    out = subprocess.run(["openssl", *args], input=input, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_admission_webhook_is_served_by_every_replica_behind_a_service(helm, tmp_path):
    docs = template(helm)
    config = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert hook["name"] == "schedules.ingestion.dev"
    assert (hook["failurePolicy"], hook["sideEffects"], hook["timeoutSeconds"], hook["admissionReviewVersions"]) == \
        ("Ignore", "None", 5, ["v1"])  # an operator outage never blocks an apply
    assert hook["rules"] == [{"apiGroups": ["ingestion.dev"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                              "resources": ["ingestionschedules"], "scope": "Namespaced"}]  # not the status subresource
    assert "namespaceSelector" not in hook  # cluster-wide
    ref = hook["clientConfig"]["service"]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == ref["name"])
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert (ref["namespace"], ref["path"], ref["port"]) == ("ingestion-system", "/validate", 443)
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]  # every replica, the standby too
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook"}]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert {"name": "webhook", "containerPort": 9443} in c["ports"]
    assert {"--webhook-port=9443", "--webhook-cert-dir=/etc/ingestion-operator/webhook"} <= set(c["args"])
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/ingestion-operator/webhook")
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert mount["readOnly"] is True
    assert next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]["secretName"] == secret["metadata"]["name"]
    # the caBundle is the CA that signed the serving certificate, which names the Service
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode() == data["ca.crt"]
    (tmp_path / "ca.crt").write_text(data["ca.crt"])
    assert _openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), input=data["tls.crt"]).strip() == "stdin: OK"
    sans = _openssl("x509", "-noout", "-ext", "subjectAltName", input=data["tls.crt"])
    assert f"DNS:{ref['name']}.ingestion-system.svc" in sans
    assert _openssl("pkey", "-pubout", input=data["tls.key"]) == _openssl("x509", "-noout", "-pubkey", input=data["tls.crt"])

    namespaced = template(helm, "clusterWide=false", "watchNamespaces={data,market}")
    (hook,) = next(d for d in namespaced if d["kind"] == "ValidatingWebhookConfiguration")["webhooks"]
    assert hook["namespaceSelector"] == {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                                                "values": ["data", "market"]}]}
    off = template(helm, "webhook.enabled=false")
    assert {d["kind"] for d in off}.isdisjoint({"Secret", "ValidatingWebhookConfiguration"})
    args = next(d for d in off if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--webhook")]


NETWORK_POLICY = ("networkPolicy.enabled=true", "networkPolicy.operator.apiServer.cidrs={10.0.0.1/32}")


def test_helm_lint_with_every_option(helm):
    sets = [*NETWORK_POLICY, "networkPolicy.jobs.namespaces={data}", "persistence.enabled=true", "alerts.enabled=true",
            "metrics.serviceMonitor.enabled=true"]
    out = subprocess.run([helm, "lint", "--strict", str(CHART), *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_network_policies_hold_the_operator_and_every_job_pod(helm):
    assert not [d for d in template(helm) if d["kind"] == "NetworkPolicy"]  # off by default
    docs = template(helm, *NETWORK_POLICY, "clusterWide=false", "watchNamespaces={data,market}")
    policies = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert sorted(policies) == [("data", "ingestion-ingestion-operator-jobs"), ("ingestion-system", "ingestion-ingestion-operator-operator"),
                                ("market", "ingestion-ingestion-operator-jobs")]
    op = policies["ingestion-system", "ingestion-ingestion-operator-operator"]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert op["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert op["policyTypes"] == ["Ingress", "Egress"]
    assert [r["to"] for r in op["egress"]][1] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]  # DNS, then the API server
    # in: metrics, probes, and the API server's admission reviews (from anywhere unless webhookFrom says)
    assert [r["ports"] for r in op["ingress"]] == [[{"protocol": "TCP", "port": p}] for p in ("metrics", "health", "webhook")]
    peers = [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    narrowed = template(helm, *NETWORK_POLICY, "networkPolicy.jobs.namespaces={data}",
                        "networkPolicy.operator.webhookFrom[0].ipBlock.cidr=10.0.0.1/32")
    assert next(d for d in narrowed if d["metadata"]["name"].endswith("-operator"))["spec"]["ingress"][2]["from"] == peers
    jobs = policies["data", "ingestion-ingestion-operator-jobs"]
    assert jobs["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in jobs  # nothing reaches a job pod
    # the selector matches the labels the operator renders on schedule runs and backfill units alike
    selector = jobs["podSelector"]["matchLabels"].items()
    assert selector <= labels_for("s").items() and selector <= backfill_labels("b").items()
    ports = [sorted(p["port"] for p in r["ports"]) for r in jobs["egress"]]
    assert ports == [[53, 53], [443], [9091]]  # DNS, the source, the Pushgateway (no object store named: none)
    with_store = template(helm, *NETWORK_POLICY, "networkPolicy.jobs.namespaces={data}", "networkPolicy.jobs.store.cidrs={10.1.0.0/16}",
                          "networkPolicy.jobs.store.ports={9000}")
    store = next(d for d in with_store if d["metadata"]["name"].endswith("-jobs"))["spec"]["egress"][2]
    assert store == {"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 9000}]}
    bad = template(helm, "networkPolicy.enabled=true", check=False)
    assert bad.returncode != 0 and "needs networkPolicy.operator.apiServer.cidrs" in bad.stderr
    bad = template(helm, *NETWORK_POLICY, check=False)  # cluster-wide: where the jobs run is not known
    assert bad.returncode != 0 and "needs networkPolicy.jobs.namespaces" in bad.stderr


def test_images_by_digest(helm):
    digest = "sha256:" + "ab" * 32
    docs = template(helm, f"image.digest={digest}", f"jobImage.digest={digest}", "image.tag=ignored")
    c = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == f"ghcr.io/ingestion-operator/ingestion-operator@{digest}"
    assert f"--job-image=ghcr.io/ingestion-operator/ingestion-job@{digest}" in c["args"]
    bad = template(helm, "jobImage.digest=latest", check=False)
    assert bad.returncode != 0 and "/jobImage/digest" in bad.stderr


def test_helm_install_on_the_control_plane(helm, cluster, namespaces, wait_for):
    ns = namespaces("ingestion-system", mode="hold")  # no image can run here: hold the operator's pod Running
    # Namespaced, so the webhook configuration (cluster-scoped) matches this namespace only: no other
    # test's apply meets a webhook whose pod is held here.
    scope = ["--set", "clusterWide=false", "--set", f"watchNamespaces={{{ns}}}"]
    helm_args = ["--namespace", ns, "--kubeconfig", str(cluster.kubeconfig)]
    out = subprocess.run([helm, "install", "ingestion", str(CHART), *helm_args, "--set", "dashboard.enabled=true", *scope,
                          "--skip-crds"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        assert "kubectl get isched" in out.stdout and "kubectl create job manual-1" in out.stdout  # NOTES
        wait_for(lambda: kubectl(cluster, "get", "pods", "-n", ns, "-o", "jsonpath={.items[0].status.phase}", check=False).stdout == "Running",
                 60, "the operator Deployment's pod")
        st = subprocess.run([helm, "status", "ingestion", "-n", ns, "--kubeconfig", str(cluster.kubeconfig), "-o", "json"],
                            capture_output=True, text=True)
        assert json.loads(st.stdout)["info"]["status"] == "deployed"

        # The webhook's CA is made once: an upgrade keeps the Secret's, and the caBundle stays its CA.
        def ca_pair():
            secret = cluster.core.read_namespaced_secret("ingestion-ingestion-operator-webhook-tls", ns)
            config = json.loads(kubectl(cluster, "get", "validatingwebhookconfiguration", "ingestion-ingestion-operator",
                                        "-o", "json").stdout)
            return secret.data["ca.crt"], config["webhooks"][0]["clientConfig"]["caBundle"], secret.data["tls.crt"]
        ca, bundle, crt = ca_pair()
        assert ca == bundle
        up = subprocess.run([helm, "upgrade", "ingestion", str(CHART), *helm_args, *scope, "--skip-crds"], capture_output=True,
                            text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        assert ca_pair() == (ca, ca, crt)
    finally:
        subprocess.run([helm, "uninstall", "ingestion", *helm_args], capture_output=True)


def granted(rules) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_operator_runs_with_the_charts_service_account_and_uses_every_granted_verb(helm, cluster, crd, namespaces, tmp_path, wait_for):
    """Least privilege, proven: run the operator with a TokenRequest token of the chart's
    ServiceAccount, drive every path, then read the API server's audit log."""
    assert cluster.audit_log, "the audit log is needed (the session control plane has it)"
    ns = namespaces("rbac-operator")
    docs = template(helm, namespace=ns)
    rbac_docs = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    for d in rbac_docs:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):  # cluster-scoped: one per test namespace
            d["metadata"]["name"] = d["metadata"]["name"] + "-" + ns
    binding = next(d for d in rbac_docs if d["kind"] == "ClusterRoleBinding")
    binding["roleRef"]["name"] = next(d for d in rbac_docs if d["kind"] == "ClusterRole")["metadata"]["name"]
    kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump_all(rbac_docs))
    sa = next(d for d in rbac_docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    token = cluster.core.create_namespaced_service_account_token(sa, ns, {"spec": {"expirationSeconds": 3600}}).status.token
    cfg = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    cfg["users"] = [{"name": "operator-sa", "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = "operator-sa"
    sa_kubeconfig = tmp_path / "sa.kubeconfig"
    sa_kubeconfig.write_text(yaml.safe_dump(cfg))

    from ..conftest import Cluster
    from ..kube import backfill_yaml, cond, get, get_backfill, get_cronjob, get_upstream, ready, schedule_yaml, upstream_yaml

    work = namespaces("rbac-work", mode="complete")
    lease_args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    lease_id = next(a.split("=", 1)[1] for a in lease_args if a.startswith("--leader-election-id="))
    op = Operator(Cluster(sa_kubeconfig, None), tmp_path, lease=lease_id, extra=[f"--leader-election-namespace={ns}"])
    op.start()
    try:
        kubectl(cluster, "apply", "-n", work, "-f", "-", input=schedule_yaml("r"))
        wait_for(lambda: ready(cluster, work, "r"), 30, "Ready via the SA")                     # create, status patch
        kubectl(cluster, "patch", "isched", "r", "-n", work, "--type", "merge", "-p", '{"spec": {"schedule": "0 3 * * *"}}')
        wait_for(lambda: get_cronjob(cluster, work, "r")["spec"]["schedule"] == "0 3 * * *", 30, "update via the SA")
        kubectl(cluster, "create", "job", "m-1", "--from=cronjob/r", "-n", work)
        wait_for(lambda: (get(cluster, work, "r").get("status", {}).get("lastRun") or {}).get("outcome") == "Succeeded", 30, "lastRun")
        kubectl(cluster, "apply", "-n", work, "-f", "-", input=backfill_yaml("rb", "r", "2026-01-01", "2026-01-02"))
        wait_for(lambda: cond(get_backfill(cluster, work, "rb"), "Complete").get("status") == "True", 60, "a backfill via the SA")
        kubectl(cluster, "apply", "-n", work, "-f", "-", input=upstream_yaml("ru", maxRequestsPerSecond=10))  # watch, get, status
        wait_for(lambda: (get(cluster, work, "r").get("status", {}).get("upstream") or {}).get("requestsPerSecond") == 7, 30,
                 "an upstream's share via the SA")
        wait_for(lambda: get_upstream(cluster, work, "ru").get("status", {}).get("sharerCount") == 1, 30, "its status via the SA")
        # a run that cannot start (a quota refuses its pod): the operator reads the Job's Events
        kubectl(cluster, "apply", "-n", work, "-f", "-", input=yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}))
        kubectl(cluster, "create", "job", "m-2", "--from=cronjob/r", "-n", work)
        wait_for(lambda: (get(cluster, work, "r").get("status", {}).get("lastRun") or {}).get("outcome") == "Blocked", 60,
                 "a blocked run, read from the Job's Events via the SA")
        kubectl(cluster, "patch", "isched", "r", "-n", work, "--type", "merge", "-p", '{"spec": {"timezone": "Nowhere/Zone"}}')
        wait_for(lambda: cond(get(cluster, work, "r"), "Ready").get("status") == "False", 30, "an invalid spec event")
    finally:
        op.stop()
    user = f"system:serviceaccount:{ns}:{sa}"
    used, denied = set(), []
    for line in cluster.audit_log.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("user", {}).get("username") != user or "objectRef" not in ev:
            continue
        ref = ev["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, ev["verb"]))
        if ev.get("responseStatus", {}).get("code") == 403:
            denied.append((resource, ev["verb"]))
    rules = [r for d in rbac_docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    assert denied == [], f"the operator was refused: {denied}"
    assert used == granted(rules), f"unused grants: {granted(rules) - used}; used but not granted: {used - granted(rules)}"
