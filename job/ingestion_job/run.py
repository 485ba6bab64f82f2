"""One probe-and-repair run: expected set, probe, gaps, repair, write, report.

Steps follow DESIGN.md's "One run of the job". The store is written once, at the end, in
one transaction; metrics are pushed after the results are known, and a Pushgateway that
cannot be reached is recorded as a warning in the run row.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import io
import logging
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from . import metrics
from .contract import RunContext
from .plan import Cell, KeyTemplate, expected_cells, plan_gaps, plan_window
from .source import ObjectError, S3Source, SourceError
from .store import Store, StoreError, open_store

log = logging.getLogger("ingestion_job")
UTC = dt.timezone.utc


@dataclasses.dataclass
class RunResult:
    run_id: str
    outcome: str  # succeeded | failed
    summary: dict
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome == "succeeded" else 1


def run_id_for(ctx: RunContext) -> str:
    """One row per scheduled slot (a retried slot updates its row); manual runs by Job name."""
    if ctx.scheduled_time:
        return f"{ctx.namespace}/{ctx.schedule}@{ctx.scheduled_time.strftime('%Y-%m-%dT%H:%MZ')}"
    return f"{ctx.namespace}/{ctx.schedule}@manual:{ctx.job_name or uuid.uuid4().hex[:12]}"


def open_backend(ctx: RunContext, store_path: Path | None) -> Store:
    """A DuckDB file (``store_path``), or the spec's object store as partitioned Parquet."""
    if store_path is not None:
        return open_store(store_path)
    from .objectstore import ObjectStore

    cfg = (ctx.spec.get("storage") or {}).get("objectStore")
    if not cfg:
        raise StoreError("no store: the spec has neither storage.duckdb nor storage.objectStore")
    return ObjectStore(cfg, ctx.schedule, ctx.store_credentials)


def run(ctx: RunContext, store_path: Path | None, now: dt.datetime | None = None, concurrency: int = 16) -> RunResult:
    """One run; ``store_path`` None means the spec's object store."""
    started = now or dt.datetime.now(UTC)
    t0 = time.monotonic()
    run_id = run_id_for(ctx)
    spec, target = ctx.spec, ctx.spec["target"]
    schedule = ctx.schedule
    lg = logging.LoggerAdapter(log, {"schedule": schedule, "namespace": ctx.namespace, "run_id": run_id})
    lg.info("event=run_started trigger=%s scheduled_time=%s store=%s", ctx.trigger,
            ctx.scheduled_time.isoformat() if ctx.scheduled_time else "-", store_path or "objectStore")
    summary = {k: 0 for k in ("symbols", "expected", "present", "missing", "gaps_open", "gaps_repaired", "repairs_failed",
                              "bytes_fetched")}
    source = None
    try:
        store = open_backend(ctx, store_path)
    except StoreError as e:
        return _finish(ctx, None, None, run_id, started, t0, summary, "failed", str(e), lg)
    try:
        source = S3Source(target, ctx.source_credentials, concurrency=concurrency)
        rows, error = None, None
        # staged load files must outlive the probe: they are read by the final write
        with tempfile.TemporaryDirectory(prefix="ingestion-") as tmp:
            try:
                rows = _probe_and_repair(ctx, store, source, started, summary, Path(tmp), lg)
            except (SourceError, StoreError) as e:
                error = str(e)
            return _finish(ctx, store, source, run_id, started, t0, summary, "failed" if error else "succeeded", error, lg, rows)
    finally:
        store.close()


def _probe_and_repair(ctx: RunContext, store: Store, source: S3Source, started: dt.datetime, summary: dict,
                      tmp: Path, lg) -> dict:
    """Steps 1-4; returns the rows that step 5 writes (with the run row) in one transaction."""
    spec, target, schedule = ctx.spec, ctx.spec["target"], ctx.schedule
    # 1. Expected set: the window in the schedule's zone, symbols given or discovered.
    source.check_bucket()
    symbols = list(target.get("symbols") or []) or source.discover_symbols()
    window = plan_window(started, spec.get("timezone", "UTC"), int(target.get("lagDays", 1)), int(target.get("lookbackDays", 30)))
    # 2. Probe: one paginated listing per symbol.
    upstream = source.list_all(symbols)
    first_listed = {s: min(d) for s, d in upstream.items() if d}
    expected = expected_cells(symbols, window, first_listed, store.known_symbols(schedule))
    # 3. Gaps: expected cells the store does not hold verified yet.
    plan = plan_gaps(expected, upstream, store.held(schedule))
    limit = int((spec.get("repair") or {}).get("maxRepairsPerRun", 100))
    todo, deferred = plan.candidates[:limit], plan.candidates[limit:]
    lg.info("event=probed symbols=%d window=%s..%s expected=%d present=%d missing=%d to_repair=%d deferred=%d s3_requests=%d",
            len(symbols), window.first, window.last, len(expected), len(plan.present), len(plan.missing), len(todo),
            len(deferred), source.stats.total_requests)
    # 4. Repair: fetch and verify (and stage loads), bounded concurrency.
    load = (spec.get("repair") or {}).get("load", "none")
    repaired, failed = _repair(source, todo, upstream, load, tmp, lg)
    prior_gaps = store.gaps(schedule)  # read once: both the new rows and the open count need it
    objects, gaps, loads = _rows(ctx, store, prior_gaps, expected, upstream, repaired, failed, deferred, limit, started)
    open_now = len(plan.missing) + len(failed) + len(deferred)
    summary.update(symbols=len(symbols), expected=len(expected), present=len(plan.present), missing=len(plan.missing),
                   gaps_repaired=len(repaired), repairs_failed=len(failed),
                   gaps_open=open_now + _open_elsewhere(prior_gaps, expected),
                   bytes_fetched=source.stats.bytes_fetched, window=(window.first, window.last))
    return {"objects": objects, "gaps": gaps, "loads": loads}


