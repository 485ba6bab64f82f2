"""Differential test: our cron parser and time-zone check against the Kubernetes oracle.

The oracle (``dev/cronoracle``) is robfig/cron v3 at the version Kubernetes pins, built from
the Go module proxy, with the API server's own checks (``cron.ParseStandard``, no ``TZ`` in
the schedule, ``validateTimeZone``) and the controller's ``Schedule.Next`` in the zone. For
every fuzzed schedule and zone: we accept exactly what the API server accepts within our
CRD's narrower rules, and our next fire times are the controller's.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion_contract.cron import CronError, load_timezone, next_runs, parse
from ingestion_dev import cronoracle

GO_TRIM = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def crd_allows(schedule: str) -> bool:
    """The CRD's rules on spec.schedule (minLength 1, maxLength 100, and its CEL rules), as written
    there; CEL's trim() is Go's strings.TrimSpace. Plus the one rule only our parser states:
    no @every (its fire times follow the controller's last run, not the clock)."""
    if not 1 <= len(schedule) <= 100:
        return False
    if schedule.startswith(("TZ=", "CRON_TZ=")):
        return False
    if not (schedule.startswith("@") or len([f for f in schedule.strip(GO_TRIM).split(" ") if f]) == 5):
        return False
    return not schedule.startswith("@every")


@pytest.fixture(scope="module")
def oracle():
    return cronoracle.build()


SEPARATORS = st.sampled_from([" ", " ", " ", "  ", "\t", "\x1c", "\x1f", "\xa0", "\u3000", "\x85", "\u2028", "\v"])
NAMES = ["jan", "FEB", "Mar", "dec", "sun", "MON", "fri", "FRİ", "sAt", "thu", "xyz"]
ATOM = st.one_of(
    st.integers(0, 70).map(str),
    st.sampled_from(["*", "?", "+5", "-1", "07", "00", "99999999999999999999", "9223372036854775807", "٣", "²", "", "L", "#"]),
    st.sampled_from(NAMES),
)
RANGE = st.one_of(
    ATOM,
    st.tuples(ATOM, ATOM).map("-".join),
    st.tuples(ATOM, st.sampled_from(["1", "2", "5", "15", "0", "+3", "x", "100"])).map("/".join),
    st.tuples(ATOM, ATOM, st.sampled_from(["2", "7"])).map(lambda t: f"{t[0]}-{t[1]}/{t[2]}"),
    st.sampled_from(["1-2-3", "*/2/3", "*-5", "5/"]),
)
FIELD = st.lists(RANGE, min_size=1, max_size=3).map(",".join) | st.sampled_from([",", "1,,2", "3,"])


@st.composite
def valid_field(draw, lo: int, hi: int) -> str:
    def one():
        a = draw(st.integers(lo, hi))
        b = draw(st.integers(a, hi))
        return draw(st.sampled_from(["*", "*", f"{a}", f"{a}-{b}", f"*/{draw(st.integers(1, hi - lo + 1))}",
                                     f"{a}-{b}/{draw(st.integers(1, 9))}", f"{a}/{draw(st.integers(1, 9))}"]))
    return ",".join(one() for _ in range(draw(st.integers(1, 2))))


@st.composite
def schedules(draw) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # descriptors, as typed by people
        d = draw(st.sampled_from(["@daily", "@hourly", "@weekly", "@monthly", "@yearly", "@annually", "@midnight",
                                  "@DAILY", "@Daily", "@every 1h", "@every 90s", "@fortnightly", "@"]))
        return draw(st.sampled_from(["", " ", "\t"])) + d + draw(st.sampled_from(["", " ", "\n"]))
    if kind == 1:
        return draw(st.sampled_from(["TZ=UTC 0 2 * * *", "CRON_TZ=Europe/London 0 2 * * *", "0 2 * * * TZ", "tz 0 2 * * *"]))
    if kind == 2:
        return draw(st.text(max_size=30))
    if kind in (3, 4, 5, 6):  # well-formed: what people write, so fire times get compared often
        return " ".join(draw(valid_field(lo, hi)) for lo, hi in ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6)))
    n = draw(st.sampled_from([5, 5, 5, 5, 4, 6]))
    fields = [draw(FIELD) for _ in range(n)]
    text = fields[0]
    for f in fields[1:]:
        text += draw(SEPARATORS) + f
    return draw(st.sampled_from(["", "", " ", "\t", "\xa0"])) + text + draw(st.sampled_from(["", "", " ", "\n", "\u3000"]))


