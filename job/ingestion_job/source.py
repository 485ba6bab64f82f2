"""The S3 source: list what exists (by prefix, paginated), discover symbols, fetch objects.

Requests grow with the number of symbols (one paginated listing each), not with symbols
times dates. Every request (listing page, object, checksum sidecar) has its own retry
budget of wall time (``target.retryBudgetSeconds``, 120 s by default), not a count of
attempts: 503 SlowDown, 429, 500/502/504, timeouts and reset connections are retried with
exponential backoff and full jitter up to 20 s, ``Retry-After`` honoured when the server
sends it, so a burst of throttling of half a minute costs the run time, not a cell. No
budget is shared, so throttling of other keys never leaves a request with less (botocore's
per-client retry quota did exactly that). Every attempt goes through the run's
:class:`Pace`, which slows the whole run down when the source throttles it. Nothing is
started past the run's ``deadline``. A missing bucket or a refusal (403) fails the run at
once with a one-line reason.
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
from .plan import Listed, layout_of

RETRY_STATUS = {429, 500, 502, 503, 504}
BACKOFF_BASE = 0.5  # seconds: the first retry waits up to this long, each next one up to twice that
BACKOFF_CAP = 20.0  # seconds: no wait between two attempts is longer (unless Retry-After says so)
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class SourceError(RuntimeError):
    """The source cannot be used at all (missing bucket, refused credentials)."""


class ListingError(SourceError):
    """One prefix's listing gave up after its retry budget (throttling, 5xx, timeouts): that
    symbol is unknown for this run; the others go on."""


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


class Pace:
    """The run's pace towards the source, shared by every request: a rate (requests a second,
    evenly spaced; none until the source first throttles when the spec sets no cap) and a
    number of requests in flight, both adapted to the source. A throttling answer (429, 503
    SlowDown) halves both (at most once a second, so one burst of answers to requests already
    in flight counts once); every success adds back a little (about one request a second per
    second, one more in flight per that many successes), up to the spec's cap and the run's
    concurrency: additive increase, multiplicative decrease, so a throttled run stops hammering
    the host and finds its way back. With a byte cap (``target.maxBytesPerSecond``) a request
    also waits until the bytes received before it have had their time at that rate. It keeps
    what the run reports: the time requests spent waiting (for a slot, for room in flight,
    backing off), the lowest rate it came down to and the throttling answers it saw."""

    MIN_RATE = 0.5  # requests a second: never slower than one every two seconds
    CUT_EVERY = 1.0  # seconds between two decreases

    def __init__(self, cap: float | None, concurrency: int, bytes_cap: float | None = None):
        self.cap = cap
        self.bytes_cap = bytes_cap
        self.bytes_next = time.monotonic()  # the first instant the bytes received so far allow the next request
        self.rate = float(cap) if cap else None
        self.lowest = self.rate
        self.max_in_flight = self.in_flight_limit = max(1, concurrency)
        self.in_flight = 0
        self.next = time.monotonic()
        self.waited = 0.0  # for a slot or for room in flight
        self.backed_off = 0.0  # between attempts
        self.throttled = 0
        self._successes = 0
        self._last_cut = float("-inf")
        self._sent: collections.deque = collections.deque(maxlen=512)  # send times, for the rate when uncapped
        self._cond = threading.Condition()

    def acquire(self, limit: float) -> bool:
        """Wait for room in flight and for this request's slot; False (nothing taken) when
        that would pass ``limit`` (a ``time.monotonic()`` instant)."""
        t0 = time.monotonic()
        with self._cond:
            while self.in_flight >= self.in_flight_limit:
                left = limit - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
            now = time.monotonic()
            slot = max(now, self.next) if self.rate else now
            if self.bytes_cap:
                slot = max(slot, self.bytes_next)
            if slot >= limit:
                return False
            if self.rate:
                self.next = slot + 1.0 / self.rate
            self.in_flight += 1
            self._sent.append(slot)
            self.waited += slot - t0
        if slot > now:
            time.sleep(slot - now)
        return True

    def received(self, n: int) -> None:
        """``n`` bytes came in: with a byte cap, the next request waits ``n / bytes_cap`` more."""
        if self.bytes_cap and n:
            with self._cond:
                self.bytes_next = max(time.monotonic(), self.bytes_next) + n / self.bytes_cap

    def release(self, throttled: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            now = time.monotonic()
            if throttled:
                self.throttled += 1
                if now - self._last_cut >= self.CUT_EVERY:
                    self._last_cut = now
                    current = self.rate or self._measured(now)
                    self.rate = max(self.MIN_RATE, current / 2)
                    self.lowest = self.rate if self.lowest is None else min(self.lowest, self.rate)
                    self.in_flight_limit = max(1, self.in_flight_limit // 2)
                    self._successes = 0
            else:
                self._successes += 1
                if self.rate is not None:
                    self.rate += 1.0 / self.rate  # about one more request a second, each second
                    if self.cap:
                        self.rate = min(self.rate, float(self.cap))
                if self.in_flight_limit < self.max_in_flight and self._successes >= 4 * self.in_flight_limit:
                    self.in_flight_limit += 1
                    self._successes = 0
            self._cond.notify_all()

    def _measured(self, now: float) -> float:
        """Requests a second sent over the last two seconds (for a cut when there is no cap)."""
        recent = sum(1 for t in self._sent if t >= now - 2.0)
        return max(recent / 2.0, 2 * self.MIN_RATE)

    def backoff(self, seconds: float, stop=lambda: False) -> None:
        """Sleep ``seconds`` between attempts (in steps, ending early once ``stop()``)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not stop():
            time.sleep(min(left, 0.25))
        with self._cond:
            self.backed_off += seconds - max(0.0, end - time.monotonic())

    @property
    def wait_seconds(self) -> float:
        return self.waited + self.backed_off


