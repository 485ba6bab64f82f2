"""ingestion-job: one probe-and-repair run, and reports over the store.

Exit codes: 0 the run succeeded; 1 it failed (one-line reason last on stderr); 2 bad usage
or a broken operator-job contract; 3 partial: the run committed, but at least one repair
failed (its gap stays open with the reason).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from pathlib import Path

import yaml

import ingestion_contract as contract
from ingestion_contract.cron import load_timezone
from ingestion_contract.spec import MAX_WINDOW_DAYS


class _RunFields(logging.Filter):
    def filter(self, record):
        for k in ("schedule", "namespace", "run_id"):
            if not hasattr(record, k):
                setattr(record, k, "-")
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RunFields())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s level=%(levelname)s schedule=%(schedule)s namespace=%(namespace)s run_id=%(run_id)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore"):  # no line per request
        logging.getLogger(noisy).setLevel(logging.WARNING)


def context_from_args(args) -> contract.RunContext:
    """The same contract path in a pod and on a laptop: a spec file becomes the env."""
    if not args.spec:
        return contract.read_environment(os.environ)
    meta, raw = read_spec_file(args.spec)
    try:
        spec = contract.parse_spec(raw)
    except contract.SpecError as e:
        raise contract.ContractError(f"{args.spec}: {e}") from None
    env = {**os.environ, contract.SPEC_ENV: contract.encode_job_spec(spec.job()),
           contract.SCHEDULE_ENV: schedule_name(args, meta),
           contract.NAMESPACE_ENV: args.namespace or meta.get("namespace") or "local"}
    env.pop(contract.JOB_NAME_ENV, None)
    return contract.read_environment(env)


# The top level of an IngestionSchedule (a file without any of these is its spec alone).
RESOURCE_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")


def read_spec_file(path: str) -> tuple[dict, object]:
    """(metadata, raw spec) of an IngestionSchedule YAML, or of its spec alone; a ContractError in
    one line naming the file (and for a YAML error its line:column) or the field. Reading errors
    (a missing file) are the OSError's own."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise contract.ContractError(f"{path}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): "
                                     "save the file as UTF-8") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise contract.ContractError(yaml_problem(path, text, e)) from None
    if not isinstance(doc, dict):
        raise contract.ContractError(f"{path}: expected an IngestionSchedule or its spec as a YAML mapping")
    if not set(RESOURCE_KEYS) & set(doc):
        return {}, doc
    unknown = [k if isinstance(k, str) and k.isprintable() else repr(k) for k in doc if k not in RESOURCE_KEYS]
    if unknown:
        raise contract.ContractError(f"{path}: {', '.join(unknown)}: unknown top-level field; known: "
                                     f"{', '.join(RESOURCE_KEYS)} (or the spec alone, without them)")
    if doc.get("kind", "IngestionSchedule") != "IngestionSchedule":
        raise contract.ContractError(f"{path}: kind={doc['kind']!r}: must be IngestionSchedule")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise contract.ContractError(f"{path}: metadata={meta!r}: must be an object")
    if "spec" not in doc:
        raise contract.ContractError(f"{path}: spec: is required")
    return meta, doc["spec"]


def yaml_problem(path: str, text: str, e: yaml.YAMLError) -> str:
    """A YAML error in one line, ``FILE:LINE:COLUMN: problem (context at LINE:COLUMN)``; PyYAML's
    own message quotes the line over several."""
    def flat(text: str) -> str:
        return " ".join(text.split())

    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark, context = e.problem_mark, e.context_mark
        out = f"{path}:{mark.line + 1}:{mark.column + 1}: {flat(e.problem or 'not valid YAML')}"
        if e.context:
            out += f" ({flat(e.context)}" + (f" at {context.line + 1}:{context.column + 1}" if context else "") + ")"
        return out
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow, by its offset
        line, column = text.count("\n", 0, e.position) + 1, e.position - text.rfind("\n", 0, e.position)
        return f"{path}:{line}:{column}: unacceptable character #x{e.character:04x}: {e.reason}"
    return f"{path}: {flat(str(e))}"


def schedule_name(args, meta: dict) -> str:
    """The run's schedule: --schedule, else metadata.name, else the file's name; a DNS-1123
    label in every case (it names the store's rows, partitions and run ids)."""
    if args.schedule is not None:
        if errors := contract.validate_name(args.schedule):
            raise contract.ContractError(f"--schedule {args.schedule!r}: {errors[0].problem}")
        return args.schedule
    if meta.get("name") is not None:
        if errors := contract.validate_name(meta["name"]):
            raise contract.ContractError(f"{args.spec}: {errors[0]}")
        return meta["name"]
    stem = Path(args.spec).stem
    if errors := contract.validate_name(stem):
        raise contract.ContractError(f"{args.spec}: metadata.name is not set and the file's name {stem!r} cannot stand in "
                                     f"for it: {errors[0].problem}; set metadata.name or --schedule")
    return stem


