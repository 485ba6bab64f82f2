"""Every dashboard panel's query returns data from a real Prometheus that scraped the real
Pushgateway after real runs of the job."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request

from ingestion_dev.processes import ProcessGroup
from ingestion_dev.services import start_prometheus
from ingestion_contract import parse_backfill

from ..conftest import REPO
from ..job.conftest import Dataset, context, days_ago, run  # run: on the job tests' clock, as days_ago

DASHBOARD = REPO / "deploy" / "grafana" / "ingestion.json"


def query(prom: str, expr: str) -> list:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_every_panel_query_returns_data(servers, tmp_path, wait_for):
    group = ProcessGroup(tmp_path)
    try:
        prom = start_prometheus(group, [servers.pushgateway])
        data = Dataset(servers, "dash")
        data.upload([("BTCUSDT", d) for d in days_ago(1, 3)])
        spec = data.spec(["BTCUSDT"], lookback=2)
        # One unit of a backfill of the same schedule (its own Pushgateway group), first, so the
        # rendering has a few scrapes of it.
        bf = parse_backfill({"schedule": "dashboard-demo", "from": days_ago(3)[0].isoformat(), "to": days_ago(1)[0].isoformat()})
        run(context(spec, schedule="dashboard-demo", namespace="grafana-test", backfill=("catch-up", bf, 0)), tmp_path / "b.duckdb")
        wait_for(lambda: query(prom, 'ingestion_backfill_units{backfill="catch-up"}'), 30, "Prometheus to scrape the backfill unit")
        for i in range(2):  # two runs, scraped in between, so increase() over 30 days has two points
            run(context(spec, schedule="dashboard-demo", namespace="grafana-test"), tmp_path / "s.duckdb")
            wait_for(lambda: query(prom, f'ingestion_runs_total{{schedule="dashboard-demo", outcome="succeeded"}} == {i + 1}'),
                     30, f"Prometheus to scrape run {i + 1}")
            time.sleep(2)
        panels = json.loads(DASHBOARD.read_text())["panels"]
        assert len(panels) >= 8
        empty = []
        for p in panels:
            expr = p["targets"][0]["expr"].replace("$namespace", "grafana-test").replace("$schedule", "dashboard-demo")
            result = query(prom, expr)
            if not result:
                empty.append(p["title"])
        assert empty == [], f"panels with no data: {empty}"
        rate = query(prom, next(p for p in panels if "success rate" in p["title"])["targets"][0]["expr"]
                     .replace("$namespace", "grafana-test").replace("$schedule", "dashboard-demo"))
        assert float(rate[0]["value"][1]) == 1.0
        if os.environ.get("INGESTION_DASHBOARD_PNG"):  # refresh docs/dashboard.png (shown on the metrics page)
            sys.path.insert(0, str(DASHBOARD.parent))
            from render_dashboard import render

            assert render(prom, "grafana-test", "dashboard-demo", REPO / os.environ["INGESTION_DASHBOARD_PNG"]).exists()
        by_cause = query(prom, next(p for p in panels if p["title"] == "Gaps open by cause")["targets"][0]["expr"]
                         .replace("$namespace", "grafana-test").replace("$schedule", "dashboard-demo"))
        assert {r["metric"]["cause"]: float(r["value"][1]) for r in by_cause if float(r["value"][1])} == {"late-upstream": 1.0}
        titles = " ".join(p["title"] for p in panels).lower()
        progress = query(prom, next(p for p in panels if "backfill progress" in p["title"].lower())["targets"][0]["expr"]
                         .replace("$namespace", "grafana-test").replace("$schedule", "dashboard-demo"))
        assert [float(r["value"][1]) for r in progress] == [100.0]  # its only unit committed
        for needed in ("freshness", "success rate", "duration", "missing", "gaps open", "gaps repaired", "s3 errors",
                       "coverage", "backfill progress", "backfill cells"):
            assert needed in titles
    finally:
        group.down(log=lambda m: None)