def _open_elsewhere(prior_gaps: dict, expected: list[Cell]) -> int:
    """Open gaps of cells outside this run's expected set (e.g. older than the window)."""
    cells = {(c.symbol, c.date) for c in expected}
    return sum(1 for k, g in prior_gaps.items() if g["status"] == "open" and k not in cells)


def _repair(source: S3Source, todo: list[Cell], upstream: dict, load: str, tmp: Path, lg):
    repaired: dict[tuple, dict] = {}
    failed: dict[tuple, str] = {}

    def one(cell: Cell):
        listed = upstream[cell.symbol][cell.date]
        body, digest = source.fetch(listed)
        staged = _stage(body, listed.key, load, tmp / f"{cell.symbol}-{cell.date}") if load != "none" else None
        return {"sha256": digest, "bytes": len(body), "staged": staged}

    with cf.ThreadPoolExecutor(max_workers=min(8, max(1, source.concurrency))) as pool:
        futures = {pool.submit(one, c): c for c in todo}
        for i, fut in enumerate(cf.as_completed(futures), 1):
            cell = futures[fut]
            try:
                repaired[(cell.symbol, cell.date)] = fut.result()
            except ObjectError as e:
                failed[(cell.symbol, cell.date)] = str(e)
                lg.warning("event=repair_failed symbol=%s date=%s error=%r", cell.symbol, cell.date, str(e))
            if i % 100 == 0 or i == len(todo):
                lg.info("event=repair_progress done=%d of=%d failed=%d", i, len(todo), len(failed))
    return repaired, failed


def _stage(body: bytes, key: str, load: str, base: Path) -> tuple[str, str]:
    """Write the object's table data to a local file for DuckDB: (path, csv|parquet)."""
    if load == "csv-zip":
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
                if not names:
                    raise ObjectError(f"{key}: the zip holds no .csv file")
                path = base.with_suffix(".csv")
                path.write_bytes(zf.read(names[0]))
        except zipfile.BadZipFile:
            raise ObjectError(f"{key}: not a zip file") from None
        return str(path), "csv"
    if load == "csv":
        path = base.with_suffix(".csv")
        path.write_bytes(body)
        return str(path), "csv"
    if load == "parquet":
        path = base.with_suffix(".parquet")
        path.write_bytes(body)
        return str(path), "parquet"
    raise ObjectError(f"unknown load mode {load!r}")


def _rows(ctx, store, prior_gaps, expected, upstream, repaired, failed, deferred, limit, now):
    schedule = ctx.schedule
    template = KeyTemplate(ctx.spec["target"]["keyTemplate"])
    first_seen = store.first_seen(schedule)
    deferred_keys = {(c.symbol, c.date) for c in deferred}
    objects, gaps, loads = [], [], []
    for c in expected:
        k = (c.symbol, c.date)
        listed = upstream.get(c.symbol, {}).get(c.date)
        key = listed.key if listed else template.key(c.symbol, c.date)
        objects.append({
            "schedule": schedule, "symbol": c.symbol, "date": c.date, "key": key, "present": listed is not None,
            "size": listed.size if listed else None, "etag": listed.etag if listed else None,
            "last_modified": listed.last_modified if listed else None,
            "first_seen_at": first_seen.get(k) or (now if listed else None),
        })
        prior = prior_gaps.get(k)
        if prior and prior["status"] == "repaired":
            continue  # held verified: nothing to change
        base = {"schedule": schedule, "symbol": c.symbol, "date": c.date, "key": key,
                "detected_at": prior["detected_at"] if prior else now, "attempts": prior["attempts"] if prior else 0,
                "last_error": prior["last_error"] if prior else None, "repaired_at": None, "sha256": None, "bytes": None}
        if k in repaired:
            r = repaired[k]
            gaps.append({**base, "status": "repaired", "reason": None, "repaired_at": now, "attempts": base["attempts"] + 1,
                         "sha256": r["sha256"], "bytes": r["bytes"], "last_error": None})
            if r["staged"]:
                loads.append((schedule, c.symbol, c.date, *r["staged"]))
        elif k in failed:
            gaps.append({**base, "status": "open", "reason": "repair failed", "attempts": base["attempts"] + 1, "last_error": failed[k]})
        elif k in deferred_keys:
            gaps.append({**base, "status": "open", "reason": f"deferred: maxRepairsPerRun={limit} reached"})
        else:
            gaps.append({**base, "status": "open", "reason": "absent upstream"})
    # Rows identical to what the store holds are not rewritten: a rerun changes nothing.
    gaps = [g for g in gaps if _changed(g, prior_gaps.get((g["symbol"], g["date"])))]
    return objects, gaps, loads


