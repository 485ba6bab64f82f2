"""One probe-and-repair run, as its steps: expected set, probe, gaps, repair, commit, push,
housekeeping, summary.

The run holds the store only to read its starting state and to commit:

* start: read what the store holds, record the run as ``running`` (and any run of the
  schedule that died past its deadline as ``abandoned``), let go of the file;
* steps 1-4 (:meth:`Run.probe_and_repair`): learn what is expected, what exists upstream,
  what is missing, and repair what can be, one cell at a time: a cell that cannot be
  fetched, verified or loaded fails alone;
* :meth:`Run.finish`, one method per step: :meth:`~Run.commit_step` takes the file again,
  builds the rows against its current gaps and commits them with the run's record in one
  transaction; :meth:`~Run.push_step` pushes metrics that describe what was committed;
  :meth:`~Run.housekeeping_step` runs the store's housekeeping when due; and
  :meth:`~Run.summarize` logs one summary line and returns the result.

Outcomes and exit codes: ``succeeded`` (0); ``partial`` (3): committed, but at least one
repair failed, its gap kept open with the reason; ``failed`` (1): nothing but the run's
record committed (the source or the store could not be used, or the commit failed);
``abandoned``: recorded by the next run for a run that never finished. Counters live on
one typed :class:`~ingestion_contract.RunSummary`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ingestion_contract import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_SUCCEEDED, Coverage, RunContext, RunSummary
from ingestion_contract.periods import DAILY, MONTHLY, ONE_DAY, archive_boundary
from ingestion_contract.summary import dimension_coverage

from . import metrics
from .plan import (Cell, Expected, Listed, Publication, Rules, Window, expect, period_end, plan_gaps, plan_window,
                   series_of, series_period, split_series, window_on)
from .repair import repair
from .rows import Repairs, Rows, build_rows, loads_of, open_gaps, union_of_periods
from .source import RequestStats, S3Source, SourceError
from .store import Expiry, Store, StoreError, open_backend

log = logging.getLogger("ingestion_job")
UTC = dt.timezone.utc
EXIT_CODES = {"succeeded": EXIT_SUCCEEDED, "failed": EXIT_FAILED, "partial": EXIT_PARTIAL}
LOCK_TIMEOUT = 60.0
_RUNNING: list["Run"] = []  # the runs of this process, for interrupt()


def interrupt() -> None:
    """SIGTERM (the pod deleted, evicted or drained: the kubelet waits its grace period, 30 s by
    default, then kills): every run of this process starts nothing more, commits what it has
    verified, and ends as interrupted (exit code 4: a new pod runs it again). The job runs as
    PID 1 of its container, where a signal with no handler is ignored, so without this a run
    went on to its end and the kill, and a unit it completed in the grace period was counted by
    the Job with its report lost with the deleted pod."""
    for r in list(_RUNNING):
        r.interrupt()


def time_budget(active_deadline_seconds: int) -> float:
    """Seconds a run may spend before its commit: the Job's deadline less a reserve (10 %,
    at least 5 s, at most half) for the commit and the metrics push."""
    d = float(active_deadline_seconds)
    return d - min(max(0.1 * d, 5.0), 0.5 * d)


@dataclasses.dataclass
class RunResult:
    run_id: str
    outcome: str  # succeeded | partial | failed
    summary: RunSummary
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    coverage: Coverage | None = None  # of a committed run: its termination message
    reason: str | None = None  # one line: why a run did not succeed (the error, or the first failed repair)
    gaps_by_cause: dict[str, int] = dataclasses.field(default_factory=dict)  # of a committed run: every cause

    interrupted: bool = False  # asked to stop (SIGTERM) before its work was done: a new pod runs it again

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.interrupted and self.outcome != "failed" else EXIT_CODES[self.outcome]


@dataclasses.dataclass(frozen=True)
class Committed:
    """What the commit step left: whether the store holds the run's record, how the run ended,
    and the schedule's run counts and last finishes the metrics report."""

    committed: bool
    outcome: str
    error: str | None
    counts: dict | None
    last: dict
    oldest_open: dt.date | None


@dataclasses.dataclass
class Work:
    """What steps 1-4 learnt and did; the rows are built from it at commit time."""

    symbols: list[str]
    expected: list[Cell]
    upstream: dict[str, dict[dt.date, Listed]]
    missing: int
    present: int
    repairs: Repairs
    republished: int = 0  # cells held verified whose object changed upstream (repaired again)
    withdrawn: int = 0  # cells held verified whose object is gone upstream
    plan: Expected = dataclasses.field(default_factory=Expected)  # catch-up left unprobed, delisted symbols


