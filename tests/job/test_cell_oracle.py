"""Cell truth against an oracle (issue 24, point 6): Hypothesis writes upstream histories over
two symbols and a window of eight days into the real S3 server (publish, publish late,
republish with new content, withdraw, and objects that must be quarantined: another day's
CSV, two members, a truncated file; a byte-order-mark header is accepted), and the real job
runs after each step,
in DuckDB mode and in Delta mode. After each run, what the store says of every cell (state,
cause, sha256), the rows table ``loaded`` holds, the delisted symbols, and the five views of
the open gaps (store, report, summary, metrics, coverage) must equal a plain model of what is
upstream. Withdrawing a symbol's newest days delists it (``delistAfterDays`` 3); publishing
again relists it.

Shrunk failures found while building this are kept below as ``@example`` regression cases.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import uuid

import duckdb
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingestion_dev import sampledata

from ..conftest import PRIVATE, PUBLIC
from ..samples import delta_table
from .conftest import Dataset, days_ago
from .truth import Scenario

SYMS = ("AAAUSDT", "BBBUSDT")
WINDOW = days_ago(*range(8, 0, -1))  # lookback 7, lag 1: oldest first
DELIST_AFTER = 3
GOOD = ("publish", "republish", "bom")  # kinds of content the job must verify and load
KINDS = ("publish", "republish", "withdraw", "wrong-day", "two-members", "bom", "truncated")
EXAMPLES = int(os.environ.get("INGESTION_ORACLE_EXAMPLES", "5"))

# a step: one to three changes upstream, then one run per mode; day 0 is each symbol's first
# object, published before the first step and never touched (so a symbol is expected from it)
ACTION = st.tuples(st.sampled_from(KINDS), st.sampled_from(SYMS), st.integers(1, len(WINDOW) - 1))
HISTORY = st.lists(st.lists(ACTION, min_size=1, max_size=3), min_size=1, max_size=4)
# cells not published before the first run (published late, if a step publishes them)
LATE = st.sets(st.tuples(st.sampled_from(SYMS), st.integers(1, len(WINDOW) - 1)), max_size=4)


class Upstream:
    """What the bucket holds: one body per cell, written through the real S3 API."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.objects: dict[tuple[str, dt.date], tuple[str, bytes]] = {}
        self.versions = 0

    def apply(self, kind: str, sym: str, d: dt.date) -> None:
        key = self.dataset.template.format(symbol=sym, date=d.isoformat())
        if kind == "withdraw":
            s3 = self.dataset.servers.s3.client()
            s3.delete_object(Bucket=PUBLIC, Key=key)
            s3.delete_object(Bucket=PUBLIC, Key=key + ".CHECKSUM")
            self.objects.pop((sym, d), None)
            return
        self.versions += 1
        good = sampledata.kline_zip(sym, d, version=self.versions if kind != "publish" else 0)
        member = f"{sym}-1m-{d}.csv"
        body = {
            "publish": good, "republish": good,
            "bom": sampledata.zipped({member: "\ufeff" + sampledata.csv_of(good)}),
            "wrong-day": sampledata.kline_zip(sym, d - dt.timedelta(days=1)),
            "two-members": sampledata.zipped({member: sampledata.csv_of(good), "extra.csv": sampledata.csv_of(good)}),
            "truncated": sampledata.kline_zip(sym, d, rows=3),
        }[kind]
        self.dataset.put(sym, d, body)
        self.objects[(sym, d)] = (kind, body)