def _changed(new: dict, old: dict | None) -> bool:
    return old is None or any(new[k] != old.get(k) for k in new)


def _finish(ctx: RunContext, store: Store | None, source: S3Source | None, run_id: str, started: dt.datetime, t0: float,
            summary: dict, outcome: str, error: str | None, lg, pending: dict | None = None) -> RunResult:
    """5-6. Metrics, then the run row with all data rows in one transaction, then one summary line."""
    finished = started + dt.timedelta(seconds=time.monotonic() - t0)
    summary["duration_seconds"] = round(time.monotonic() - t0, 3)
    summary["outcome"] = outcome
    stats = source.stats if source else None
    warnings: list[str] = []
    window = summary.pop("window", (None, None))
    attempt = (store.run_attempts(run_id) if store else 0) + 1
    run_row = {
        "run_id": run_id, "schedule": ctx.schedule, "namespace": ctx.namespace, "trigger": ctx.trigger,
        "scheduled_time": ctx.scheduled_time, "job_name": ctx.job_name, "attempt": attempt,
        "started_at": started, "finished_at": finished, "outcome": outcome,
        "window_first": window[0], "window_last": window[1],
        **{k: summary[k] for k in ("symbols", "expected", "present", "missing", "gaps_open", "gaps_repaired", "repairs_failed")},
        "bytes_fetched": summary["bytes_fetched"],
        "s3_requests": stats.total_requests if stats else 0, "s3_errors": stats.total_errors if stats else 0,
        "error": error, "warnings": None,
    }
    url = (ctx.spec.get("metrics") or {}).get("pushgatewayUrl")
    if url:
        warnings += _push(ctx, store, run_row, summary, stats, url, lg)
    run_row["warnings"] = "; ".join(warnings) or None
    if store is not None:
        try:
            if pending and outcome == "succeeded":
                store.write_run(pending["objects"], pending["gaps"], run_row, pending["loads"])
            else:
                store.write_run_record(run_row)
        except StoreError as e:
            outcome, error = "failed", str(e)
            run_row["outcome"] = outcome
    s3 = f" s3_requests={run_row['s3_requests']} s3_errors={run_row['s3_errors']}"
    line = (f"event=run_finished outcome={outcome} duration_seconds={summary['duration_seconds']} symbols={summary['symbols']} "
            f"expected={summary['expected']} present={summary['present']} missing={summary['missing']} "
            f"repaired={summary['gaps_repaired']} repairs_failed={summary['repairs_failed']} gaps_open={summary['gaps_open']} "
            f"bytes_fetched={summary['bytes_fetched']}{s3}")
    if warnings:
        line += f" warnings={len(warnings)}"
    (lg.info if outcome == "succeeded" else lg.error)(line)
    if error:
        lg.error("event=run_failed reason=%r", error)
    return RunResult(run_id, outcome, summary, error, warnings)


def _push(ctx, store, run_row, summary, stats, url, lg) -> list[str]:
    from .source import RequestStats

    counts = store.run_counts(ctx.schedule) if store else {}
    counts = dict(counts)
    if run_row["attempt"] == 1:  # a retried slot is not a new run
        counts[run_row["outcome"]] = counts.get(run_row["outcome"], 0) + 1
    last = _last_times(store, ctx.schedule) if store else {}
    last[run_row["outcome"]] = run_row["finished_at"].timestamp()
    try:
        metrics.push(url, ctx.namespace, ctx.schedule, metrics.build_registry(summary, stats or RequestStats(), counts, last))
        return []
    except Exception as e:  # any failure to push is a warning, never a failed run
        msg = f"pushgateway {url} unreachable: {e.__class__.__name__}: {str(e)[:200]}"
        lg.warning("event=metrics_push_failed url=%s error=%r", url, str(e)[:200])
        return [msg]


def _last_times(store: Store, schedule: str) -> dict[str, float]:
    rows = store.con.execute("SELECT outcome, max(finished_at) FROM runs WHERE schedule = ? GROUP BY outcome", [schedule]).fetchall()
    return {o: t.timestamp() for o, t in rows if t is not None}