def store_path(ctx: contract.RunContext, override: str | None) -> Path | None:
    """The DuckDB file to use, or None for the spec's object store."""
    if override:
        return Path(override)
    duck = ctx.spec.storage.duckdb
    return Path(duck.path) if duck else None


def cmd_run(args) -> int:
    import signal

    from .run import interrupt, run

    signal.signal(signal.SIGTERM, lambda *_: interrupt())  # commit what was verified, then exit 4

    setup_logging(args.log_level)
    try:
        ctx = context_from_args(args)
        path = store_path(ctx, args.db)
    except (contract.ContractError, OSError, yaml.YAMLError) as e:
        return _usage_error(str(e))
    try:
        as_of, dates = manual_dates(args.as_of, args.dates, ctx.spec, dt.datetime.now(dt.timezone.utc))
    except ValueError as e:
        return _usage_error(str(e))
    try:
        result = run(ctx, path, concurrency=args.concurrency, as_of=as_of, dates=dates, lock_timeout=args.lock_timeout)
    except Exception as e:  # a bug: keep the traceback in the log, end with one line
        logging.getLogger("ingestion_job").exception("event=run_crashed")
        first = (str(e).strip().splitlines() or [""])[0]
        line = f"unexpected {e.__class__.__name__}: {first}"
        print(f"error: {line}", file=sys.stderr)
        write_termination_message(None, "failed", line)
        return 1
    write_termination_message(result.coverage, result.outcome, result.reason)
    return result.exit_code


def _usage_error(line: str) -> int:
    """A refused spec or flag: one line on stderr, the same line as the run's reason, exit 2."""
    print(f"error: {line}", file=sys.stderr)
    write_termination_message(None, "failed", line)
    return 2


def write_termination_message(coverage, outcome: str, reason: str | None) -> None:
    """Where the pod's terminationMessagePath is, the run's end: a committed run's coverage,
    and the one-line reason of a run that did not succeed (the operator reads both from the
    pod's status). Best effort: a run is never failed for it."""
    path = os.environ.get(contract.TERMINATION_MESSAGE_ENV)
    if not path or (coverage is None and not reason):
        return
    try:
        with open(path, "w") as f:
            f.write(contract.end_message(coverage, outcome, reason))  # under the kubelet's 4,096 bytes
    except OSError as e:
        logging.getLogger("ingestion_job").warning("event=termination_message_not_written path=%s error=%r", path, e.strerror)


def manual_dates(as_of: str | None, dates: str | None, spec: contract.JobSpec, now: dt.datetime):
    """``--as-of`` and ``--dates`` parsed: (date or None, Window or None). A ValueError naming the
    flag for an empty value (it used to run today's window), a date after today in the schedule's
    time zone (nothing is published for it yet: its cells would be stored as open gaps), or a
    range longer than MAX_WINDOW_DAYS days before its last date (the window of a run with the
    longest lookback). A backfill unit's dates do not come through here: they reach the job as
    INGESTION_BACKFILL, a chunk of at most 366 days."""
    from .plan import window_on

    target = spec.target
    today = now.astimezone(load_timezone(spec.timezone)).date()
    after_today = f"after today ({today} in {spec.timezone}, the schedule's time zone)"
    day = window = None
    if as_of is not None:
        day = _day(as_of, "--as-of")
        if day > today:
            raise ValueError(f"--as-of {as_of!r}: the date is {after_today}")
        try:
            window_on(day, target.lag_days, target.lookback_days)
        except OverflowError:
            raise ValueError(f"--as-of {as_of!r}: its window (lagDays {target.lag_days} and lookbackDays "
                             f"{target.lookback_days} before it) would begin before year 1") from None
    if dates is not None:
        window = _range(dates)
        if window.last > today:
            raise ValueError(f"--dates {dates!r}: TO is {after_today}")
        days = (window.last - window.first).days
        if days > MAX_WINDOW_DAYS:
            raise ValueError(f"--dates {dates!r}: FROM is {days} days before TO; at most {MAX_WINDOW_DAYS} (lookbackDays' "
                             "maximum): split the range, or use an IngestionBackfill for a longer one")
    return day, window


