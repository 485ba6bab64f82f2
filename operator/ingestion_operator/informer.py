"""The watches that grow with the fleet, and the queue their events feed.

kopf handles each watch event with a task per object, a batching window, a worker per object
and a handler invocation, echoes of our own writes included: with 1,000 new schedules (3,000
events, two thirds of them echoes) that machinery cost more CPU than the reconciles it fed
(bench/results-scale.md). The three kinds whose events grow with the number of schedules
(IngestionSchedules, their CronJobs, and the IngestionUpstreams their shares come from) are
therefore followed here, as client-go's informers follow them: :class:`Informer` lists, then
watches from the list's resourceVersion (bookmarks on; a 410 lists again, and an object gone
meanwhile is delivered as DELETED), and hands each event to a callback on its own thread. An
echo costs a JSON decode and a dictionary lookup. kopf keeps the operator's lifecycle, Jobs
and backfills.

:class:`WorkQueue` runs the reconciles: one at a time per key (a resource), on a fixed pool of
threads, first come first served; what arrives for a key while its work waits merges into
that work (:meth:`Work.merged`), so a burst of events costs one reconcile and an older body
never runs after a newer one.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from . import metrics

log = logging.getLogger("ingestion_operator")

Key = tuple  # (kind, namespace, name): the same keys as the timer's


@dataclasses.dataclass(frozen=True)
class Work:
    """What a key's next run is to do. ``trigger``: what woke it (schedule, cronjob, job, upstream,
    timer) or ``deleted``; ``body``: the resource as its newest event carried it (None: read it);
    ``forget``: the resource was deleted before this work, forget the old one first;
    ``echoes``: the watch events (kind, namespace, name, resourceVersion) this work is all
    about, when nothing else asked for it. An event can arrive before the write it echoes has
    returned (the watch is that fast), so whether it was our own is asked again when the work
    runs (:meth:`.Reconciler.work`), when the write has long been recorded."""

    trigger: str
    body: dict | None = None
    forget: bool = False
    echoes: tuple = ()

    def merged(self, new: Work) -> Work:
        """This waiting work and ``new``, as one. A deletion drops what waited; work after a
        deletion forgets first. The newest body wins; the first trigger names the run, except
        that a timer's (a run that reads its CronJob instead of trusting the cache) is kept."""
        if new.trigger == "deleted":
            return Work("deleted", None, True)
        if self.trigger == "deleted":
            return Work(new.trigger, new.body, True)
        trigger = "timer" if "timer" in (self.trigger, new.trigger) else self.trigger
        echoes = self.echoes + new.echoes if self.echoes and new.echoes else ()  # anything else: it must run
        return Work(trigger, new.body if new.body is not None else self.body, self.forget or new.forget, echoes)


class WorkQueue:
    def __init__(self, run: Callable[[Key, Work], None], workers: int, name: str = "reconcile"):
        self._run = run
        self._workers = max(1, workers)
        self._name = name
        self._pending: dict[Key, Work] = {}
        self._ready: collections.deque[Key] = collections.deque()  # pending keys not running now, oldest first
        self._active: set[Key] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def put(self, key: Key, work: Work) -> None:
        with self._cond:
            if self._stopped:
                return
            waiting = self._pending.get(key)
            if waiting is not None:
                self._pending[key] = waiting.merged(work)
                return
            self._pending[key] = work
            if key not in self._active:  # a running key is put back in line when it ends
                self._ready.append(key)
                self._cond.notify()

    def start(self) -> None:
        """Start the workers (work put before waits until then)."""
        for i in range(self._workers):
            t = threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """No more work starts; what is running ends on its own (waited for up to ``timeout``)."""
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._ready.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def depth(self) -> int:
        with self._cond:
            return len(self._pending)

    def pending(self) -> dict[Key, Work]:
        """The work waiting (not running), by key."""
        with self._cond:
            return dict(self._pending)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._ready:
                    self._cond.wait()
                if self._stopped:
                    return
                key = self._ready.popleft()
                work = self._pending.pop(key)
                self._active.add(key)
            try:
                self._run(key, work)
            except Exception:  # the runner logs and retries its own; this only keeps the worker alive
                log.exception("event=work_error kind=%s namespace=%s name=%s trigger=%s", *key, work.trigger)
            finally:
                with self._cond:
                    self._active.discard(key)
                    if key in self._pending:
                        self._ready.append(key)
                        self._cond.notify()