def run_id_for(ctx: RunContext) -> str:
    """One row per scheduled slot (a retried slot updates its row); manual runs by Job name;
    one per backfill unit (a replaced pod of the unit updates its row)."""
    if ctx.backfill:
        return f"{ctx.namespace}/{ctx.schedule}@backfill:{ctx.backfill.name}/{ctx.backfill.unit.index}"
    if ctx.scheduled_time:
        return f"{ctx.namespace}/{ctx.schedule}@{ctx.scheduled_time.strftime('%Y-%m-%dT%H:%MZ')}"
    return f"{ctx.namespace}/{ctx.schedule}@manual:{ctx.job_name or uuid.uuid4().hex[:12]}"


def run(ctx: RunContext, store_path: Path | None, now: dt.datetime | None = None, concurrency: int = 16,
        as_of: dt.date | None = None, dates: Window | None = None, lock_timeout: float = LOCK_TIMEOUT) -> RunResult:
    """One run; ``store_path`` None means the spec's object store.

    The window is anchored, in order: to ``dates`` (exactly that range, no history
    backfill), to ``as_of`` (the run that day would have made), to the scheduled time of a
    CronJob tick (a slot retried after midnight probes the same dates), else to now."""
    return Run(ctx, now or dt.datetime.now(UTC), concurrency, as_of, dates, lock_timeout).execute(store_path)


