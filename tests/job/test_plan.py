"""Pure planning: windows across DST and month ends, key templates, gap diffs."""

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_job.plan import Cell, Held, KeyTemplate, Listed, Rules, Window, expect, plan_gaps, plan_window

U = dt.timezone.utc
T = KeyTemplate("data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip")


@pytest.mark.parametrize("now,tz,lag,lookback,first,last", [
    (dt.datetime(2026, 11, 23, 2, 0, tzinfo=U), "UTC", 1, 30, dt.date(2026, 10, 23), dt.date(2026, 11, 22)),
    # 23:30 UTC on 31 March is already 1 April in Tokyo: dates are the schedule's zone's
    (dt.datetime(2026, 3, 31, 23, 30, tzinfo=U), "Asia/Tokyo", 1, 0, dt.date(2026, 3, 31), dt.date(2026, 3, 31)),
    (dt.datetime(2026, 3, 31, 23, 30, tzinfo=U), "UTC", 1, 0, dt.date(2026, 3, 30), dt.date(2026, 3, 30)),
    # across a leap day and a year end
    (dt.datetime(2028, 3, 1, 12, tzinfo=U), "UTC", 1, 2, dt.date(2028, 2, 27), dt.date(2028, 2, 29)),
    (dt.datetime(2027, 1, 1, 0, 30, tzinfo=U), "Europe/London", 1, 1, dt.date(2026, 12, 30), dt.date(2026, 12, 31)),
    # London spring-forward day: 00:30 UTC is 00:30 GMT, still 29 March
    (dt.datetime(2026, 3, 29, 0, 30, tzinfo=U), "Europe/London", 0, 0, dt.date(2026, 3, 29), dt.date(2026, 3, 29)),
    (dt.datetime(2026, 11, 23, 2, 0, tzinfo=U), "UTC", 0, 0, dt.date(2026, 11, 23), dt.date(2026, 11, 23)),
])
def test_plan_window(now, tz, lag, lookback, first, last):
    assert plan_window(now, tz, lag, lookback) == Window(first, last)


@settings(max_examples=300, deadline=None)
@given(now=st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 12, 31), timezones=st.just(U)),
       tz=st.sampled_from(["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Pacific/Kiritimati",
                           "Pacific/Pago_Pago", "America/Sao_Paulo"]),
       lag=st.integers(0, 5), lookback=st.integers(0, 400))
def test_window_has_lookback_plus_one_consecutive_days_ending_lag_days_before_local_today(now, tz, lag, lookback):
    from zoneinfo import ZoneInfo

    w = plan_window(now, tz, lag, lookback)
    dates = w.dates()
    assert len(dates) == lookback + 1 and len(set(dates)) == len(dates)
    assert all((b - a).days == 1 for a, b in zip(dates, dates[1:]))
    assert dates[-1] == now.astimezone(ZoneInfo(tz)).date() - dt.timedelta(days=lag)


def test_key_template_round_trip_and_prefixes():
    d = dt.date(2026, 11, 22)
    key = T.key("BTCUSDT", d)
    assert key == "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2026-11-22.zip"
    assert T.parse("BTCUSDT", key) == d
    assert T.parse("BTCUSDT", key + ".CHECKSUM") is None
    assert T.parse("BTCUSDT", key.replace("2026-11-22", "2026-02-30")) is None
    assert T.parse("BTC", key) is None
    assert T.list_prefix("BTCUSDT") == "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-"
    assert T.discovery_prefix() == "data/futures/um/daily/klines/"


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31)), st.from_regex(r"[A-Z0-9]{2,12}", fullmatch=True))
def test_parse_inverts_key(d, sym):
    assert T.parse(sym, T.key(sym, d)) == d


