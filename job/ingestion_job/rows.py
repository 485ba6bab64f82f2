"""The rows one run writes: availability of every expected cell, gap changes, loads.

Pure: from what the run planned, listed and repaired, and what the store held before,
build the rows of the run's one transaction. A gap row identical to the stored one is
left out, so a rerun with nothing new rewrites no gap.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from ingestion_contract import by_cause

from .plan import (DAILY, MONTHLY, UNPROBED, Cell, Held, KeyTemplate, Layout, Listed, Publication, series_name, series_period,
                   split_series, with_period)
from ingestion_contract.periods import month_end

CellKey = tuple[str, dt.date]  # (series, date): see plan.series_name


def cell_key(row: Mapping) -> CellKey:
    """The cell of a stored or built row (its columns symbol, variant and date)."""
    return series_name(row["symbol"], row.get("variant") or "", row.get("period") or "daily"), row["date"]


@dataclasses.dataclass(frozen=True)
class Staged:
    """A verified object's rows, parsed into a local Parquet file before the commit."""

    path: str
    format: str  # the object's format: csv | parquet


@dataclasses.dataclass(frozen=True)
class Verified:
    """One cell repaired: the object as fetched and verified, and its staged rows (None when
    the spec loads nothing)."""

    sha256: str
    bytes: int
    staged: Staged | None = None


@dataclasses.dataclass(frozen=True)
class Load:
    """One cell's rows to load into table ``loaded`` (replacing what it held for the cell)."""

    schedule: str
    series: str
    date: dt.date
    staged: Staged
    period: str = "daily"  # target.period: a monthly cell's rows are its month's (its series is marked so)

    @property
    def cell(self) -> CellKey:
        return (self.series, self.date)

    @property
    def symbol(self) -> str:
        return split_series(self.series)[0]

    @property
    def variant(self) -> str:
        return split_series(self.series)[1]


def loads_of(schedule: str, repaired: Mapping[CellKey, Verified]) -> list[Load]:
    """The loads of the repaired cells that staged rows (what ``Store.refuse_loads`` checks)."""
    return [Load(schedule, series, date, v.staged, series_period(series)) for (series, date), v in repaired.items()
            if v.staged]


@dataclasses.dataclass(frozen=True)
class Repairs:
    """What step 4 did: verified fetches, failures (with their reason and cause), cells left
    for later (with why)."""

    repaired: dict[CellKey, Verified]
    failed: dict[CellKey, str]
    deferred: Mapping[CellKey, str]  # why each was left for later
    # the cause of each failure: fetch-failed (the default), verification-failed, quarantined
    causes: dict[CellKey, str] = dataclasses.field(default_factory=dict)

    def cause(self, k: CellKey) -> str:
        return self.causes.get(k, "fetch-failed")

    @property
    def quarantined(self) -> int:
        """Failed repairs whose object did not hold its cell's data."""
        return sum(1 for k in self.failed if self.cause(k) == "quarantined")


@dataclasses.dataclass(frozen=True)
class CellRows:
    """What a run writes of one expected cell: its availability row (``objects``), its gap
    row when the gap changed (``gaps``; None: the store's row stands), and its load."""

    object: dict | None  # None: a cell no run probed (no availability to record)
    gap: dict | None = None
    load: Load | None = None


@dataclasses.dataclass(frozen=True)
class Rows:
    """The rows of a run's one transaction, table by table."""

    objects: list[dict]
    gaps: list[dict]
    loads: list[Load]

    @classmethod
    def of(cls, cells: list[CellRows]) -> "Rows":
        return cls([c.object for c in cells if c.object is not None], [c.gap for c in cells if c.gap is not None],
                   [c.load for c in cells if c.load is not None])


def build_rows(schedule: str, template: KeyTemplate | Layout, expected: list[Cell], upstream: dict[str, dict[dt.date, Listed]],
               repairs: Repairs, prior_gaps: dict[CellKey, dict], now: dt.datetime, publication: Publication = Publication(), unprobed: list[Cell] = (),
               delisted: Mapping[str, dt.date] | None = None, why_unprobed: str = "") -> Rows:
    """The rows of every expected cell; the gap rows of the catch-up cells left ``unprobed``
    (open, cause deferred, no availability row: no run looked at them); and of the cells of
    ``delisted`` symbols (symbol: the first date not expected) that are no longer expected."""
    cells = [cell_rows(schedule, template, c, upstream.get(c.symbol, {}).get(c.date), repairs,
                       prior_gaps.get((c.symbol, c.date)), now, publication)
             for c in expected]
    for c in unprobed:
        prior = prior_gaps.get((c.symbol, c.date))
        gap = {**_fresh_gap(schedule, template, c, prior, now), "status": "open", "reason": "deferred",
               "last_error": f"{UNPROBED}: {why_unprobed}".rstrip(": ")}
        if _changed(gap, _live(prior)):
            cells.append(CellRows(None, gap))
    if delisted:  # the stored rows no longer expected (one pass over them), and each symbol's first date
        gone = {k for k in prior_gaps if k[0] in delisted and k[1] >= delisted[k[0]]} | set(delisted.items())
        for k in sorted(gone):
            prior = prior_gaps.get(k)
            if prior is None or prior["status"] != "delisted":
                cells.append(CellRows(None, {**_fresh_gap(schedule, template, Cell(*k), prior, now), "status": "delisted",
                                             "reason": None, "last_error": None}))
    return Rows.of(cells)


