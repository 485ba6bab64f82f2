"""What one cell spans (``target.period``): a day, or a calendar month named by its first day.

Shared by the job (its windows and cells) and the operator (a backfill's cells per unit, the
preview's estimate), so both count months alike.
"""

from __future__ import annotations

import datetime as dt

DAILY, MONTHLY = "daily", "monthly"
ONE_DAY = dt.timedelta(days=1)


def month_end(d: dt.date) -> dt.date:
    """The last day of ``d``'s month."""
    return (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - ONE_DAY


def period_end(d: dt.date, period: str = DAILY) -> dt.date:
    """The last day of the cell that starts on ``d``."""
    return month_end(d) if period == MONTHLY else d


def next_period(d: dt.date, period: str = DAILY) -> dt.date:
    """The first day of the cell after the one holding ``d``."""
    return period_end(d, period) + ONE_DAY


def period_starts(first: dt.date, last: dt.date, period: str = DAILY) -> list[dt.date]:
    """The cells of the days ``first``..``last``, by their first day. A month is one of them
    when it is over by ``last`` and ends on or after ``first``: a window of days holds a month
    once the month is complete in it (the month before a run's last date, at the earliest)."""
    if period != MONTHLY:
        return [first + dt.timedelta(days=i) for i in range(max((last - first).days + 1, 0))]
    out, m = [], first.replace(day=1)
    while month_end(m) <= last:
        out.append(m)
        m = next_period(m, MONTHLY)
    return out


def most_cells(days: int, period: str = DAILY) -> int:
    """The most cells a window of ``days`` days holds: every day, or a month for every 28 days
    (month ends are at least 28 days apart)."""
    return days if period != MONTHLY else (max(days, 1) - 1) // 28 + 1


def cells_in(first: dt.date, last: dt.date, period: str = DAILY, boundary: dt.date | None = None) -> int:
    """The cells of one series in the days ``first``..``last``: its periods (period_starts); with
    a target.archive ``boundary``, the months that end before it and the days from it on."""
    if boundary is None:
        return len(period_starts(first, last, period))
    return (len(period_starts(first, min(last, boundary - ONE_DAY), MONTHLY))
            + len(period_starts(max(first, boundary), last, DAILY)))


def archive_boundary(last: dt.date, daily_days: int) -> dt.date:
    """The first day a schedule with ``target.archive`` expects as daily files, when its newest
    expected date is ``last``: the first of the month holding the oldest of the last
    ``daily_days`` days. Every day before it is in a whole month, expected as that month's
    archive; so no day is expected twice and none is left out."""
    return (last - dt.timedelta(days=daily_days - 1)).replace(day=1)
