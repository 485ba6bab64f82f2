"""Sample data shaped like Binance Vision USD-M futures daily klines.

``data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip`` holding one CSV with
a header row, and a ``.CHECKSUM`` sidecar of the form ``<sha256>  <file name>`` (as
Binance publishes). Generated, so tests need no network and can choose what is missing.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import io
import random
import zipfile

KEY_TEMPLATE = "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip"
# Binance Vision's layout of daily klines of every interval (target.dimensions: {interval: [...]}),
# and of the monthly archives (target.period: monthly)
KLINES_DAILY = "data/spot/daily/klines/{symbol}/{interval}/{symbol}-{interval}-{date}.zip"
KLINES_MONTHLY = "data/spot/monthly/klines/{symbol}/{interval}/{symbol}-{interval}-{month}.zip"
INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
               "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
               "12h": 43_200_000, "1d": 86_400_000}
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"


def kline_zip(symbol: str, date: dt.date, rows: int = 5, version: int = 0, interval: str = "1m", month: bool = False) -> bytes:
    """One day's zip of ``interval`` klines (its first ``rows``, at most a day's), or with
    ``month`` one month's archive (``date``: its first day; at most the month's rows), as
    Binance names them; another ``version`` has other prices (a republished object)."""
    step = INTERVAL_MS[interval]
    days = ((date.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - date).days if month else 1
    rows = min(rows, days * 86_400_000 // step)
    rnd = random.Random(f"{symbol}{date}" + (f"#{version}" if version else "") + (f"/{interval}" if interval != "1m" else ""))
    start = int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    price = 100 + rnd.random() * 1000
    lines = [HEADER]
    for i in range(rows):
        o = price * (1 + rnd.uniform(-0.001, 0.001))
        c = o * (1 + rnd.uniform(-0.001, 0.001))
        t = start + i * step
        vol = rnd.uniform(1, 100)
        lines.append(f"{t},{o:.2f},{max(o, c) * 1.0005:.2f},{min(o, c) * 0.9995:.2f},{c:.2f},{vol:.3f},{t + step - 1},"
                     f"{vol * c:.2f},{rnd.randint(10, 500)},{vol / 2:.3f},{vol * c / 2:.2f},0")
        price = c
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{symbol}-{interval}-{date.strftime('%Y-%m') if month else date}.csv", "\n".join(lines) + "\n")
    return buf.getvalue()


def csv_of(body: bytes) -> str:
    """The text of the one member of a zip (the first, if it holds several)."""
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return zf.read(zf.namelist()[0]).decode()


def zipped(files: dict[str, str | bytes]) -> bytes:
    """A zip of these members (name: content), e.g. one Binance never packs: two CSVs, another day's."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buf.getvalue()


def zipped_csv(key: str, text: str) -> bytes:
    """A zip holding one CSV named after the key's file, as Binance packs each day."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(key.rsplit("/", 1)[-1].replace(".zip", ".csv"), text)
    return buf.getvalue()


def checksum(body: bytes, key: str) -> bytes:
    return f"{hashlib.sha256(body).hexdigest()}  {key.rsplit('/', 1)[-1]}\n".encode()


def upload(s3, bucket: str, cells: list[tuple[str, dt.date]], rows: int = 5, workers: int = 16,
           template: str = KEY_TEMPLATE, checksums: bool = True) -> int:
    """Upload one kline zip (and its sha256 sidecar, unless ``checksums`` is false) per (symbol,
    date) or (symbol, date, interval) under ``template``; returns the number of objects written.
    The one upload helper of the sandbox, the benchmarks and the tests."""
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except s3.exceptions.BucketAlreadyExists:
        pass

    def one(cell):
        sym, date, interval = (*cell, "1m")[:3]
        monthly = "{month}" in template  # a month's archive: date is its first day
        key = template.format(symbol=sym, date=date.isoformat(), month=date.strftime("%Y-%m"), interval=interval)
        body = kline_zip(sym, date, rows, interval=interval, month=monthly)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        if checksums:
            s3.put_object(Bucket=bucket, Key=key + ".CHECKSUM", Body=checksum(body, key))
        return 1 + checksums

    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(one, cells))


def spec(endpoint: str, bucket: str, symbols: list[str], lookback: int, **extra) -> dict:
    """A job-facing spec for the sample data."""
    target = {"endpoint": endpoint, "region": "us-east-1", "bucket": bucket, "anonymous": True,
              "keyTemplate": KEY_TEMPLATE, "checksumSuffix": ".CHECKSUM", "symbols": symbols,
              "lagDays": 1, "lookbackDays": lookback, **extra.pop("target", {})}
    return {"schedule": "0 2 * * *", "timezone": "UTC", "target": target,
            "repair": {"maxRepairsPerRun": 100, "load": "none"},
            "storage": {"duckdb": {"claimName": "ingestion-data", "path": "/data/ingestion.duckdb"}}, **extra}