ZONES = sorted(zoneinfo.available_timezones())
zones = st.one_of(
    st.sampled_from(ZONES),
    st.sampled_from(["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham"]),
    st.sampled_from(ZONES).map(str.lower),
    st.sampled_from(ZONES).map(str.upper),
    st.sampled_from(["", "Local", "local", "LOCAL", " UTC", "UTC ", "Europe/", "/UTC", "Europe//London", "../UTC", "-UTC",
                     "Etc/GMT+14", "Etc/GMT-15", "America/Argentina/ComodRivadavia", "zone.tab", "posixrules", "Factory",
                     "Europe/London_Extralongname"]),
    st.text(max_size=20),
)
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
QUERY = st.tuples(schedules(), zones, st.integers(0, 6 * 365 * 24 * 3600))


def ours(schedule: str, tz: str, after: int, count: int):
    try:
        parse(schedule)
        schedule_ok = True
    except CronError:
        schedule_ok = False
    try:
        load_timezone(tz)
        tz_ok = True
    except CronError:
        tz_ok = False
    fires = []
    if schedule_ok and tz_ok:
        fires = [int(t.timestamp()) for t in next_runs(schedule, tz, EPOCH + dt.timedelta(seconds=after), count)]
    return schedule_ok, tz_ok, fires


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(QUERY, min_size=40, max_size=40))
def test_we_accept_exactly_what_the_api_server_does_and_fire_when_the_controller_does(oracle, batch):
    queries = [{"schedule": s, "tz": z, "after": int((EPOCH + dt.timedelta(seconds=a)).timestamp()), "count": 5}
               for s, z, a in batch]
    for (s, z, a), answer in zip(batch, cronoracle.ask(oracle, queries)):
        schedule_ok, tz_ok, fires = ours(s, z, a, 5)
        expected = answer["schedule_ok"] and crd_allows(s)
        assert schedule_ok == expected, (s, answer["schedule_error"] or "the API server accepts it")
        assert tz_ok == answer["tz_ok"], (z, answer["tz_error"] or "the API server accepts it")
        if schedule_ok and tz_ok:
            assert fires == answer["next"], (s, z, a)


@pytest.mark.parametrize("schedule,accepted", [
    ("1,,2 * * * *", True), ("+5 * * * *", True), (", * * * *", True), (" 0 2 * * * ", True), ("0 2 * * FRİ", True),
    ("@DAILY", False), (" @daily", False), ("@daily ", False), ("0\x1c2 * * * *", False), ("0\t2 * * * *", False),
    ("*/99999999999999999999 * * * *", False), ("@every 1h", False), ("0 2 * * * TZ", False),
])
def test_edges_the_fuzz_once_found(oracle, schedule, accepted):
    """Each of these disagreed with the API server once; the oracle confirms the verdict."""
    answer, = cronoracle.ask(oracle, [{"schedule": schedule, "tz": "UTC", "after": 0, "count": 1}])
    assert (answer["schedule_ok"] and crd_allows(schedule)) is accepted
    assert ours(schedule, "UTC", 0, 1)[0] is accepted


@st.composite
def hashed(draw) -> str:
    """A schedule with H in some fields (H, H(a-b), H/n, H(a-b)/n) beside ordinary ones."""
    out = []
    for lo, hi in ((0, 59), (0, 23), (1, 28), (1, 12), (0, 6)):
        a = draw(st.integers(lo, hi))
        b = draw(st.integers(a, hi))
        out.append(draw(st.sampled_from(["H", f"H({a}-{b})", f"H/{draw(st.integers(1, 30))}", f"H({a}-{b})/{draw(st.integers(1, 9))}",
                                         "*", f"{a}", f"*/{draw(st.integers(1, 9))}", f"{a},H"])))
    return " ".join(out)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.tuples(hashed(), st.sampled_from(["data/daily", "a/b", "prod/binance-um-klines-daily"]),
                                st.sampled_from(["UTC", "Europe/London", "America/Havana"]), st.integers(0, 3 * 365 * 24 * 3600)),
                      min_size=30, max_size=30))
def test_a_schedule_with_h_becomes_a_concrete_expression_the_api_server_accepts_and_fires_alike(oracle, batch):
    """H is ours (the API server has no H): the CronJob carries the concrete expression, which
    the API server must accept, and whose fire times must be the ones status.nextRuns shows."""
    from ingestion_contract.cron import spread

    concrete = [spread(s, key) for s, key, _, _ in batch]
    queries = [{"schedule": c, "tz": z, "after": int((EPOCH + dt.timedelta(seconds=a)).timestamp()), "count": 5}
               for c, (_, _, z, a) in zip(concrete, batch)]
    for c, (s, key, z, a), answer in zip(concrete, batch, cronoracle.ask(oracle, queries)):
        assert "H" not in c and answer["schedule_ok"] and crd_allows(c), (s, key, c, answer["schedule_error"])
        assert ours(c, z, a, 5) == (True, True, answer["next"]), (s, c, z, a)
