"""`ingestion-job report`: what the store knows, as a table or JSON."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from .store import open_store


def gather(path: Path, schedule: str | None, days: int) -> dict:
    with open_store(path, read_only=True) as store:
        con = store.con
        where, params = ("WHERE schedule = ?", [schedule]) if schedule else ("", [])
        availability = con.execute(f"""
            SELECT schedule, symbol, count(*) AS expected, count(*) FILTER (WHERE present) AS present,
                   min(date) AS first_date, max(date) AS last_date
            FROM objects {where} GROUP BY schedule, symbol ORDER BY schedule, symbol""", params).fetchall()
        gaps = con.execute(f"""
            SELECT schedule, symbol, date, reason, attempts, last_error FROM gaps
            {where + (' AND' if where else 'WHERE')} status = 'open' ORDER BY schedule, symbol, date LIMIT 200""", params).fetchall()
        runs = con.execute(f"""
            SELECT run_id, trigger, started_at, finished_at, outcome, expected, missing, gaps_repaired, gaps_open, error, warnings
            FROM runs {where} ORDER BY started_at DESC LIMIT 10""", params).fetchall()
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
        ok, total = con.execute(f"""
            SELECT count(*) FILTER (WHERE outcome = 'succeeded'), count(*) FROM runs
            {where + (' AND' if where else 'WHERE')} started_at >= ?""", params + [since]).fetchone()
    return {
        "availability": [dict(zip(["schedule", "symbol", "expected", "present", "first_date", "last_date"], r)) for r in availability],
        "open_gaps": [dict(zip(["schedule", "symbol", "date", "reason", "attempts", "last_error"], r)) for r in gaps],
        "recent_runs": [dict(zip(["run_id", "trigger", "started_at", "finished_at", "outcome", "expected", "missing",
                                  "repaired", "gaps_open", "error", "warnings"], r)) for r in runs],
        "success_rate": {"days": days, "succeeded": ok, "runs": total, "rate": round(ok / total, 4) if total else None},
    }


def report(path: Path, schedule: str | None, days: int, fmt: str) -> str:
    data = gather(path, schedule, days)
    if fmt == "json":
        return json.dumps(data, default=str, indent=2)
    out = ["AVAILABILITY"]
    out += _table(["SCHEDULE", "SYMBOL", "PRESENT/EXPECTED", "FROM", "TO"],
                  [[a["schedule"], a["symbol"], f"{a['present']}/{a['expected']}", a["first_date"], a["last_date"]]
                   for a in data["availability"]])
    out += ["", f"OPEN GAPS ({len(data['open_gaps'])}{'+' if len(data['open_gaps']) == 200 else ''})"]
    out += _table(["SCHEDULE", "SYMBOL", "DATE", "REASON", "ATTEMPTS", "LAST ERROR"],
                  [[g["schedule"], g["symbol"], g["date"], g["reason"], g["attempts"], (g["last_error"] or "")[:60]]
                   for g in data["open_gaps"]])
    out += ["", "RECENT RUNS"]
    out += _table(["RUN", "TRIGGER", "STARTED", "OUTCOME", "EXPECTED", "MISSING", "REPAIRED", "OPEN", "ERROR"],
                  [[r["run_id"], r["trigger"], _t(r["started_at"]), r["outcome"], r["expected"], r["missing"], r["repaired"],
                    r["gaps_open"], (r["error"] or r["warnings"] or "")[:60]] for r in data["recent_runs"]])
    sr = data["success_rate"]
    rate = f"{sr['rate'] * 100:.1f}%" if sr["rate"] is not None else "n/a"
    out += ["", f"SUCCESS RATE (last {sr['days']} days): {rate} ({sr['succeeded']} of {sr['runs']} runs)"]
    return "\n".join(out)


def _t(v) -> str:
    return v.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if isinstance(v, dt.datetime) else str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header)] + [fmt.format(*r) for r in rows] or ["(none)"]
