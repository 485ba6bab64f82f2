"""The admission webhook on the real API server, as a user meets it through kubectl: a preview
of an accepted schedule printed as warnings (also under --dry-run=server, which saves nothing),
a bad one refused with its field's message, answered by a standby replica too; and an operator
outage, during which applies go through (failurePolicy Ignore) and the operator, once back,
marks the bad spec in status with the message the webhook would have given.

The operator runs as a local process here, so the webhook configuration names it by URL
(https://127.0.0.1:<port>/validate) with a test CA in its caBundle; the chart's is a Service
(tests/deploy/test_chart.py). It matches only the test's namespace: other tests on the shared
control plane never meet it."""

from __future__ import annotations

import base64
import itertools
import re
import time

from kubernetes import client

from ingestion_dev.pki import PKI
from ingestion_dev.workspace import free_ports
from ingestion_operator.resource import ScheduleResource

from ..conftest import Operator, kubectl
from ..kube import cond, get, ready, schedule_yaml

WEBHOOK = "schedules.ingestion.dev"
SYMBOLS = [f"S{i}USDT" for i in range(8)]


def webhook_configuration(name: str, url: str, ca: bytes, namespace: str) -> dict:
    """As the chart's (failurePolicy Ignore, 5 s, v1, no side effects), by URL, for one namespace."""
    return {
        "metadata": {"name": name},
        "webhooks": [{
            "name": WEBHOOK, "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore",
            "timeoutSeconds": 5, "matchPolicy": "Equivalent",
            "rules": [{"apiGroups": ["ingestion.dev"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["ingestionschedules"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "clientConfig": {"url": url, "caBundle": base64.b64encode(ca).decode()},
        }],
    }


def berlin(name: str, **spec) -> str:
    target = {"bucket": "data.binance.vision", "anonymous": True, "symbols": SYMBOLS, "lookbackDays": 2,
              "checksumSuffix": ".CHECKSUM", "keyTemplate": "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip"}
    return schedule_yaml(name, **{"schedule": "17 2 * * *", "timezone": "Europe/Berlin", "target": target, **spec})


def apply(cluster, ns, text: str, *flags: str):
    return kubectl(cluster, "apply", "-n", ns, *flags, "-f", "-", input=text, check=False)


def warnings(out) -> list[str]:
    return [line.removeprefix("Warning: ") for line in out.stderr.splitlines() if line.startswith("Warning: ")]


def status_message(name: str, ns: str, yaml_text: str) -> str:
    """The message a reconcile puts on Ready=False for this spec (the same parse, the pure way)."""
    import yaml

    body = yaml.safe_load(yaml_text)
    body["metadata"]["namespace"] = ns
    return ScheduleResource.from_body(body).problem.message


def test_kubectl_apply_previews_refuses_and_survives_an_operator_outage(cluster, crd, namespaces, tmp_path, wait_for):
    ns = namespaces("admission")
    pki = PKI(tmp_path / "pki")
    pki.issue("tls", "ingestion-webhook", ips=["127.0.0.1"], server=True)
    webhook_port, standby_port = free_ports(2)
    lease = f"admission-{ns}"
    op = Operator(cluster, tmp_path, namespaces=[ns], lease=lease,
                  extra=["--webhook-cert-dir", str(pki.dir), "--webhook-port", str(webhook_port)])
    op.start()
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    config = f"ingestion-test-{ns}"
    admission.create_validating_webhook_configuration(
        webhook_configuration(config, f"https://127.0.0.1:{webhook_port}/validate", pki.ca.read_bytes(), ns))
    standby = None
    try:
        # 1. --dry-run=server: the preview, and nothing saved. (The configuration is in force a
        #    moment after it is created: wait for the first warnings.)
        preview = wait_for(lambda: warnings(apply(cluster, ns, berlin("berlin"), "--dry-run=server")), 30, "the webhook's warnings")
        assert kubectl(cluster, "get", "isched", "berlin", "-n", ns, check=False).returncode != 0  # nothing created
        runs = [w for w in preview if w.startswith("next run: ")]
        assert len(runs) == 3 and all(re.fullmatch(r"next run: \d{4}-\d\d-\d\d 02:17 Europe/Berlin \(0[01]:17 UTC\)", w)
                                      for w in runs), preview
        dst = [w for w in preview if w.startswith("DST: ")]
        assert any(re.fullmatch(r"DST: \d{4}-03-\d\d 02:17 Europe/Berlin does not exist; that run is skipped", w) for w in dst)
        assert any(re.fullmatch(r"DST: \d{4}-10-\d\d 02:17 Europe/Berlin occurs twice; it runs at 00:17 and 01:17 UTC", w)
                   for w in dst), preview
        assert preview[-1] == "a run expects 24 cells (8 symbols x 3 days), about 56 requests"
        assert all(len(w) <= 120 for w in preview)

        # 2. The apply itself prints the same, and the operator's status agrees on the next runs.
        applied = apply(cluster, ns, berlin("berlin"))
        assert applied.returncode == 0 and "created" in applied.stdout, applied.stderr
        assert warnings(applied) == preview
        obj = wait_for(lambda: ready(cluster, ns, "berlin"), 30, "berlin Ready")
        shown = [re.search(r"(\d{4}-\d\d-\d\d) 02:17 Europe/Berlin \((\d\d:\d\d) UTC\)", w).groups() for w in runs]
        assert [f"{d}T{t}:00Z" for d, t in shown] == obj["status"]["nextRuns"][:3]

        # 3. What the CRD cannot check is refused, with the field's message as status would give it.
        for name, spec in (("bad-cron", {"schedule": "61 2 * * *"}), ("bad-h", {"schedule": "H(30-70) * * * *"}),
                           ("bad-zone", {"timezone": "Mars/Olympus_Mons"}), ("never", {"schedule": "0 2 30 2 *"})):
            text = berlin(name, **spec)
            refused = apply(cluster, ns, text)
            assert refused.returncode != 0, refused.stdout
            assert f'admission webhook "{WEBHOOK}" denied the request: {status_message(name, ns, text)}' in refused.stderr
            assert kubectl(cluster, "get", "isched", name, "-n", ns, check=False).returncode != 0
        field = apply(cluster, ns, berlin("bad-zone", timezone="Mars/Olympus_Mons")).stderr
        assert "spec.timezone='Mars/Olympus_Mons': unknown time zone 'Mars/Olympus_Mons'; use an IANA name" in field

        # 4. A standby replica answers too: the webhook does not wait for the Lease.
        standby = Operator(cluster, tmp_path, namespaces=[ns], lease=lease, name="standby",
                           extra=["--webhook-cert-dir", str(pki.dir), "--webhook-port", str(standby_port)])
        standby.start(leading=False)
        assert standby.role() == "standby"
        admission.patch_validating_webhook_configuration(config, webhook_configuration(
            config, f"https://127.0.0.1:{standby_port}/validate", pki.ca.read_bytes(), ns))
        wait_for(lambda: apply(cluster, ns, berlin("never", schedule="0 2 30 2 *"), "--dry-run=server").returncode != 0
                 and standby.metrics().get('ingestion_operator_admission_reviews_total{result="refused"}', 0) >= 1,
                 30, "a refusal by the standby")
        assert standby.role() == "standby"
        standby.stop()

        # 5. Outage: no replica answers. kubectl apply still works (failurePolicy Ignore), bad spec too.
        op.stop()
        t0 = time.monotonic()
        outage = apply(cluster, ns, berlin("bad-zone", timezone="Mars/Olympus_Mons"))
        assert outage.returncode == 0 and "created" in outage.stdout, outage.stderr
        assert warnings(outage) == [] and time.monotonic() - t0 < 10
        assert apply(cluster, ns, berlin("berlin", schedule="17 3 * * *")).returncode == 0  # a good change too, unchecked

        # 6. The operator back: its status catches the bad spec with the webhook's words; the
        #    webhook lets an update through that leaves that spec as it is (a label), with the problem.
        op.start()
        bad = wait_for(lambda: ready(cluster, ns, "bad-zone", status="False"), 30, "bad-zone Ready=False")
        text = berlin("bad-zone", timezone="Mars/Olympus_Mons")
        assert (cond(bad, "Ready")["reason"], cond(bad, "Ready")["message"]) == ("InvalidSpec", status_message("bad-zone", ns, text))
        admission.patch_validating_webhook_configuration(config, webhook_configuration(
            config, f"https://127.0.0.1:{webhook_port}/validate", pki.ca.read_bytes(), ns))
        attempt = itertools.count()  # a new value each time: kubectl sends no request for a label it already has

        def label():
            out = kubectl(cluster, "label", "isched", "bad-zone", "-n", ns, f"attempt={next(attempt)}", "--overwrite", check=False)
            assert out.returncode == 0, out.stderr
            return warnings(out)
        labelled = wait_for(label, 30, "a label let through with the webhook's warning")
        assert labelled[0].startswith("the spec is invalid (InvalidSpec), unchanged by this update: spec.timezone=")
        assert "attempt" in get(cluster, ns, "bad-zone")["metadata"]["labels"]
        fixed = apply(cluster, ns, berlin("bad-zone"))
        assert fixed.returncode == 0 and warnings(fixed)[0].startswith("next run: "), fixed.stderr
        wait_for(lambda: ready(cluster, ns, "bad-zone"), 30, "bad-zone Ready once fixed")
    finally:
        admission.delete_validating_webhook_configuration(config)
        if standby is not None:
            standby.stop()
        op.stop()