def test_new_symbols_backfill_their_upstream_history():
    w = Window(dt.date(2026, 11, 20), dt.date(2026, 11, 22))
    up = {s: {d: Listed("k", 1, "e", dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)) for d in (first, w.last)}
          for s, first in (("NEW", dt.date(2026, 11, 1)), ("OLD", dt.date(2020, 1, 1)))}
    cells = expect(["OLD", "NEW"], w, up, {"OLD"}, {}, {}, Rules()).cells
    assert len([c for c in cells if c.symbol == "OLD"]) == 3
    assert len([c for c in cells if c.symbol == "NEW"]) == 22


def test_plan_gaps_separates_missing_candidates_and_held():
    d1, d2, d3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)
    lst = Listed("k", 1, "e", dt.datetime(2026, 1, 1, tzinfo=U))
    plan = plan_gaps([Cell("A", d1), Cell("A", d2), Cell("A", d3)], {"A": {d1: lst, d2: lst}}, held={("A", d1): Held("e", 1)})
    assert plan.present == [Cell("A", d1), Cell("A", d2)]
    assert plan.candidates == [Cell("A", d2)]
    assert plan.missing == [Cell("A", d3)]
    assert plan.republished == plan.withdrawn == []


def test_a_held_cell_follows_its_object_republished_or_withdrawn():
    """Issue 24, point 1: a cell held verified whose listing shows another object (size or
    ETag) is repaired again and counted republished; one gone upstream is withdrawn. A cell
    verified before ETags were recorded is judged by its size alone."""
    d1, d2, d3, d4 = (dt.date(2026, 1, d) for d in (1, 2, 3, 4))
    at = dt.datetime(2026, 1, 1, tzinfo=U)
    upstream = {"A": {d1: Listed("k1", 10, "new", at), d2: Listed("k2", 11, "e2", at), d4: Listed("k4", 12, "e4", at)}}
    held = {("A", d1): Held("old", 10), ("A", d2): Held("e2", 11), ("A", d3): Held("e3", 9), ("A", d4): Held(None, 12)}
    plan = plan_gaps([Cell("A", d) for d in (d1, d2, d3, d4)], upstream, held)
    assert plan.candidates == plan.republished == [Cell("A", d1)]
    assert plan.withdrawn == plan.missing == [Cell("A", d3)]
    assert plan_gaps([Cell("A", d4)], {"A": {d4: Listed("k4", 13, "e4", at)}}, held).republished == [Cell("A", d4)]


# -- expectations follow the listing (issue 24, points 3 and 4) --------------------------------
from ingestion_contract.spec import Symbol  # noqa: E402

D0 = dt.date(2026, 11, 30)  # the window's last date in these tests
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
W = Window(D0 - dt.timedelta(days=3), D0)


def days(*ns):
    return [D0 - dt.timedelta(days=n) for n in ns]


def listing(sym, dates):
    return {sym: {d: Listed(f"k/{sym}/{d}", 1, "e", NOW) for d in dates}}


def test_a_symbol_is_expected_from_its_first_object_and_over_its_range():
    up = {**listing("NEW", days(1, 0)), **listing("ETH", days(*range(20)))}
    got = expect(["NEW", Symbol("ETH", *days(10, 2))], W, up, {"NEW", "ETH"}, {}, {}, Rules())
    assert [(c.symbol, c.date) for c in got.cells] == [("ETH", d) for d in days(3, 2)] + [("NEW", d) for d in days(1, 0)]
    # a symbol the store has never seen: its history, from its first object (or its range's from)
    got = expect([Symbol("ETH", *days(10, 2))], W, up, set(), {}, {}, Rules())
    assert [c.date for c in got.cells] == days(*range(10, 1, -1))
    # nothing published at all: expected over the window (late-upstream gaps, not silence)
    assert len(expect(["NONE"], W, {}, set(), {}, {}, Rules()).cells) == 4


