"""Failpoints: named spots where a test stops this process, to prove what a crash at exactly
that spot leaves behind (as etcd's gofail and TiKV's fail-rs do).

``INGESTION_FAILPOINTS=store.commit`` (comma-separated names) makes the process log
``event=failpoint name=store.commit`` and pause there for an hour, for the test to SIGKILL
it. Unset (always, outside tests) a failpoint costs one environment lookup.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("ingestion_job")


def hit(name: str) -> None:
    if name in os.environ.get("INGESTION_FAILPOINTS", "").split(","):
        log.warning("event=failpoint name=%s pausing for the test to kill this process", name)
        for h in logging.getLogger().handlers + log.handlers:
            h.flush()
        time.sleep(3600)
