"""Pure planning: which (symbol, date) cells a run expects, their keys, and the gaps.

Nothing here touches the network or the store, so window math across DST changes and
month ends, and the diff of expected against present, have fast tests of their own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import typing
from zoneinfo import ZoneInfo

# target.period: a cell is a day, or a calendar month (named by its first day)
from ingestion_contract.periods import DAILY, MONTHLY, ONE_DAY, next_period, period_end, period_starts
from ingestion_contract.spec import variant_values

DATE_FMT = "%Y-%m-%d"
MONTH_FMT = "%Y-%m"


@dataclasses.dataclass(frozen=True)
class Window:
    first: dt.date
    last: dt.date

    def dates(self) -> list[dt.date]:
        n = (self.last - self.first).days + 1
        return [self.first + dt.timedelta(days=i) for i in range(max(n, 0))]

    def periods(self, period: str = DAILY) -> list[dt.date]:
        """Its cells' first days: every date, or each month it holds whole (see period_starts)."""
        return period_starts(self.first, self.last, period)


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
    period: str = DAILY

    def due(self, date: dt.date, period: str | None = None) -> dt.datetime:
        end = dt.datetime.combine(period_end(date, period or self.period) + ONE_DAY, dt.time(),
                                  tzinfo=ZoneInfo(self.timezone))
        return end + dt.timedelta(hours=self.delay_hours)

    def absent_cause(self, date: dt.date, now: dt.datetime, period: str | None = None) -> str:
        """The cause of a gap whose object is not listed (and never was verified); ``period``:
        the cell's, when it is not the schedule's (a monthly archive of target.archive)."""
        return "not-due" if now < self.due(date, period) else "late-upstream"


# A series is a symbol and one value of each dimension of target.dimensions: the string
# "SYMBOL" (no dimensions) or "SYMBOL@name=value[,name=value...]" (names in order). Symbols and
# values hold none of '@', '=' and ',' (SYMBOL_PATTERN), so the string splits back exactly. The
# run plans, lists and repairs series as it did symbols; the store keeps the two parts in its
# columns symbol and variant.
#
# A series of monthly cells ends in "#monthly" (BTCUSDT@interval=1m#monthly), so a schedule
# that has both (target.archive) holds a day and its month's archive as two cells, and a cell's
# (series, date) says which it is. The store keeps the period in its own column.
SERIES_MARK = "@"
PERIOD_MARK = "#"


def series_name(symbol: str, variant: str, period: str = DAILY) -> str:
    name = f"{symbol}{SERIES_MARK}{variant}" if variant else symbol
    return name if period == DAILY else f"{name}{PERIOD_MARK}{period}"


def split_series(series: str) -> tuple[str, str]:
    """(symbol, variant) of a series ('' for a series of no dimension)."""
    symbol, _, variant = series.partition(PERIOD_MARK)[0].partition(SERIES_MARK)
    return symbol, variant


def series_period(series: str) -> str:
    """The period of a series' cells: daily, or the one its name is marked with."""
    return series.partition(PERIOD_MARK)[2] or DAILY


def with_period(series: str, period: str) -> str:
    """The series of the same symbol and variant whose cells span ``period``."""
    return series_name(*split_series(series), period)


def series_of(symbols: list, variants: list[str], period: str = DAILY, archive_until: dt.date | None = None) -> list:
    """Every series of ``symbols`` (each keeping its range: a Symbol's ``first`` and ``until``),
    one per variant, in symbol order; of monthly cells with ``period`` monthly. With
    ``archive_until`` (target.archive), each daily series has its monthly one beside it,
    expected up to that day."""
    from ingestion_contract.spec import Symbol

    if variants == [""] and period == DAILY and archive_until is None:
        return list(symbols)
    out = []
    for s in symbols:
        first, until = getattr(s, "first", None), getattr(s, "until", None)
        for v in variants:
            out.append(Symbol(series_name(str(s), v, period), first, until))
            if archive_until is not None:
                out.append(Symbol(series_name(str(s), v, MONTHLY), first, min(until or archive_until, archive_until)))
    return out