def _day(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected a date as YYYY-MM-DD") from None


def _range(text: str):
    from .plan import Window

    first, sep, last = text.partition("..")
    if not sep:
        raise ValueError(f"--dates {text!r}: expected FROM..TO, e.g. 2026-01-01..2026-01-31")
    window = Window(_day(first, "--dates"), _day(last, "--dates"))
    if window.first > window.last:
        raise ValueError(f"--dates {text!r}: FROM is after TO")
    return window


def cmd_report(args) -> int:
    from .report import report
    from .store import StoreError

    def waiting(msg: str) -> None:
        print(f"report: {msg}", file=sys.stderr, flush=True)

    try:
        if args.spec:
            ctx = context_from_args(args)
            text = report(None, args.schedule or ctx.schedule, args.days, args.format, args.wide, ctx=ctx)
        else:
            text = report(Path(args.db), args.schedule, args.days, args.format, args.wide, args.lock_timeout, waiting)
    except (StoreError, contract.ContractError, OSError, yaml.YAMLError) as e:  # one line, never a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


def cmd_migrate_store(args) -> int:
    from .migrate import migrate
    from .store import StoreError

    try:
        ctx = context_from_args(args)
        cfg = ctx.spec.storage.object_store
        if cfg is None:
            raise contract.ContractError(f"{args.spec}: spec.storage.objectStore is not set: nothing to migrate")
        result = migrate(cfg, args.schedule or ctx.schedule, ctx.store_credentials, delete_old=args.delete_old)
    except (StoreError, contract.ContractError, OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.line(args.schedule or ctx.schedule))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ingestion-job", description="One probe-and-repair run of an IngestionSchedule.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="probe S3, record availability and gaps, repair, write the store, push metrics")
    r.add_argument("--spec", help="an IngestionSchedule YAML (or its spec) to run without Kubernetes; default: the pod env contract")
    r.add_argument("--db", help="DuckDB file to use instead of spec.storage.duckdb.path")
    r.add_argument("--schedule", help="schedule name (default: metadata.name of --spec)")
    r.add_argument("--namespace", help="namespace label for the run (default: metadata.namespace or 'local')")
    when = r.add_mutually_exclusive_group()
    when.add_argument("--as-of", metavar="DATE", help="rerun the run of a past day exactly: its window as on DATE (YYYY-MM-DD)")
    when.add_argument("--dates", metavar="FROM..TO", help="run exactly this range of dates by hand (YYYY-MM-DD..YYYY-MM-DD)")
    r.add_argument("--concurrency", type=int, default=int(os.environ.get("INGESTION_CONCURRENCY", "16")))
    r.add_argument("--log-level", default=os.environ.get("INGESTION_LOG_LEVEL", "INFO"))
    r.add_argument("--lock-timeout", type=float, default=float(os.environ.get("INGESTION_LOCK_TIMEOUT", "60")),
                   help="seconds to wait for a DuckDB file another process holds (default 60)")
    r.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="availability, open gaps, recent runs and success rate")
    where = rep.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="the DuckDB file")
    where.add_argument("--spec", help="an IngestionSchedule YAML whose storage.objectStore to read (credentials from "
                                      "INGESTION_STORE_ACCESS_KEY_ID / INGESTION_STORE_SECRET_ACCESS_KEY)")
    rep.add_argument("--schedule", help="only this schedule (with --spec: default metadata.name)")
    rep.add_argument("--namespace", help=argparse.SUPPRESS)
    rep.add_argument("--wide", action="store_true", help="errors on one line each, unwrapped")
    rep.add_argument("--lock-timeout", type=float, default=30,
                     help="seconds to wait while a run commits to the file (default 30)")
    rep.add_argument("--days", type=int, default=30, help="period for the success rate (default 30)")
    rep.add_argument("--format", choices=["table", "json"], default="table")
    rep.set_defaults(func=cmd_report)
    mig = sub.add_parser("migrate-store", help="move a schedule's data from the old object-store format (manifest and "
                                               "Parquet snapshots) into the Delta tables, once; safe to rerun")
    mig.add_argument("--spec", required=True, help="the IngestionSchedule YAML whose storage.objectStore to migrate "
                                                   "(credentials from INGESTION_STORE_ACCESS_KEY_ID / _SECRET_ACCESS_KEY)")
    mig.add_argument("--schedule", help="schedule name (default: metadata.name of --spec)")
    mig.add_argument("--namespace", help=argparse.SUPPRESS)
    mig.add_argument("--delete-old", action="store_true", help="delete the old files once the Delta tables hold their rows")
    mig.set_defaults(func=cmd_migrate_store)
    args = p.parse_args(argv)
    return args.func(args)


def entry() -> None:
    """The ``ingestion-job`` command: :func:`main`, then an exit that skips the interpreter's
    teardown once everything is flushed and closed.

    Arrow's C++ thread pools (pyarrow reads Delta tables and Parquet) and delta-rs's runtime
    keep native threads; destroyed during the interpreter's teardown while one is still
    joinable, they end the process in ``std::terminate``: ``terminate called without an
    active exception`` and SIGABRT (exit 134), after a run that committed everything
    (apache/arrow#34314, delta-io/delta-rs#2184). Kubernetes would count such a run as
    failed and retry it. By the time ``main`` returns, the store is closed, metrics are pushed
    and the termination message is written, so nothing is left for the teardown to do."""
    try:
        code = main()
    except SystemExit as e:  # argparse's --help and usage errors
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # a bug outside the run's own handling: the traceback, then the same exit
        import traceback

        traceback.print_exc()
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    entry()