class Informer:
    """One kind's objects, in each watched namespace (or cluster-wide): listed, then watched.
    ``on_event(type, obj)`` gets every object listed (type None, as kopf names a listing) and
    every change (ADDED, MODIFIED, DELETED), on this informer's thread, in the watch's order.
    After a re-list an object no longer there is delivered as DELETED, with the metadata last
    seen (namespace, name, uid, labels)."""

    SERVER_TIMEOUT = 300  # seconds a watch lasts before the API server ends it (then it resumes)
    NOT_SERVED_RETRY = 30  # seconds between asks for a kind the API server does not serve
    PAGE = 500
    BACKOFF = (0.5, 30.0)

    def __init__(self, api_client: client.ApiClient, plural: str, api_version: str, kind: str, namespaces: list[str] | None,
                 on_event: Callable[[str | None, dict], None], label_selector: str | None = None):
        self.api = api_client
        self.plural, self.api_version, self.kind = plural, api_version, kind
        self.namespaces = namespaces or [None]
        self.on_event = on_event
        self.label_selector = label_selector
        self._stop = threading.Event()
        self._listed: set[str | None] = set()
        self._missing: set[str | None] = set()  # namespaces where the kind is not served (logged once)
        self._listed_cond = threading.Condition()
        self._responses: set = set()
        self._guard = threading.Lock()

    def path(self, namespace: str | None) -> str:
        base = "/apis/" + self.api_version if "/" in self.api_version else "/api/" + self.api_version
        return f"{base}/namespaces/{namespace}/{self.plural}" if namespace else f"{base}/{self.plural}"

    def start(self) -> None:
        for ns in self.namespaces:
            threading.Thread(target=self._follow, args=(ns,), name=f"watch-{self.plural}-{ns or 'all'}", daemon=True).start()

    def listed(self) -> bool:
        """Every namespace listed once (and each listed object delivered)."""
        with self._listed_cond:
            return len(self._listed) == len(self.namespaces)

    def wait_listed(self, timeout: float) -> bool:
        with self._listed_cond:
            return self._listed_cond.wait_for(lambda: len(self._listed) == len(self.namespaces) or self._stop.is_set(), timeout) \
                and not self._stop.is_set()

    def stop(self) -> None:
        """End every thread: an open watch is shut at once, a delivery under way finishes."""
        self._stop.set()
        with self._listed_cond:
            self._listed_cond.notify_all()
        with self._guard:
            responses = list(self._responses)
        for resp in responses:
            try:
                resp.shutdown()
            except Exception:  # already closed
                pass

    # -- one namespace's thread ---------------------------------------------------------------
    def _request(self, namespace: str | None, timeout: tuple[float, float], **query):
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        return self.api.call_api(self.path(namespace), "GET", query_params=list(query.items()),
                                 header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
                                 _preload_content=False, _request_timeout=timeout)

    def _deliver(self, type_: str | None, obj: dict) -> None:
        try:
            self.on_event(type_, obj)
        except Exception:  # one bad object must not end the watch of all the others
            meta = obj.get("metadata") or {}
            log.exception("event=watch_handler_error kind=%s namespace=%s name=%s type=%s", self.kind, meta.get("namespace"),
                          meta.get("name"), type_)

    def _list(self, namespace: str | None, known: dict) -> str:
        """List (in pages) and deliver; returns the list's resourceVersion."""
        items, cont = [], None
        while True:
            query = {"limit": str(self.PAGE)}
            if cont:
                query["continue"] = cont
            page = json.loads(self._request(namespace, (10, 60), **query).data)
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                break
        now = {}
        for obj in items:
            obj.setdefault("apiVersion", self.api_version)  # a list's items carry neither
            obj.setdefault("kind", self.kind)
            meta = obj["metadata"]
            now[(meta.get("namespace"), meta["name"])] = {k: meta.get(k) for k in ("namespace", "name", "uid", "labels")}
        for key in [k for k in known if k not in now]:  # deleted while the watch was away
            self._deliver("DELETED", {"apiVersion": self.api_version, "kind": self.kind, "metadata": known.pop(key)})
        for obj in items:
            self._deliver(None, obj)
        known.clear()
        known.update(now)
        if self._mark_listed(namespace) or namespace in self._missing:
            self._missing.discard(namespace)
            log.info("event=watch_listed kind=%s namespace=%s count=%d", self.kind, namespace or "*", len(items))
        return page["metadata"]["resourceVersion"]

    def _mark_listed(self, namespace: str | None) -> bool:
        """Whether this was the namespace's first list."""
        with self._listed_cond:
            first = namespace not in self._listed
            self._listed.add(namespace)
            self._listed_cond.notify_all()
            return first

    def _not_served(self, namespace: str | None) -> None:
        """A kind the API server does not serve holds nothing: it counts as listed (empty), so
        the operator goes on without it, and is asked again every NOT_SERVED_RETRY seconds
        (once its CRD is applied, it is listed and followed)."""
        if namespace not in self._missing:
            self._missing.add(namespace)
            log.warning("event=watch_not_served kind=%s namespace=%s retry_seconds=%d: the API server does not serve "
                        "%s (is its CRD applied?); going on without it", self.kind, namespace or "*", self.NOT_SERVED_RETRY,
                        self.plural)
        self._mark_listed(namespace)

    def _watch(self, namespace: str | None, at: dict, known: dict) -> None:
        """Follow changes from ``at["rv"]`` until the API server ends the watch, keeping there
        the last resourceVersion seen (so a broken stream resumes from it); None when it is too
        old (410: list again)."""
        resp = self._request(namespace, (10, self.SERVER_TIMEOUT + 30), watch="1", resourceVersion=at["rv"],
                             allowWatchBookmarks="true", timeoutSeconds=str(self.SERVER_TIMEOUT))
        with self._guard:
            self._responses.add(resp)
        try:
            buf = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                if self._stop.is_set():
                    return
                *lines, buf = (buf + chunk).split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    type_, obj = event.get("type"), event.get("object") or {}
                    if type_ == "ERROR":
                        if obj.get("code") == 410:
                            at["rv"] = None
                            return
                        raise ApiException(status=obj.get("code") or 0, reason=obj.get("message") or "watch error")
                    meta = obj.get("metadata") or {}
                    at["rv"] = meta.get("resourceVersion") or at["rv"]
                    if type_ == "BOOKMARK":
                        continue
                    key = (meta.get("namespace"), meta.get("name"))
                    if type_ == "DELETED":
                        known.pop(key, None)
                    else:
                        known[key] = {k: meta.get(k) for k in ("namespace", "name", "uid", "labels")}
                    self._deliver(type_, obj)
        finally:
            with self._guard:
                self._responses.discard(resp)
            resp.release_conn()

    def _follow(self, namespace: str | None) -> None:
        at, known, delay = {"rv": None}, {}, self.BACKOFF[0]
        while not self._stop.is_set():
            try:
                if at["rv"] is None:
                    at["rv"] = self._list(namespace, known)
                began = time.monotonic()
                self._watch(namespace, at, known)
                if at["rv"] is None:
                    log.info("event=watch_relist kind=%s namespace=%s reason=expired", self.kind, namespace or "*")
                    continue
                if time.monotonic() - began > 1.0:  # a watch ended by its timeout: resume at once
                    delay = self.BACKOFF[0]
                    continue
                error = "the watch ended at once"  # an API server going away: do not spin
            except ApiException as e:
                if e.status == 410:
                    at["rv"] = None
                if e.status == 404 and at["rv"] is None:  # the kind is not served: its CRD is not applied (yet)
                    self._not_served(namespace)
                    self._stop.wait(self.NOT_SERVED_RETRY)
                    continue
                error = f"{e.status} {e.reason}"
            except (HTTPError, OSError, ValueError) as e:
                error = repr(e)
            except Exception as e:  # anything else: this thread is the kind's only watch, it must not end
                log.exception("event=watch_error kind=%s namespace=%s", self.kind, namespace or "*")
                error = repr(e)
            if self._stop.is_set():
                return
            metrics.WATCH_ERRORS.labels(self.kind).inc()
            log.warning("event=watch_retry kind=%s namespace=%s error=%r retry_seconds=%.1f", self.kind, namespace or "*",
                        error, delay)
            self._stop.wait(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.BACKOFF[1])