def test_a_silent_symbol_is_delisted_and_active_again_once_it_publishes():
    up = listing("LUNA", days(*range(9, 20)))  # silent for 9 days up to D0
    rules = Rules(delist_after_days=7)
    got = expect(["LUNA"], W, up, {"LUNA"}, {"LUNA": D0 - dt.timedelta(days=2)}, {}, rules)
    assert got.cells == [] and got.delisted == {"LUNA": days(8)[0]}
    assert expect(["LUNA"], W, up, {"LUNA"}, {}, {}, Rules(delist_after_days=10)).delisted == {}  # not silent long enough
    assert expect(["LUNA"], W, up, {"LUNA"}, {}, {}, Rules(delist_after_days=0)).delisted == {}  # never
    # it publishes again: active; the dates it was delisted for come back through the backlog
    back = {"LUNA": {**up["LUNA"], D0: Listed("k", 1, "e", NOW)}}
    got = expect(["LUNA"], W, back, {"LUNA"}, {"LUNA": days(6)[0]}, {"LUNA": days(8, 7, 6)}, rules)
    assert got.delisted == {} and [c.date for c in got.cells] == days(*range(8, -1, -1))
    # a range that ends before the silence: not delisted, just over
    assert expect([Symbol("LUNA", None, days(12)[0])], W, up, {"LUNA"}, {}, {}, rules).delisted == {}


@settings(max_examples=200, deadline=None)
@given(behind=st.integers(5, 60), limit=st.integers(0, 30), backlog=st.sets(st.integers(4, 80), max_size=10))
def test_catch_up_probes_the_oldest_dates_first_and_leaves_the_rest_unprobed(behind, limit, backlog):
    up = listing("BTC", days(*range(100)))
    got = expect(["BTC"], W, up, {"BTC"}, {"BTC": days(behind)[0]}, {"BTC": days(*backlog)}, Rules(max_catch_up_days=limit))
    late = sorted(set(days(*range(4, behind))) | set(days(*backlog)))
    probed = [c.date for c in got.cells]
    assert probed == late[:limit] + W.dates() and [c.date for c in got.unprobed] == late[limit:]
    assert got.caught_up == min(limit, len(late))
    # no catch-up for an explicit range or a backfill unit
    assert expect(["BTC"], W, up, {"BTC"}, {"BTC": days(behind)[0]}, {}, Rules(catch_up=False)).cells == \
        [Cell("BTC", d) for d in W.dates()]


# -- monthly cells (target.period: monthly) ------------------------------------------------------
def test_a_window_holds_each_month_that_ends_within_it():
    from ingestion_contract.periods import MONTHLY, month_end, next_period, period_starts

    d = dt.date
    assert period_starts(d(2026, 9, 6), d(2026, 12, 5), MONTHLY) == [d(2026, 9, 1), d(2026, 10, 1), d(2026, 11, 1)]
    assert period_starts(d(2026, 11, 30), d(2026, 11, 30), MONTHLY) == [d(2026, 11, 1)]  # its last day is the window
    assert period_starts(d(2026, 12, 1), d(2026, 12, 30), MONTHLY) == []  # December is not over
    assert month_end(d(2028, 2, 10)) == d(2028, 2, 29) and month_end(d(2026, 12, 31)) == d(2026, 12, 31)
    assert next_period(d(2026, 12, 1), MONTHLY) == d(2027, 1, 1)


@settings(max_examples=200, deadline=None)
@given(first=st.dates(dt.date(2020, 1, 1), dt.date(2030, 1, 1)), days=st.integers(0, 400))
def test_the_months_of_a_window_are_whole_disjoint_and_none_is_left_out(first, days):
    """Every day of the window whose month ends in it is in exactly one of its months; each month
    ends within it; consecutive windows share no month."""
    from ingestion_contract.periods import MONTHLY, month_end, period_starts

    last = first + dt.timedelta(days=days)
    months = period_starts(first, last, MONTHLY)
    assert months == sorted(set(months)) and all(m.day == 1 and first <= month_end(m) <= last for m in months)
    held = {d for d in Window(first, last).dates() if month_end(d) <= last}
    covered = {m + dt.timedelta(days=i) for m in months for i in range((month_end(m) - m).days + 1)}
    assert held <= covered
    after = period_starts(last + dt.timedelta(days=1), last + dt.timedelta(days=400), MONTHLY)
    assert not set(months) & set(after)


