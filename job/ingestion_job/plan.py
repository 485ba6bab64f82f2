"""Pure planning: which (symbol, date) cells a run expects, their keys, and the gaps.

Nothing here touches the network or the store, so window math across DST changes and
month ends, and the diff of expected against present, have fast tests of their own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from zoneinfo import ZoneInfo

DATE_FMT = "%Y-%m-%d"


@dataclasses.dataclass(frozen=True)
class Window:
    first: dt.date
    last: dt.date

    def dates(self) -> list[dt.date]:
        n = (self.last - self.first).days + 1
        return [self.first + dt.timedelta(days=i) for i in range(max(n, 0))]


def plan_window(now: dt.datetime, timezone: str, lag_days: int, lookback_days: int) -> Window:
    """Newest expected date is today (in the schedule's zone) minus the lag; the window
    covers ``lookback_days`` more days before it."""
    return window_on(now.astimezone(ZoneInfo(timezone)).date(), lag_days, lookback_days)


def window_on(today: dt.date, lag_days: int, lookback_days: int) -> Window:
    """The window of a run whose day (in the schedule's zone) is ``today``."""
    last = today - dt.timedelta(days=lag_days)
    return Window(last - dt.timedelta(days=lookback_days), last)


@dataclasses.dataclass(frozen=True)
class Publication:
    """When the publisher usually has a date's object out: ``delay_hours`` after the date ends
    in ``timezone``. An expected object not listed before then is not due yet (a gap with cause
    not-due); after it, upstream is late (late-upstream)."""

    timezone: str = "UTC"
    delay_hours: int = 0

    def due(self, date: dt.date) -> dt.datetime:
        end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(self.timezone))
        return end + dt.timedelta(hours=self.delay_hours)

    def absent_cause(self, date: dt.date, now: dt.datetime) -> str:
        """The cause of a gap whose object is not listed (and never was verified)."""
        return "not-due" if now < self.due(date) else "late-upstream"


@dataclasses.dataclass(frozen=True)
class KeyTemplate:
    """A key template with ``{symbol}`` and ``{date}`` placeholders."""

    template: str

    def key(self, symbol: str, date: dt.date) -> str:
        return self.template.replace("{symbol}", symbol).replace("{date}", date.strftime(DATE_FMT))

    def list_prefix(self, symbol: str) -> str:
        """The longest fixed prefix of a symbol's keys: one listing covers all its dates."""
        head = self.template.split("{date}", 1)[0]
        return head.replace("{symbol}", symbol)

    def discovery_prefix(self) -> str:
        """The folder that holds one sub-folder per symbol (for discovery by listing)."""
        head = self.template.split("{symbol}", 1)[0]
        if not head.endswith("/") and head:
            raise ValueError(f"keyTemplate {self.template!r}: discovery needs {{symbol}} to start a folder")
        return head

    def parse(self, symbol: str, key: str) -> dt.date | None:
        """The date of a listed key of ``symbol``, or None if the key is not a cell."""
        pattern = re.escape(self.template).replace(re.escape("{symbol}"), re.escape(symbol)).replace(
            re.escape("{date}"), r"(\d{4}-\d{2}-\d{2})")
        m = re.fullmatch(pattern, key)
        if not m:
            return None
        try:
            return dt.datetime.strptime(m.group(1), DATE_FMT).date()
        except ValueError:
            return None


@dataclasses.dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str
    last_modified: dt.datetime


@dataclasses.dataclass(frozen=True)
class Cell:
    symbol: str
    date: dt.date


def expected_cells(symbols: list[str], window: Window, first_listed: dict[str, dt.date],
                   known_symbols: set[str]) -> list[Cell]:
    """Every (symbol, date) of the window; a symbol the store has never seen is expected
    from its first date upstream, so its history is backfilled rather than skipped."""
    cells = []
    for sym in sorted(set(symbols)):
        first = window.first
        if sym not in known_symbols and sym in first_listed:
            first = min(first, first_listed[sym])
        cells += [Cell(sym, d) for d in Window(first, window.last).dates()]
    return cells


@dataclasses.dataclass(frozen=True)
class Held:
    """What the store holds a cell verified as: its object's ETag and size (an ETag of None:
    verified before the store recorded it; the size decides alone then)."""

    etag: str | None
    size: int | None

    def matches(self, listed: "Listed") -> bool:
        """Whether the listed object is still the one the cell was verified as."""
        return listed.size == self.size and (self.etag is None or listed.etag == self.etag)


@dataclasses.dataclass(frozen=True)
class GapPlan:
    present: list[Cell]        # expected and upstream
    missing: list[Cell]        # expected, not upstream (open gaps)
    candidates: list[Cell]     # upstream but not held verified as the object listed now: to repair
    republished: list[Cell] = dataclasses.field(default_factory=list)  # held verified, listed now as another object
    withdrawn: list[Cell] = dataclasses.field(default_factory=list)    # held verified, gone upstream


def plan_gaps(expected: list[Cell], upstream: dict[str, dict[dt.date, Listed]], held: dict[tuple[str, dt.date], Held]) -> GapPlan:
    """The expected cells by what the listing says of them against what the store holds: a
    cell held verified whose object changed (size or ETag) is republished and repaired again;
    one whose object is gone is withdrawn (an open gap)."""
    plan = GapPlan([], [], [])
    for c in expected:
        listed, was = upstream.get(c.symbol, {}).get(c.date), held.get((c.symbol, c.date))
        if listed is not None:
            plan.present.append(c)
            if was is None:
                plan.candidates.append(c)
            elif not was.matches(listed):
                plan.candidates.append(c)
                plan.republished.append(c)
        else:
            plan.missing.append(c)
            if was is not None:
                plan.withdrawn.append(c)
    return plan
