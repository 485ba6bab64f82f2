"""One timer for every resource's next look: a heap of due times and one thread.

``status.nextRuns`` must move on when a tick passes with no Job event, for example when
Forbid or the misfire window skipped it, and a resource blocked by something outside it
(a foreign CronJob, an admission refusal, a backfill's missing schedule) must look again.
Nothing polls. Each reconcile tells the timer when its resource is next due (keys name
the resource: ``(kind, namespace, name)``). The thread sleeps until the earliest due time,
plus a second so the tick has passed, and hands that key on: to the operator's work queue,
the same as watch events (``submit``), or to ``fire`` on the timer's own thread. A quiet
operator with a thousand schedules wakes once per tick, not once per schedule per interval.
"""

from __future__ import annotations

import datetime as dt
import heapq
import threading
from collections.abc import Callable

Key = tuple  # (kind, namespace, name) in the operator; ``fire`` receives its parts


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class NextRunTimer:
    RETRY = dt.timedelta(seconds=15)

    def __init__(self, fire: Callable[..., None], clock: Callable[[], dt.datetime] = _utcnow, grace: float = 1.0):
        self._fire = fire
        self._submit: Callable | None = None
        self._clock = clock
        self._grace = dt.timedelta(seconds=grace)
        self._due: dict[Key, dt.datetime] = {}
        self._heap: list[tuple[dt.datetime, Key]] = []  # may hold stale entries; _due is the truth
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def set(self, key: Key, when: dt.datetime | None) -> None:
        """Reconcile ``key`` just after ``when``; None forgets it (deleted, disabled, invalid)."""
        with self._cond:
            if when is None:
                self._due.pop(key, None)
                return
            if self._due.get(key) == when:
                return
            self._due[key] = when
            heapq.heappush(self._heap, (when, key))
            self._cond.notify()

    def pending(self) -> dict[Key, dt.datetime]:
        with self._cond:
            return dict(self._due)

    def start(self, submit: Callable[[Key], None] | None = None) -> None:
        """Start the thread; with ``submit``, each due key is handed to it (and it retries)."""
        self._submit = submit
        with self._cond:
            self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="next-run-timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _next_due(self) -> Key | None:
        """Wait for the earliest due key and take it off the timer; None once stopped."""
        with self._cond:
            while not self._stopped:
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded or forgotten
                if not self._heap:
                    self._cond.wait()
                    continue
                when, key = self._heap[0]
                wait = (when + self._grace - self._clock()).total_seconds()
                if wait <= 0:
                    heapq.heappop(self._heap)
                    del self._due[key]
                    return key
                self._cond.wait(timeout=wait)
            return None

    def _loop(self) -> None:
        while (key := self._next_due()) is not None:
            if self._submit is None:
                self._run(key)
            else:
                self._submit(key)

    def _run(self, key: Key) -> None:
        try:
            self._fire(*key)
        except Exception:  # reconcile logs and counts its own errors; try this one again later
            self.set(key, self._clock() + self.RETRY)