def test_a_monthly_key_names_its_month_and_parses_back():
    t = KeyTemplate("d/monthly/{symbol}/{interval}/{symbol}-{interval}-{month}.zip")
    assert t.period == "monthly" and t.key("BTCUSDT@interval=1h", dt.date(2026, 10, 1)) == "d/monthly/BTCUSDT/1h/BTCUSDT-1h-2026-10.zip"
    assert t.list_prefix("BTCUSDT@interval=1h") == "d/monthly/BTCUSDT/1h/BTCUSDT-1h-"
    assert t.parse("BTCUSDT@interval=1h", "d/monthly/BTCUSDT/1h/BTCUSDT-1h-2026-10.zip") == dt.date(2026, 10, 1)
    assert t.parse("BTCUSDT@interval=1h", "d/monthly/BTCUSDT/1h/BTCUSDT-1h-2026-13.zip") is None
    assert t.parse("BTCUSDT@interval=1h", "d/monthly/BTCUSDT/1h/BTCUSDT-1h-2026-10-01.zip") is None


def test_monthly_expectations_delist_and_catch_up_in_months():
    """A series silent for delistAfterDays after its last month ends is delisted from the month
    after; after an outage, the months since the last one probed are caught up, oldest first."""
    from ingestion_job.plan import MONTHLY, Publication

    d = dt.date
    window = Window(d(2026, 9, 6), d(2026, 12, 5))  # September to November
    listed = {m: Listed(f"k{m}", 1, "e", NOW) for m in (d(2026, 5, 1), d(2026, 6, 1), d(2026, 7, 1))}
    rules = Rules(history=False, catch_up=True, delist_after_days=30, max_catch_up_days=1, period=MONTHLY)
    got = expect(["A"], window, {"A": listed}, {"A"}, {"A": d(2026, 5, 1)}, {}, rules)
    assert got.delisted == {"A": d(2026, 8, 1)}  # silent since July ended, for more than 30 days
    assert [c.date for c in got.cells] == [d(2026, 6, 1)] and [c.date for c in got.unprobed] == [d(2026, 7, 1)]
    both = {m: Listed("k", 1, "e", NOW) for m in (d(2026, 9, 1), d(2026, 11, 1))}  # October missing: a gap, not a delisting
    active = expect(["B"], window, {"B": both}, {"B"}, {"B": d(2026, 8, 1)}, {}, rules)
    assert not active.delisted and [c.date for c in active.cells] == [d(2026, 9, 1), d(2026, 10, 1), d(2026, 11, 1)]
    pub = Publication("UTC", 24, MONTHLY)
    assert pub.due(d(2026, 11, 1)) == dt.datetime(2026, 12, 2, tzinfo=dt.timezone.utc)
    assert pub.absent_cause(d(2026, 11, 1), dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc)) == "not-due"


# -- target.archive: daily files after a boundary, monthly archives before it ---------------------
def test_the_archive_boundary_leaves_no_day_out_and_none_twice():
    from ingestion_contract.periods import archive_boundary, cells_in

    d = dt.date
    assert archive_boundary(d(2026, 12, 5), 5) == d(2026, 12, 1)
    assert archive_boundary(d(2026, 12, 5), 6) == d(2026, 11, 1)  # the oldest of the last 6 days is 30 November
    assert archive_boundary(d(2026, 3, 31), 90) == d(2026, 1, 1)
    # a backfill's unit: the months that end before the boundary, then the days from it
    assert cells_in(d(2026, 9, 1), d(2026, 11, 10), "daily", d(2026, 11, 1)) == 2 + 10
    assert cells_in(d(2026, 9, 15), d(2026, 10, 20), "daily", d(2026, 11, 1)) == 1  # September ends in it


