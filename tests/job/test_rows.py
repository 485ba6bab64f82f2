"""build_rows: what one run writes, from what it planned, listed and repaired (pure)."""

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_job.plan import Cell, KeyTemplate, Listed, Publication
from ingestion_job.rows import Load, Repairs, Rows, Staged, Verified, build_rows, open_by_cause

NOW = dt.datetime(2026, 11, 23, 2, tzinfo=dt.timezone.utc)
D1, D2, D3, D4 = (dt.date(2026, 11, d) for d in (19, 20, 21, 22))
T = KeyTemplate("k/{symbol}/{date}.zip")
EXPECTED = [Cell("BTC", d) for d in (D1, D2, D3, D4)]
UPSTREAM = {"BTC": {d: Listed(T.key("BTC", d), 10, "e", NOW) for d in (D1, D2, D3)}}  # D4 not published


def repairs(repaired=(), failed=None, deferred=(), limit=2):
    return Repairs({(("BTC", d)): Verified("s", 10) for d in repaired},
                   failed or {}, {("BTC", d): f"maxRepairsPerRun={limit} reached" for d in deferred})


def by_date(rows):
    return {r["date"]: r for r in rows}


def test_every_expected_cell_gets_an_availability_row():
    rows = build_rows("s", T, EXPECTED, UPSTREAM, repairs(repaired=[D1]), {}, NOW)
    objects = by_date(rows.objects)
    assert [objects[d]["present"] for d in (D1, D2, D3, D4)] == [True, True, True, False]
    assert objects[D4]["key"] == "k/BTC/2026-11-22.zip" and objects[D4]["size"] is None


def test_every_open_gap_has_one_cause():
    """Issue 24, point 5: repaired, failed (fetch-failed unless the repair said otherwise),
    deferred (why in last_error), and absent: not-due within the publisher's delay after the
    date ends, late-upstream after it."""
    r = repairs(repaired=[D1], failed={("BTC", D2): "boom"}, deferred=[D3])
    rows = build_rows("s", T, EXPECTED, UPSTREAM, r, {}, NOW)
    gaps = by_date(rows.gaps)
    assert gaps[D1]["status"] == "repaired" and gaps[D1]["attempts"] == 1 and gaps[D1]["sha256"] == "s"
    assert (gaps[D2]["status"], gaps[D2]["reason"], gaps[D2]["last_error"], gaps[D2]["attempts"]) == ("open", "fetch-failed", "boom", 1)
    assert (gaps[D3]["reason"], gaps[D3]["last_error"], gaps[D3]["attempts"]) == \
        ("deferred", "deferred: maxRepairsPerRun=2 reached", 0)
    assert gaps[D4]["reason"] == "late-upstream"  # D4 ended 26 h before NOW; no delay given
    r.causes[("BTC", D2)] = "verification-failed"
    pub = Publication("UTC", 3)  # D4 (ended at 2026-11-23 00:00Z) is due at 03:00Z; NOW is 02:00Z
    gaps = by_date(build_rows("s", T, EXPECTED, UPSTREAM, r, {}, NOW, pub).gaps)
    assert (gaps[D2]["reason"], gaps[D4]["reason"]) == ("verification-failed", "not-due")
    later = by_date(build_rows("s", T, EXPECTED, UPSTREAM, r, {}, NOW + dt.timedelta(hours=1), pub).gaps)
    assert later[D4]["reason"] == "late-upstream"


def test_not_due_is_counted_in_the_schedules_timezone():
    """A date ends at midnight where the schedule runs: in Tokyo 2026-11-22 ends at 15:00Z
    the day before."""
    pub = Publication("Asia/Tokyo", 2)
    assert pub.due(D4) == dt.datetime(2026, 11, 22, 17, tzinfo=dt.timezone.utc)
    assert pub.absent_cause(D4, dt.datetime(2026, 11, 22, 16, 59, tzinfo=dt.timezone.utc)) == "not-due"
    assert pub.absent_cause(D4, dt.datetime(2026, 11, 22, 17, tzinfo=dt.timezone.utc)) == "late-upstream"


def test_a_rerun_with_nothing_new_rewrites_no_gap():
    first = build_rows("s", T, EXPECTED, UPSTREAM, repairs(repaired=[D1, D2], deferred=[D3]), {}, NOW)
    prior = {(g["symbol"], g["date"]): g for g in first.gaps}
    again = build_rows("s", T, EXPECTED, UPSTREAM, repairs(deferred=[D3]), prior, NOW + dt.timedelta(days=1))
    assert again.gaps == []


