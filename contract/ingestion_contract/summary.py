"""What one run reports: its counters, each naming its ``runs`` column and its metric.

A new counter is one field here: the job fills it, the store adds the ``runs`` column
(``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` when it opens a file), the metrics push
exposes it under its name, and ``ingestion-job report --format json`` lists it.
"""

from __future__ import annotations

import dataclasses
import json
import typing

from .spec import variant_values


def counter(help: str, metric: str | None = None, sql: str | None = "INTEGER", default=0):
    """A run counter: its help text, its Prometheus gauge (None: not pushed), its ``runs``
    column type (None: not stored)."""
    return dataclasses.field(default=default, metadata={"help": help, "metric": metric, "sql": sql})


@dataclasses.dataclass
class RunSummary:
    symbols: int = counter("Symbols the run probed.")
    listings_failed: int = counter("Symbols whose listing gave up after its retry budget (target.retryBudgetSeconds): "
                                   "their cells are unknown for the last run (not expected, not missing, nothing of them "
                                   "changed in the store), and the run is partial.", "ingestion_listings_failed")
    expected: int = counter("Cells (symbol, date) the last run expected.", "ingestion_objects_expected")
    present: int = counter("Expected cells present upstream.", "ingestion_objects_present")
    missing: int = counter("Expected cells absent upstream.", "ingestion_objects_missing")
    # pushed by cause, as ingestion_gaps_open{cause} (see ingestion_job.metrics), not as a plain gauge
    gaps_open: int = counter("Gaps still open after the last run.")
    republished: int = counter("Cells held verified whose object the last run found changed upstream (size or ETag): "
                               "fetched, verified and loaded again.", "ingestion_objects_republished")
    withdrawn: int = counter("Cells held verified whose object the last run found gone upstream: open gaps with cause "
                             "withdrawn.", "ingestion_objects_withdrawn")
    symbols_delisted: int = counter("Symbols that have published nothing for target.delistAfterDays: dates after their "
                                    "last object are not expected.", "ingestion_symbols_delisted")
    cells_unprobed: int = counter("Cells before the window an outage left that the last run did not probe "
                                  "(target.maxCatchUpDays per run): open gaps with cause deferred.", "ingestion_cells_unprobed")
    gaps_repaired: int = counter("Gaps the last run repaired.", "ingestion_gaps_repaired")
    repairs_failed: int = counter("Repairs the last run attempted that failed.", "ingestion_repairs_failed")
    repairs_quarantined: int = counter("Failed repairs whose object was fetched and verified but did not hold its cell's "
                                       "data (wrong member, rows of another day, a wrong count): nothing of it is loaded, its "
                                       "gap stays open with cause quarantined.", "ingestion_repairs_quarantined")
    repairs_deferred: int = counter("Repair candidates the last run left for a later one (maxRepairsPerRun or its time "
                                    "budget).", "ingestion_repairs_deferred")
    bytes_fetched: int = counter("Bytes the last run fetched from the source.", "ingestion_fetched_bytes", sql="BIGINT")
    throttled_responses: int = counter("Throttling answers (429, 503 SlowDown) the source gave the last run, retries "
                                       "included; each halved the run's request rate and requests in flight (at most "
                                       "once a second).", "ingestion_source_throttled_responses")
    wait_seconds: float = counter("Seconds the last run's requests spent waiting, summed over requests: for a slot of "
                                  "the request rate, for room in flight, and backing off between attempts.",
                                  "ingestion_source_wait_seconds", sql="DOUBLE", default=0.0)
    lowest_request_rate: float = counter("The lowest request rate (a second) the last run came down to after "
                                         "throttling; its target.maxRequestsPerSecond when it was never throttled, 0 "
                                         "when it had no cap and was never throttled.",
                                         "ingestion_source_lowest_request_rate", sql="DOUBLE", default=0.0)
    s3_requests: int = counter("S3 HTTP requests of the run, retries included.")
    s3_errors: int = counter("S3 HTTP requests of the run that failed, retries included.")
    rows_written: int = counter("Rows of objects, gaps and loaded the run's commit inserted or changed (DuckDB's count; "
                                "0 for a rerun with nothing new).", "ingestion_rows_written", sql="BIGINT")
    rows_deleted: int = counter("Rows the run's retention (storage.retention) deleted: loaded rows and open gaps of cells "
                                "past it, and with history their objects and gaps rows too.", "ingestion_rows_deleted",
                                sql="BIGINT")
    duration_seconds: float = counter("Wall time of the last run.", "ingestion_run_duration_seconds", sql=None, default=0.0)

    def __getitem__(self, name: str):
        """``summary["gaps_repaired"]``: a counter by name, as the ``runs`` table calls it."""
        if name not in _NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def columns() -> list[tuple[str, str]]:
        """(column, DuckDB type) of every counter the ``runs`` table keeps."""
        return [(f.name, f.metadata["sql"]) for f in dataclasses.fields(RunSummary) if f.metadata["sql"]]

    @staticmethod
    def gauges() -> list[tuple[str, str, str]]:
        """(field, metric name, help) of every counter pushed as a gauge."""
        return [(f.name, f.metadata["metric"], f.metadata["help"]) for f in dataclasses.fields(RunSummary) if f.metadata["metric"]]


