"""The chart's alerting rules (alerts.enabled): valid, unit-tested with promtool, and
evaluated by a real Prometheus over metrics that real runs pushed, with an alert seen
firing and then resolving."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from ingestion_dev.processes import ProcessGroup
from ingestion_dev.services import start_prometheus

from ..conftest import CHART
from ..job.conftest import Dataset, context, days_ago, run  # run: on the job tests' clock, as days_ago

S = '{namespace="data", schedule="daily"}'
OP = 'job="ingestion-ingestion-operator-metrics", namespace="data"'


@pytest.fixture(scope="module")
def rule_file(helm, tmp_path_factory) -> Path:
    out = subprocess.run([helm, "template", "ingestion", str(CHART), "--namespace", "data", "--kube-version", "1.36.3",
                          "--set", "alerts.enabled=true", "-s", "templates/prometheusrule.yaml"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (doc,) = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert doc["kind"] == "PrometheusRule"
    path = tmp_path_factory.mktemp("rules") / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True)


def test_the_rules_are_valid_and_cover_what_users_need(rule_file):
    out = promtool("check", "rules", str(rule_file))
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = {r["alert"] for g in yaml.safe_load(rule_file.read_text())["groups"] for r in g["rules"]}
    assert alerts == {"IngestionScheduleStale", "IngestionLastRunFailed", "IngestionErrorBudgetBurnFast",
                      "IngestionErrorBudgetBurnSlow", "IngestionRepairsFailing", "IngestionRepairBacklog", "IngestionUpstreamLate",
                      "IngestionOperatorDown", "IngestionOperatorReconcileErrors"}


def firing(alert: str, at: str, labels: dict | None = None, **annotations: str) -> dict:
    """``alert`` fires at ``at`` with these labels and annotations; without labels, it does not."""
    exp = [{"exp_labels": labels, "exp_annotations": annotations}] if labels is not None else []
    return {"eval_time": at, "alertname": alert, "exp_alerts": exp}


def test_each_alert_fires_and_stays_quiet_at_the_threshold(rule_file, tmp_path):
    sched = {"namespace": "data", "schedule": "daily"}
    tests = {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": [
            # last success at t=0: stale after 26 h
            {"series": f"ingestion_last_success_timestamp_seconds{S}", "values": "0x1800"},
            # gaps open from the start, by cause: each alert sums its own causes after its own time
            {"series": 'ingestion_gaps_open{namespace="data", schedule="daily", cause="deferred"}', "values": "3x4440"},
            {"series": 'ingestion_gaps_open{namespace="data", schedule="daily", cause="fetch-failed"}', "values": "1x4440"},
            {"series": 'ingestion_gaps_open{namespace="data", schedule="daily", cause="quarantined"}', "values": "1x4440"},
            {"series": 'ingestion_gaps_open{namespace="data", schedule="daily", cause="verification-failed"}', "values": "0x4440"},
            {"series": 'ingestion_gaps_open{namespace="data", schedule="daily", cause="late-upstream"}', "values": "2x4440"},
            {"series": 'ingestion_gaps_open{namespace="data", schedule="daily", cause="withdrawn"}', "values": "1x4440"},
            {"series": 'ingestion_gaps_open{namespace="data", schedule="daily", cause="not-due"}', "values": "5x4440"},
         ], "alert_rule_test": [
            firing("IngestionScheduleStale", "25h"),
            firing("IngestionScheduleStale", "27h", {**sched, "severity": "warning"},
                   summary="data/daily has had no successful run for 1d 3h 0m 0s",
                   description="No run of this IngestionSchedule succeeded within 93600 s; see kubectl describe isched and its Jobs' logs."),
            firing("IngestionRepairBacklog", "71h"),
            firing("IngestionRepairBacklog", "73h", {**sched, "severity": "warning"},
                   summary="data/daily has left 3 gap(s) for later runs for a while",
                   description="Runs defer repairs they have no room for (spec.repair.maxRepairsPerRun, the run's time budget, "
                               "the catch-up limit); raise them, or run a backfill."),
            firing("IngestionRepairsFailing", "5h"),
            firing("IngestionRepairsFailing", "7h", {**sched, "severity": "warning"},
                   summary="data/daily has 2 gap(s) its runs fail to repair",
                   description="Causes fetch-failed, verification-failed (size or checksum) or quarantined (the object did not "
                               "hold its cell's data): ingestion-job report lists each with its last error."),
            firing("IngestionUpstreamLate", "11h"),
            firing("IngestionUpstreamLate", "13h", {**sched, "severity": "info"},  # not-due is never counted
                   summary="data/daily waits for 3 object(s) upstream",
                   description="Causes late-upstream (not published past spec.target.publishDelayHours) or withdrawn (gone "
                               "after it was verified): the publisher's doing; the runs repair them once they are listed."),
         ]},
        {"interval": "1m", "input_series": [
            {"series": f"ingestion_run_success{S}", "values": "1 1 0 0 1"},
            # ten runs succeed, then every run fails: the fast burn alert once both windows (1 h, 5 m) are mostly failures
            {"series": 'ingestion_runs_total{namespace="data", schedule="daily", outcome="failed"}', "values": "0x10 1+1x90"},
            {"series": 'ingestion_runs_total{namespace="data", schedule="daily", outcome="succeeded"}', "values": "0+1x10 10x90"},
            {"series": f'ingestion_operator_reconcile_errors_total{{{OP}}}', "values": "0x20 1x40"},
            {"series": f'up{{{OP}}}', "values": "1x10 0x50"},
         ], "alert_rule_test": [
            firing("IngestionLastRunFailed", "1m"),
            firing("IngestionLastRunFailed", "2m", {**sched, "severity": "warning"}, summary="The last run of data/daily did not succeed",
                   description="It failed (exit 1: status.lastRun and kubectl logs job/<job> give the reason) or was partial (exit 3: some repairs failed; ingestion-job report lists each open gap with its last error)."),
            firing("IngestionLastRunFailed", "4m"),  # a success resolves it
            firing("IngestionErrorBudgetBurnFast", "9m"),
            firing("IngestionErrorBudgetBurnFast", "30m"),  # the last hour still holds the ten successes
            firing("IngestionErrorBudgetBurnFast", "80m", {**sched, "severity": "critical"},
                   summary="data/daily burns its 95% run-success budget 14.4 times too fast (1 h and 5 m)"),
            firing("IngestionOperatorReconcileErrors", "19m"),
            firing("IngestionOperatorReconcileErrors", "21m", {"job": "ingestion-ingestion-operator-metrics", "namespace": "data",
                                                               "severity": "warning"},
                   summary="The ingestion operator failed to reconcile in the last 15 minutes",
                   description="Its logs carry event=reconcile_error with the namespace and name."),
            firing("IngestionOperatorDown", "13m"),  # down since 10m, alert after 5m
            firing("IngestionOperatorDown", "16m", {"job": "ingestion-ingestion-operator-metrics", "namespace": "data",
                                                    "severity": "critical"},
                   summary="The ingestion operator is not being scraped as up; schedules are not reconciled."),
         ]},
    ]}
    f = tmp_path / "tests.yml"
    f.write_text(yaml.safe_dump(tests))
    out = promtool("test", "rules", str(f))
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_paused_schedule_s_alerts_stay_quiet_and_come_back_when_it_resumes(rule_file, tmp_path):
    """The operator says a schedule is suspended (paused or disabled) with
    ingestion_operator_schedule_suspended{schedule_namespace, schedule}: while it is 1, the
    schedule's alerts stay quiet (no run is expected); once it is 0 they fire as before. Another
    schedule's suspension silences nothing."""
    op = 'job="ingestion-ingestion-operator-metrics", namespace="ingestion-system"'

    def stale(schedule: str, age: str) -> dict:
        return {"exp_labels": {"namespace": "data", "schedule": schedule, "severity": "warning"},
                "exp_annotations": {"summary": f"data/{schedule} has had no successful run for {age}",
                                    "description": "No run of this IngestionSchedule succeeded within 93600 s; see kubectl "
                                                   "describe isched and its Jobs' logs."}}
    tests = {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": [
            {"series": f"ingestion_last_success_timestamp_seconds{S}", "values": "0x2400"},
            {"series": 'ingestion_last_success_timestamp_seconds{namespace="data", schedule="other"}', "values": "0x2400"},
            {"series": 'ingestion_gaps_open{namespace="data", schedule="daily", cause="fetch-failed"}', "values": "1x2400"},
            {"series": f"ingestion_run_success{S}", "values": "0x2400"},
            # paused for the first 30 hours (two replicas: the leader's series and an old one), then resumed
            {"series": f'ingestion_operator_schedule_suspended{{{op}, instance="a", schedule_namespace="data", schedule="daily"}}',
             "values": "1x1800 0x600"},
            {"series": f'ingestion_operator_schedule_suspended{{{op}, instance="b", schedule_namespace="data", schedule="other"}}',
             "values": "0x2400"},
         ], "alert_rule_test": [
            {"eval_time": "29h", "alertname": "IngestionScheduleStale", "exp_alerts": [stale("other", "1d 5h 0m 0s")]},
            firing("IngestionRepairsFailing", "29h"),
            firing("IngestionLastRunFailed", "29h"),
            {"eval_time": "31h", "alertname": "IngestionScheduleStale",
             "exp_alerts": [stale("daily", "1d 7h 0m 0s"), stale("other", "1d 7h 0m 0s")]},
         ]},
    ]}
    f = tmp_path / "tests.yml"
    f.write_text(yaml.safe_dump(tests))
    out = promtool("test", "rules", str(f))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_burn_rate_counts_every_run_that_did_not_succeed(rule_file, tmp_path):
    """Partial and abandoned runs miss the objective as failed ones do (as in the SLO, the
    report and the dashboard): a schedule whose every run is partial burns its budget."""
    def runs(schedule, outcome):
        return [{"series": f'ingestion_runs_total{{namespace="data", schedule="{schedule}", outcome="{o}"}}',
                 "values": "0+1x400" if o == outcome else "0x400"} for o in ("succeeded", "partial", "failed", "abandoned")]

    def burning(schedule, speed, windows):
        return {"labels": {"namespace": "data", "schedule": schedule, "severity": "critical" if speed == "14.4" else "warning"},
                "annotations": {"summary": f"data/{schedule} burns its 95% run-success budget {speed} times too fast ({windows})"}}

    fast = [burning(s, "14.4", "1 h and 5 m") for s in ("abandoned", "partial")]
    slow = [burning(s, "6", "6 h and 30 m") for s in ("abandoned", "partial")]
    tests = {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": runs("partial", "partial") + runs("abandoned", "abandoned") + runs("fine", "succeeded"),
         "alert_rule_test": [
             {"eval_time": "10m", "alertname": "IngestionErrorBudgetBurnFast",
              "exp_alerts": [{"exp_labels": a["labels"], "exp_annotations": a["annotations"]} for a in fast]},
             {"eval_time": "30m", "alertname": "IngestionErrorBudgetBurnSlow",
              "exp_alerts": [{"exp_labels": a["labels"], "exp_annotations": a["annotations"]} for a in slow]},
         ]},
    ]}
    f = tmp_path / "tests.yml"
    f.write_text(yaml.safe_dump(tests))
    out = promtool("test", "rules", str(f))
    assert out.returncode == 0, out.stdout + out.stderr


