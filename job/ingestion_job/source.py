"""The S3 source: list what exists (by prefix, paginated), discover symbols, fetch objects.

Requests grow with the number of symbols (one paginated listing each), not with symbols
times dates. Every request (listing page, object, checksum sidecar) has its own retry
budget: up to ``max_attempts`` attempts and ``request_seconds`` of wall time, with
exponential backoff and full jitter on 503 SlowDown, 429, 500/502/504, timeouts and reset
connections, and ``Retry-After`` honoured when the server sends it. No budget is shared,
so a burst of throttling on other keys never leaves a request with fewer attempts (botocore's
per-client retry quota did exactly that). Nothing is started past the run's ``deadline``.
A missing bucket or a refusal (403) fails the run at once with a one-line reason.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import datetime as dt
import email.utils
import hashlib
import random
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

import httpx
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ingestion_contract.spec import Target

from . import s3
from .plan import KeyTemplate, Listed

RETRY_STATUS = {429, 500, 502, 503, 504}
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class SourceError(RuntimeError):
    """The source cannot be used at all (missing bucket, refused credentials)."""


class ObjectError(RuntimeError):
    """One object could not be fetched or verified; the gap stays open with this reason."""


class OutOfTime(ObjectError):
    """The run's time budget ran out before this request could finish."""


class VerificationError(ObjectError):
    """The object was fetched but does not verify: empty, another size than listed, or a
    checksum sidecar that is missing, empty or names another sha256 (cause verification-failed;
    an ObjectError otherwise is fetch-failed)."""


class RequestStats:
    """HTTP attempts and errors by S3 operation and status/error code, retries included."""

    def __init__(self):
        self.requests: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.bytes_fetched = 0
        self._lock = threading.Lock()

    def on_response(self, operation: str, code: str | None) -> None:
        with self._lock:
            self.requests[operation] += 1
            if code:
                self.errors[(operation, code)] += 1

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_fetched += n

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())


