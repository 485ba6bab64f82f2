"""One probe-and-repair run, as six steps: expected set, probe, gaps, repair, write, report.

Steps 1-4 (:meth:`Run.probe_and_repair`) learn what is expected, what exists upstream,
what is missing and what could be repaired; they build the rows but write nothing.
Steps 5-6 (:meth:`Run.finish`) push the run's metrics, write every row with the run's
record in one transaction, and log one summary line. The counters all live on one
typed :class:`~ingestion_contract.RunSummary`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
import time
import uuid
from pathlib import Path

from ingestion_contract import RunContext, RunSummary

from . import metrics
from .plan import Window, expected_cells, plan_gaps, plan_window, window_on
from .repair import repair
from .rows import Repairs, Rows, build_rows, open_elsewhere
from .source import RequestStats, S3Source, SourceError
from .store import Store, StoreError, open_store

log = logging.getLogger("ingestion_job")
UTC = dt.timezone.utc


@dataclasses.dataclass
class RunResult:
    run_id: str
    outcome: str  # succeeded | failed
    summary: RunSummary
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

    cfg = ctx.spec.storage.object_store
    if cfg is None:
        raise StoreError("no store: the spec has neither storage.duckdb nor storage.objectStore")
    return ObjectStore(cfg, ctx.schedule, ctx.store_credentials)


def run(ctx: RunContext, store_path: Path | None, now: dt.datetime | None = None, concurrency: int = 16,
        as_of: dt.date | None = None, dates: Window | None = None) -> RunResult:
    """One run; ``store_path`` None means the spec's object store.

    The window is anchored, in order: to ``dates`` (exactly that range, no history
    backfill), to ``as_of`` (the run that day would have made), to the scheduled time of a
    CronJob tick (a slot retried after midnight probes the same dates), else to now."""
    return Run(ctx, now or dt.datetime.now(UTC), concurrency, as_of, dates).execute(store_path)


class Run:
    """The state of one run: its identity, clock, summary and log context."""

    def __init__(self, ctx: RunContext, started: dt.datetime, concurrency: int, as_of: dt.date | None = None,
                 dates: Window | None = None):
        self.ctx = ctx
        self.started = started
        self.as_of = as_of
        self.dates = dates
        self.t0 = time.monotonic()
        self.concurrency = concurrency
        self.run_id = run_id_for(ctx)
        self.summary = RunSummary()
        self.window: Window | None = None
        self.log = logging.LoggerAdapter(log, {"schedule": ctx.schedule, "namespace": ctx.namespace, "run_id": self.run_id})

    def execute(self, store_path: Path | None) -> RunResult:
        ctx = self.ctx
        self.log.info("event=run_started trigger=%s scheduled_time=%s store=%s", ctx.trigger,
                      ctx.scheduled_time.isoformat() if ctx.scheduled_time else "-", store_path or "objectStore")
        try:
            store = open_backend(ctx, store_path)
        except StoreError as e:
            return self.finish(None, None, error=str(e))
        try:
            source = S3Source(ctx.spec.target, ctx.source_credentials, concurrency=self.concurrency)
            # staged load files must outlive the probe: they are read by the final write
            with tempfile.TemporaryDirectory(prefix="ingestion-") as tmp:
                try:
                    rows = self.probe_and_repair(store, source, Path(tmp))
                except (SourceError, StoreError) as e:
                    return self.finish(store, source, error=str(e))
                return self.finish(store, source, rows=rows)
        finally:
            store.close()

    def probe_and_repair(self, store: Store, source: S3Source, tmp: Path) -> Rows:
        """Steps 1-4; returns the rows that step 5 writes (with the run row) in one transaction."""
        spec, target, schedule = self.ctx.spec, self.ctx.spec.target, self.ctx.schedule
        # 1. Expected set: the window in the schedule's zone, symbols given or discovered.
        source.check_bucket()
        symbols = list(target.symbols) or source.discover_symbols()
        self.window = window = self.plan(spec.timezone, target.lag_days, target.lookback_days)
        # 2. Probe: one paginated listing per symbol.
        upstream = source.list_all(symbols)
        # (a new symbol's whole history is expected too, unless the range was given)
        first_listed = {s: min(d) for s, d in upstream.items() if d} if self.dates is None else {}
        expected = expected_cells(symbols, window, first_listed, store.known_symbols(schedule))
        # 3. Gaps: expected cells the store does not hold verified yet.
        plan = plan_gaps(expected, upstream, store.held(schedule))
        limit = spec.repair.max_repairs_per_run
        todo, deferred = plan.candidates[:limit], plan.candidates[limit:]
        self.log.info("event=probed symbols=%d window=%s..%s expected=%d present=%d missing=%d to_repair=%d deferred=%d "
                      "s3_requests=%d", len(symbols), window.first, window.last, len(expected), len(plan.present),
                      len(plan.missing), len(todo), len(deferred), source.stats.total_requests)
        # 4. Repair: fetch and verify (and stage loads), bounded concurrency.
        repaired, failed = repair(source, todo, upstream, spec.repair.load, tmp, self.log)
        prior_gaps = store.gaps(schedule)  # read once: both the new rows and the open count need it
        repairs = Repairs(repaired, failed, frozenset((c.symbol, c.date) for c in deferred), limit)
        rows = build_rows(schedule, source.template, expected, upstream, repairs, prior_gaps,
                          store.first_seen(schedule), self.started)
        s = self.summary
        s.symbols, s.expected, s.present, s.missing = len(symbols), len(expected), len(plan.present), len(plan.missing)
        s.gaps_repaired, s.repairs_failed = len(repaired), len(failed)
        s.gaps_open = len(plan.missing) + len(failed) + len(deferred) + open_elsewhere(prior_gaps, expected)
        s.bytes_fetched = source.stats.bytes_fetched
        return rows

    def plan(self, timezone: str, lag_days: int, lookback_days: int) -> Window:
        if self.dates is not None:
            return self.dates
        if self.as_of is not None:
            return window_on(self.as_of, lag_days, lookback_days)
        return plan_window(self.ctx.scheduled_time or self.started, timezone, lag_days, lookback_days)

    def finish(self, store: Store | None, source: S3Source | None, rows: Rows | None = None,
               error: str | None = None) -> RunResult:
        """Steps 5-6: metrics, then the run row with all data rows in one transaction, then one summary line."""
        ctx, s = self.ctx, self.summary
        outcome = "failed" if error else "succeeded"
        finished = self.started + dt.timedelta(seconds=time.monotonic() - self.t0)
        s.duration_seconds = round(time.monotonic() - self.t0, 3)
        stats = source.stats if source else RequestStats()
        s.s3_requests, s.s3_errors = stats.total_requests, stats.total_errors
        attempt = (store.run_attempts(self.run_id) if store else 0) + 1
        window = self.window or Window(None, None)
        run_row = {
            "run_id": self.run_id, "schedule": ctx.schedule, "namespace": ctx.namespace, "trigger": ctx.trigger,
            "scheduled_time": ctx.scheduled_time, "job_name": ctx.job_name, "attempt": attempt,
            "started_at": self.started, "finished_at": finished, "outcome": outcome,
            "window_first": window.first, "window_last": window.last, "error": error, "warnings": None,
            **{name: s[name] for name, _ in RunSummary.columns()},
        }
        warnings = []
        url = ctx.spec.metrics.pushgateway_url
        if url:
            warnings += self.push_metrics(store, url, outcome, stats, attempt, finished)
        run_row["warnings"] = "; ".join(warnings) or None
        if store is not None:
            try:
                if rows is not None and outcome == "succeeded":
                    store.write_run(rows.objects, rows.gaps, run_row, rows.loads)
                else:
                    store.write_run_record(run_row)
            except StoreError as e:
                outcome, error = "failed", str(e)
        line = (f"event=run_finished outcome={outcome} duration_seconds={s.duration_seconds} symbols={s.symbols} "
                f"expected={s.expected} present={s.present} missing={s.missing} repaired={s.gaps_repaired} "
                f"repairs_failed={s.repairs_failed} gaps_open={s.gaps_open} bytes_fetched={s.bytes_fetched} "
                f"s3_requests={s.s3_requests} s3_errors={s.s3_errors}")
        if warnings:
            line += f" warnings={len(warnings)}"
        (self.log.info if outcome == "succeeded" else self.log.error)(line)
        if error:
            self.log.error("event=run_failed reason=%r", error)
        return RunResult(self.run_id, outcome, s, error, warnings)

    def push_metrics(self, store: Store | None, url: str, outcome: str, stats: RequestStats, attempt: int,
                     finished: dt.datetime) -> list[str]:
        """Push this run's metrics; a failure to push is a warning, never a failed run."""
        counts = dict(store.run_counts(self.ctx.schedule)) if store else {}
        if attempt == 1:  # a retried slot is not a new run
            counts[outcome] = counts.get(outcome, 0) + 1
        last = {**(store.last_finished(self.ctx.schedule) if store else {}), outcome: finished}
        try:
            metrics.push(url, self.ctx.namespace, self.ctx.schedule, metrics.build_registry(self.summary, outcome, stats, counts, last))
            return []
        except Exception as e:  # any failure to push is a warning, never a failed run
            self.log.warning("event=metrics_push_failed url=%s error=%r", url, str(e)[:200])
            return [f"pushgateway {url} unreachable: {e.__class__.__name__}: {str(e)[:200]}"]
