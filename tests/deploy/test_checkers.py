"""The checkers a cluster admin runs, on what we ship: kube-score and checkov on the chart's
`helm template` output and on the CronJobs and backfill Jobs the operator renders for every
example (configured as the chart configures the operator), and promtool on the operator's
/metrics. Each finding is fixed or in ALLOWED with the reason it does not apply. A checker
that cannot be built or installed fails the test (dev/build-kube-score, dev/build-checkov)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ingestion_contract import parse_backfill, parse_spec
from ingestion_dev.checkers import checker_binary
from ingestion_operator.backfill import render_backfill_job
from ingestion_operator.render import RenderSettings, parse_job_resources, render_cronjob

from ..conftest import CHART, REPO

NAMESPACE, JOBS_NAMESPACE = "ingestion-system", "data"
DIGEST = "sha256:" + "0123456789abcdef" * 4
# The chart's values: as installed, and with every option on (pinned images included).
DEFAULT: tuple[str, ...] = ()
EVERYTHING = ("networkPolicy.enabled=true", "networkPolicy.operator.apiServer.cidrs={10.0.0.1/32}",
              f"networkPolicy.jobs.namespaces={{{JOBS_NAMESPACE}}}", "persistence.enabled=true", "alerts.enabled=true",
              "metrics.serviceMonitor.enabled=true", f"image.digest={DIGEST}", f"jobImage.digest={DIGEST}")
CONFIGS = {"default": DEFAULT, "everything": EVERYTHING}

PARTS = ("chart", "operator")  # helm template's output; the operator's CronJobs and backfill Jobs
EVERYWHERE = {f"{part}/{config}" for part in PARTS for config in CONFIGS}
AS_INSTALLED = {f"{part}/default" for part in PARTS}

# What does not apply: (checker, check) -> (where: "part/config", the kinds of object, why).
# Anything else a checker reports fails the test, and so does an entry nothing needs.
ALLOWED = {
    # The operator reconciles through the API server: its pod needs its ServiceAccount token
    # (job pods mount none: automountServiceAccountToken false).
    ("checkov", "CKV_K8S_38"): (EVERYWHERE, {"Deployment"}, "the operator's own token"),
    # IfNotPresent on pinned images: the chart's appVersion tag, or a digest (image.digest,
    # jobImage.digest). Always makes every run's start depend on the registry and re-checks a tag
    # we never move; the multi-tenant case it guards (a cached private image used without pull
    # credentials) is the AlwaysPullImages admission plugin's.
    ("checkov", "CKV_K8S_15"): (EVERYWHERE, {"Deployment", "CronJob", "Job"}, "IfNotPresent on pinned images"),
    ("kube-score", "container-image-pull-policy"): (EVERYWHERE, {"Deployment", "CronJob", "Job"}, "IfNotPresent on pinned images"),
    # No digest is known before an image is released: the defaults name the version tag; with
    # image.digest and jobImage.digest set ("everything") the check passes.
    ("checkov", "CKV_K8S_43"): (AS_INSTALLED, {"Deployment", "CronJob", "Job"}, "a digest is the installer's to set"),
    # NetworkPolicies are opt-in (the API server's and the store's addresses are the cluster's
    # own); with networkPolicy.enabled ("everything") both checks pass for every pod.
    ("checkov", "CKV2_K8S_6"): (AS_INSTALLED, {"Pod", "CronJob", "Job"}, "NetworkPolicies are opt-in"),
    ("kube-score", "pod-networkpolicy"): (AS_INSTALLED, {"Deployment", "CronJob", "Job"}, "NetworkPolicies are opt-in"),
    # The jobs' NetworkPolicy selects pods the operator creates later, not any in the chart; it
    # is checked with them in operator/everything, where it targets every job pod.
    ("kube-score", "networkpolicy-targets-pod"): ({"chart/everything"}, {"NetworkPolicy"}, "the job pods come later"),
    # The job reads S3 credentials from its environment by secretKeyRef (the operator-job
    # contract, ingestion_contract.podenv, and boto3's and delta-rs's own convention); the
    # values never appear in the pod spec (examples/london-weekdays.yaml names two Secrets).
    ("checkov", "CKV_K8S_35"): ({"operator/default", "operator/everything"}, {"CronJob", "Job"}, "credentials by secretKeyRef env"),
}


def helm_template(helm: str, sets: tuple[str, ...]) -> list[dict]:
    args = [helm, "template", "ingestion", str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def operator_settings(chart: list[dict]) -> RenderSettings:
    """The RenderSettings the chart gives the operator: read back from its Deployment's args."""
    dep = next(d for d in chart if d["kind"] == "Deployment")
    args = dict(a[2:].split("=", 1) for a in dep["spec"]["template"]["spec"]["containers"][0]["args"] if "=" in a)
    return RenderSettings(job_image=args["job-image"], image_pull_policy=args["image-pull-policy"],
                          job_resources=parse_job_resources(args["job-resources"]),
                          default_pushgateway_url=args.get("default-pushgateway-url"))