_NAMES = frozenset(f.name for f in dataclasses.fields(RunSummary))


# -- the coverage summary: the job's termination message, the schedule's status.coverage -------
TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
TERMINATION_MESSAGE_ENV = "INGESTION_TERMINATION_MESSAGE_PATH"  # where the job writes it (the pod runner moves it)
COVERAGE_VERSION = 1
MESSAGE_LIMIT = 4096  # bytes of a termination message the kubelet keeps
REASON_LIMIT = 1024  # characters of a run's reason in its message (one line)

# Why a gap is open: one cause per open gap, from this closed list (the ``gaps`` table's
# ``reason``, the report, ``status.coverage.gapsByCause`` and ``ingestion_gaps_open{cause}``).
# Upstream's: not published yet but within the publisher's usual delay (not-due), past it
# (late-upstream), gone after it was verified (withdrawn). Ours: the fetch failed, the object
# did not verify (size, checksum), it did not hold its cell's data (quarantined), or the run
# left it for a later one (deferred: maxRepairsPerRun, the time budget, the catch-up limit).
GAP_CAUSES = ("not-due", "late-upstream", "withdrawn", "fetch-failed", "verification-failed", "quarantined", "deferred")


def by_cause(counts: dict[str, int] | None = None) -> dict[str, int]:
    """Every cause with its count (0 for the causes absent from ``counts``), in list order."""
    counts = counts or {}
    unknown = set(counts) - set(GAP_CAUSES)
    if unknown:
        raise ValueError(f"not a gap cause: {sorted(unknown)} (causes: {', '.join(GAP_CAUSES)})")
    return {c: int(counts.get(c, 0)) for c in GAP_CAUSES}


def largest_causes(counts: dict[str, int], n: int = 2) -> list[tuple[str, int]]:
    """The ``n`` causes with the most open gaps (ties in list order), zeros left out."""
    return sorted(((c, k) for c, k in counts.items() if k), key=lambda ck: -ck[1])[:n]


def is_complete(present: int, expected: int, gaps_open: int) -> bool:
    """The ``Complete`` rule: every expected cell present upstream, and no gap open."""
    return present == expected and gaps_open == 0


