"""`ingestion-job report`: what the store knows, as a table or JSON.

It reads a DuckDB file (waiting, and saying so, while a run commits to it: a run holds the
file only to read its starting state and to commit) or a schedule's object store. Errors are
shown whole: wrapped to the terminal in the table, on one line each with ``--wide``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import textwrap
from pathlib import Path

from ingestion_contract.spec import variant_values

from .store import open_backend


def report(path: Path | None, schedule: str | None, days: int, fmt: str, wide: bool = False, lock_timeout: float = 30,
           on_wait=None, ctx=None) -> str:
    """The report of a DuckDB file (``path``), or of the object store of ``ctx``'s spec."""
    store = open_backend(ctx, path, lock_timeout, on_wait, read_only=True)
    try:
        data = store.report(schedule, days, dt.datetime.now(dt.timezone.utc))
    finally:
        store.close()
    if fmt == "json":
        return json.dumps(data, default=str, indent=2)
    width = None if wide else shutil.get_terminal_size((160, 24)).columns
    out = ["AVAILABILITY"]
    out += _table(["SCHEDULE", "SYMBOL", "PRESENT/EXPECTED", "FROM", "TO"],
                  [[a["schedule"], a["symbol"], f"{a['present']}/{a['expected']}", a["first_date"], a["last_date"]]
                   for a in data["availability"]])
    if data["variants"]:  # target.dimensions: each value's cells, over the series holding it
        out += ["", "BY DIMENSION (a series is SYMBOL@dimension=value,...)"]
        out += _table(["SCHEDULE", "DIMENSION", "VALUE", "PRESENT/EXPECTED", "OPEN GAPS"], by_dimension(data["variants"]))
    causes = data["open_gaps_by_cause"]
    total = sum(causes.values())
    by = ", ".join(f"{c} {n}" for c, n in causes.items() if n)
    out += ["", f"OPEN GAPS ({total}{': ' + by if by else ''})"
                + (f"; the first {len(data['open_gaps'])} below" if total > len(data["open_gaps"]) else "")]
    out += _table(["SCHEDULE", "SYMBOL", "DATE", "CAUSE", "ATTEMPTS", "LAST ERROR"],
                  [[g["schedule"], g["symbol"], g["date"], g["reason"], g["attempts"], g["last_error"] or ""]
                   for g in data["open_gaps"]], width)
    if data["delisted"]:
        out += ["", f"DELISTED ({len(data['delisted'])}): no object for target.delistAfterDays; later dates not expected"]
        out += _table(["SCHEDULE", "SYMBOL", "SINCE"], [[d["schedule"], d["symbol"], d["since"]] for d in data["delisted"]])
    if data["never_probed"]:
        days = sum(u["days"] for u in data["never_probed"])
        out += ["", f"NEVER PROBED ({days} dates): left by an outage for the catch-up of later runs (target.maxCatchUpDays)"]
        out += _table(["SCHEDULE", "SYMBOL", "FROM", "TO", "DATES"],
                      [[u["schedule"], u["symbol"], u["first"], u["last"], u["days"]] for u in data["never_probed"]])
    if data.get("other_period"):
        out += ["", "HELD BY THE OTHER PERIOD (target.archive): covered, its days verified in the other period; "
                    "superseded, expected as its month's archive"]
        out += _table(["SCHEDULE", "SYMBOL", "STATUS", "REASON", "CELLS", "FROM", "TO"],
                      [[o["schedule"], o["symbol"], o["status"], o["reason"], o["cells"], o["first"], o["last"]]
                       for o in data["other_period"]])
    out += ["", "RECENT RUNS"]
    out += _table(["RUN", "TRIGGER", "STARTED", "OUTCOME", "EXPECTED", "MISSING", "REPAIRED", "OPEN", "ERROR"],
                  [[r["run_id"], r["trigger"], _t(r["started_at"]), r["outcome"], r["expected"], r["missing"], r["repaired"],
                    r["gaps_open"], r["error"] or r["warnings"] or ""] for r in data["recent_runs"]], width)
    if data["changed_upstream"]:
        out += ["", f"CHANGED UPSTREAM ({len(data['changed_upstream'])}{'+' if len(data['changed_upstream']) == 200 else ''})"]
        out += _table(["SCHEDULE", "SYMBOL", "DATE", "NOW", "CHANGES", "LAST CHANGED", "PREVIOUS SHA256"],
                      [[c["schedule"], c["symbol"], c["date"], c["status"], c["changes"], _t(c["changed_at"]),
                        c["previous_sha256"] or ""] for c in data["changed_upstream"]], width)
    sr = data["success_rate"]
    rate = f"{sr['rate'] * 100:.1f}%" if sr["rate"] is not None else "n/a"
    out += ["", f"SUCCESS RATE (last {sr['days']} days): {rate} ({sr['succeeded']} of {sr['runs']} finished runs)"]
    return "\n".join(out)


def by_dimension(variants: list[dict]) -> list[list]:
    """Rows (schedule, dimension, value, present/expected, open gaps) from counts per variant."""
    sums: dict[tuple, list[int]] = {}
    for row in variants:
        for name, value in variant_values(row["variant"]).items():
            n = sums.setdefault((row["schedule"], name, value), [0, 0, 0])
            n[0] += row["present"]
            n[1] += row["expected"]
            n[2] += row["gaps_open"]
    return [[sched, name, value, f"{p}/{e}", g] for (sched, name, value), (p, e, g) in sorted(sums.items())]


def _t(v) -> str:
    return v.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if isinstance(v, dt.datetime) else str(v)


def _table(header: list[str], rows: list[list], width: int | None = None) -> list[str]:
    """Aligned columns; with ``width``, the last column wraps onto continuation lines so the
    table fits (its text is never cut)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    indent = sum(widths[:-1]) + 2 * (len(widths) - 1)
    room = None if width is None else max(20, width - indent)
    if room is not None:
        widths[-1] = min(widths[-1], room)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header).rstrip()]
    for r in rows:
        last = textwrap.wrap(r[-1], room, break_long_words=True, break_on_hyphens=False) if room and r[-1] else [r[-1]]
        out.append(fmt.format(*r[:-1], last[0]).rstrip())
        out += [" " * indent + more for more in last[1:]]
    return out if rows else out + ["(none)"]