def test_listed_cells_are_seen_now_and_loads_follow_staged_repairs():
    r = Repairs({("BTC", D1): Verified("s", 10, Staged("/tmp/x.csv", "csv"))}, {}, {})
    rows = build_rows("s", T, EXPECTED, UPSTREAM, r, {}, NOW)
    assert by_date(rows.objects)[D2]["first_seen_at"] == NOW  # the store keeps an earlier one (test_store)
    assert by_date(rows.objects)[D4]["first_seen_at"] is None
    assert rows.loads == [Load("s", "BTC", D1, Staged("/tmp/x.csv", "csv"))]


def test_open_gaps_by_cause_count_the_rows_written_over_the_stored_ones():
    old = dt.date(2020, 1, 1)
    prior = {("BTC", old): {"symbol": "BTC", "date": old, "status": "open", "reason": "late-upstream"},
             ("BTC", D1): {"symbol": "BTC", "date": D1, "status": "open", "reason": "fetch-failed"},
             ("ETH", D1): {"symbol": "ETH", "date": D1, "status": "repaired", "reason": None}}
    written = Rows([], [{"symbol": "BTC", "date": D1, "status": "repaired", "reason": None},
                        {"symbol": "BTC", "date": D2, "status": "open", "reason": "quarantined"}], [])
    counts = open_by_cause(written, prior)
    assert list(counts) == ["not-due", "late-upstream", "withdrawn", "fetch-failed", "verification-failed", "quarantined",
                            "deferred"]
    assert {c: n for c, n in counts.items() if n} == {"late-upstream": 1, "quarantined": 1}


def test_a_held_cell_follows_its_object_with_its_provenance():
    """Issue 24, point 1: a cell held verified is rewritten only when its object changed: a
    republished one is repaired again (new sha256 and ETag, the old ones as provenance, counted
    in changes); a withdrawn one becomes an open gap with reason withdrawn; a withdrawn one still
    gone rewrites nothing."""
    held = {"schedule": "s", "symbol": "BTC", "date": D1, "key": T.key("BTC", D1), "status": "repaired", "reason": None,
            "detected_at": NOW - dt.timedelta(days=9), "repaired_at": NOW - dt.timedelta(days=9), "attempts": 1,
            "last_error": None, "sha256": "s", "bytes": 10, "etag": "e", "previous_etag": None, "previous_sha256": None,
            "changed_at": None, "changes": 0}
    same = build_rows("s", T, [Cell("BTC", D1)], UPSTREAM, repairs(), {("BTC", D1): held}, NOW)
    assert same.gaps == []

    moved = {"BTC": {D1: Listed(T.key("BTC", D1), 12, "e2", NOW)}}
    again = build_rows("s", T, [Cell("BTC", D1)], moved, Repairs({("BTC", D1): Verified("s2", 12)}, {}, {}),
                       {("BTC", D1): held}, NOW)
    (g,) = again.gaps
    assert (g["status"], g["sha256"], g["bytes"], g["etag"], g["attempts"]) == ("repaired", "s2", 12, "e2", 1)
    assert (g["previous_sha256"], g["previous_etag"], g["changed_at"], g["changes"]) == ("s", "e", NOW, 1)

    gone = build_rows("s", T, [Cell("BTC", D1)], {}, repairs(), {("BTC", D1): held}, NOW)
    (w,) = gone.gaps
    assert (w["status"], w["reason"], w["sha256"], w["previous_sha256"], w["changes"]) == ("open", "withdrawn", None, "s", 1)
    still = build_rows("s", T, [Cell("BTC", D1)], {}, repairs(), {("BTC", D1): w}, NOW + dt.timedelta(days=1))
    assert still.gaps == []


@settings(max_examples=300, deadline=None)
@given(reason=st.sampled_from(["not-due", "late-upstream", "withdrawn", "fetch-failed", "verification-failed", "quarantined",
                               "deferred"]),
       last_error=st.sampled_from([None, "boom", "deferred: maxRepairsPerRun=2 reached"]), listed=st.booleans(),
       state=st.sampled_from(["none", "deferred", "failed", "repaired"]), hours=st.integers(-30, 30))