class _Failure(Exception):
    """One request gave up: its S3 code, whether it was transient, and the attempts made."""

    def __init__(self, code: str, transient: bool, attempts: int, seconds: float, out_of_time: bool = False,
                 budget: float | None = None):
        super().__init__(code)
        self.code, self.transient, self.attempts, self.seconds, self.out_of_time = code, transient, attempts, seconds, out_of_time
        self.budget = budget

    def detail(self) -> str:
        if not self.transient:
            return self.code
        if not self.attempts:
            return "not started: the run's time budget ran out"
        tries = f"after {self.attempts} attempt{'s' * (self.attempts > 1)} in {self.seconds:.1f}s"
        if self.out_of_time:
            return f"{self.code} {tries}: the run's time budget ran out"
        if self.budget is not None:
            return f"{self.code} {tries}: its retry budget (target.retryBudgetSeconds={self.budget:g}) is spent"
        return f"{self.code} {tries}"


class S3Source:
    def __init__(self, target: Target, credentials: tuple[str, str] | None = None, concurrency: int = 16,
                 connect_timeout: float = 5, read_timeout: float = 30, max_attempts: int | None = None,
                 request_seconds: float | None = None, deadline: float | None = None):
        """``deadline``: a ``time.monotonic()`` instant after which no request starts or waits;
        ``request_seconds``: each request's retry budget (default: the spec's
        ``retryBudgetSeconds``); ``max_attempts``: a cap on attempts too (tests; none by default)."""
        self.bucket = target.bucket
        self.template = layout_of(target)  # a KeyTemplate, or a Layout with target.archive
        self.checksum_suffix = target.checksum_suffix or None
        self.concurrency = concurrency
        self.stats = RequestStats()
        self.max_attempts = max_attempts
        self.request_seconds = float(request_seconds or target.retry_budget_seconds)
        self.deadline = deadline
        self.pace = Pace(target.max_requests_per_second, concurrency, target.max_bytes_per_second)
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
                if not f.transient:
                    raise SourceError(s3.describe(self.bucket, "ListObjectsV2", f.code)) from None
                raise ListingError(f"s3://{self.bucket} ListObjectsV2 {prefix!r}: {f.detail()}") from None
            root = ET.fromstring(body)
            yield root
            if root.findtext(f"{S3_NS}IsTruncated") != "true" or max_keys == 1:
                return
            token = root.findtext(f"{S3_NS}NextContinuationToken")

    def list_all(self, symbols: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
        """Listings of all symbols with bounded concurrency, and the symbols whose listing gave
        up after its retry budget, with why (a refused bucket or credentials still raise)."""
        def one(symbol: str):
            try:
                return self.list_symbol(symbol), None
            except ListingError as e:
                return None, str(e)

        with cf.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            results = dict(zip(symbols, pool.map(one, symbols)))
        return ({s: listed for s, (listed, _) in results.items() if listed is not None},
                {s: why for s, (_, why) in results.items() if why is not None})

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
        """One signed GET with its own retry budget: ``request_seconds`` of wall time (and the
        run's deadline), not a count of attempts. Throttling, server errors, timeouts and
        resets are retried after ``Retry-After`` when given, else exponential backoff with full
        jitter (up to BACKOFF_CAP); anything else gives up at once. Every attempt goes through
        the run's :class:`Pace`. Raises :class:`_Failure`."""
        t0 = time.monotonic()
        limit = t0 + self.request_seconds
        if self.deadline is not None:
            limit = min(limit, self.deadline)
        attempt = 0
        code = "not started"  # the last attempt's error code
        if self.past_deadline():
            raise _Failure("not started", True, 0, 0.0, out_of_time=True)

        def give_up(out_of_time: bool, spent: bool = True) -> _Failure:
            return _Failure(code, True, attempt, time.monotonic() - t0, out_of_time=out_of_time,
                            budget=self.request_seconds if spent else None)

        while True:
            if self.past_deadline():  # the run's budget ran out, or it was asked to stop
                raise give_up(True)
            if not self.pace.acquire(limit):  # no room or no slot before its budget ends
                raise give_up(self.past_deadline(1.0))
            attempt += 1
            wait, throttled = None, False
            try:
                resp = self.http.get(url, headers=self._sign(url))
            except httpx.TransportError as e:
                code = type(e).__name__
                self.stats.on_response(operation, code)
            else:
                if resp.status_code < 300:
                    self.stats.on_response(operation, None)
                    self.pace.received(len(resp.content))
                    self.pace.release(False)
                    return resp.content
                code = _error_code(resp)
                self.stats.on_response(operation, code)
                if resp.status_code not in RETRY_STATUS:
                    self.pace.release(False)
                    raise _Failure(code, False, attempt, time.monotonic() - t0)
                throttled = resp.status_code == 429 or code == "SlowDown"
                wait = _retry_after(resp.headers.get("retry-after"))
            self.pace.release(throttled)
            if self.max_attempts is not None and attempt >= self.max_attempts:
                raise give_up(False, spent=False)
            # full jitter, and at least what the server asked for (Retry-After)
            wait = max(wait or 0.0, random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))))
            if time.monotonic() + wait >= limit:  # the next attempt would start too late: give up now, saying why
                raise give_up(self.past_deadline(wait))
            self.pace.backoff(wait, stop=self.past_deadline)

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