@dataclasses.dataclass(frozen=True)
class KeyTemplate:
    """A key template with ``{symbol}``, ``{date}`` and a placeholder per dimension, filled for
    one series (see :func:`series_name`)."""

    template: str

    def _fill(self, text: str, series: str) -> str:
        symbol, variant = split_series(series)
        text = text.replace("{symbol}", symbol)
        for name, value in variant_values(variant).items():
            text = text.replace("{" + name + "}", value)
        return text

    @property
    def period(self) -> str:
        """A template with {month} names monthly cells, one with {date} daily ones."""
        return MONTHLY if "{month}" in self.template else DAILY

    def of(self, series: str) -> "KeyTemplate":
        """The template of ``series``' keys (see :class:`Layout`)."""
        return self

    def period_of(self, series: str) -> str:
        return self.period

    def key(self, series: str, date: dt.date) -> str:
        return self._fill(self.template, series).replace("{date}", date.strftime(DATE_FMT)).replace(
            "{month}", date.strftime(MONTH_FMT))

    def list_prefix(self, series: str) -> str:
        """The longest fixed prefix of a series' keys: one listing covers all its dates."""
        return self._fill(self.template.split("{date}", 1)[0].split("{month}", 1)[0], series)

    def discovery_prefix(self) -> str:
        """The folder that holds one sub-folder per symbol (for discovery by listing)."""
        head = self.template.split("{symbol}", 1)[0]
        if not head.endswith("/") and head:
            raise ValueError(f"keyTemplate {self.template!r}: discovery needs {{symbol}} to start a folder")
        return head

    def parse(self, series: str, key: str) -> dt.date | None:
        """The date of a listed key of ``series``, or None if the key is not a cell."""
        pattern = re.escape(self._fill(self.template, series)).replace(re.escape("{date}"), r"(\d{4}-\d{2}-\d{2})").replace(
            re.escape("{month}"), r"(\d{4}-\d{2})")
        m = re.fullmatch(pattern, key)
        if not m:
            return None
        try:
            if self.period == MONTHLY:
                return dt.datetime.strptime(m.group(1), MONTH_FMT).date()
            return dt.datetime.strptime(m.group(1), DATE_FMT).date()
        except ValueError:
            return None


@dataclasses.dataclass(frozen=True)
class Layout:
    """A schedule's daily files and monthly archives (``target.archive``): a series' keys come
    from the template of its period (see :func:`series_period`). Used where a KeyTemplate is."""

    daily: KeyTemplate
    monthly: KeyTemplate

    @property
    def template(self) -> str:
        return self.daily.template

    @property
    def period(self) -> str:
        return DAILY

    def of(self, series: str) -> KeyTemplate:
        return self.monthly if series_period(series) == MONTHLY else self.daily

    def period_of(self, series: str) -> str:
        return series_period(series)

    def key(self, series: str, date: dt.date) -> str:
        return self.of(series).key(series, date)

    def list_prefix(self, series: str) -> str:
        return self.of(series).list_prefix(series)

    def discovery_prefix(self) -> str:
        return self.daily.discovery_prefix()

    def parse(self, series: str, key: str) -> dt.date | None:
        return self.of(series).parse(series, key)


def layout_of(target) -> KeyTemplate | Layout:
    """The key templates of a spec's target."""
    daily = KeyTemplate(target.key_template)
    return Layout(daily, KeyTemplate(target.archive.key_template)) if getattr(target, "archive", None) else daily


@dataclasses.dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str
    last_modified: dt.datetime


class Cell(typing.NamedTuple):
    """One (symbol, date); a tuple, so it is its own key in the dicts keyed by (symbol, date)
    (and a run makes one per expected cell: a tuple is made in a fraction of a dataclass's time)."""

    symbol: str
    date: dt.date


@dataclasses.dataclass(frozen=True)
class Rules:
    """How a run's expectations follow the listing (the spec's target, and the kind of run)."""

    history: bool = True       # a symbol the store has never seen is expected from its first date upstream
    catch_up: bool = True      # probe from the last date probed when that is before the window
    delist_after_days: int = 0  # 0: never delisted
    max_catch_up_days: int = 90  # cells (days, or months of a monthly schedule) per symbol and run
    period: str = DAILY  # a cell is a day, or a month (named by its first day); a marked series' own (series_period)
    archive: bool = False  # target.archive: a series ends with its symbol's objects in either period (see expect)


