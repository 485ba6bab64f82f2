"""Failpoints: named spots where a test stops this process, to prove what a crash at exactly
that spot leaves behind (as etcd's gofail and TiKV's fail-rs do).

``INGESTION_FAILPOINTS=store.commit`` (comma-separated names) makes the process log
``event=failpoint name=store.commit`` and pause there for an hour, for the test to SIGKILL
it. With ``INGESTION_FAILPOINT_RESUME=<file>`` the pause ends as soon as that file exists
(a test lines several processes up at one spot, then lets them all go at once). Unset
(always, outside tests) a failpoint costs one environment lookup.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("ingestion_job")


def hit(name: str) -> None:
    if name in os.environ.get("INGESTION_FAILPOINTS", "").split(","):
        resume = os.environ.get("INGESTION_FAILPOINT_RESUME")
        if resume and os.path.exists(resume):
            return
        log.warning("event=failpoint name=%s pausing for the test to %s", name,
                    f"create {resume}" if resume else "kill this process")
        for h in logging.getLogger().handlers + log.handlers:
            h.flush()
        until = time.monotonic() + 3600
        while time.monotonic() < until and not (resume and os.path.exists(resume)):
            time.sleep(0.05 if resume else 1)
