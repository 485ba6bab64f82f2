"""The two reasons a valid schedule can still be Ready=False, each from a real obstacle on the
real API server, and the recovery once the obstacle is gone (nothing about the schedule
changes then, so the operator's own recheck finds it)."""

from __future__ import annotations

from kubernetes import client

from ..kube import apply_schedule, cond, events, get, get_cronjob, plain_cronjob, ready

RECHECK = 30  # seconds: the operator's recheck of a schedule blocked by something outside it


def test_a_cronjob_of_someone_else_is_a_conflict_left_untouched_until_it_goes(cluster, operator, namespace, wait_for):
    theirs = cluster.batch.create_namespaced_cron_job(namespace, plain_cronjob("taken", "0 5 * * *", labels={"team": "other"}))
    obj = apply_schedule(cluster, namespace, "taken", status="False")
    r = cond(obj, "Ready")
    assert r["reason"] == "CronJobConflict" and "CronJob taken already exists and is not owned by this IngestionSchedule" in r["message"]
    assert obj["status"]["nextRuns"] == []
    warnings = [e for e in events(cluster, namespace, "taken") if e["reason"] == "CronJobConflict"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    live = get_cronjob(cluster, namespace, "taken")
    assert live["metadata"]["resourceVersion"] == theirs.metadata.resource_version  # never touched
    assert not live["metadata"].get("ownerReferences")

    # Its owner removes it: within a recheck the schedule gets its own CronJob.
    cluster.batch.delete_namespaced_cron_job("taken", namespace)
    obj = wait_for(lambda: ready(cluster, namespace, "taken"), RECHECK + 15, "taken Ready once the foreign CronJob is gone")
    ours = get_cronjob(cluster, namespace, "taken")
    assert ours["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert any(e["reason"] == "Recovered" for e in events(cluster, namespace, "taken"))


def test_a_cronjob_refused_by_admission_is_rejected_with_the_servers_message(cluster, operator, namespace, wait_for):
    """A ValidatingAdmissionPolicy (as a platform team would install) refuses the rendered
    CronJob with 422; a ResourceQuota refuses it with 403. Both are CronJobRejected, carrying
    the API server's message, and the schedule recovers when the policy allows it."""
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    policy = f"no-4am-{namespace}"
    admission.create_validating_admission_policy({
        "metadata": {"name": policy},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                         "operations": ["CREATE", "UPDATE"], "resources": ["cronjobs"]}]},
                 "validations": [{"expression": "object.spec.schedule != '0 4 * * *'",
                                  "message": "4 am belongs to the batch window of the platform team"}]}})
    admission.create_validating_admission_policy_binding({
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    try:
        # the policy takes effect a moment after it is created: a probe CronJob shows when
        def refused():
            try:
                cluster.batch.create_namespaced_cron_job(namespace, plain_cronjob("probe", "0 4 * * *"), dry_run="All")
                return False
            except client.ApiException as e:
                return e.status == 422
        wait_for(refused, 30, "the admission policy in force")

        obj = apply_schedule(cluster, namespace, "four", status="False", schedule="0 4 * * *")
        r = cond(obj, "Ready")
        assert r["reason"] == "CronJobRejected", r
        assert "the API server rejected the CronJob" in r["message"] and "4 am belongs to the batch window" in r["message"], r
        assert get_cronjob(cluster, namespace, "four") is None
        assert [e["type"] for e in events(cluster, namespace, "four") if e["reason"] == "CronJobRejected"] == ["Warning"]
    finally:
        admission.delete_validating_admission_policy_binding(policy)
        admission.delete_validating_admission_policy(policy)
    # the policy gone, the recheck creates the CronJob
    wait_for(lambda: ready(cluster, namespace, "four"), RECHECK + 15, "four Ready once the policy is gone")
    assert get_cronjob(cluster, namespace, "four")["spec"]["schedule"] == "0 4 * * *"

    # A quota of zero CronJobs: 403 Forbidden from the API server, also CronJobRejected.
    cluster.core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-cronjobs"},
                                                              "spec": {"hard": {"count/cronjobs.batch": "1"}}})
    wait_for(lambda: (cluster.core.read_namespaced_resource_quota("no-cronjobs", namespace).status.used or {}).get(
        "count/cronjobs.batch") == "1", 30, "the quota counted")
    obj = apply_schedule(cluster, namespace, "second", status="False")
    r = cond(obj, "Ready")
    assert r["reason"] == "CronJobRejected" and "exceeded quota" in r["message"], r
    assert operator.proc.poll() is None
    cluster.core.delete_namespaced_resource_quota("no-cronjobs", namespace)
    wait_for(lambda: ready(cluster, namespace, "second"), RECHECK + 15, "second Ready once the quota is gone")
    assert get(cluster, namespace, "second")["status"]["nextRuns"]
