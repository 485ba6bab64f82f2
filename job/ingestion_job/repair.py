"""Step 4 of a run: fetch, verify and stage the repair candidates, with bounded concurrency.

A cell that cannot be fetched, verified or staged fails alone: its reason is kept for
its gap, and the other cells go on. A cell whose object was fetched and verified but does
not hold its cell's data (staging's checks) is also quarantined: nothing of it is loaded.
A cell not started before the run's time budget ran out, or cut short by it, is left for a
later run (not failed).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
from pathlib import Path

from ingestion_contract.spec import Repair

from .plan import Cell, Listed, period_end
from .rows import CellKey, Repairs, Staged, Verified
from .source import ObjectError, OutOfTime, S3Source, VerificationError
from .staging import StagingError, expected_rows, stage


def repair(source: S3Source, todo: list[Cell], upstream: dict[str, dict], rules: Repair, tmp: Path,
           log: logging.LoggerAdapter, on_repaired=None) -> tuple[Repairs, set[CellKey]]:
    """What became of every cell in ``todo`` (its ``deferred`` left empty), and the cells not
    started in time. ``rules``: the spec's repair (how to load, what a load must hold).
    ``on_repaired(repaired)``, if given, is called on this thread after each cell verified (a
    backfill unit checkpoints from it); no cell starts while it runs."""
    repaired: dict[CellKey, Verified] = {}
    failed: dict[CellKey, str] = {}
    causes: dict[CellKey, str] = {}
    late: set[CellKey] = set()
    load = rules.load

    def one(cell: Cell) -> Verified:
        if source.past_deadline():
            raise _NotStarted
        listed: Listed = upstream[cell.symbol][cell.date]
        body, digest = source.fetch(listed)
        staged = None
        if load != "none":
            last = period_end(cell.date, source.template.period_of(cell.symbol))  # a monthly cell holds its month's days
            expect = expected_rows(listed.key, rules.expect_rows, rules.expect_rows_from_interval, (last - cell.date).days + 1)
            staged = Staged(*stage(body, listed.key, load, tmp / f"{cell.symbol}-{cell.date}", cell.date, expect, last))
        return Verified(digest, len(body), staged)

    # A window of at most ``workers`` cells in flight, refilled only as this thread takes a
    # result: while it commits a checkpoint no new cell starts, so a unit killed at any moment
    # has verified at most the batch being committed plus ``workers`` cells nobody committed
    # (submitting every cell at once let the workers run on through a slow commit).
    workers = min(8, max(1, source.concurrency))
    queue = iter(todo)
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, c): c for c in itertools.islice(queue, workers)}
        i = 0
        while futures:
            finished, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                i += 1
                cell = futures.pop(fut)
                try:
                    repaired[(cell.symbol, cell.date)] = fut.result()
                    if on_repaired is not None:
                        on_repaired(repaired)
                except (_NotStarted, OutOfTime):  # the budget, not the object, stopped it: a later run goes on
                    late.add((cell.symbol, cell.date))
                except ObjectError as e:
                    cause = "verification-failed" if isinstance(e, VerificationError) else "fetch-failed"
                    failed[(cell.symbol, cell.date)], causes[(cell.symbol, cell.date)] = str(e), cause
                    log.warning("event=repair_failed symbol=%s date=%s cause=%s error=%r", cell.symbol, cell.date, cause, str(e))
                except StagingError as e:
                    failed[(cell.symbol, cell.date)], causes[(cell.symbol, cell.date)] = str(e), "quarantined"
                    log.warning("event=cell_quarantined symbol=%s date=%s cause=quarantined error=%r", cell.symbol, cell.date,
                                str(e))
                if i % 100 == 0 or i == len(todo):
                    log.info("event=repair_progress done=%d of=%d failed=%d", i, len(todo), len(failed))
                for nxt in itertools.islice(queue, 1):
                    futures[pool.submit(one, nxt)] = nxt
    return Repairs(repaired, failed, {}, causes), late


class _NotStarted(Exception):
    """The run's time budget ran out before this cell began."""