def test_the_shortcuts_for_an_unchanged_open_gap_agree_with_building_its_row(reason, last_error, listed, state, hours):
    """cell_rows decides an open gap that stays as it is without building its row: it must
    write nothing exactly when the row it would build equals the stored one, and otherwise
    the same row (the full construction is forced by a stored key that differs)."""
    prior = {"schedule": "s", "symbol": "BTC", "variant": "", "period": "daily", "date": D4, "key": T.key("BTC", D4), "status": "open", "reason": reason,
             "detected_at": NOW - dt.timedelta(days=2), "repaired_at": None, "attempts": 1, "last_error": last_error,
             "sha256": None, "bytes": None, "etag": None, "previous_etag": None, "previous_sha256": None, "changed_at": None,
             "changes": 0}
    up = {"BTC": {D4: Listed(T.key("BTC", D4), 10, "e", NOW)}} if listed else {}
    k = ("BTC", D4)
    r = Repairs({k: Verified("s", 10)} if state == "repaired" and listed else {}, {k: "boom"} if state == "failed" and listed else {},
                {k: "maxRepairsPerRun=2 reached"} if state == "deferred" and listed else {})
    pub, now = Publication("UTC", 24), NOW + dt.timedelta(hours=hours)
    fast = build_rows("s", T, [Cell("BTC", D4)], up, r, {k: prior}, now, pub).gaps
    (full,) = build_rows("s", T, [Cell("BTC", D4)], up, r, {k: {**prior, "key": "elsewhere"}}, now, pub).gaps
    if full == prior:
        assert fast == []
    else:
        assert fast == [full]


# -- target.archive: a day held by its daily file or by its month's archive ----------------------
def _gap(series: str, date: dt.date, status: str, reason: str | None = None) -> dict:
    from ingestion_job.plan import series_period, split_series

    symbol, variant = split_series(series)
    return {"schedule": "s", "symbol": symbol, "variant": variant, "period": series_period(series), "date": date,
            "key": f"k/{series}/{date}", "status": status, "reason": reason, "last_error": None}


def test_a_gap_held_by_the_other_period_is_covered_and_open_again_once_that_is_gone():
    from ingestion_job.rows import cell_key, union_of_periods

    d = dt.date
    nov = [d(2026, 11, 1) + dt.timedelta(days=i) for i in range(30)]
    boundary = d(2026, 12, 1)
    prior = {("A", x): _gap("A", x, "repaired") for x in nov[1:]}
    prior[("A", nov[0])] = _gap("A", nov[0], "open", "late-upstream")  # its daily file never came
    prior[("A#monthly", nov[0])] = _gap("A#monthly", nov[0], "repaired")  # ...but the month's archive did
    prior[("B", nov[3])] = _gap("B", nov[3], "open", "fetch-failed")  # B's month is not held: handed to it
    prior[("B#monthly", nov[0])] = _gap("B#monthly", nov[0], "open", "late-upstream")
    prior.update({("C", x): _gap("C", x, "repaired") for x in nov})  # every day: the month is held by them
    prior[("C#monthly", nov[0])] = _gap("C#monthly", nov[0], "open", "late-upstream")
    rows, covered = union_of_periods(Rows([], [], []), prior, boundary)
    got = {cell_key(g): (g["status"], g["reason"]) for g in rows.gaps}
    assert got == {("A", nov[0]): ("covered", "by-archive"), ("B", nov[3]): ("superseded", "expected-as-archive"),
                   ("C#monthly", nov[0]): ("covered", "by-daily-files")}
    assert covered == {("A", nov[0]), ("C#monthly", nov[0])}
    assert next(g for g in rows.gaps if g["symbol"] == "B")["last_error"].endswith("(was fetch-failed)")
    # once committed, the same again writes nothing
    after = {**prior, **{cell_key(g): g for g in rows.gaps}}
    again, covered_again = union_of_periods(Rows([], [], []), after, boundary)
    assert again.gaps == [] and covered_again == covered
    # the archive withdrawn (its gap open again): the day it held is handed to the month before the
    # boundary; after it (dailyDays grew), it and the day handed over are catch-up cells again
    gone = {**after, ("A#monthly", nov[0]): _gap("A#monthly", nov[0], "open", "withdrawn")}
    moved, _ = union_of_periods(Rows([], [], []), gone, boundary)
    assert [(g["status"], g["reason"]) for g in moved.gaps] == [("superseded", "expected-as-archive")]
    reopened, _ = union_of_periods(Rows([], [], []), gone, d(2026, 11, 1))
    assert sorted((g["symbol"], g["status"], g["reason"], g["last_error"][:14]) for g in reopened.gaps) == [
        ("A", "open", "deferred", "not probed yet"), ("B", "open", "deferred", "not probed yet")]
