"""`ingestion-job run --spec FILE` refuses a malformed spec cleanly, every time: exit code 2
and one line naming the field and the value, never a traceback and never a run."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ingestion_contract as contract
from ingestion_contract import validate
from ingestion_job import cli

from .conftest import TODAY

VALID = {
    "schedule": "0 2 * * *", "timezone": "UTC",
    "target": {"endpoint": "http://127.0.0.1:9", "bucket": "data.binance.vision", "anonymous": True,
               "keyTemplate": "data/{symbol}/{symbol}-{date}.zip", "symbols": ["BTCUSDT"], "lagDays": 1, "lookbackDays": 3},
    "storage": {"duckdb": {"claimName": "c", "path": "/data/x.duckdb"}},
}
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**4), st.text(max_size=10),
                   st.lists(st.text(max_size=5), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
PATHS = st.sampled_from(["schedule", "timezone", "enabled", "backoffLimit", "target", "target.bucket", "target.keyTemplate",
                         "target.symbols", "target.lagDays", "target.lookbackDays", "target.endpoint", "repair",
                         "repair.load", "repair.maxRepairsPerRun", "storage", "storage.duckdb", "storage.duckdb.path",
                         "metrics", "tagret", "target.discover"])


def cli_run(tmp_path, doc) -> tuple[int, str]:
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(doc))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["run", "--spec", str(f), "--db", str(tmp_path / "never.duckdb")])
    return code, err.getvalue()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_malformed_spec_is_refused_in_one_line(tmp_path_factory, data):
    spec = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, leaf = data.draw(PATHS).split(".")
        node = spec
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p), dict) or p not in node else {}
        node[leaf] = data.draw(VALUES)
    errors = validate(spec)
    assume(errors)
    tmp = tmp_path_factory.mktemp("cli")
    code, stderr = cli_run(tmp, {"metadata": {"name": "bad"}, "spec": spec})
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and errors[0].field in lines[0] and not (tmp / "never.duckdb").exists()


def test_the_issue_examples(tmp_path):
    for change, field in ((lambda s: s["target"].update(keyTemplate="data/{symbol}.zip"), "spec.target.keyTemplate"),
                          (lambda s: s.update(timezone="Mars/Base"), "spec.timezone='Mars/Base'"),
                          (lambda s: s["target"].update(lookbackDays="thirty"), "spec.target.lookbackDays='thirty': must be an integer"),
                          (lambda s: s.update(tagret={}), "spec.tagret={}: unknown field"),
                          (lambda s: s["target"].update(lagDays=-1), "spec.target.lagDays=-1: must be >= 0")):
        spec = yaml.safe_load(yaml.safe_dump(VALID))
        change(spec)
        code, stderr = cli_run(tmp_path, {"spec": spec})
        assert code == 2 and field in stderr and len(stderr.strip().splitlines()) == 1, stderr


# -- issue 25, point 9: every bad input exits 2 in one line naming the field, before any store --
def _spec(**target) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(VALID))
    spec["target"].update(target)
    return spec


def _doc(spec=None, **meta) -> str:
    return yaml.safe_dump({"metadata": {"name": "bad", **meta}, "spec": spec or _spec()})


LATER = (TODAY + dt.timedelta(days=2)).isoformat()  # after today in UTC, even with TODAY pinned to yesterday
# (what the file holds, the flags, what the one line must say)
BAD_INPUT = {
    "document typo": (yaml.safe_dump({"metadata": {"name": "bad"}, "specc": _spec()}), [],
                      "specc: unknown top-level field"),
    "symbol with a slash": (_doc(_spec(symbols=["BTC/USDT"])), [], "spec.target.symbols[0]='BTC/USDT': must be letters"),
    "symbol ..": (_doc(_spec(symbols=[".."])), [], "spec.target.symbols[0]='..': must be letters"),
    "symbol ../../etc": (_doc(_spec(symbols=["BTCUSDT", "../../etc"])), [], "spec.target.symbols[1]='../../etc': must be"),
    "symbol with a space": (_doc(_spec(symbols=["BTC USDT"])), [], "spec.target.symbols[0]='BTC USDT': must be letters"),
    "symbol *": (_doc(_spec(symbols=["*"])), [], "spec.target.symbols[0]='*': must be letters"),
    "ranged symbol ../x": (_doc(_spec(symbols=[], symbolRanges=[{"name": "../x"}])), [],
                           "spec.target.symbolRanges[0]={'name': '../x'}: name '../x' must be letters"),
    "name a/b": (_doc(name="a/b"), [], "metadata.name='a/b': must be a DNS-1123 label"),
    "name of 80 characters": (_doc(name="a" * 80), [], f"metadata.name='{'a' * 80}': must be a DNS-1123 label"),
    "--schedule a/b": (_doc(), ["--schedule", "a/b"], "--schedule 'a/b': must be a DNS-1123 label"),
    "bucket my bucket!": (_doc(_spec(bucket="my bucket!")), [], "spec.target.bucket='my bucket!': must be an S3 bucket name"),
    "lagDays 1000000": (_doc(_spec(lagDays=1000000)), [], "spec.target.lagDays=1000000: must be <= 3660"),
    "not UTF-8": (b"metadata: {name: caf\xe9}\n", [], "spec.yaml: not UTF-8 (byte 0xe9 at offset 20)"),
    "YAML syntax": ('spec:\n  schedule: "0 2 * * *"\n  target: [a\n   b: c\n', [],
                    "spec.yaml:4:5: expected ',' or ']', but got ':' (while parsing a flow sequence at 3:11)"),
    "--as-of ''": (_doc(), ["--as-of", ""], "--as-of '': expected a date as YYYY-MM-DD"),
    "--dates ''": (_doc(), ["--dates", ""], "--dates '': expected FROM..TO"),
    "--as-of after today": (_doc(), ["--as-of", LATER], f"--as-of '{LATER}': the date is after today ("),
    "--dates after today": (_doc(), ["--dates", f"2026-01-01..{LATER}"], f"--dates '2026-01-01..{LATER}': TO is after today ("),
    "--dates 1900..2100": (_doc(), ["--dates", "1900-01-01..2100-12-31"], "--dates '1900-01-01..2100-12-31': TO is after today"),
    "--dates over ten years": (_doc(), ["--dates", "2000-01-01..2015-12-31"],
                               "--dates '2000-01-01..2015-12-31': FROM is 5843 days before TO; at most 3660 (lookbackDays' "
                               "maximum): split the range, or use an IngestionBackfill for a longer one"),
    "--as-of before the calendar": (_doc(), ["--as-of", "0001-01-03"], "--as-of '0001-01-03': its window (lagDays 1 and "
                                    "lookbackDays 3 before it) would begin before year 1"),
}


@pytest.mark.parametrize("content,flags,says", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_exits_2_in_one_line_before_any_store(tmp_path, monkeypatch, content, flags, says):
    """Issue 25, point 9: each of these ran (exit 0, or 1 after a `running` row), printed a
    traceback, or a YAML error over 8 lines. Now: exit 2, one line naming the field or flag, and
    the run (the only code that opens a store, DuckDB or Delta) is never entered."""
    import ingestion_job.run

    def no_run(*a, **kw):
        raise AssertionError("the run was started")

    monkeypatch.setattr(ingestion_job.run, "run", no_run)
    f = tmp_path / "spec.yaml"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["run", "--spec", str(f), "--db", str(tmp_path / "never.duckdb"), *flags])
    lines = err.getvalue().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_the_same_inputs_were_fine_one_step_away(tmp_path, monkeypatch):
    """The boundaries: today, a range of exactly the longest lookback, a name of 52 characters
    and a range-only symbol list reach the run."""
    import ingestion_job.run

    started = []
    monkeypatch.setattr(ingestion_job.run, "run", lambda ctx, path, **kw: started.append((ctx.schedule, kw)) or _Done())
    today = TODAY  # the wall clock's today, or yesterday when the tests' clock is pinned there
    f = tmp_path / "spec.yaml"
    for content, flags in ((_doc(name="a" * 52), ["--as-of", today.isoformat()]),
                           (_doc(_spec(symbols=[], symbolRanges=[{"name": "BTCUSDT_240628"}])),
                            ["--dates", f"{today - dt.timedelta(days=3660)}..{today}"])):
        f.write_text(content)
        assert cli.main(["run", "--spec", str(f), "--db", str(tmp_path / "x.duckdb"), *flags]) == 0
    assert [s for s, _ in started] == ["a" * 52, "bad"]
    assert started[1][1]["dates"].first == today - dt.timedelta(days=3660)


class _Done:
    coverage = None
    outcome = "succeeded"
    reason = None
    exit_code = 0


@pytest.mark.parametrize("zone,as_of,ok", [("UTC", "2026-03-01", True), ("UTC", "2026-03-02", False),
                                           ("Pacific/Kiritimati", "2026-03-02", True),  # UTC+14: already the 2nd
                                           ("Pacific/Pago_Pago", "2026-03-01", False)])  # UTC-11: still 28 February
def test_today_is_the_schedules(zone, as_of, ok):
    """--as-of and --dates may reach today in the schedule's time zone (lagDays decides what is due)."""
    spec = contract.parse_spec({**_spec(), "timezone": zone}).job()
    now = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.timezone.utc)
    for as_of_flag, dates_flag in ((as_of, None), (None, f"2026-02-01..{as_of}")):
        if ok:
            cli.manual_dates(as_of_flag, dates_flag, spec, now)
        else:
            with pytest.raises(ValueError, match="after today"):
                cli.manual_dates(as_of_flag, dates_flag, spec, now)


def test_no_backfill_unit_is_longer_than_a_range_by_hand():
    """A backfill unit's dates reach the job as INGESTION_BACKFILL, not --dates; were they ever
    checked alike, its longest chunk still fits."""
    from ingestion_contract.backfill import BackfillSpec
    from ingestion_contract.spec import MAX_WINDOW_DAYS

    chunk = next(f for f in dataclasses.fields(BackfillSpec) if f.metadata["key"] == "daysPerChunk")
    assert chunk.metadata["maximum"] - 1 <= MAX_WINDOW_DAYS
