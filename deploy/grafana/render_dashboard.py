"""Render the dashboard's panels to a PNG from a real Prometheus (no Grafana server here).

Used by tests/deploy/test_dashboard.py when INGESTION_DASHBOARD_PNG names an output file:
    INGESTION_DASHBOARD_PNG=docs/dashboard.png dev/test tests/deploy/test_dashboard.py
Each panel's own query is evaluated over the last minutes; stat panels show the last value.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

DASHBOARD = Path(__file__).with_name("ingestion.json")


def _range(prom: str, expr: str, seconds: int) -> list:
    end = time.time()
    q = urllib.parse.urlencode({"query": expr, "start": end - seconds, "end": end, "step": max(1, seconds // 60)})
    return json.loads(urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=10).read())["data"]["result"]


def render(prom: str, namespace: str, schedule: str, out: Path, seconds: int = 120) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.2 * rows))
    fig.suptitle(f"{dash['title']}  (namespace={namespace}, schedule={schedule})", fontsize=13)
    for ax, panel in zip(axes.flat, panels):
        expr = panel["targets"][0]["expr"].replace("$namespace", namespace).replace("$schedule", schedule)
        series = _range(prom, expr, seconds)
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        ax.set_title(panel["title"], fontsize=10)
        if panel["type"] == "stat":
            value = float(series[0]["values"][-1][1]) if series else float("nan")
            text = {"percentunit": f"{value * 100:.1f} %", "percent": f"{value:.1f} %", "s": f"{value:.0f} s",
                    "bool_yes_no": "yes" if value >= 1 else "no"}.get(unit, f"{value:g}")
            ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=26)
            ax.set_axis_off()
            continue
        for s in series:
            xs = [float(t) - series[0]["values"][0][0] for t, _ in s["values"]]
            m = s["metric"]
            label = " ".join(filter(None, (m.get("backfill"), m.get("state")))) or m.get("code") or m.get("operation") \
                or m.get("schedule", "")
            # a series of one sample (a backfill unit pushed just now) is a point, not a line
            ax.plot(xs, [float(v) for _, v in s["values"]], label=label, marker="o" if len(xs) == 1 else None)
        ax.set_xlabel("seconds")
        if series:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