@dataclasses.dataclass(frozen=True)
class Coverage:
    """What a committed run knows about its window, compact enough for a termination message.
    ``oldest_open_gap``: the earliest date (ISO) of any gap still open for the schedule."""

    expected: int
    present: int
    missing: int
    repaired: int
    gaps_open: int
    oldest_open_gap: str | None
    bytes: int
    outcome: str
    # cells of this run's window whose repair failed or was deferred (a backfill's failed
    # cells); optional in a message, for messages of jobs written before it
    unrepaired: int = 0
    # open gaps by cause (every cause of GAP_CAUSES, summing to gaps_open); a message holds the
    # non-zero ones only, and a message written before causes decodes to an empty dict
    gaps_by_cause: dict = dataclasses.field(default_factory=dict, compare=True)
    # symbols delisted (published nothing for target.delistAfterDays), and the first of their
    # names (at most MAX_NAMED, so the message stays small)
    symbols_delisted: int = 0
    delisted: tuple = ()
    # per value of each dimension (target.dimensions): (expected, present, gaps open) of its
    # series, {dimension: {value: (e, p, g)}}; a dimension of more than MAX_VALUES values is
    # left out, and at most MAX_DIMENSIONS_SHOWN dimensions are shown (the message stays small)
    by_dimension: dict = dataclasses.field(default_factory=dict, compare=True)

    MAX_NAMED: typing.ClassVar[int] = 20
    MAX_VALUES: typing.ClassVar[int] = 16
    MAX_DIMENSIONS_SHOWN: typing.ClassVar[int] = 2
    KEYS = {"expected": "expected", "present": "present", "missing": "missing", "repaired": "repaired",
            "gaps_open": "gapsOpen", "oldest_open_gap": "oldestOpenGap", "bytes": "bytes", "outcome": "outcome",
            "unrepaired": "unrepaired", "gaps_by_cause": "gapsByCause", "symbols_delisted": "symbolsDelisted",
            "delisted": "delistedSymbols", "by_dimension": "byDimension"}
    OPTIONAL = {"unrepaired": 0, "gaps_by_cause": {}, "symbols_delisted": 0, "delisted": (), "by_dimension": {}}

    def __post_init__(self):
        object.__setattr__(self, "delisted", tuple(sorted(self.delisted))[:self.MAX_NAMED])
        if self.gaps_by_cause:
            object.__setattr__(self, "gaps_by_cause", by_cause(self.gaps_by_cause))

    @property
    def percent(self) -> float:
        """Expected cells present upstream, in percent (100 for an empty window)."""
        return round(100.0 * self.present / self.expected, 1) if self.expected else 100.0

    @property
    def complete(self) -> bool:
        return is_complete(self.present, self.expected, self.gaps_open)

    def body(self) -> dict:
        """The termination message's JSON object (what :meth:`encode` writes)."""
        body = {"v": COVERAGE_VERSION, **{k: getattr(self, f) for f, k in self.KEYS.items()}}
        body["gapsByCause"] = {c: n for c, n in self.gaps_by_cause.items() if n}
        body["delistedSymbols"] = list(self.delisted)
        body["byDimension"] = {d: {v: list(n) for v, n in values.items()} for d, values in self.by_dimension.items()}
        return body

    def encode(self) -> str:
        return json.dumps(self.body(), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> Coverage | None:
        """The message a run wrote, or None for anything else (no message, another program's
        text, another version, a field of the wrong type): status must never break on it."""
        raw = _message(text)
        if raw is None:
            return None
        try:
            values = {f: raw[k] if f not in cls.OPTIONAL else raw.get(k, cls.OPTIONAL[f]) for f, k in cls.KEYS.items()}
        except KeyError:
            return None
        names = values["delisted"]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            return None
        values["delisted"] = tuple(names)
        dims = values["by_dimension"]
        if not isinstance(dims, dict) or not all(
                isinstance(vals, dict) and all(isinstance(n, list) and len(n) == 3 and all(_count(x) for x in n)
                                               for n in vals.values()) for vals in dims.values()):
            return None
        values["by_dimension"] = {d: {v: tuple(n) for v, n in vals.items()} for d, vals in dims.items()}
        causes = values["gaps_by_cause"]
        if not isinstance(causes, dict) or any(c not in GAP_CAUSES or not isinstance(n, int) or isinstance(n, bool) or n < 0
                                               for c, n in causes.items()):
            return None
        ints = [f for f in cls.KEYS if f not in ("oldest_open_gap", "outcome", "gaps_by_cause", "delisted", "by_dimension")]
        if any(not isinstance(values[f], int) or isinstance(values[f], bool) or values[f] < 0 for f in ints):
            return None
        if not isinstance(values["outcome"], str) or not (values["oldest_open_gap"] is None or isinstance(values["oldest_open_gap"], str)):
            return None
        return cls(**values)

    def as_status(self) -> dict:
        """``status.coverage`` of the schedule (camelCase keys, plus ``percent``). No null
        values: a merge patch would drop them, and the stored status would never equal this."""
        out = {k: getattr(self, f) for f, k in self.KEYS.items()
               if f not in ("outcome", "unrepaired", "gaps_by_cause", "delisted", "by_dimension") and getattr(self, f) is not None}
        if self.by_dimension:
            out["byDimension"] = {d: {v: dict(zip(("expected", "present", "gapsOpen"), n)) for v, n in values.items()}
                                  for d, values in self.by_dimension.items()}
        if self.gaps_by_cause:  # every cause, zeros too: a merge patch never leaves a stale count behind
            out["gapsByCause"] = dict(self.gaps_by_cause)
            out["delistedSymbols"] = list(self.delisted)  # a list: a merge patch replaces it whole
        return {**out, "percent": self.percent}


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def dimension_coverage(dimensions, expected: dict[str, int], present: dict[str, int], open_gaps: dict[str, int],
                       max_values: int = Coverage.MAX_VALUES, max_dimensions: int = Coverage.MAX_DIMENSIONS_SHOWN) -> dict:
    """``Coverage.by_dimension`` from counts per variant ("interval=1m,market=um": see
    ``ingestion_job.plan``): for each dimension of ``dimensions`` ((name, values) pairs) with
    at most ``max_values`` values (the first ``max_dimensions`` such), each value's (expected,
    present, gaps open) summed over the variants holding it."""
    shown = [(d, values) for d, values in dimensions if len(values) <= max_values][:max_dimensions]
    out = {d: {v: [0, 0, 0] for v in values} for d, values in shown}
    for variant in set(expected) | set(present) | set(open_gaps):
        pairs = variant_values(variant)
        for d in out:
            n = out[d].get(pairs.get(d))
            if n is not None:
                n[0] += expected.get(variant, 0)
                n[1] += present.get(variant, 0)
                n[2] += open_gaps.get(variant, 0)
    return {d: {v: tuple(n) for v, n in values.items()} for d, values in out.items()}


def _message(text: str | None) -> dict | None:
    """A run's termination message as its JSON object, or None for anything else (no message,
    another program's text, another version)."""
    try:
        raw = json.loads(text or "")
    except ValueError:
        return None
    return raw if isinstance(raw, dict) and raw.get("v") == COVERAGE_VERSION else None


def end_message(coverage: Coverage | None, outcome: str, reason: str | None) -> str:
    """The run's termination message: its coverage (a committed run), and for a run that did
    not succeed its one-line reason, so that ``lastRun.reason`` says what the job saw (a 403 on
    the listing, a refused spec), not only the Job's ``BackoffLimitExceeded``. Always under the
    kubelet's 4 KiB: the reason is cut to fit."""
    body = coverage.body() if coverage is not None else {"v": COVERAGE_VERSION, "outcome": outcome}
    if reason:
        line = " ".join(reason.split())[:REASON_LIMIT]
        room = MESSAGE_LIMIT - len(json.dumps({**body, "reason": ""}, separators=(",", ":")).encode())
        while len(json.dumps(line)) > room:  # escapes (a non-ASCII character is 6 bytes) count too
            line = line[:-max(1, len(line) // 10)]
        body["reason"] = line
    return json.dumps(body, separators=(",", ":"))


def end_reason(text: str | None) -> tuple[str, str] | None:
    """(outcome, reason) of a run's termination message that names a reason, else None (a
    succeeded run, a message written before reasons, another program's text)."""
    raw = _message(text)
    if raw is None:
        return None
    outcome, reason = raw.get("outcome"), raw.get("reason")
    if not isinstance(outcome, str) or not isinstance(reason, str) or not reason:
        return None
    return outcome, reason