class Oracle:
    """A plain model of what the store must say: per cell its state, and the content last
    verified (whose rows ``loaded`` keeps, also while the cell is quarantined or withdrawn)."""

    def __init__(self):
        self.state: dict[tuple[str, dt.date], tuple[str, str | None]] = {}
        self.verified: dict[tuple[str, dt.date], bytes] = {}
        self.delisted: set[str] = set()

    def step(self, up: Upstream) -> None:
        new = {}
        self.delisted = set()
        for sym in SYMS:
            last = max(d for s, d in up.objects if s == sym)  # day 0 is never withdrawn
            silent = (WINDOW[-1] - last).days >= DELIST_AFTER
            if silent:
                self.delisted.add(sym)
            for d in WINDOW:
                cell, prev = (sym, d), self.state.get((sym, d))
                obj = up.objects.get(cell)
                if silent and d > last:
                    new[cell] = ("delisted", None)
                elif obj is None:
                    new[cell] = ("open", "withdrawn" if prev in (("repaired", None), ("open", "withdrawn")) else "late-upstream")
                elif obj[0] in GOOD:
                    new[cell] = ("repaired", None)
                    self.verified[cell] = obj[1]
                else:
                    new[cell] = ("open", "quarantined")
        self.state = new

    def open_by_cause(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for status, cause in self.state.values():
            if status == "open":
                out[cause] = out.get(cause, 0) + 1
        return out

    def closes(self) -> dict[tuple[str, dt.date], list[float]]:
        """The ``close`` of every row ``loaded`` must hold, per cell."""
        out = {}
        for cell, body in self.verified.items():
            rows = list(csv.DictReader(io.StringIO(sampledata.csv_of(body).lstrip("\ufeff"))))
            out[cell] = sorted(float(r["close"]) for r in rows)
        return out


def loaded_closes(s: Scenario) -> dict[tuple[str, dt.date], list[float]]:
    if s.db is None:
        rows = delta_table(s.servers, s.prefix, "loaded", bucket=PRIVATE).to_pyarrow_table().select(["symbol", "date", "close"])
        triples = zip(*(rows.column(c).to_pylist() for c in ("symbol", "date", "close")))
    else:
        with duckdb.connect(str(s.db), read_only=True) as con:
            triples = con.execute("SELECT symbol, date, close FROM loaded").fetchall()
    out: dict = {}
    for sym, d, close in triples:
        out.setdefault((sym, d), []).append(close)
    return {k: sorted(v) for k, v in out.items()}


def check(s: Scenario, res, oracle: Oracle, up: Upstream, where: str) -> None:
    cells = s.cells()
    for cell, (status, cause) in oracle.state.items():
        g = cells.get(cell)
        if status == "delisted":
            assert g is None or g["status"] == "delisted", (where, cell, g)
            continue
        assert g is not None, (where, cell, "no gap row")
        assert (g["status"], g["reason"]) == (status, cause), (where, cell, g["status"], g["reason"], g["last_error"])
        if status == "repaired":
            assert g["sha256"] == hashlib.sha256(up.objects[cell][1]).hexdigest(), (where, cell)
    assert loaded_closes(s) == oracle.closes(), where
    assert {c: n for c, n in res.gaps_by_cause.items() if n} == oracle.open_by_cause(), where
    assert s.agree(res) == sum(oracle.open_by_cause().values()), where  # store = report = summary = metrics = coverage
    assert set(res.coverage.delisted) == oracle.delisted and {d["symbol"] for d in s.report()["delisted"]} == oracle.delisted


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
@given(history=HISTORY, late=LATE)
# regression cases (shrunk from failures, and the paths that matter most spelled out)
@example(history=[[("withdraw", "AAAUSDT", 5), ("withdraw", "AAAUSDT", 6), ("withdraw", "AAAUSDT", 7)],
                  [("publish", "AAAUSDT", 7)]], late=set())  # delisted, then relisted: its silent days are gaps again
@example(history=[[("republish", "BBBUSDT", 3)], [("truncated", "BBBUSDT", 3)], [("withdraw", "BBBUSDT", 3)],
                  [("bom", "BBBUSDT", 3)]], late=set())  # verified, quarantined (old rows kept), gone (not withdrawn: not held)
@example(history=[[("publish", "AAAUSDT", 2)], [("withdraw", "AAAUSDT", 2)]], late={("AAAUSDT", 2), ("BBBUSDT", 6)})
def test_the_store_says_what_the_bucket_holds_after_every_run(servers, tmp_path_factory, history, late):
    dataset = Dataset(servers, f"o{uuid.uuid4().hex[:8]}")
    tmp = tmp_path_factory.mktemp("oracle")
    up, oracle = Upstream(dataset), Oracle()
    for sym in SYMS:
        for i, d in enumerate(WINDOW):  # a history to start from: every day but the late ones
            if (sym, i) not in late:
                up.apply("publish", sym, d)
    scenarios = [Scenario(dataset, servers, tmp, mode, symbols=SYMS, lookback=len(WINDOW) - 1, delistAfterDays=DELIST_AFTER,
                          publishDelayHours=0) for mode in ("duckdb", "delta")]
    for s in scenarios:
        s.spec["repair"]["expectRows"] = 5
    for n, step in enumerate([[]] + history):
        for kind, sym, i in step:
            up.apply(kind, sym, WINDOW[i])
        oracle.step(up)
        for s in scenarios:  # partial when a repair failed (a quarantined object); never failed
            res = s.run(outcomes=("succeeded", "partial") if oracle.open_by_cause().get("quarantined") else ("succeeded",))
            check(s, res, oracle, up, f"step {n} {step} ({'duckdb' if s.db else 'delta'})")
