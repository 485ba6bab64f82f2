"""The S3 source: list what exists (by prefix, paginated), discover symbols, fetch objects.

Requests grow with the number of symbols (one paginated listing each), not with symbols
times dates. Transient failures (503 SlowDown, 429, 500, timeouts, reset connections)
are retried by botocore's standard retry mode: exponential backoff with full jitter. A
missing bucket or a refusal (403) fails the run at once with a one-line reason.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import datetime as dt
import hashlib
import random
import threading
import time
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


class S3Source:
    def __init__(self, target: Target, credentials: tuple[str, str] | None = None, concurrency: int = 16,
                 connect_timeout: float = 5, read_timeout: float = 30, max_attempts: int = s3.MAX_ATTEMPTS):
        self.bucket = target.bucket
        self.template = KeyTemplate(target.key_template)
        self.checksum_suffix = target.checksum_suffix or None
        self.concurrency = concurrency
        self.stats = RequestStats()
        credentials = None if target.anonymous else credentials
        self.client = s3.client(target.endpoint, target.region, credentials, target.anonymous, max_attempts,
                                connect_timeout, read_timeout, max_connections=max(concurrency, 10))
        self.client.meta.events.register("needs-retry.s3", self._on_attempt)
        # Listing fast path: botocore's modelled XML parser costs ~8x the request itself for a
        # 1,000-key page; listings go over httpx and the C ElementTree instead (same signing).
        self.region = self.client.meta.region_name
        self.base_url = f"{self.client.meta.endpoint_url.rstrip('/')}/{self.bucket}"
        self.credentials = Credentials(*credentials) if credentials else None
        self.max_attempts = max_attempts
        self.http = httpx.Client(timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
                                 limits=httpx.Limits(max_connections=max(concurrency, 10)))

    # accounting ---------------------------------------------------------------------------
    def _on_attempt(self, response, operation, attempts, caught_exception, **_):
        """Called after every HTTP attempt; counts retried failures too."""
        if caught_exception is not None:
            self.stats.on_response(operation.name, type(caught_exception).__name__)
        elif response is not None:
            http, parsed = response
            status = http.status_code
            code = None
            if status >= 300:
                code = (parsed.get("Error") or {}).get("Code") or str(status)
            self.stats.on_response(operation.name, code)
        return None  # let the retry handler decide

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
            root = ET.fromstring(self._get("ListObjectsV2", params))
            yield root
            if root.findtext(f"{S3_NS}IsTruncated") != "true" or max_keys == 1:
                return
            token = root.findtext(f"{S3_NS}NextContinuationToken")

    def _get(self, operation: str, params: dict) -> bytes:
        """One signed GET with retries (exponential backoff, full jitter) on throttling,
        server errors, timeouts and reset connections; a refusal raises SourceError."""
        url = str(httpx.URL(self.base_url, params=params))
        for attempt in range(1, self.max_attempts + 1):
            headers = self._sign(url)
            try:
                resp = self.http.get(url, headers=headers)
            except httpx.TransportError as e:
                self.stats.on_response(operation, type(e).__name__)
                if attempt == self.max_attempts:
                    raise SourceError(f"s3://{self.bucket} {operation}: {type(e).__name__} after {attempt} attempts") from None
            else:
                if resp.status_code < 300:
                    self.stats.on_response(operation, None)
                    return resp.content
                code = _error_code(resp)
                self.stats.on_response(operation, code)
                if resp.status_code not in RETRY_STATUS or attempt == self.max_attempts:
                    raise SourceError(s3.describe(self.bucket, operation, code))
            time.sleep(random.uniform(0, min(20.0, 0.05 * 2 ** attempt)))
        raise AssertionError("unreachable")

    def _sign(self, url: str) -> dict:
        if self.credentials is None:
            return {}
        req = AWSRequest(method="GET", url=url, headers={})
        S3SigV4Auth(self.credentials, "s3", self.region).add_auth(req)
        return dict(req.headers.items())

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
            raise ObjectError(f"{listed.key}: empty object (0 bytes): nothing to verify")
        body = self._object(listed.key)
        if len(body) != listed.size:
            raise ObjectError(f"{listed.key}: size {len(body)} does not match the listed {listed.size}")
        digest = hashlib.sha256(body).hexdigest()
        if self.checksum_suffix:
            sidecar = self._object(listed.key + self.checksum_suffix).decode(errors="replace").split()
            if not sidecar:
                raise ObjectError(f"{listed.key}{self.checksum_suffix}: empty checksum file")
            if sidecar[0].lower() != digest:
                raise ObjectError(f"{listed.key}: sha256 {digest} does not match the checksum file's {sidecar[0]}")
        return body, digest

    def _object(self, key: str) -> bytes:
        def error(code: str, message: str) -> Exception:
            if code in s3.FATAL_CODES:
                return SourceError(s3.describe(self.bucket, "GetObject", code))
            return ObjectError(f"{key}: {code or 'error'} {message}".strip())

        body = s3.guarded(lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read(), error)
        self.stats.add_bytes(len(body))
        return body


def _error_code(resp: httpx.Response) -> str:
    try:
        return ET.fromstring(resp.content).findtext("Code") or str(resp.status_code)
    except ET.ParseError:
        return str(resp.status_code)


def _parse_time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
