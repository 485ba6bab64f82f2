"""The one S3 client setup of the job: how clients are built, retried and how failures read.

Object-store mode (``delta.py``, Delta tables on S3) builds its boto3 client here (botocore's standard
retry mode), and turns S3 failures into one-line errors of its own kind with
:func:`guarded`. The source (``source.py``) uses the client only to resolve the endpoint and
region: its requests have their own retry budget of wall time (``target.retryBudgetSeconds``).
"""

from __future__ import annotations

from collections.abc import Callable

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

MAX_ATTEMPTS = 8  # botocore's, for the store's client
# Codes that mean the bucket or the credentials cannot be used at all (not one object).
FATAL_CODES = frozenset({"NoSuchBucket", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                         "403", "AccountProblem", "InvalidBucketName"})
MISSING_CODES = frozenset({"NoSuchKey", "404"})
_HINTS = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied (403): check credentials or anonymous",
    "403": "access denied (403): check credentials or anonymous",
    "InvalidAccessKeyId": "the access key id is not known",
    "SignatureDoesNotMatch": "the secret key is wrong",
}


def client(endpoint: str | None, region: str | None, credentials: tuple[str, str] | None = None, anonymous: bool = False,
           max_attempts: int = MAX_ATTEMPTS, connect_timeout: float = 5, read_timeout: float = 30, max_connections: int = 10):
    """A boto3 S3 client: path-style addressing for a custom endpoint, unsigned when anonymous."""
    cfg = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout, read_timeout=read_timeout,
        max_pool_connections=max_connections,
        signature_version=botocore.UNSIGNED if anonymous else None,
        s3={"addressing_style": "path"} if endpoint else None,
    )
    kwargs = {"region_name": region or "us-east-1", "config": cfg}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if credentials and not anonymous:
        kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = credentials
    return boto3.session.Session().client("s3", **kwargs)


def describe(bucket: str, operation: str, code: str) -> str:
    """``s3://bucket Operation: what the code means (code)``: one line a person can act on."""
    return f"s3://{bucket} {operation}: {_HINTS.get(code, code)} ({code})"


def failure(e: ClientError | BotoCoreError) -> tuple[str, str]:
    """(code, message) of a failed call; for a client error without a code, its HTTP status."""
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = err.get("Code") or str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        return code, err.get("Message", "")
    return type(e).__name__, str(e)


def guarded(fn: Callable, error: Callable[[str, str], Exception], missing_ok: bool = False):
    """``fn()``, with any S3 failure raised as ``error(code, message)``; with ``missing_ok``
    a missing key returns None instead."""
    try:
        return fn()
    except (ClientError, BotoCoreError) as e:
        code, message = failure(e)
        if missing_ok and code in MISSING_CODES:
            return None
        raise error(code, message) from None