class RateLimit:
    """At most ``per_second`` requests a second, evenly spaced, across threads: each request
    reserves the next free slot and waits for it."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second
        self.next = time.monotonic()
        self.waited = 0.0  # seconds requests spent waiting for their slot
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Seconds until this request's slot (0 when it may go now)."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self.next)
            self.next = slot + self.interval
            self.waited += slot - now
            return slot - now


class _Failure(Exception):
    """One request gave up: its S3 code, whether it was transient, and the attempts made."""

    def __init__(self, code: str, transient: bool, attempts: int, seconds: float, out_of_time: bool = False):
        super().__init__(code)
        self.code, self.transient, self.attempts, self.seconds, self.out_of_time = code, transient, attempts, seconds, out_of_time

    def detail(self) -> str:
        if not self.transient:
            return self.code
        if not self.attempts:
            return "not started: the run's time budget ran out"
        why = "the run's time budget ran out" if self.out_of_time else f"after {self.attempts} attempt{'s' * (self.attempts > 1)}"
        return f"{self.code} {why} in {self.seconds:.1f}s"


class S3Source:
    def __init__(self, target: Target, credentials: tuple[str, str] | None = None, concurrency: int = 16,
                 connect_timeout: float = 5, read_timeout: float = 30, max_attempts: int = s3.MAX_ATTEMPTS,
                 request_seconds: float = s3.REQUEST_SECONDS, deadline: float | None = None):
        """``deadline``: a ``time.monotonic()`` instant after which no request starts or waits."""
        self.bucket = target.bucket
        self.template = KeyTemplate(target.key_template)
        self.checksum_suffix = target.checksum_suffix or None
        self.concurrency = concurrency
        self.stats = RequestStats()
        self.max_attempts = max_attempts
        self.request_seconds = request_seconds
        self.deadline = deadline
        self.rate = RateLimit(target.max_requests_per_second) if target.max_requests_per_second else None
        credentials = None if target.anonymous else credentials
        # boto3 only resolves the endpoint and region (AWS's default, or the spec's); requests go
        # over httpx with SigV4 signing, through the one retry loop of _request, and the C
        # ElementTree parses listings (botocore's modelled parser cost ~8x the request itself).
        # (with an endpoint given, boto3 would return it and the spec's region as they are: it is
        # not even built then, which saves a fifth of a second per run)
        if target.endpoint:
            self.region, endpoint = target.region, target.endpoint
        else:
            meta = s3.client(target.endpoint, target.region, credentials, target.anonymous).meta
            self.region, endpoint = meta.region_name, meta.endpoint_url
        self.base_url = f"{endpoint.rstrip('/')}/{self.bucket}"
        self.credentials = Credentials(*credentials) if credentials else None
        # a plain-http endpoint (a local S3) needs no TLS context: building one loads the CA
        # bundle, a quarter of a second of every run
        tls = {} if self.base_url.startswith("https://") else {"verify": False}
        self.http = httpx.Client(timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
                                 limits=httpx.Limits(max_connections=max(concurrency, 10)), **tls)

    # listing ------------------------------------------------------------------------------
    def check_bucket(self) -> None:
        next(self._list_pages("", max_keys=1), None)

    def discover_symbols(self) -> list[str]:
        prefix = self.template.discovery_prefix()
        symbols = []
        for page in self._list_pages(prefix, delimiter="/"):
            for cp in page.iter(f"{S3_NS}CommonPrefixes"):
                name = cp.findtext(f"{S3_NS}Prefix", "")[len(prefix):].rstrip("/")
                if name:
                    symbols.append(name)
        return sorted(symbols)

    def list_symbol(self, symbol: str) -> dict:
        """{date: Listed} of every cell of ``symbol`` upstream (all its history)."""
        out = {}
        for page in self._list_pages(self.template.list_prefix(symbol)):
            for obj in page.iter(f"{S3_NS}Contents"):
                key = obj.findtext(f"{S3_NS}Key")
                date = self.template.parse(symbol, key)
                if date is not None:
                    out[date] = Listed(key, int(obj.findtext(f"{S3_NS}Size")), obj.findtext(f"{S3_NS}ETag", "").strip('"'),
                                       _parse_time(obj.findtext(f"{S3_NS}LastModified")))
        return out

    def _list_pages(self, prefix: str, delimiter: str | None = None, max_keys: int = 1000):
        """ListObjectsV2 pages as XML elements, following continuation tokens."""
        token = None
        while True:
            params = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
            if delimiter:
                params["delimiter"] = delimiter
            if token:
                params["continuation-token"] = token
            try:
                body = self._request("ListObjectsV2", str(httpx.URL(self.base_url, params=params)))
            except _Failure as f:
                raise SourceError(s3.describe(self.bucket, "ListObjectsV2", f.code) if not f.transient
                                  else f"s3://{self.bucket} ListObjectsV2 {prefix!r}: {f.detail()}") from None
            root = ET.fromstring(body)
            yield root
            if root.findtext(f"{S3_NS}IsTruncated") != "true" or max_keys == 1:
                return
            token = root.findtext(f"{S3_NS}NextContinuationToken")

    def list_all(self, symbols: list[str]) -> dict[str, dict]:
        """Listings of all symbols with bounded concurrency."""
        with cf.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return dict(zip(symbols, pool.map(self.list_symbol, symbols)))

    # fetching -----------------------------------------------------------------------------
    def fetch(self, listed: Listed) -> tuple[bytes, str]:
        """The object's bytes and sha256, verified: not empty, the size the listing gave,
        and, when a ``checksumSuffix`` is configured, the sha256 its sidecar names
        (``<sha256 hex>  <file name>``; a missing sidecar fails the cell)."""
        if listed.size == 0:  # matches any listing and the sidecar of empty input, yet holds no data
            raise VerificationError(f"{listed.key}: empty object (0 bytes): nothing to verify")
        body = self._object(listed.key)
        if len(body) != listed.size:
            raise VerificationError(f"{listed.key}: size {len(body)} does not match the listed {listed.size}")
        digest = hashlib.sha256(body).hexdigest()
        if self.checksum_suffix:
            sidecar = self._object(listed.key + self.checksum_suffix, missing=VerificationError).decode(errors="replace").split()
            if not sidecar:
                raise VerificationError(f"{listed.key}{self.checksum_suffix}: empty checksum file")
            if sidecar[0].lower() != digest:
                raise VerificationError(f"{listed.key}: sha256 {digest} does not match the checksum file's {sidecar[0]}")
        return body, digest

    def _object(self, key: str, missing: type[ObjectError] = ObjectError) -> bytes:
        """GetObject: a bucket-level refusal fails the run; anything else fails this cell only
        (an object not found raises ``missing``)."""
        try:
            body = self._request("GetObject", f"{self.base_url}/{urllib.parse.quote(key, safe='/~')}")
        except _Failure as f:
            if f.code in s3.FATAL_CODES:
                raise SourceError(s3.describe(self.bucket, "GetObject", f.code)) from None
            kind = OutOfTime if f.out_of_time else missing if f.code in s3.MISSING_CODES else ObjectError
            raise kind(f"{key}: GetObject {f.detail()}") from None
        self.stats.add_bytes(len(body))
        return body

    # the one retry loop ---------------------------------------------------------------------
    def _request(self, operation: str, url: str) -> bytes:
        """One signed GET with its own budget: ``max_attempts`` attempts within
        ``request_seconds`` (and the run's deadline). Throttling, server errors, timeouts and
        resets are retried after ``Retry-After`` when given, else exponential backoff with full
        jitter; anything else gives up at once. Raises :class:`_Failure`."""
        t0 = time.monotonic()
        limit = t0 + self.request_seconds
        if self.deadline is not None:
            limit = min(limit, self.deadline)
        attempt = 0
        code = "not started"  # the last attempt's error code
        if self.past_deadline():
            raise _Failure("not started", True, 0, 0.0, out_of_time=True)
        while True:
            attempt += 1
            wait = None
            if self.rate is not None:
                slot = self.rate.reserve()
                if time.monotonic() + slot >= limit:  # its slot comes too late
                    raise _Failure(code, True, attempt - 1, time.monotonic() - t0, out_of_time=self.past_deadline(slot))
                time.sleep(slot)
            try:
                resp = self.http.get(url, headers=self._sign(url))
            except httpx.TransportError as e:
                code = type(e).__name__
                self.stats.on_response(operation, code)
            else:
                if resp.status_code < 300:
                    self.stats.on_response(operation, None)
                    return resp.content
                code = _error_code(resp)
                self.stats.on_response(operation, code)
                if resp.status_code not in RETRY_STATUS:
                    raise _Failure(code, False, attempt, time.monotonic() - t0)
                wait = _retry_after(resp.headers.get("retry-after"))
            if attempt >= self.max_attempts:
                raise _Failure(code, True, attempt, time.monotonic() - t0)
            if wait is None:
                wait = random.uniform(0, min(20.0, 0.05 * 2 ** attempt))
            remaining = limit - time.monotonic()
            if wait >= remaining:  # the answer would come too late: give up now, saying why
                raise _Failure(code, True, attempt, time.monotonic() - t0, out_of_time=self.past_deadline(wait))
            time.sleep(wait)

    def past_deadline(self, after: float = 0.0) -> bool:
        return self.deadline is not None and time.monotonic() + after >= self.deadline

    def _sign(self, url: str) -> dict:
        if self.credentials is None:
            return {}
        req = AWSRequest(method="GET", url=url, headers={})
        S3SigV4Auth(self.credentials, "s3", self.region).add_auth(req)
        return dict(req.headers.items())


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _error_code(resp: httpx.Response) -> str:
    try:
        return ET.fromstring(resp.content).findtext("Code") or str(resp.status_code)
    except ET.ParseError:
        return str(resp.status_code)


def _parse_time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
