"""Cron parsing and next-run math, with the CronJob controller's (robfig/cron v3) semantics."""

import datetime as dt
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_contract.cron import CronError, load_timezone, next_after, next_runs, offset_changes, parse

U = dt.timezone.utc


def utc(*a):
    return dt.datetime(*a, tzinfo=U)


def iso(ts):
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in ts]


@pytest.mark.parametrize("expr,tz,after,expected", [
    ("0 2 * * *", "UTC", utc(2026, 11, 23, 7), ["2026-11-24T02:00:00Z", "2026-11-25T02:00:00Z"]),
    ("@hourly", "UTC", utc(2026, 11, 23, 7, 0), ["2026-11-23T08:00:00Z", "2026-11-23T09:00:00Z"]),
    ("*/20 * * * *", "UTC", utc(2026, 1, 1, 0, 20), ["2026-01-01T00:40:00Z", "2026-01-01T01:00:00Z"]),
    # month ends and leap days
    ("0 0 31 * *", "UTC", utc(2026, 1, 31, 1), ["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z"]),
    ("0 0 29 2 *", "UTC", utc(2026, 1, 1), ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
    ("0 12 * * SAT,SUN", "UTC", utc(2026, 11, 23), ["2026-11-28T12:00:00Z", "2026-11-29T12:00:00Z"]),
    # day-of-month OR day-of-week when neither is *
    ("0 0 1 * MON", "UTC", utc(2026, 6, 1, 0, 0), ["2026-06-08T00:00:00Z", "2026-06-15T00:00:00Z"]),
    # Europe/London: 02:00 local is 02:00Z in winter and 01:00Z in summer
    ("0 2 * * *", "Europe/London", utc(2026, 3, 27, 12), ["2026-03-28T02:00:00Z", "2026-03-29T01:00:00Z"]),
    # spring forward: 01:30 does not exist on 2026-03-29 in London, so that day does not fire
    ("30 1 * * *", "Europe/London", utc(2026, 3, 28, 12), ["2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]),
    # fall back: 01:30 happens twice on 2026-10-25 and fires for both (as robfig walks absolute time)
    ("30 1 * * *", "Europe/London", utc(2026, 10, 24, 12), ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"]),
    ("0 9 * * *", "America/New_York", utc(2026, 11, 1, 0), ["2026-11-01T14:00:00Z", "2026-11-02T14:00:00Z"]),
])
def test_next_runs(expr, tz, after, expected):
    assert iso(next_runs(expr, tz, after, len(expected))) == expected


@pytest.mark.parametrize("expr,fragment", [
    ("", "empty schedule"),
    ("0 2 * *", "exactly 5 fields"),
    ("60 * * * *", "minute: 60 is above the maximum 59"),
    ("* 24 * * *", "hour: 24 is above the maximum 23"),
    ("* * 0 * *", "day of month: 0 is below the minimum 1"),
    ("* * * 13 *", "month: 13 is above"),
    ("* * * * 7", "day of week: 7 is above the maximum 6"),
    ("* * * FOO *", "month: 'FOO' is not a number or a name"),
    ("*/0 * * * *", "step of range should be a positive number"),
    ("5-1 * * * *", "start 5 is after end 1"),
    ("@fortnightly", "unknown descriptor"),
    ("TZ=UTC 0 2 * * *", "set spec.timezone instead"),
])
def test_parse_errors_say_what_is_wrong(expr, fragment):
    with pytest.raises(CronError, match=fragment.replace("(", r"\(").replace("*", r"\*")):
        parse(expr)


@pytest.mark.parametrize("name,fragment", [("Mars/Olympus", "unknown time zone"), ("", "must not be empty"),
                                           ("Local", "not Local"), ("LOCAL", "not Local"), ("../etc/passwd", "unknown time zone"),
                                           (" UTC", "unknown time zone"), ("America/Argentina/ComodRivadavia_x", "unknown time zone")])
def test_unknown_timezones_are_refused(name, fragment):
    with pytest.raises(CronError, match=fragment):
        load_timezone(name)


# -- properties ------------------------------------------------------------------------------
def field(lo, hi):
    single = st.integers(lo, hi).map(str)
    rng = st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(lambda t: f"{min(t)}-{max(t)}")
    step = st.tuples(st.sampled_from(["*", str(lo)]), st.integers(1, max(1, (hi - lo) // 2))).map(lambda t: f"{t[0]}/{t[1]}")
    part = st.one_of(st.just("*"), single, rng, step)
    return st.lists(part, min_size=1, max_size=3).map(",".join)


EXPRS = st.tuples(field(0, 59), field(0, 23), field(1, 31), field(1, 12), field(0, 6)).map(" ".join)
ZONES = st.sampled_from(["UTC", "Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
                         "America/Sao_Paulo", "Australia/Lord_Howe", "Pacific/Chatham"])
# instants near DST changes of several zones, and random ones
NEAR_DST = st.sampled_from([utc(2026, 3, 29, 0), utc(2026, 10, 25, 0), utc(2026, 3, 8, 6), utc(2026, 11, 1, 5),
                            utc(2026, 4, 4, 14), utc(2026, 10, 3, 15), utc(2026, 2, 28, 22), utc(2024, 2, 28, 22)])
INSTANTS = st.one_of(
    st.tuples(NEAR_DST, st.integers(-180, 180)).map(lambda t: t[0] + dt.timedelta(minutes=t[1], seconds=17)),
    st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2030, 12, 31), timezones=st.just(U)),
)


# -- an oracle independent of the product's parser and search ---------------------------------
BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]


def oracle_fields(expr: str) -> tuple[list[set[int]], bool]:
    """The expressions generated above (numbers, ranges, steps, lists), read afresh: the values
    of each field, and robfig's rule for the two day fields: both must match when either starts
    with ``*`` without a step above 1, else either may."""
    values, star_day = [], False
    for i, (text, (lo, hi)) in enumerate(zip(expr.split(), BOUNDS)):
        field_values = set()
        for part in text.split(","):
            rng, slash, step = part.partition("/")
            step = int(step) if slash else 1
            if rng == "*":
                first, last = lo, hi
                star_day = star_day or (i in (2, 4) and step == 1)
            elif "-" in rng:
                first, last = map(int, rng.split("-"))
            else:
                first = int(rng)
                last = hi if slash else first
            field_values |= set(range(first, last + 1, step))
        values.append(field_values)
    return values, star_day


def oracle_matches(fields, local: dt.datetime) -> bool:
    (minutes, hours, doms, months, dows), star_day = fields
    dom, dow = local.day in doms, (local.isoweekday() % 7) in dows
    days = (dom and dow) if star_day else (dom or dow)
    return local.minute in minutes and local.hour in hours and local.month in months and days


def oracle_next(fields, after: dt.datetime, tz) -> dt.datetime | None:
    """The first absolute minute after ``after`` whose wall-clock time in ``tz`` matches: day by
    local day to the end of the fifth year after (robfig's limit), minute by minute within a day
    whose date can match."""
    (_, _, doms, months, dows), star_day = fields
    day = after.astimezone(tz).date() - dt.timedelta(days=1)
    while day.year <= after.year + 5:
        dom, dow = day.day in doms, (day.isoweekday() % 7) in dows
        if day.month in months and ((dom and dow) if star_day else (dom or dow)):
            start = dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(U) - dt.timedelta(hours=2)
            for m in range(28 * 60):
                t = start + dt.timedelta(minutes=m)
                if t > after and oracle_matches(fields, t.astimezone(tz)):
                    return t
        day += dt.timedelta(days=1)
    return None


# Zones whose DST shift is a whole hour. Lord Howe shifts by 30 minutes; there robfig's
# hour stepping lands on :30 and skips minutes (see the explicit test below).
WHOLE_HOUR_SHIFT_ZONES = st.sampled_from(["UTC", "Europe/London", "America/New_York", "Australia/Sydney",
                                          "Asia/Kolkata", "America/Sao_Paulo", "Pacific/Chatham"])


@settings(max_examples=300, deadline=None)
@given(EXPRS, WHOLE_HOUR_SHIFT_ZONES, INSTANTS)
def test_next_after_is_the_first_matching_absolute_minute(expr, zone, after):
    tz = ZoneInfo(zone)
    got = next_after(parse(expr), after, tz)
    expected = oracle_next(oracle_fields(expr), after, tz)
    if expected is None:  # never within robfig's five years: the controller never fires it either
        assert got is None or got.year > after.year + 5, (got, after)
    else:
        assert got == expected


@settings(max_examples=200, deadline=None)
@given(EXPRS, ZONES, INSTANTS)
def test_next_runs_increase_and_each_matches_the_local_wall_clock(expr, zone, after):
    runs = next_runs(expr, zone, after, 5)
    assert all(a < b for a, b in zip([after] + runs, runs))
    fields, tz = oracle_fields(expr), ZoneInfo(zone)
    for r in runs:
        assert r.second == 0 and oracle_matches(fields, r.astimezone(tz))


def walk_after(s, after: dt.datetime, tz) -> dt.datetime | None:
    """robfig's walk as it was ported first, one hour and one minute at a time: what
    ``next_after``, which jumps where the zone's offset allows, must always equal."""
    from ingestion_contract.cron import _add_date, _date, _day_matches, _truncate
    t = after.astimezone(U).replace(microsecond=0) + dt.timedelta(seconds=1)
    added, year_limit = False, t.astimezone(tz).year + 5
    while True:
        lt = t.astimezone(tz)
        if lt.year > year_limit:
            return None
        wrapped = False
        while not (1 << lt.month) & s.month:
            if not added:
                added, t = True, _date(tz, lt.year, lt.month, 1)
            t = _add_date(tz, t, months=1)
            lt = t.astimezone(tz)
            if lt.month == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not _day_matches(s, lt):
            if not added:
                added, t = True, _date(tz, lt.year, lt.month, lt.day)
            t = _add_date(tz, t, days=1)
            lt = t.astimezone(tz)
            if lt.hour != 0:
                t += dt.timedelta(hours=(24 - lt.hour) if lt.hour > 12 else -lt.hour)
                lt = t.astimezone(tz)
            if lt.day == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not (1 << lt.hour) & s.hour:
            if not added:
                added, t = True, _date(tz, lt.year, lt.month, lt.day, lt.hour)
            t += dt.timedelta(hours=1)
            lt = t.astimezone(tz)
            if lt.hour == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while not (1 << lt.minute) & s.minute:
            if not added:
                added, t = True, _truncate(t, 60)
            t += dt.timedelta(minutes=1)
            lt = t.astimezone(tz)
            if lt.minute == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while t.second != 0:
            if not added:
                added, t = True, _truncate(t, 1)
            t += dt.timedelta(seconds=1)
            if t.astimezone(tz).second == 0:
                wrapped = True
                break
        if wrapped:
            continue
        return t


# Every zone with a DST change, or a change of offset of its own, in the years the tests walk.
EVERY_ZONE = st.sampled_from(sorted(z for z in available_timezones()
                                    if not z.startswith(("Etc/", "SystemV/"))))


@settings(max_examples=500, deadline=None)  # 1,500 at a time, five times, when the jumps were written
@given(EXPRS, st.one_of(ZONES, EVERY_ZONE), INSTANTS)
def test_the_jumps_land_where_robfigs_walk_does_in_every_zone(expr, zone, after):
    tz = ZoneInfo(zone)
    assert next_after(parse(expr), after, tz) == walk_after(parse(expr), after, tz)


def test_no_zone_changes_its_offset_twice_within_a_day():
    """What next_after's jumps rest on: a change of offset inside a jump (at most a day) shows
    as a different offset at its end. tzdata's transitions from a year ago to six years ahead
    (those in each zone's file; the yearly rule after them changes twice a year, months apart)."""
    from zoneinfo import _zoneinfo

    now = dt.datetime.now(U).timestamp()
    lo, hi, close = now - 366 * 86400, now + 6 * 366 * 86400, []
    for name in sorted(available_timezones()):
        changes = [t for t in _zoneinfo.ZoneInfo.no_cache(name)._trans_utc if lo <= t <= hi]
        close += [(name, b - a) for a, b in zip(changes, changes[1:]) if b - a <= 86400]
    assert close == []


def test_half_hour_dst_shift_follows_robfig_not_the_wall_clock():
    # Lord Howe falls back 30 minutes on 2026-04-05 (02:00 +11 -> 01:30 +10:30). robfig
    # steps hours in absolute time from 01:00, reaching hour 0 next day at 00:30, so the
    # CronJob controller's first run is 00:30 local, not 00:00. We report what it will do.
    got = next_after(parse("* 0 * * *"), utc(2026, 4, 4, 14, 0, 17), ZoneInfo("Australia/Lord_Howe"))
    assert got == utc(2026, 4, 5, 14, 0)
    assert got.astimezone(ZoneInfo("Australia/Lord_Howe")).strftime("%H:%M") == "00:30"


@settings(max_examples=200, deadline=None)
@given(EXPRS, ZONES, INSTANTS, st.integers(0, 999_999), st.sampled_from([dt.timezone.utc, ZoneInfo("Asia/Kolkata")]))
def test_remembered_next_runs_equal_the_walk_from_any_instant_of_the_second(expr, zone, after, micro, view):
    """next_runs remembers its answer per second; any instant within that second, in any
    zone's view, gets exactly the chain of next_after from that instant itself."""
    instant = after.replace(microsecond=micro).astimezone(view)
    walked, t = [], instant
    for _ in range(3):
        t = next_after(parse(expr), t, ZoneInfo(zone))
        if t is None:
            break
        walked.append(t)
    assert next_runs(expr, zone, instant, 3) == walked
    assert next_runs(expr, zone, instant, 3) == walked  # the second answer comes from memory


def test_offset_changes_name_the_fire_times_a_dst_change_skips_or_repeats():
    (skip, repeat) = offset_changes("30 1 * * *", "Europe/London", utc(2026, 1, 1), 366)
    assert (skip.kind, skip.at, skip.wall) == ("skipped", utc(2026, 3, 29, 1), (dt.datetime(2026, 3, 29, 1, 30),))
    assert (repeat.kind, repeat.at, repeat.wall) == ("repeated", utc(2026, 10, 25, 1), (dt.datetime(2026, 10, 25, 1, 30),))
    assert repeat.fires == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30))
    assert offset_changes("0 12 * * *", "Europe/London", utc(2026, 1, 1)) == []  # noon: neither
    assert offset_changes("30 1 * * *", "UTC", utc(2026, 1, 1)) == []  # no change at all
    assert [c.kind for c in offset_changes("30 1 * * *", "Europe/London", utc(2026, 3, 29, 1))] == ["repeated", "skipped"]


@settings(max_examples=100, deadline=None)
@given(EXPRS, WHOLE_HOUR_SHIFT_ZONES, INSTANTS)
def test_a_skipped_wall_time_never_fires_and_a_repeated_one_fires_twice(expr, zone, after):
    """Against the controller's walk: within the changes of the next 60 days, a skipped wall
    time is no fire's local time, and each repeated one is the local time of two fires."""
    tz = ZoneInfo(zone)
    for change in offset_changes(expr, zone, after, 60):
        around = next_runs(expr, zone, change.at - dt.timedelta(hours=3), 400)
        if any(b <= a for a, b in zip(around, around[1:])):  # robfig's walk went back (the test below)
            assert zone == "Pacific/Chatham" and change.kind == "repeated", (expr, change)
            continue
        local = [t.astimezone(tz).replace(tzinfo=None) for t in around]
        for wall in change.wall:
            assert local.count(wall) == (0 if change.kind == "skipped" else 2), (change, wall)


def test_chathams_fall_back_sends_robfigs_walk_back_in_time():
    # Chatham falls back from +13:45 to +12:45 at 14:00 UTC on 2026-04-04 (03:45 -> 02:45 local).
    # From 14:00, robfig truncates 02:45 local to its hour, 02:00, which Go's time.Date puts at
    # +13:45 (12:15 UTC); an hour on, 03:00 local matches: 13:15 UTC, before the 14:00 it walked
    # from, and a chain of Next goes round that hour again. The real robfig does the same (the
    # cron oracle); next_runs says what the controller's Schedule.Next says, not a tidier story.
    assert next_runs("*/3 3 * * *", "Pacific/Chatham", utc(2026, 4, 4, 13, 56), 3) == \
        [utc(2026, 4, 4, 13, 57), utc(2026, 4, 4, 14, 0), utc(2026, 4, 4, 13, 15)]


def test_the_tzdata_version_is_the_one_zoneinfo_reads(tmp_path):
    """The system's zone files when TZPATH holds them (version from tzdata.zi), else the tzdata
    package: what the operator logs and exports as ingestion_operator_tzdata_info."""
    import zoneinfo

    import tzdata

    from ingestion_contract.cron import tzdata_version

    system = tmp_path / "zoneinfo"
    system.mkdir()
    (system / "UTC").write_bytes(b"TZif")
    (system / "tzdata.zi").write_text("# version 2025b\n# This zic input file is in the public domain.\n")
    try:
        zoneinfo.reset_tzpath(to=[str(system)])
        assert tzdata_version() == ("2025b", str(system))
        (system / "tzdata.zi").unlink()
        assert tzdata_version() == ("unknown", str(system))
        zoneinfo.reset_tzpath(to=[str(tmp_path / "none")])
        assert tzdata_version() == (tzdata.IANA_VERSION, "tzdata package")
    finally:
        zoneinfo.reset_tzpath()


def test_h_is_stable_within_its_range_and_refused_in_any_other_form():
    import pytest

    from ingestion_contract.cron import CronError, has_hash, parse, spread

    assert spread("H 2 * * *", "data/daily") == spread("H 2 * * *", "data/daily")  # the same every time
    assert spread("0 2 * * THU", "x/y") == "0 2 * * THU" and not has_hash("0 2 * * THU") and not has_hash("@daily")
    for key in (f"ns/s{i}" for i in range(200)):
        minute, hour, *_ = spread("H(0-29) H * * *", key).split()
        assert 0 <= int(minute) <= 29 and 0 <= int(hour) <= 23
        dom = int(spread("0 0 H * *", key).split()[2])
        assert 1 <= dom <= 28  # every month has it
        step = spread("H/15 * * * *", key).split()[0]
        start, _, rest = step.partition("-")
        assert rest == "59/15" and 0 <= int(start) < 15
        parse(spread("H H H H H", key))
    for bad in ("H(30-10) * * * *", "H(0-60) * * * *", "H(5) * * * *", "HH * * * *", "H/0 * * * *", "0 0 H(0-5) * *"):
        with pytest.raises(CronError):
            parse(spread(bad, "ns/x"))


def test_schedules_written_alike_are_spread_evenly():
    """1,000 schedules written H 2 * * * fire over the whole hour: every minute gets some, none
    more than about twice its share (17), so the controller's queue and the source see a
    trickle, not one burst."""
    import collections

    from ingestion_contract.cron import spread

    minutes = collections.Counter(int(spread("H 2 * * *", f"data/sched-{i}").split()[0]) for i in range(1000))
    assert set(minutes) == set(range(60)) and max(minutes.values()) <= 35, minutes.most_common(3)