def alerts(prom: str, name: str, schedule: str) -> list[str]:
    body = json.loads(urllib.request.urlopen(f"{prom}/api/v1/alerts", timeout=10).read())
    return [a["state"] for a in body["data"]["alerts"] if a["labels"].get("alertname") == name and a["labels"].get("schedule") == schedule]


def test_a_real_prometheus_fires_and_resolves_on_pushed_runs(servers, rule_file, tmp_path, wait_for):
    group = ProcessGroup(tmp_path)
    try:
        prom = start_prometheus(group, [servers.pushgateway], rule_files=[rule_file])
        data = Dataset(servers, "alerts")
        data.upload([("BTCUSDT", d) for d in days_ago(1)])
        good = data.spec(["BTCUSDT"], lookback=0)
        bad = {**good, "target": {**good["target"], "bucket": "no-such-bucket-here"}}
        failed = run(context(bad, schedule="alerting", namespace="alerts-test"), tmp_path / "s.duckdb")
        assert failed.outcome == "failed"
        wait_for(lambda: alerts(prom, "IngestionLastRunFailed", "alerting") == ["firing"], 60, "the failed-run alert firing")
        assert run(context(good, schedule="alerting", namespace="alerts-test"), tmp_path / "s.duckdb").outcome == "succeeded"
        wait_for(lambda: alerts(prom, "IngestionLastRunFailed", "alerting") == [], 60, "the failed-run alert resolved")
    finally:
        group.down(log=lambda m: None)
