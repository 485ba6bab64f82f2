"""A namespaced operator reconciles its own namespaces and leaves the others alone."""

import json
import time

from ..conftest import Operator, kubectl, make_namespace
from ..kube import get_cronjob, ready, schedule_yaml


def test_namespaced_operator_watches_only_its_namespace(cluster, crd, tmp_path, wait_for):
    mine, other = make_namespace(cluster, "scope-mine"), make_namespace(cluster, "scope-other")
    op = Operator(cluster, tmp_path, namespaces=[mine])
    op.start()
    try:
        for ns in (mine, other):
            kubectl(cluster, "apply", "-n", ns, "-f", "-", input=schedule_yaml("scoped"))
        wait_for(lambda: ready(cluster, mine, "scoped"), 30, "the schedule in the watched namespace")
        time.sleep(3)
        assert get_cronjob(cluster, other, "scoped") is None
        untouched = json.loads(kubectl(cluster, "get", "isched", "scoped", "-n", other, "-o", "json").stdout)
        assert "status" not in untouched
    finally:
        op.stop()
        for ns in (mine, other):
            cluster.core.delete_namespace(ns)