class Run:
    """The state of one run: its identity, clock, time budget, summary and log context."""

    def __init__(self, ctx: RunContext, started: dt.datetime, concurrency: int, as_of: dt.date | None = None,
                 dates: Window | None = None, lock_timeout: float = LOCK_TIMEOUT):
        self.ctx = ctx
        self.started = started
        self.as_of = as_of
        self.dates = dates
        self.t0 = time.monotonic()
        self.budget = time_budget(ctx.spec.active_deadline_seconds)
        self.concurrency = concurrency
        self.lock_timeout = lock_timeout
        self.run_id = run_id_for(ctx)
        self.attempt = 1
        self.start_counts: dict | None = None  # finished runs by outcome when this run began; None: unknown
        self.start_last: dict = {}
        self.summary = RunSummary()
        self.window: Window | None = None
        self.gaps_by_cause: dict[str, int] = {}  # the schedule's open gaps by cause once committed
        self.open_by_variant: dict[str, int] = {}  # ...and by variant (target.dimensions)
        self.dimension_metrics: dict | None = None  # {dimension: {value: counts}} pushed as labels
        self.coverage_by_dimension: dict = {}  # the same, as its termination message holds it
        self.expiring: Expiry | None = None  # what the commit deletes past retention
        self.period = ctx.spec.target.period  # a cell is a day, or a month (named by its first day)
        # the periods of the schedule's cells: its own, and monthly archives too with target.archive
        self.periods = (DAILY, MONTHLY) if ctx.spec.target.archive else (self.period,)
        self.boundary: dt.date | None = None  # target.archive: the first day expected as a daily file
        self.covered: set = set()  # target.archive: cells held by the other period's cells
        self.publication = Publication(ctx.spec.timezone, ctx.spec.target.publish_delay_hours, self.period)
        self.checkpoint_rows = 0  # rows a backfill unit's checkpoints wrote before its final commit
        self.interrupted = False  # SIGTERM: see interrupt()
        self.source: S3Source | None = None
        self.earlier = (0, 0)  # a backfill unit: (cells, bytes) its earlier attempts repaired
        self.unlisted: dict[str, str] = {}  # symbols whose listing gave up: unknown for this run, with why
        self.log = logging.LoggerAdapter(log, {"schedule": ctx.schedule, "namespace": ctx.namespace, "run_id": self.run_id})

    def interrupt(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            self.log.warning("event=run_interrupted reason=%r", "SIGTERM: committing what was verified, then exit code 4")
        if self.source is not None:
            self.source.deadline = time.monotonic()  # no request starts or waits any more

    def execute(self, store_path: Path | None) -> RunResult:
        _RUNNING.append(self)
        try:
            return self._execute(store_path)
        finally:
            _RUNNING.remove(self)

    def _execute(self, store_path: Path | None) -> RunResult:
        ctx = self.ctx
        self.log.info("event=run_started trigger=%s scheduled_time=%s store=%s time_budget_seconds=%.0f", ctx.trigger,
                      ctx.scheduled_time.isoformat() if ctx.scheduled_time else "-", store_path or "objectStore", self.budget)
        wait = lambda msg: self.log.warning("event=store_wait %s", msg)  # noqa: E731
        try:
            store = open_backend(ctx, store_path, self.lock_timeout, wait)
        except StoreError as e:
            return self.finish(None, None, error=str(e))
        try:
            try:
                start = self.begin(store)
            except StoreError as e:
                return self.finish(store, None, error=str(e))
            source = self.source = S3Source(ctx.spec.target, ctx.source_credentials, concurrency=self.concurrency,
                                            deadline=self.t0 + self.budget)
            if self.interrupted:
                self.interrupt()
            # staged load files must outlive the repair: the commit reads them
            with tempfile.TemporaryDirectory(prefix="ingestion-") as tmp:
                try:
                    work = self.probe_and_repair(start, source, Path(tmp), store)
                except SourceError as e:
                    return self.finish(store, source, error=str(e))
                return self.finish(store, source, work=work)
        finally:
            store.close()

    def begin(self, store: Store) -> dict:
        """The store's starting state for this schedule; records the run as running, then
        lets go of the file for the rest of the run."""
        schedule = self.ctx.schedule
        self.attempt = store.run_attempts(self.run_id) + 1
        state = {"known": set().union(*(store.known_symbols(schedule, p) for p in self.periods)),
                 "held": self.of_periods(store.held, schedule), "probed": self.of_periods(store.probed_through, schedule),
                 "backlog": self.of_periods(store.backlog, schedule)}
        if self.ctx.backfill is not None and self.ctx.backfill.since is not None and self.attempt > 1:
            self.earlier = self.repaired_since(self.of_periods(store.gaps, schedule), self.ctx.backfill.since)
        self.start_counts, self.start_last = store.run_counts(schedule), store.last_finished(schedule)
        abandoned = store.begin_run(self.run_row("running", None, None), self.started)
        for run_id in abandoned:
            self.log.warning("event=run_abandoned abandoned_run_id=%s reason=%r", run_id, "running past its deadline")
        store.check()  # a table the job cannot work with fails the run, now that it is recorded
        store.release()
        return state

    def of_periods(self, read: Callable[[str, str], dict], schedule: str) -> dict:
        """A store read (by series, or by cell) over each period of the schedule's cells: their
        series are apart (a monthly one is marked so: plan.series_name)."""
        out: dict = {}
        for p in self.periods:
            out.update(read(schedule, p))
        return out

    def repaired_since(self, gaps: dict, since: dt.datetime) -> tuple[int, int]:
        """(cells, bytes) of this backfill unit's cells repaired since ``since`` (the backfill's
        creation): an earlier attempt's, killed after it checkpointed them. They are held now, so
        this attempt repairs none of them again: its own repairs add to these."""
        unit = self.ctx.backfill.unit
        mine = [g for (series, date), g in gaps.items()  # a unit's cells: those whose last day is in its days
                if unit.first <= period_end(date, series_period(series)) <= unit.last and unit.holds(split_series(series)[0])
                and g["status"] == "repaired" and g["repaired_at"] is not None and g["repaired_at"] >= since]
        return len(mine), sum(g["bytes"] or 0 for g in mine)

    def probe_and_repair(self, start: dict, source: S3Source, tmp: Path, store: Store | None = None) -> Work:
        """Steps 1-4, without the store: what the commit (step 5) writes. A backfill unit also
        commits what it verified every ``checkpointEvery`` cells (see :meth:`checkpointer`)."""
        spec, target = self.ctx.spec, self.ctx.spec.target
        # 1. Expected set: the window in the schedule's zone, symbols given or discovered.
        source.check_bucket()
        symbols = list(target.all_symbols) or source.discover_symbols()
        unit = self.ctx.backfill and self.ctx.backfill.unit
        if unit:  # a backfill's shard: its group of symbols (disjoint Delta parts from the other shards')
            symbols = [s for s in symbols if unit.holds(s)]
        self.window = window = self.plan(spec.timezone, target.lag_days, target.lookback_days)
        # each symbol's series: one per combination of the dimensions' values (the symbol alone
        # without), and with target.archive its monthly series beside each, up to the boundary
        if target.archive is not None:
            self.boundary = archive_boundary(self.nominal_last(), target.archive.daily_days)
        symbols = series_of(symbols, target.dimensions.variants(), self.period,
                            self.boundary - ONE_DAY if self.boundary else None)
        # 2. Probe: one paginated listing per series (per symbol without dimensions).
        upstream, unlisted = source.list_all(symbols)
        if unlisted:  # those series are unknown for this run: nothing expected, nothing changed of them
            if len(unlisted) == len(symbols):
                raise SourceError(f"every listing failed ({len(unlisted)}); the first: {next(iter(unlisted.values()))}")
            self.unlisted = unlisted
            symbols = [s for s in symbols if s not in unlisted]
            self.log.warning("event=listings_failed count=%d first=%s error=%r", len(unlisted), next(iter(unlisted)),
                             next(iter(unlisted.values())))
        if target.discover:  # discovered: a folder holding no object of the key template (in any series) is no symbol
            seen = {split_series(s)[0] for s in symbols if upstream.get(s) or s in start["known"]}
            folders = sorted({split_series(s)[0] for s in symbols} - seen)
            if folders:
                self.log.info("event=folders_skipped count=%d first=%s reason=%r", len(folders), folders[0],
                              "no object in it matches target.keyTemplate")
                symbols = [s for s in symbols if split_series(s)[0] in seen]
        # (a new symbol's whole history is expected too, and the dates an outage left, unless
        # the range was given; each symbol from its first object, until it is delisted)
        free = self.dates is None and not unit
        rules = Rules(history=free, catch_up=free, delist_after_days=target.delist_after_days,
                      max_catch_up_days=target.max_catch_up_days, period=self.period, archive=self.boundary is not None)
        wanted = expect(symbols, window, upstream, start["known"], start["probed"], start["backlog"], rules,
                        self.expected_from)
        expected = wanted.cells
        if wanted.delisted:
            first = min(wanted.delisted)
            self.log.info("event=symbols_delisted count=%d first=%s since=%s delist_after_days=%d", len(wanted.delisted),
                          first, wanted.delisted[first], target.delist_after_days)
        if wanted.caught_up or wanted.unprobed:
            self.log.warning("event=catch_up probed_before_window=%d left_unprobed=%d max_catch_up_days=%d",
                             wanted.caught_up, len(wanted.unprobed), target.max_catch_up_days)
        # 3. Gaps: expected cells the store does not hold verified yet.
        plan = plan_gaps(expected, upstream, start["held"])
        limit = spec.repair.max_repairs_per_run
        todo, deferred = plan.candidates[:limit], plan.candidates[limit:]
        self.log.info("event=probed symbols=%d series=%d window=%s..%s expected=%d present=%d missing=%d republished=%d "
                      "withdrawn=%d to_repair=%d deferred=%d s3_requests=%d", len({split_series(x)[0] for x in symbols}),
                      len(symbols), window.first, window.last, len(expected),
                      len(plan.present), len(plan.missing), len(plan.republished), len(plan.withdrawn), len(todo),
                      len(deferred), source.stats.total_requests)
        # 4. Repair: fetch, verify and stage loads, bounded concurrency, each cell alone.
        on_repaired = self.checkpointer(store, source, upstream) if unit and store is not None else None
        done, late = repair(source, todo, upstream, spec.repair, tmp, self.log, on_repaired)
        later = dict.fromkeys(deferred, f"maxRepairsPerRun={limit} reached")  # a Cell is its (symbol, date) key
        why_late = ("the run was asked to stop (SIGTERM) before it got to it" if self.interrupted else
                    f"the run's time budget ({self.budget:.0f}s of activeDeadlineSeconds) ran out")
        later.update({k: why_late for k in late})
        if late and not self.interrupted:
            self.log.warning("event=time_budget_spent deferred=%d budget_seconds=%.0f", len(late), self.budget)
        return Work(symbols, expected, upstream, len(plan.missing), len(plan.present),
                    dataclasses.replace(done, deferred=later), len(plan.republished), len(plan.withdrawn), wanted)

    def checkpointer(self, store: Store, source: S3Source, upstream: dict):
        """For a backfill unit: every ``checkpointEvery`` verified cells, commit them (their
        availability, their gaps as repaired, their loads) with the run still ``running``, so a
        pod killed later resumes past them. A checkpoint that fails is a warning; the unit's
        final commit writes those cells anyway."""
        every, schedule = self.ctx.backfill.checkpoint_every, self.ctx.schedule
        committed: set = set()

        def on_repaired(repaired: dict) -> None:
            batch = {k: v for k, v in repaired.items() if k not in committed}
            if len(batch) < every:
                return
            try:
                with store.locked():
                    for k in store.refuse_loads(loads_of(schedule, batch)):  # left to the final commit, which fails them alone
                        del batch[k]
                    rows = build_rows(schedule, source.template, [Cell(*k) for k in batch], upstream,
                                      Repairs(batch, {}, {}), self.of_periods(store.gaps, schedule), self.started,
                                      self.publication)
                    self.checkpoint_rows += store.write_run(rows.objects, rows.gaps, self.run_row("running", None, source.stats),
                                                            rows.loads)
            except StoreError as e:
                self.log.warning("event=checkpoint_failed cells=%d error=%r", len(batch), str(e))
                return
            committed.update(batch)
            self.log.info("event=checkpoint cells=%d committed=%d", len(batch), len(committed))

        return on_repaired

    def expected_from(self, series: str) -> dt.date | None:
        """The first day a cell of ``series`` may hold: its retention's, and with target.archive
        a daily series' boundary (the days before it are its monthly series')."""
        kept = self.kept_from(split_series(series)[1])
        if self.boundary is not None and series_period(series) == DAILY:
            return max(kept or self.boundary, self.boundary)
        return kept

    def nominal_last(self) -> dt.date:
        """The newest date the run's own day expects (today in the schedule's zone minus the
        lag), whatever its window (--dates' is not its day); a backfill unit's: the backfill's
        last date, as the operator counts its cells (backfill.unit_cells)."""
        target = self.ctx.spec.target
        if self.ctx.backfill is not None and self.ctx.backfill.last is not None:  # the same for all its units
            return self.ctx.backfill.last
        if self.as_of is not None:
            return window_on(self.as_of, target.lag_days, 0).last
        return plan_window(self.ctx.scheduled_time or self.started, self.ctx.spec.timezone, target.lag_days, 0).last

    def kept_from(self, variant: str) -> dt.date | None:
        """The first day a cell of ``variant`` is kept from (storage.retention; None: kept
        forever): a cell whose last day is before it is past retention."""
        retention = self.ctx.spec.storage.retention
        days = retention.days_for(variant) if retention else None
        return self.window.last - dt.timedelta(days=days - 1) if days and self.window else None

    def expiry(self, store: Store, work: Work) -> Expiry | None:
        """What this run's commit deletes: every variant the store or the run holds, past its retention."""
        retention = self.ctx.spec.storage.retention
        if retention is None:
            return None
        variants = store.variants(self.ctx.schedule) | {split_series(c.symbol)[1] for c in work.expected}
        kept = {v: k for v in variants if (k := self.kept_from(v)) is not None}
        return Expiry(kept, retention.history) if kept else None

    def plan(self, timezone: str, lag_days: int, lookback_days: int) -> Window:
        if self.ctx.backfill is not None:
            return Window(self.ctx.backfill.unit.first, self.ctx.backfill.unit.last)
        if self.dates is not None:
            return self.dates
        if self.as_of is not None:
            return window_on(self.as_of, lag_days, lookback_days)
        return plan_window(self.ctx.scheduled_time or self.started, timezone, lag_days, lookback_days)

    def commit(self, store: Store, source: S3Source, work: Work) -> Rows:
        """Step 5 under the file's lock: rows built against the store's current gaps (another
        run may have committed meanwhile), loads that would not fit refused alone."""
        schedule, s, r = self.ctx.schedule, self.summary, work.repairs
        for k, reason in store.refuse_loads(loads_of(schedule, r.repaired)).items():
            r.failed[k] = f"{work.upstream[k[0]][k[1]].key}: load refused: {reason}"
            r.causes[k] = "quarantined"  # its rows do not fit the table: nothing of it is loaded
            del r.repaired[k]
        prior_gaps = self.of_periods(store.gaps, schedule)
        self.expiring = self.expiry(store, work)
        if self.expiring is not None:  # open gaps past retention are deleted by this commit: not counted
            prior_gaps = {k: g for k, g in prior_gaps.items()
                          if not (g["status"] == "open" and period_end(k[1], series_period(k[0])) < self.expiring.kept_from.get(
                              g.get("variant") or "", dt.date.min))}
        rows = build_rows(schedule, source.template, work.expected, work.upstream, r, prior_gaps, self.started,
                          self.publication, work.plan.unprobed, work.plan.delisted,
                          f"the catch-up probes {self.ctx.spec.target.max_catch_up_days} dates before the window per run "
                          "(target.maxCatchUpDays)")
        if self.boundary is not None:  # a day is held by its daily file or its month's archive
            rows, self.covered = union_of_periods(rows, prior_gaps, self.boundary)
        s.symbols = len({split_series(x)[0] for x in work.symbols})  # symbols, not series
        s.expected, s.present, s.missing = len(work.expected), work.present, work.missing
        if self.covered:  # expected cells not listed, whose days the other period's cells hold
            held = sum(1 for c in work.expected if c in self.covered and c.date not in work.upstream.get(c.symbol, {}))
            s.present, s.missing = s.present + held, s.missing - held
        s.listings_failed = len(self.unlisted)
        s.gaps_repaired, s.repairs_failed, s.repairs_deferred = len(r.repaired), len(r.failed), len(r.deferred)
        s.gaps_repaired += self.earlier[0]  # a backfill unit: its earlier attempts' repairs too
        s.repairs_quarantined = r.quarantined
        s.republished, s.withdrawn = work.republished, work.withdrawn
        s.symbols_delisted, s.cells_unprobed = len(work.plan.delisted), len(work.plan.unprobed)
        self.gaps_by_cause, self.open_by_variant = open_gaps(rows, prior_gaps)
        self.coverage_by_dimension, self.dimension_metrics = self.by_dimension(work)
        s.gaps_open = sum(self.gaps_by_cause.values())
        return rows

    def record(self, store: Store, source: S3Source | None, work: Work | None, error: str | None,
               stats: RequestStats) -> tuple[bool, str | None]:
        """Step 5 with the file held: the run's rows and record, or (after an error, or when the
        commit fails) its record alone. Returns whether the store now holds the record, and
        the run's error."""
        if work is not None and not error:
            try:
                rows = self.commit(store, source, work)
                row = self.run_row(self.outcome(None), None, stats)
                self.summary.rows_written = self.checkpoint_rows + store.write_run(rows.objects, rows.gaps, row, rows.loads,
                                                                                  self.expiring)
                self.summary.rows_deleted = row.get("rows_deleted", 0)
                return True, None
            except StoreError as e:
                error = str(e)
                self.gaps_by_cause = {}  # not committed: no count of the store's gaps to report
                self.dimension_metrics, self.coverage_by_dimension = None, {}
        try:
            store.write_run_record(self.run_row("failed", error, stats))
            return True, error
        except StoreError as e:
            return False, f"{error}; the run's record was not written either: {e}"

    def finish(self, store: Store | None, source: S3Source | None, work: Work | None = None,
               error: str | None = None) -> RunResult:
        """The steps after the repair, in order: the commit (the run row with all data rows in
        one transaction), the metrics push (describing what was committed), the store's
        housekeeping, and the summary."""
        stats = source.stats if source else RequestStats()
        self.summary.bytes_fetched = stats.bytes_fetched
        if source is not None:
            pace = source.pace
            self.summary.throttled_responses = pace.throttled
            self.summary.wait_seconds = round(pace.wait_seconds, 3)
            self.summary.lowest_request_rate = round(pace.lowest or 0.0, 3)
        done = self.commit_step(store, source, work, error, stats)
        warnings = self.push_step(done, work, stats) + self.housekeeping_step(store, done)
        if warnings and done.committed:
            try:
                with store.locked():
                    store.add_warning(self.run_id, "; ".join(warnings))
            except StoreError as e:
                self.log.warning("event=warning_not_recorded error=%r", str(e))
        return self.summarize(done, source, work, warnings)

    def commit_step(self, store: Store | None, source: S3Source | None, work: Work | None, error: str | None,
                    stats: RequestStats) -> Committed:
        """Take the store again and commit the run (or, after an error, its record alone);
        then read what the metrics report of the schedule's runs."""
        counts, last, oldest_open = None, {}, None
        committed = False  # whether the store now holds this run's record
        if store is not None:
            try:
                with store.locked():
                    committed, error = self.record(store, source, work, error, stats)
                    if committed:
                        counts, last = store.run_counts(self.ctx.schedule), store.last_finished(self.ctx.schedule)
                        oldest_open = store.oldest_open_gap(self.ctx.schedule)
            except StoreError as e:  # the file could not be taken again
                error = f"{error}; then {e}" if error else str(e)
        outcome = self.outcome(error)
        if not committed:
            # The store does not know how this run ended: push the counts it held at the start
            # (a pushed count never goes down), and this run's failure. Its 'running' record is
            # counted as abandoned once its deadline has passed.
            counts, last = self.start_counts, {**self.start_last, outcome: self.finished_at()}
        return Committed(committed, outcome, error, counts, last, oldest_open)

    def push_step(self, done: Committed, work: Work | None, stats: RequestStats) -> list[str]:
        """Push the run's metrics: a schedule's run to the schedule's group (also a run that
        failed), a committed backfill unit to its backfill's. Returns the warnings."""
        url = self.ctx.spec.metrics.pushgateway_url
        if url and self.ctx.backfill is None:
            return self.push_metrics(url, done.outcome, stats, done.counts, done.last)
        if url and done.committed and work is not None and done.outcome != "failed":  # a unit: not the schedule's last run
            return self.push_backfill_metrics(url, done.outcome)
        return []

    def housekeeping_step(self, store: Store | None, done: Committed) -> list[str]:
        """The store's housekeeping after a run that committed its data. Returns the warnings."""
        return self.maintain(store) if done.committed and done.outcome != "failed" else []

    def summarize(self, done: Committed, source: S3Source | None, work: Work | None, warnings: list[str]) -> RunResult:
        """One summary line (and the failure's, if any), and the run's result with its coverage."""
        s, outcome, error = self.summary, done.outcome, done.error
        line = (f"event=run_finished outcome={outcome} duration_seconds={s.duration_seconds} symbols={s.symbols} "
                f"expected={s.expected} present={s.present} missing={s.missing} repaired={s.gaps_repaired} "
                f"repairs_failed={s.repairs_failed} quarantined={s.repairs_quarantined} deferred={s.repairs_deferred} "
                f"gaps_open={s.gaps_open} "
                + "".join(f"gaps_{c.replace('-', '_')}={n} " for c, n in self.gaps_by_cause.items() if n) +
                f"bytes_fetched={s.bytes_fetched} rows_written={s.rows_written} s3_requests={s.s3_requests} s3_errors={s.s3_errors}")
        if source is not None and self.ctx.spec.target.max_requests_per_second:
            line += f" max_requests_per_second={self.ctx.spec.target.max_requests_per_second} rate_wait_seconds={source.pace.waited:.1f}"
        if s.throttled_responses:
            line += (f" throttled={s.throttled_responses} wait_seconds={s.wait_seconds:.1f} "
                     f"lowest_request_rate={s.lowest_request_rate:g}")
        if warnings:
            line += f" warnings={len(warnings)}"
        {"succeeded": self.log.info, "partial": self.log.warning}.get(outcome, self.log.error)(line)
        if error:
            self.log.error("event=run_failed reason=%r", error)
        reason = error
        if not error and outcome == "partial":
            parts = []
            if self.unlisted:
                names = ", ".join(sorted(self.unlisted)[:5]) + (", ..." if len(self.unlisted) > 5 else "")
                parts.append(f"the listing of {len(self.unlisted)} symbol(s) failed ({names}; their cells are unknown "
                             f"for this run): {next(iter(self.unlisted.values()))}")
            if s.repairs_failed:
                first = next(iter(work.repairs.failed.values()))
                self.log.warning("event=run_partial repairs_failed=%d first_error=%r", s.repairs_failed, first)
                parts.append(f"{s.repairs_failed} repair(s) failed, the first: {first}")
            reason = "; ".join(parts)
        if self.interrupted and outcome != "failed":
            reason = (f"interrupted (SIGTERM): committed, {s.repairs_deferred} cell(s) left for the next pod"
                      + (f"; {reason}" if reason else ""))
        coverage = None
        if done.committed and work is not None and outcome != "failed":
            coverage = Coverage(s.expected, s.present, s.missing, s.gaps_repaired, s.gaps_open,
                                done.oldest_open.isoformat() if done.oldest_open else None, s.bytes_fetched + self.earlier[1], outcome,
                                s.repairs_failed + s.repairs_deferred, self.gaps_by_cause, s.symbols_delisted,
                                tuple(work.plan.delisted), self.coverage_by_dimension)
        return RunResult(self.run_id, outcome, s, error, warnings, coverage, reason, self.gaps_by_cause, self.interrupted)

    def by_dimension(self, work: Work) -> tuple[dict, dict | None]:
        """The coverage of each value of each dimension, as the termination message holds it,
        and the same counts for the metrics, of the dimensions of at most
        ``metrics.dimensionLabels`` values ({} and None without dimensions)."""
        dims = self.ctx.spec.target.dimensions
        if not dims:
            return {}, None
        expected: dict[str, int] = {}
        present: dict[str, int] = {}
        for c in work.expected:
            v = split_series(c.symbol)[1]
            expected[v] = expected.get(v, 0) + 1
            if c.date in work.upstream.get(c.symbol, {}) or c in self.covered:
                present[v] = present.get(v, 0) + 1
        return (dimension_coverage(dims, expected, present, self.open_by_variant),
                dimension_coverage(dims, expected, present, self.open_by_variant, self.ctx.spec.metrics.dimension_labels,
                                   len(dims)))

    def maintain(self, store: Store) -> list[str]:
        """The store's housekeeping, when its policy asks for it, and only while half the time
        budget is left (the Job's deadline must not end a run that committed); a failure is a
        warning (the run's data is committed, and the next run tries again)."""
        if time.monotonic() - self.t0 > self.budget / 2:
            self.log.warning("event=maintenance_skipped reason=%r", "less than half of the run's time budget is left")
            return []
        warnings = []
        for row in store.maintain():
            if row.get("error"):
                self.log.warning("event=maintenance_failed table=%s error=%r", row["table"], row["error"])
                warnings.append(f"maintenance: {row['error']}")
            elif row.get("skipped"):
                self.log.info("event=maintenance_skipped table=%s reason=%r", row["table"], row["skipped"])
            elif row["compacted"]:
                self.log.info("event=maintenance table=%s files_before=%d files_after=%d vacuumed=%d duration_ms=%d",
                              row["table"], row["files"], row["files_after"], row["vacuumed"], row["duration_ms"])
        return warnings

    def outcome(self, error: str | None) -> str:
        return "failed" if error else "partial" if self.summary.repairs_failed or self.unlisted else "succeeded"

    def finished_at(self) -> dt.datetime:
        return self.started + dt.timedelta(seconds=time.monotonic() - self.t0)

    def run_row(self, outcome: str, error: str | None, stats: RequestStats | None) -> dict:
        """The run's ``runs`` row; ``deadline_at`` is when the Job's activeDeadlineSeconds ends it."""
        ctx, s = self.ctx, self.summary
        s.duration_seconds = round(time.monotonic() - self.t0, 3)
        if stats is not None:
            s.s3_requests, s.s3_errors = stats.total_requests, stats.total_errors
        window = self.window or Window(None, None)
        return {
            "run_id": self.run_id, "schedule": ctx.schedule, "namespace": ctx.namespace, "trigger": ctx.trigger,
            "scheduled_time": ctx.scheduled_time, "job_name": ctx.job_name, "attempt": self.attempt,
            "started_at": self.started, "finished_at": None if outcome == "running" else self.finished_at(),
            "outcome": outcome, "window_first": window.first, "window_last": window.last, "error": error,
            "warnings": None, "deadline_at": self.started + dt.timedelta(seconds=ctx.spec.active_deadline_seconds), **{name: s[name] for name, _ in RunSummary.columns()},
        }

    def push_backfill_metrics(self, url: str, outcome: str) -> list[str]:
        """A committed backfill unit's cells, in the backfill's own group."""
        bf = self.ctx.backfill
        return self._pushed(url, lambda: metrics.push_backfill(
            url, self.ctx.namespace, self.ctx.schedule, bf.name, bf.unit.index,
            metrics.build_backfill_registry(bf.units, self.summary, outcome, self.finished_at())))

    def push_metrics(self, url: str, outcome: str, stats: RequestStats, counts: dict | None, last: dict) -> list[str]:
        """Push this run's metrics."""
        return self._pushed(url, lambda: metrics.push(
            url, self.ctx.namespace, self.ctx.schedule,
            metrics.build_registry(self.summary, outcome, stats, counts, last, self.gaps_by_cause or None,
                                   self.dimension_metrics)))

    def _pushed(self, url: str, push: Callable[[], None]) -> list[str]:
        """Run ``push``; a failure to push is a warning (returned), never a failed run."""
        try:
            push()
            return []
        except Exception as e:  # any failure to push is a warning, never a failed run
            self.log.warning("event=metrics_push_failed url=%s error=%r", url, str(e)[:200])
            return [f"pushgateway {url} unreachable: {e.__class__.__name__}: {str(e)[:200]}"]