def operator_rendered(settings: RenderSettings) -> list[dict]:
    """Every example's CronJob, and a backfill Job of it, as the operator renders them."""
    docs = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "IngestionSchedule":
                continue
            name, spec = doc["metadata"]["name"], parse_spec(doc["spec"])
            docs.append(render_cronjob(name, JOBS_NAMESPACE, spec, settings))
            bf = parse_backfill({"schedule": name, "from": "2025-01-01", "to": "2025-03-31", "parallelism": 2})
            docs.append(render_backfill_job(f"{name}-q1"[:52], JOBS_NAMESPACE, bf, name, spec, settings))
    kinds = [d.get("kind") for p in (REPO / "examples").glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d]
    assert len(docs) == 2 * kinds.count("IngestionSchedule") and set(kinds) <= {"IngestionSchedule", "IngestionUpstream"}
    return docs


def manifests(helm: str, config: str, part: str) -> list[dict]:
    chart = helm_template(helm, CONFIGS[config])
    if part == "chart":
        return chart
    # the jobs' NetworkPolicy (in their namespace) is the chart's: give it to the checkers with them
    policies = [d for d in chart if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == JOBS_NAMESPACE]
    return operator_rendered(operator_settings(chart)) + policies


@pytest.fixture(scope="module")
def kube_score() -> str:
    return checker_binary("kube-score")


@pytest.fixture(scope="module")
def checkov() -> str:
    return checker_binary("checkov")


def kube_score_findings(kube_score: str, path: Path) -> list[tuple[str, str]]:
    """(check, kind) of every check kube-score does not grade all OK."""
    out = subprocess.run([kube_score, "score", "--kubernetes-version", "v1.36", "--output-format", "json", str(path)],
                         capture_output=True, text=True)
    assert out.stdout.startswith("["), f"kube-score did not run: {out.stderr}"
    scored = json.loads(out.stdout)
    assert {o["type_meta"]["kind"] for o in scored} & {"Deployment", "CronJob", "Job"}, "kube-score saw no workload"
    return [(c["check"]["id"], o["type_meta"]["kind"]) for o in scored for c in o["checks"]
            if not c["skipped"] and c["grade"] < 10]  # 10: all OK; 7 almost, 5 warning, 1 critical


def checkov_findings(checkov: str, path: Path, count: int) -> list[tuple[str, str]]:
    """(check, kind) of every failed checkov check."""
    out = subprocess.run([checkov, "--quiet", "--compact", "--framework", "kubernetes", "--output", "json", "--file", str(path)],
                         capture_output=True, text=True)
    assert out.stdout.lstrip().startswith(("{", "[")), f"checkov did not run: {out.stderr[-2000:]}"
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] >= count and summary["passed"] > 0, summary
    return [(c["check_id"], c["resource"].split(".")[0]) for r in reports for c in r["results"]["failed_checks"]]


def check_all(helm: str, tmp_path: Path, checker: str, findings_of) -> None:
    """Run ``checker`` on the chart and on the operator's renderings in every configuration;
    fail on a finding ALLOWED does not cover, and on an ALLOWED entry of it nothing needed."""
    unexplained, used = [], set()
    for config in CONFIGS:
        for part in PARTS:
            docs = manifests(helm, config, part)
            path = tmp_path / f"{part}-{config}.yaml"
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            for check, kind in findings_of(path, len(docs)):
                where, kinds, _ = ALLOWED.get((checker, check), ((), (), ""))
                if f"{part}/{config}" in where and kind in kinds:
                    used.add((checker, check))
                else:
                    unexplained.append((part, config, check, kind))
    assert unexplained == [], f"{checker} findings neither fixed nor in ALLOWED: {sorted(set(unexplained))}"
    unused = {key for key in ALLOWED if key[0] == checker} - used
    assert not unused, f"ALLOWED entries {checker} no longer needs (drop them): {sorted(unused)}"


@pytest.mark.build
def test_kube_score_on_the_chart_and_the_operators_manifests(helm, kube_score, tmp_path):
    check_all(helm, tmp_path, "kube-score", lambda path, _: kube_score_findings(kube_score, path))


@pytest.mark.build
def test_checkov_on_the_chart_and_the_operators_manifests(helm, checkov, tmp_path):
    check_all(helm, tmp_path, "checkov", lambda path, count: checkov_findings(checkov, path, count))


@pytest.mark.servers  # promtool comes with Debian's prometheus package (dev/bootstrap)
def test_promtool_accepts_the_operators_metrics():
    """What the operator serves on /metrics (prometheus_client's default registry, with
    ``_created`` series off as `ingestion-operator run` has them), with a sample in every family."""
    from prometheus_client import REGISTRY, disable_created_metrics, enable_created_metrics, generate_latest

    from ingestion_operator import metrics

    disable_created_metrics()
    try:
        metrics.RECONCILES.labels("ok").inc(0)
        metrics.API_WRITES.labels("cronjobs", "create").inc(0)
        metrics.SCHEDULES.labels("true").inc(0)
        text = generate_latest(REGISTRY).decode()
    finally:
        enable_created_metrics()
    assert "ingestion_operator_reconcile_duration_seconds_bucket" in text and "ingestion_operator_leader" in text
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