def _live(prior: dict | None) -> dict | None:
    """A stored gap row as a run compares against: a cell once delisted is expected afresh."""
    return None if prior is None or prior["status"] == "delisted" else prior


def _fresh_gap(schedule: str, template: KeyTemplate | Layout, c: Cell, prior: dict | None, now: dt.datetime) -> dict:
    """A gap row's fields that are not its state, keeping a stored row's history."""
    p = prior or {}
    symbol, variant = split_series(c.symbol)
    return {"schedule": schedule, "symbol": symbol, "variant": variant, "period": template.period_of(c.symbol), "date": c.date,
            "key": p.get("key") or template.key(c.symbol, c.date),
            "detected_at": p.get("detected_at") or now, "attempts": p.get("attempts") or 0, "last_error": p.get("last_error"),
            "repaired_at": None, "sha256": None, "bytes": None, "etag": None, "previous_etag": p.get("previous_etag"),
            "previous_sha256": p.get("previous_sha256"), "changed_at": p.get("changed_at"), "changes": p.get("changes") or 0}


def cell_rows(schedule: str, template: KeyTemplate | Layout, c: Cell, listed: Listed | None, repairs: Repairs, prior: dict | None,
              now: dt.datetime, publication: Publication = Publication()) -> CellRows:
    """The rows of one expected cell, from its listing (None: not published), what the repair
    did of it and the gap row the store holds (``prior``). An open gap's ``reason`` is its one
    cause (:data:`ingestion_contract.GAP_CAUSES`); ``last_error`` says more where there is more
    to say (the failure, why it was deferred)."""
    k = (c.symbol, c.date)
    prior = _live(prior)
    key = listed.key if listed else template.key(c.symbol, c.date)
    symbol, variant = split_series(c.symbol)
    obj = {
        "schedule": schedule, "symbol": symbol, "variant": variant, "period": template.period_of(c.symbol), "date": c.date,
        "key": key,
        "present": listed is not None,
        "size": listed.size if listed else None, "etag": listed.etag if listed else None,
        "last_modified": listed.last_modified if listed else None,
        # when first listed: the store keeps the one it holds (see OBJECT_KEEP in store.py)
        "first_seen_at": now if listed else None,
    }
    if prior is not None and prior["status"] == "open" and prior["key"] == key and k not in repairs.repaired \
            and k not in repairs.failed:
        # the common case of a rerun, decided without building the row: an open gap that stays
        # as it is (same cause, same words) is not rewritten
        if k in repairs.deferred:
            same = prior["reason"] == "deferred" and prior["last_error"] == f"deferred: {repairs.deferred[k]}"
        elif listed is None and prior["reason"] == "withdrawn":
            same = True
        else:
            same = listed is None and prior["reason"] == publication.absent_cause(c.date, now, template.period_of(c.symbol))
        if same:
            return CellRows(obj)
    if prior and prior["status"] == "repaired":
        if listed is not None and Held(prior.get("etag"), prior.get("bytes")).matches(listed):
            return CellRows(obj)  # held verified as the object listed now: nothing to change
        # republished (listed as another object) or withdrawn (gone): the cell no longer holds
        # what the bucket holds; what it was verified as becomes its provenance
        prior = {**prior, "reason": "withdrawn" if listed is None else None, "attempts": 0, "last_error": None,
                 "detected_at": now, "previous_etag": prior.get("etag"), "previous_sha256": prior["sha256"], "changed_at": now,
                 "changes": (prior.get("changes") or 0) + 1}
    base = {**_fresh_gap(schedule, template, c, prior, now), "key": key}
    load = None
    if listed is None and prior and prior["reason"] == "withdrawn":
        gap = {**base, "status": "open", "reason": "withdrawn"}  # gone upstream after it was verified (and still gone)
    elif k in repairs.repaired:
        r = repairs.repaired[k]
        gap = {**base, "status": "repaired", "reason": None, "repaired_at": now, "attempts": base["attempts"] + 1,
               "sha256": r.sha256, "bytes": r.bytes, "etag": listed.etag if listed else None, "last_error": None}
        load = Load(schedule, c.symbol, c.date, r.staged, template.period_of(c.symbol)) if r.staged else None
    elif k in repairs.failed:
        gap = {**base, "status": "open", "reason": repairs.cause(k), "attempts": base["attempts"] + 1,
               "last_error": repairs.failed[k]}
    elif k in repairs.deferred:
        gap = {**base, "status": "open", "reason": "deferred", "last_error": f"deferred: {repairs.deferred[k]}"}
    else:
        gap = {**base, "status": "open", "reason": publication.absent_cause(c.date, now, template.period_of(c.symbol))}
    # A row identical to what the store holds is not rewritten: a rerun changes nothing.
    return CellRows(obj, gap if _changed(gap, prior) else None, load)


