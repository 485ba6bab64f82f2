"""Cron expressions with the semantics of the Kubernetes CronJob controller.

Kubernetes parses ``spec.schedule`` with robfig/cron v3's standard parser and walks time
with its ``SpecSchedule.Next`` in the CronJob's ``timeZone``. This module is a port of
both, so that ``nextRuns`` on our status is what the controller will really do:

* 5 fields (minute hour day-of-month month day-of-week) or a descriptor (``@yearly``,
  ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``);
  ``*``, ``?``, lists, ranges, steps, and month/day names; day-of-week 0-6 (Sunday = 0).
* day-of-month and day-of-week: if either is ``*``/``?`` both must match, else either.
* DST: a wall-clock time skipped by a spring-forward change does not fire that day; a
  wall-clock time repeated by a fall-back change fires for each occurrence (robfig walks
  hours and minutes in absolute time).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc
_STAR = 1 << 63

_MONTHS = {n: i for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_DAYS = {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())}
# (name, min, max, names)
_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronError(ValueError):
    """An expression the CronJob controller would reject; the message says why."""


# -- H: spread fire times (Jenkins' meaning), resolved before anything else sees the schedule --
# In a field, ``H`` is one value picked by a stable hash of the schedule's namespace and name,
# ``H(a-b)`` one within a..b, ``H/n`` and ``H(a-b)/n`` every n-th value from an offset so picked.
# The day of month's H stays within 1-28, so it fires every month. The hash is SHA-256 of
# "<namespace>/<name>#<field index>": fixed forever (never Python's salted hash()), so the value
# never moves between reconciles, restarts or operator versions, and evenly spread over names.
_H_RANGES = ((0, 59), (0, 23), (1, 28), (1, 12), (0, 6))
_H_TOKEN = re.compile(r"H(?:\((\d+)-(\d+)\))?(?:/(\d+))?")
H_FORMS = "H, H(a-b), H/n or H(a-b)/n"


def has_hash(expr: str) -> bool:
    """Whether ``expr`` uses ``H`` in any field (the day names THU and such are not H)."""
    return not expr.startswith("@") and any(part.startswith("H") for field in expr.split() for part in field.split(","))


@functools.lru_cache(maxsize=4096)
def spread(expr: str, key: str) -> str:
    """``expr`` with every ``H`` form replaced by its concrete value for ``key`` (the schedule's
    ``namespace/name``): what the CronJob carries and what fire times are computed from. An
    expression without H comes back unchanged. Raises CronError for an H form it cannot take."""
    if not has_hash(expr):
        return expr
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    out = []
    for i, field in enumerate(fields):
        name, lo, hi = _FIELDS[i][0], *_FIELDS[i][1:3]
        parts = []
        for part in field.split(","):
            if not part.startswith("H"):
                parts.append(part)
                continue
            m = _H_TOKEN.fullmatch(part)
            if not m:
                raise CronError(f"{name}: {part!r} is not a form of H; accepted: {H_FORMS}")
            first, last = (int(m.group(1)), int(m.group(2))) if m.group(1) else _H_RANGES[i]
            if first < lo or last > hi or first > last:
                raise CronError(f"{name}: {part!r}: the range must lie within {lo}-{hi}, its start not after its end")
            n = int.from_bytes(hashlib.sha256(f"{key}#{i}".encode()).digest()[:8], "big")
            if m.group(3):
                step = int(m.group(3))
                if step < 1:
                    raise CronError(f"{name}: {part!r}: the step must be at least 1")
                start = first + n % min(step, last - first + 1)
                parts.append(f"{start}-{last}/{step}" if step > 1 and start < last else str(start) if start == last
                             else f"{start}-{last}")
            else:
                parts.append(str(first + n % (last - first + 1)))
        out.append(",".join(parts))
    return " ".join(out)


@dataclasses.dataclass(frozen=True)
class Schedule:
    minute: int
    hour: int
    dom: int
    month: int
    dow: int


# Go's unicode.IsSpace, on which strings.Fields splits: not Python's str.split(), which also
# splits on the separators U+001C-U+001F.
_GO_BLANKS = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_GO_SPACE = re.compile(f"[{_GO_BLANKS}]+")
_INT64_MAX = 2**63 - 1


@functools.lru_cache(maxsize=1024)
def parse(expr: str) -> Schedule:
    """Parse a schedule exactly as the API server does (robfig/cron v3's ParseStandard, and no
    ``TZ`` anywhere), within the CRD's one narrower rule (no ``@every``); raises CronError
    with what is wrong and what is accepted. Remembered per expression (a Schedule is
    immutable, and a fleet's schedules share few expressions); an error is not."""
    if not expr:
        raise CronError("empty schedule; expected 5 fields (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly")
    if "TZ" in expr:
        raise CronError("TZ= and CRON_TZ= are not allowed in the schedule; set spec.timezone instead")
    if expr.startswith("@every"):
        raise CronError("@every is not supported: its fire times follow the controller's last run, not the clock; "
                        "use a cron expression such as '*/30 * * * *'")
    if expr.startswith("@"):
        if expr not in DESCRIPTORS:  # exact, as robfig matches them: no case folding, no spaces
            raise CronError(f"unknown descriptor {expr!r}; accepted: {', '.join(DESCRIPTORS)}")
        expr = DESCRIPTORS[expr]
    fields = [f for f in _GO_SPACE.split(expr) if f]
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    # The CRD's narrower rule (CEL: self.trim().split(' ') has 5 non-empty parts): spaces between fields
    if len([f for f in expr.strip(_GO_BLANKS).split(" ") if f]) != 5:
        raise CronError("separate the 5 fields with spaces (not tabs or other blanks)")
    bits = [_parse_field(f, *spec) for f, spec in zip(fields, _FIELDS)]
    return Schedule(*bits)


def _parse_field(field: str, name: str, lo: int, hi: int, names: dict) -> int:
    bits = 0
    for part in field.split(","):
        if part:  # Go's strings.FieldsFunc drops empty parts: "1,,2" is "1,2"
            bits |= _parse_range(part, name, lo, hi, names)
    return bits


def _parse_range(expr: str, name: str, lo: int, hi: int, names: dict) -> int:
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    single = len(low_and_high) == 1
    extra = 0
    if low_and_high[0] in ("*", "?"):
        start, end, extra = lo, hi, _STAR
    else:
        start = _value(low_and_high[0], name, names)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _value(low_and_high[1], name, names)
        else:
            raise CronError(f"{name}: too many hyphens in {expr!r}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _value(range_and_step[1], name, {})
        if single:  # "N/step" means "N-max/step"
            end = hi
        if step > 1:
            extra = 0
    else:
        raise CronError(f"{name}: too many slashes in {expr!r}")
    if start < lo:
        raise CronError(f"{name}: {start} is below the minimum {lo} in {expr!r}")
    if end > hi:
        raise CronError(f"{name}: {end} is above the maximum {hi} in {expr!r}")
    if start > end:
        raise CronError(f"{name}: start {start} is after end {end} in {expr!r}")
    if step == 0:
        raise CronError(f"{name}: step of range should be a positive number in {expr!r}")
    bits = 0
    for v in range(start, end + 1, step):
        bits |= 1 << v
    return bits | extra


def _value(token: str, name: str, names: dict) -> int:
    lowered = _go_lower(token)
    if lowered in names:
        return names[lowered]
    digits = token[1:] if token[:1] in ("+", "-") else token
    if not (digits and digits.isascii() and digits.isdigit()) or int(token) > _INT64_MAX:  # Go's strconv.Atoi
        accepted = f" or a name ({', '.join(n.upper() for n in names)})" if names else ""
        raise CronError(f"{name}: {token!r} is not a number{accepted}")
    if int(token) < 0:
        raise CronError(f"{name}: negative number {token!r} is not allowed")
    return int(token)


def _go_lower(text: str) -> str:
    """Go's strings.ToLower, rune by rune (simple case mapping): 'İ' becomes 'i', not 'i̇'."""
    return "".join(c.lower() if len(c.lower()) == 1 else ("i" if c == "İ" else c) for c in text)


_TZ_PART = re.compile(r"[A-Za-z.\-_0-9+]{1,14}")


def load_timezone(name: str) -> ZoneInfo:
    """An IANA zone exactly as the API server accepts a CronJob's ``timeZone`` (the rules of
    its validateTimeZone, then Go's time.LoadLocation); raises CronError otherwise."""
    bad = CronError(f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/London")
    if not name:
        raise CronError("the time zone must not be empty; use an IANA name such as UTC or Europe/London")
    for part in name.split("/"):
        if part in (".", "..") or part.startswith("-") or not _TZ_PART.fullmatch(part):
            raise bad
    if name.lower() == "local":
        raise CronError("the time zone must be an explicit IANA zone, not Local; use e.g. UTC or Europe/London")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise bad from None


def tzdata_version() -> tuple[str, str]:
    """(version, where) of the IANA time zone database this process computes with: zoneinfo
    reads the first of its TZPATH directories that holds zones (the system's tzdata; version
    from its ``tzdata.zi``), else the ``tzdata`` package. The CronJob controller computes with
    the control plane's (Go's system zones, else its embedded copy): when the two differ, a
    zone whose rules changed between them fires at another time than ``status.nextRuns`` says
    (docs/user-guide/schedules.md, "Time zones")."""
    import os
    import zoneinfo

    for directory in zoneinfo.TZPATH:
        if os.path.isfile(os.path.join(directory, "UTC")):
            try:
                with open(os.path.join(directory, "tzdata.zi"), encoding="utf-8") as f:
                    head = f.readline()
            except OSError:
                return "unknown", directory
            found = re.match(r"#\s*version\s+(\S+)", head)
            return (found.group(1) if found else "unknown"), directory
    try:
        import tzdata
    except ImportError:
        return "none", "-"
    return tzdata.IANA_VERSION, "tzdata package"


# -- Next, ported from robfig/cron v3 spec.go ----------------------------------------------
# Instants are UTC datetimes; "local" views are taken in the schedule's zone. Go's
# t.Add is absolute time, t.AddDate and time.Date are wall-clock arithmetic.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _offset(tz: ZoneInfo, instant: dt.datetime) -> dt.timedelta:
    return instant.astimezone(tz).utcoffset() or dt.timedelta(0)


def _date(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, sec: int = 0) -> dt.datetime:
    """Go's time.Date: normalises overflow and picks the zone offset the way Go does."""
    y, mo = y + (mo - 1) // 12, 1 + (mo - 1) % 12
    naive = dt.datetime(y, mo, 1, tzinfo=UTC) + dt.timedelta(days=d - 1, hours=h, minutes=mi, seconds=sec)
    offset = _offset(tz, naive)  # lookup(unix) as if the wall clock were UTC
    if offset:
        utc = naive - offset
        if _offset(tz, utc) != offset:  # utc lies outside that zone period: look it up again
            offset = _offset(tz, utc)
    return naive - offset


def _add_date(tz: ZoneInfo, t: dt.datetime, months: int = 0, days: int = 0) -> dt.datetime:
    lt = t.astimezone(tz)
    return _date(tz, lt.year, lt.month + months, lt.day + days, lt.hour, lt.minute, lt.second)


def _truncate(t: dt.datetime, seconds: int) -> dt.datetime:
    n = int((t - _EPOCH).total_seconds())
    return _EPOCH + dt.timedelta(seconds=n - n % seconds)


def _weekday(lt: dt.datetime) -> int:
    return (lt.weekday() + 1) % 7  # Go: Sunday = 0


def _day_matches(s: Schedule, lt: dt.datetime) -> bool:
    dom_match = (1 << lt.day) & s.dom > 0
    dow_match = (1 << _weekday(lt)) & s.dow > 0
    if s.dom & _STAR or s.dow & _STAR:
        return dom_match and dow_match
    return dom_match or dow_match


def _step(t: dt.datetime, tz: ZoneInfo, unit: str, bits: int, wrap: int, one: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    """robfig's walk of one field: add ``one`` (an hour or a minute, absolute time) until the
    local ``unit`` is in ``bits`` or wraps to 0; returns the instant and its local view.

    Taken in one jump where the zone's offset is the same at both ends: the walk then meets
    the local values one by one, so the jump lands where it would. A change of offset inside
    the span would show at its end, as no zone changes its offset twice within a day
    (``tests/contract/test_cron.py`` checks tzdata for it); then the walk goes step by step,
    as robfig does (a 30-minute DST shift lands it on :30)."""
    lt = t.astimezone(tz)
    now = getattr(lt, unit)
    above = (bits & ((1 << wrap) - 1)) >> (now + 1)
    target = now + 1 + (above & -above).bit_length() - 1 if above else wrap
    jumped = t + one * (target - now)
    jlt = jumped.astimezone(tz)
    if jlt.utcoffset() == lt.utcoffset():
        return jumped, jlt
    while True:
        t += one
        lt = t.astimezone(tz)
        if (1 << getattr(lt, unit)) & bits or getattr(lt, unit) == 0:
            return t, lt


def next_after(s: Schedule, after: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    """The first activation strictly after ``after`` (aware), as a UTC datetime, or None
    when none falls within five years (robfig's limit). Seconds are fixed at 0."""
    t = after.astimezone(UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    added = False
    year_limit = t.astimezone(tz).year + 5
    while True:  # WRAP
        lt = t.astimezone(tz)
        if lt.year > year_limit:
            return None
        wrapped = False
        while not (1 << lt.month) & s.month:
            if not added:
                added = True
                t = _date(tz, lt.year, lt.month, 1)
            t = _add_date(tz, t, months=1)
            lt = t.astimezone(tz)
            if lt.month == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not _day_matches(s, lt):
            if not added:
                added = True
                t = _date(tz, lt.year, lt.month, lt.day)
            t = _add_date(tz, t, days=1)
            lt = t.astimezone(tz)
            if lt.hour != 0:  # midnight did not exist (DST): back to the day's start
                t += dt.timedelta(hours=(24 - lt.hour) if lt.hour > 12 else -lt.hour)
                lt = t.astimezone(tz)
            if lt.day == 1:
                wrapped = True
                break
        if wrapped:
            continue
        if not (1 << lt.hour) & s.hour:
            if not added:
                added = True
                t = _date(tz, lt.year, lt.month, lt.day, lt.hour)
            t, lt = _step(t, tz, "hour", s.hour, 24, dt.timedelta(hours=1))
            if lt.hour == 0:
                continue
        if not (1 << lt.minute) & s.minute:
            if not added:
                added = True
                t = _truncate(t, 60)
            t, lt = _step(t, tz, "minute", s.minute, 60, dt.timedelta(minutes=1))
            if lt.minute == 0:
                continue
        while t.second != 0:  # the standard parser fixes seconds at 0
            if not added:
                added = True
                t = _truncate(t, 1)
            # the walk's seconds, in one jump to the next whole minute when the zone's offset
            # is whole minutes and the same there (local and UTC seconds then reach 0 together)
            offset, jumped = t.astimezone(tz).utcoffset(), t + dt.timedelta(seconds=60 - t.second)
            if offset.seconds % 60 == 0 and jumped.astimezone(tz).utcoffset() == offset:
                t, wrapped = jumped, True
                break
            t += dt.timedelta(seconds=1)
            if t.astimezone(tz).second == 0:
                wrapped = True
                break
        if wrapped:
            continue
        return t


def next_runs(expr: str, timezone: str, after: dt.datetime, count: int = 5) -> list[dt.datetime]:
    """The next ``count`` fire times strictly after ``after``, as UTC datetimes.

    Remembered per expression, zone and second: :func:`next_after` drops the microseconds,
    so the answer for any instant within a second is the answer for its start (exact, not
    an approximation). A fleet's schedules share few expressions, and a burst of
    reconciles (a restart, a tick) falls within few seconds."""
    return list(_next_runs(expr, timezone, after.astimezone(UTC).replace(microsecond=0), count))


@functools.lru_cache(maxsize=4096)
def _next_runs(expr: str, timezone: str, after: dt.datetime, count: int) -> tuple[dt.datetime, ...]:
    s = parse(expr)
    tz = load_timezone(timezone)
    out: list[dt.datetime] = []
    t = after
    while len(out) < count:
        nxt = next_after(s, t, tz)
        if nxt is None:
            break
        out.append(nxt)
        t = nxt
    return tuple(out)


# -- DST: the fire times a change of the zone's offset skips or repeats ----------------------
@dataclasses.dataclass(frozen=True)
class OffsetChange:
    """A change of a zone's UTC offset (DST, or a change of its rules) that a schedule meets:
    ``skipped`` wall-clock times that do not exist (the clock jumps forward over them) or
    ``repeated`` ones that happen twice (the clock falls back over them)."""

    kind: str  # "skipped" or "repeated"
    at: dt.datetime  # the instant of the change, UTC
    wall: tuple[dt.datetime, ...]  # the schedule's wall-clock times it affects, naive, in order
    fires: tuple[dt.datetime, ...] = ()  # repeated: the instants (UTC) the controller fires them at


def offset_changes(expr: str, timezone: str, after: dt.datetime, days: int = 366) -> list[OffsetChange]:
    """Where the changes of ``timezone``'s offset within ``days`` after ``after`` meet the
    (concrete) expression ``expr``. A skipped wall-clock time does not fire that day; a repeated
    one fires at each instant the controller's walk (:func:`next_after`) reaches, usually two."""
    s, tz = parse(expr), load_timezone(timezone)
    after = after.astimezone(UTC)
    out = []
    for at, before, now in _offset_changes(timezone, after.date()):
        if not after < at <= after + dt.timedelta(days=days):
            continue
        lo, hi = sorted((at + before, at + now))  # the wall-clock interval skipped or repeated
        wall = []
        t = lo.replace(tzinfo=None)
        while t < hi.replace(tzinfo=None):
            if _wall_matches(s, t):
                wall.append(t)
            t += dt.timedelta(minutes=1)
        if not wall:
            continue
        if now > before:
            out.append(OffsetChange("skipped", at, tuple(wall)))
            continue
        fires, t, end = [], at - (before - now) - dt.timedelta(seconds=1), at + (before - now)
        while len(fires) < 4 * len(wall) and (t := next_after(s, t, tz)) is not None and t < end:
            fires.append(t)
        twice = [w for w in wall if sum(1 for f in fires if (f + (before if f < at else now)).replace(tzinfo=None) == w) > 1]
        if twice:
            out.append(OffsetChange("repeated", at, tuple(twice), tuple(fires)))
    return out


def _wall_matches(s: Schedule, t: dt.datetime) -> bool:
    return bool((1 << t.minute) & s.minute and (1 << t.hour) & s.hour and (1 << t.month) & s.month and _day_matches(s, t))


@functools.lru_cache(maxsize=512)
def _offset_changes(timezone: str, day: dt.date) -> tuple[tuple[dt.datetime, dt.timedelta, dt.timedelta], ...]:
    """Every change of the zone's offset from ``day`` (UTC midnight) for 368 days, as (instant,
    offset before, offset after): found hour by hour, then to the second by bisection."""
    tz = load_timezone(timezone)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=UTC)
    out = []
    prev = _offset(tz, start)
    for h in range(1, 368 * 24 + 1):
        t = start + dt.timedelta(hours=h)
        off = _offset(tz, t)
        if off != prev:
            lo, hi = t - dt.timedelta(hours=1), t  # offset(lo) == prev, offset(hi) == off
            while hi - lo > dt.timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if _offset(tz, mid) == prev else (lo, mid)
            out.append((hi, prev, off))
            prev = off
    return tuple(out)
