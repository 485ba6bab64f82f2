"""The S3 source: list what exists (by prefix, paginated), discover symbols, fetch objects.

Requests grow with the number of symbols (one paginated listing each), not with symbols
times dates. Transient failures (503 SlowDown, 429, 500, timeouts, reset connections)
are retried by botocore's standard retry mode: exponential backoff with full jitter. A
missing bucket or a refusal (403) fails the run at once with a one-line reason.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import threading

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .plan import KeyTemplate, Listed

MAX_ATTEMPTS = 8
FATAL_CODES = {"NoSuchBucket", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
               "403", "AccountProblem", "InvalidBucketName"}


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
    def __init__(self, target: dict, credentials: tuple[str, str] | None = None, concurrency: int = 16,
                 connect_timeout: float = 5, read_timeout: float = 30, max_attempts: int = MAX_ATTEMPTS):
        self.bucket = target["bucket"]
        self.template = KeyTemplate(target["keyTemplate"])
        self.checksum_suffix = target.get("checksumSuffix") or None
        self.concurrency = concurrency
        self.stats = RequestStats()
        cfg = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            max_pool_connections=max(concurrency, 10),
            signature_version=botocore.UNSIGNED if target.get("anonymous") else None,
            s3={"addressing_style": "path"} if target.get("endpoint") else None,
        )
        kwargs = {"region_name": target.get("region") or "us-east-1", "config": cfg}
        if target.get("endpoint"):
            kwargs["endpoint_url"] = target["endpoint"]
        if credentials and not target.get("anonymous"):
            kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = credentials
        self.client = boto3.session.Session().client("s3", **kwargs)
        self.client.meta.events.register("needs-retry.s3", self._on_attempt)

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
        self._call(lambda: self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1))

    def discover_symbols(self) -> list[str]:
        prefix = self.template.discovery_prefix()
        symbols = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
        for page in self._call(lambda: list(pages)):
            for cp in page.get("CommonPrefixes") or []:
                name = cp["Prefix"][len(prefix):].rstrip("/")
                if name:
                    symbols.append(name)
        return sorted(symbols)

    def list_symbol(self, symbol: str) -> dict:
        """{date: Listed} of every cell of ``symbol`` upstream (all its history)."""
        prefix = self.template.list_prefix(symbol)
        out = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix,
                                                                 PaginationConfig={"PageSize": 1000}))):
            for obj in page.get("Contents") or []:
                date = self.template.parse(symbol, obj["Key"])
                if date is not None:
                    out[date] = Listed(obj["Key"], int(obj["Size"]), obj.get("ETag", "").strip('"'), obj["LastModified"])
        return out

    def list_all(self, symbols: list[str]) -> dict[str, dict]:
        """Listings of all symbols with bounded concurrency."""
        with cf.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return dict(zip(symbols, pool.map(self.list_symbol, symbols)))

    # fetching -----------------------------------------------------------------------------
    def fetch(self, listed: Listed) -> tuple[bytes, str]:
        """The object's bytes and sha256, verified against the listing's size and, when
        configured, the checksum sidecar (``<sha256 hex>  <file name>``)."""
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
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            body = resp["Body"].read()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket",) or code in FATAL_CODES and code not in ("NoSuchKey",):
                raise SourceError(self._reason(e)) from None
            raise ObjectError(f"{key}: {code or 'error'} {e.response.get('Error', {}).get('Message', '')}".strip()) from None
        except BotoCoreError as e:
            raise ObjectError(f"{key}: {e}") from None
        self.stats.add_bytes(len(body))
        return body

    def _call(self, fn):
        try:
            return fn()
        except ClientError as e:
            raise SourceError(self._reason(e)) from None
        except BotoCoreError as e:
            raise SourceError(f"s3://{self.bucket}: {e} (after {MAX_ATTEMPTS} attempts)") from None

    def _reason(self, e: ClientError) -> str:
        err = e.response.get("Error", {})
        code = err.get("Code") or str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        hints = {"NoSuchBucket": "the bucket does not exist", "AccessDenied": "access denied (403): check credentials or anonymous",
                 "403": "access denied (403): check credentials or anonymous",
                 "InvalidAccessKeyId": "the access key id is not known", "SignatureDoesNotMatch": "the secret key is wrong"}
        return f"s3://{self.bucket} {e.operation_name}: {hints.get(code, code)} ({code})"