def open_by_cause(rows: Rows, prior_gaps: dict[CellKey, dict]) -> dict[str, int]:
    """The schedule's open gaps by cause once ``rows`` are committed: the gap rows written,
    and the stored ones they leave as they are (in the window or outside it)."""
    return open_gaps(rows, prior_gaps)[0]


def open_gaps(rows: Rows, prior_gaps: dict[CellKey, dict]) -> tuple[dict[str, int], dict[str, int]]:
    """The schedule's open gaps once ``rows`` are committed, by cause (every cause) and by
    variant (see plan.series_name)."""
    final = dict(prior_gaps)
    final.update({cell_key(g): g for g in rows.gaps})
    counts: dict[str, int] = {}
    variants: dict[str, int] = {}
    for g in final.values():
        if g["status"] == "open":
            counts[g["reason"]] = counts.get(g["reason"], 0) + 1
            v = g.get("variant") or ""
            variants[v] = variants.get(v, 0) + 1
    return by_cause(counts), variants


def _changed(new: dict, old: dict | None) -> bool:
    return old is None or any(new[k] != old.get(k) for k in new)


# target.archive: how a gap of one period ends when the other period holds its days
COVERED, SUPERSEDED = "covered", "superseded"


def union_of_periods(rows: Rows, prior_gaps: dict[CellKey, dict], boundary: dt.date) -> tuple[Rows, set[CellKey]]:
    """A schedule with daily files and monthly archives (target.archive) holds a day when its
    daily file or its month's archive is verified. Once ``rows`` are committed:

    * a gap (open) of a day whose month's archive is verified, or of a month whose every day's
      file is verified, is ``covered`` (reason ``by-archive`` or ``by-daily-files``): not open,
      its days held;
    * an open gap of a day before ``boundary`` (the first day expected as a daily file) is
      ``superseded``: the day is expected as part of its month's archive now, and the month's
      own cell carries the one cause of whatever is missing;
    * a covered gap whose cover is no longer verified, or a superseded day on or after the
      boundary (dailyDays grew), is superseded (a day before the boundary) or open again as
      a catch-up cell not probed yet (deferred): the next runs probe it as their backlog.

    Returns the rows with those gap rows (only those that change what the store holds) and the
    cells that are covered once committed."""
    final = dict(prior_gaps)
    written = {cell_key(g): g for g in rows.gaps}
    final.update(written)
    verified = {k for k, g in final.items() if g["status"] == "repaired"}

    def month_of(series: str, d: dt.date) -> CellKey:  # the archive cell holding a daily cell's day
        return with_period(series, MONTHLY), d.replace(day=1)

    by_month: dict[CellKey, int] = {}
    for series, d in verified:
        if series_period(series) == DAILY:
            month = month_of(series, d)
            by_month[month] = by_month.get(month, 0) + 1
    covered: set[CellKey] = set()
    for k, g in final.items():
        if g["status"] not in ("open", COVERED, SUPERSEDED):
            continue
        series, d = k
        if series_period(series) == DAILY:
            month = month_of(series, d)
            if month in verified:
                state = (COVERED, "by-archive", f"held by its month's archive {final[month]['key']}")
            elif d < boundary:
                state = (SUPERSEDED, "expected-as-archive",
                         f"expected as part of its month's archive from {boundary} on (target.archive.dailyDays)")
            elif g["status"] == "open":
                continue
            else:
                state = ("open", "deferred", f"{UNPROBED}: expected as a daily file again (its month's archive is not "
                         "verified, or target.archive.dailyDays grew)")
        else:
            if by_month.get(k, 0) == (month_end(d) - d).days + 1:
                state = (COVERED, "by-daily-files", "held by a verified daily file of each of its days")
            elif g["status"] == "open":
                continue
            else:
                state = ("open", "deferred", f"{UNPROBED}: expected as its archive again (a daily file that held one "
                         "of its days is no longer verified)")
        if state[0] == COVERED:
            covered.add(k)
        prior = prior_gaps.get(k)
        if prior is not None and (prior["status"], prior["reason"]) == state[:2] and state[0] != "open":
            why = prior["last_error"]  # as it was: a rerun rewrites nothing
        else:
            why = f"{state[2]} (was {g['reason']})" if g["status"] == "open" else state[2]
        new = {**g, "status": state[0], "reason": state[1], "last_error": why}
        if _changed(new, prior):
            written[k] = new
        else:
            written.pop(k, None)
    return Rows(rows.objects, list(written.values()), rows.loads), covered