@dataclasses.dataclass
class Expected:
    """What a run expects: the cells it probes, the catch-up cells it leaves unprobed (open
    gaps with cause deferred), and the symbols delisted (with the first date not expected)."""

    cells: list[Cell] = dataclasses.field(default_factory=list)
    unprobed: list[Cell] = dataclasses.field(default_factory=list)
    delisted: dict[str, dt.date] = dataclasses.field(default_factory=dict)
    caught_up: int = 0  # cells probed before the window to catch up


UNPROBED = "not probed yet"  # the start of an unprobed catch-up cell's last_error (its gap: open, deferred)


def expect(symbols: list, window: Window, upstream: dict[str, dict[dt.date, "Listed"]], known: set[str],
           probed_through: dict[str, dt.date], backlog: dict[str, list[dt.date]], rules: Rules,
           kept_from: typing.Callable[[str], dt.date | None] = lambda series: None) -> Expected:
    """The expected set, symbol by symbol, from the window and what the listing says:

    * a symbol is expected from its first published date (a symbol the store has never seen:
      its whole history, with ``rules.history``), or from the ``from`` of its range;
    * one that has published nothing for ``rules.delist_after_days`` up to the window's last
      date is delisted: no date after its last object is expected; when it publishes again it
      is active again, and its missing days are expected again (through the catch-up);
    * up to the ``until`` of its range;
    * after an outage longer than the window, the dates from the day after the last date
      probed (``probed_through``) to the window, and the catch-up cells earlier runs left
      unprobed (``backlog``): at most ``rules.max_catch_up_days`` of them per symbol and run,
      oldest first; the rest are ``unprobed`` (open gaps, cause deferred);
    * never a cell past the series' retention: one whose last day is before ``kept_from(series)``."""
    out = Expected()
    one = dt.timedelta(days=1)
    for sym in sorted(set(symbols)):
        name = str(sym)
        p = series_period(name) if PERIOD_MARK in name else rules.period
        first_range, until = getattr(sym, "first", None), getattr(sym, "until", None)
        listed = upstream.get(name) or {}
        first_pub, last_end = (min(listed), period_end(max(listed), p)) if listed else (None, None)
        if rules.archive:  # target.archive: the symbol's last object in either period (is it delisted?) and
            # a daily series' first (the days before the boundary are its archives')
            other = MONTHLY if p == DAILY else DAILY
            sibling = upstream.get(with_period(name, other)) or {}
            if sibling:
                last_end = max(last_end or dt.date.min, period_end(max(sibling), other))
                if p == DAILY:
                    first_pub = min(first_pub or dt.date.max, min(sibling))
        start, end = window.first, window.last
        if rules.history and name not in known:
            start = min(start, first_range or first_pub or start)
        floor = first_range or first_pub  # nothing is expected before it
        kept = kept_from(name)  # nor past retention (a cell whose last day is before it)
        if kept and (floor is None or kept > floor):
            floor = kept
        if floor:
            start = max(start, floor)
        # judged at the window's last date; a target.archive series (a period other than the
        # schedule's) at the last day its archives are expected (its until)
        ref = min(window.last, until) if until and p != rules.period else window.last
        if rules.delist_after_days and last_end and (ref - last_end).days >= rules.delist_after_days \
                and not (until and until <= last_end):  # (last_end: the last day its newest object holds)
            out.delisted[name] = last_end + one
            end = min(end, last_end)
        if until:
            end = min(end, until)
        if rules.catch_up:
            behind = probed_through.get(name)
            late = set(backlog.get(name, ()))
            if behind is not None and next_period(behind, p) < start:
                late.update(period_starts(next_period(behind, p), start - one, p))
            late = sorted(d for d in late if period_end(d, p) < start and d <= end
                          and (floor is None or period_end(d, p) >= floor))
            now, later = late[:rules.max_catch_up_days], late[rules.max_catch_up_days:]
            out.cells += [Cell(name, d) for d in now]
            out.unprobed += [Cell(name, d) for d in later]
            out.caught_up += len(now)
        out.cells += [Cell(name, d) for d in period_starts(start, end, p)]
    return out


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
