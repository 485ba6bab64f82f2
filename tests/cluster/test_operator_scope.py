"""A namespaced operator reconciles its own namespaces and leaves the others alone."""

import json

from ..conftest import Operator, kubectl
from ..kube import apply_schedule, get_cronjob, ready, schedule_yaml


def test_namespaced_operator_watches_only_its_namespace(cluster, crd, namespaces, tmp_path, wait_for):
    mine, other = namespaces("scope-mine"), namespaces("scope-other")
    op = Operator(cluster, tmp_path, namespaces=[mine])
    op.start()
    try:
        # The other namespace's schedule first: a cluster-wide watch would deliver it before the
        # one in the watched namespace, so once that one is reconciled, the other would have been.
        kubectl(cluster, "apply", "-n", other, "-f", "-", input=schedule_yaml("scoped"))
        apply_schedule(cluster, mine, "scoped")
        # Ready shows before the reconcile's closing log line is written: wait for the line
        assert wait_for(lambda: op.log_events("reconciled", namespace=mine, name="scoped"), 10, "the reconcile's log line")
        assert op.log_events("reconciled", namespace=other) == []
        assert get_cronjob(cluster, other, "scoped") is None
        untouched = json.loads(kubectl(cluster, "get", "isched", "scoped", "-n", other, "-o", "json").stdout)
        assert "status" not in untouched
    finally:
        op.stop()


def test_watch_namespace_from_the_environment(cluster, crd, namespaces, tmp_path, wait_for, monkeypatch):
    """WATCH_NAMESPACE (operator-sdk's convention) scopes the operator like --namespace, to a
    comma-separated list."""
    a, b, other = namespaces("env-a"), namespaces("env-b"), namespaces("env-other")
    monkeypatch.setenv("WATCH_NAMESPACE", f"{a},{b}")
    op = Operator(cluster, tmp_path)
    op.start()
    try:
        assert op.log_events("starting", scope=f"{a},{b}")
        for ns in (other, a, b):
            kubectl(cluster, "apply", "-n", ns, "-f", "-", input=schedule_yaml("scoped"))
        for ns in (a, b):
            wait_for(lambda: ready(cluster, ns, "scoped"), 30, f"the schedule in {ns}")
        assert op.log_events("reconciled", namespace=other) == []
        assert get_cronjob(cluster, other, "scoped") is None
    finally:
        op.stop()