@settings(max_examples=200, deadline=None)
@given(first=st.dates(dt.date(2024, 1, 1), dt.date(2027, 1, 1)), days=st.integers(0, 200), back=st.integers(1, 120),
       ahead=st.integers(0, 60))
def test_a_series_and_its_archives_expect_each_day_once_as_the_operator_counts_them(first, days, back, ahead):
    """A window's cells (a backfill unit's: no history, no catch-up) of a daily series and its
    archive series are the months ending before the boundary and the days from it: every day of
    the window that is in a whole month before the boundary, or on or after it, is in exactly one
    cell, and the operator's count of a unit's cells (cells_in) is the job's."""
    from ingestion_contract.periods import DAILY, MONTHLY, archive_boundary, cells_in, month_end, period_end
    from ingestion_job.plan import series_name, series_of, series_period

    last = first + dt.timedelta(days=days)
    boundary = archive_boundary(last + dt.timedelta(days=ahead), back)
    series = series_of(["A"], ["interval=1m"], DAILY, boundary - dt.timedelta(days=1))
    assert [str(s) for s in series] == ["A@interval=1m", "A@interval=1m#monthly"]
    assert series_name("A", "interval=1m", MONTHLY) == "A@interval=1m#monthly" and series_period(str(series[1])) == MONTHLY
    got = expect(series, Window(first, last), {}, {"A@interval=1m", "A@interval=1m#monthly"}, {}, {},
                 Rules(history=False, catch_up=False, delist_after_days=7, archive=True),
                 lambda s: boundary if series_period(s) == DAILY else None)
    assert len(got.cells) == cells_in(first, last, DAILY, boundary)
    held: dict[dt.date, int] = {}
    for c in got.cells:
        p = series_period(c.symbol)
        for i in range((period_end(c.date, p) - c.date).days + 1):
            day = c.date + dt.timedelta(days=i)
            held[day] = held.get(day, 0) + 1
    assert all(n == 1 for n in held.values())
    assert set(held) >= {x for x in Window(first, last).dates() if x >= boundary or month_end(x) <= min(last, boundary)}


def test_a_symbol_is_active_while_either_its_daily_files_or_its_archives_come():
    """With target.archive, a daily series' history starts at the boundary when its symbol has
    older archives, and an archive series is not delisted while its daily files come."""
    from ingestion_contract.spec import Symbol

    d = dt.date
    boundary = d(2026, 11, 1)
    daily = {x: Listed(f"k{x}", 1, "e", NOW) for x in Window(d(2026, 11, 3), d(2026, 12, 5)).dates()}
    monthly = {m: Listed(f"k{m}", 1, "e", NOW) for m in (d(2026, 8, 1), d(2026, 9, 1))}  # October's is late
    series = [Symbol("A"), Symbol("A#monthly", None, boundary - dt.timedelta(days=1))]
    got = expect(series, Window(d(2026, 12, 1), d(2026, 12, 5)), {"A": daily, "A#monthly": monthly}, set(), {}, {},
                 Rules(history=True, catch_up=True, delist_after_days=7, archive=True),
                 lambda s: boundary if "#" not in s else None)
    assert not got.delisted
    assert [c.date for c in got.cells if c.symbol == "A"][:3] == [d(2026, 11, 1), d(2026, 11, 2), d(2026, 11, 3)]
    assert [c.date for c in got.cells if c.symbol == "A#monthly"] == [d(2026, 8, 1), d(2026, 9, 1), d(2026, 10, 1)]
    # once neither comes for delistAfterDays, both are delisted after the last day either held
    silent = expect(series, Window(d(2026, 12, 1), d(2026, 12, 20)), {"A": {}, "A#monthly": monthly}, {"A", "A#monthly"}, {},
                    {}, Rules(history=False, catch_up=False, delist_after_days=7, archive=True, period="daily"),
                    lambda s: boundary if "#" not in s else None)
    assert silent.delisted == {"A": d(2026, 10, 1), "A#monthly": d(2026, 10, 1)}
