"""Leader election through a ``coordination.k8s.io/v1`` Lease, as client-go does it.

One replica holds the Lease and reconciles; the others wait and reconcile nothing (they
do not even watch). The rules are client-go's ``leaderelection`` package, with its
defaults (lease 15 s, renew deadline 10 s, retry every 2 s):

- A candidate takes the Lease when nobody holds it, or when the holder's record has not
  changed for ``lease_duration`` by the candidate's *own* clock (the time it observed the
  change, not the renewTime written in the Lease, so clock skew between nodes does not
  matter).
- The leader renews every ``retry_period`` (one update, optimistically, while its Lease is
  valid; a read first only when that update is refused). If no renewal succeeds for ``renew_deadline``
  it stops leading at once: the process exits and Kubernetes restarts it as a standby.
  As ``renew_deadline`` < ``lease_duration``, the old leader has stopped before any
  standby may take over.
- A leader that stops cleanly (SIGTERM) releases the Lease, so a standby takes over on
  its next retry instead of waiting for the Lease to expire.

Every write is an update with the resourceVersion that was read, so two candidates that
race for an expired Lease cannot both win: the loser gets a 409 and stays a standby.
The pure rule is :func:`decide`; :class:`LeaderElector` is the shell around it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from ingestion_contract import first_line
from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("ingestion_operator")


@dataclasses.dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self):
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs retry period < renew deadline < lease duration "
                             f"(got {self.retry_period:g} s, {self.renew_deadline:g} s, {self.lease_duration:g} s)")


@dataclasses.dataclass(frozen=True)
class Record:
    """What a Lease says; compared whole to notice that the holder is still renewing."""

    holder: str = ""
    lease_duration: int = 0
    acquire_time: dt.datetime | None = None
    renew_time: dt.datetime | None = None
    transitions: int = 0

    @classmethod
    def of(cls, spec: client.V1LeaseSpec) -> "Record":
        return cls(spec.holder_identity or "", spec.lease_duration_seconds or 0, spec.acquire_time, spec.renew_time,
                   spec.lease_transitions or 0)


def decide(record: Record | None, observed_at: float | None, now: float, me: str, lease_duration: float) -> str:
    """``"create"`` (no Lease yet), ``"take"`` (free or expired: write ourselves in),
    ``"renew"`` (ours) or ``"wait"`` (another holder's, still fresh).

    ``observed_at`` is when this candidate last saw ``record`` change, on its own
    monotonic clock; ``now`` is the same clock."""
    if record is None:
        return "create"
    if record.holder == me:
        return "renew"
    if not record.holder:
        return "take"
    if observed_at is not None and now < observed_at + lease_duration:
        return "wait"
    return "take"


def single_attempt(api_client: client.ApiClient) -> client.ApiClient:
    """A client on the same configuration that makes one attempt per request (urllib3
    otherwise retries three times, which would hide an outage behind three timeouts)."""
    cfg = copy.copy(api_client.configuration)
    cfg.retries = False
    return client.ApiClient(cfg)


def _micro(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, identity: str,
                 timing: Timing = Timing(), monotonic: Callable[[], float] = time.monotonic,
                 on_change: Callable[[bool], None] = lambda leading: None):
        self.api = client.CoordinationV1Api(single_attempt(api_client))  # the loops below decide when to retry
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing
        self._monotonic = monotonic
        self._on_change = on_change
        self._observed: Record | None = None
        self._observed_at: float | None = None
        self._resource_version: str | None = None
        self.leading = False
        self.last_renewed: float | None = None  # monotonic time of the last successful write
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one attempt ------------------------------------------------------------------
    def try_acquire_or_renew(self, timeout: float | None = None) -> bool:
        """One step of the protocol; True when this candidate holds the Lease afterwards.
        ``timeout`` bounds each request (a leader passes what is left of its renew deadline).

        A leader whose Lease is still valid by its own clock first renews optimistically, as
        client-go's fast path does: one update with the resourceVersion of its own last write,
        no read (a quiet operator's only requests are its renewals). Should anybody have written
        the Lease since, the update is refused (409) and the step goes the slow way: read, decide."""
        timeout = timeout or min(5.0, self.timing.renew_deadline / 2)
        if (self.leading and self._observed is not None and self._observed.holder == self.identity and self._resource_version
                and self.last_renewed is not None and self._monotonic() < self.last_renewed + self.timing.lease_duration):
            try:
                return self._write("renew", self._observed, timeout)
            except ApiException as e:
                if e.status != 409:
                    raise
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        except ApiException as e:
            if e.status != 404:
                raise
            lease = None
        now_mono = self._monotonic()
        record = None
        if lease is not None:
            record = Record.of(lease.spec)
            if record != self._observed:
                self._observed, self._observed_at = record, now_mono
            self._resource_version = lease.metadata.resource_version
        action = decide(record, self._observed_at, now_mono, self.identity, self.timing.lease_duration)
        if action == "wait":
            return False
        try:
            return self._write(action, record, timeout)
        except ApiException as e:
            if e.status == 409:
                return False  # somebody else wrote first (or created it): read again next time
            raise

    def _write(self, action: str, record: Record | None, timeout: float) -> bool:
        """Create, renew or take the Lease (``record``: what it said), with the resourceVersion
        last seen; an ApiException (409: somebody wrote since) goes to the caller."""
        now = dt.datetime.now(dt.timezone.utc)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.timing.lease_duration),
                "renewTime": _micro(now)}
        if action == "create":
            spec.update(acquireTime=_micro(now), leaseTransitions=0)
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            out = self.api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
        else:
            if action == "renew":
                spec.update(acquireTime=_micro(record.acquire_time) if record.acquire_time else _micro(now),
                            leaseTransitions=record.transitions)
            else:  # take over: a new term
                spec.update(acquireTime=_micro(now), leaseTransitions=record.transitions + 1)
            body = {"metadata": {"name": self.name, "namespace": self.namespace,
                                 "resourceVersion": self._resource_version}, "spec": spec}
            out = self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=timeout)
        self._observed = Record.of(out.spec)
        self._observed_at = self._monotonic()
        self._resource_version = out.metadata.resource_version
        self.last_renewed = self._observed_at
        return True

    # -- the loops --------------------------------------------------------------------
    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this candidate leads (True) or ``stop`` is set (False)."""
        stop = stop or self._stop
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    self._set_leading(True)
                    return True
            except Exception as e:  # the API server is unreachable or refused: keep trying
                log.warning("event=lease_error lease=%s/%s error=%r", self.namespace, self.name, _first_line(e))
            stop.wait(self.timing.retry_period)
        return False

    def start_renewing(self, on_lost: Callable[[], None]) -> None:
        """Renew in a thread; ``on_lost`` is called once no renewal succeeded for the renew deadline."""
        def loop():
            while not self._stop.wait(self.timing.retry_period):
                left = (self.last_renewed or 0) + self.timing.renew_deadline - self._monotonic()
                try:
                    ok = left > 0 and self.try_acquire_or_renew(timeout=max(0.2, min(5.0, left / 2)))
                except Exception as e:
                    log.warning("event=lease_renew_error lease=%s/%s error=%r", self.namespace, self.name, _first_line(e))
                    ok = False
                if self._stop.is_set():
                    return
                if not ok and self._monotonic() - (self.last_renewed or 0) >= self.timing.renew_deadline:
                    self._set_leading(False)
                    on_lost()
                    return
        self._thread = threading.Thread(target=loop, name="lease-renewer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timing.renew_deadline)

    def release(self) -> bool:
        """Give the Lease up (a clean stop), so a standby need not wait for it to expire."""
        self.stop()
        if not self.leading:
            return False
        now = dt.datetime.now(dt.timezone.utc)
        body = {"metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": self._resource_version},
                "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro(now), "acquireTime": _micro(now),
                         "leaseTransitions": self._observed.transitions if self._observed else 0}}
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=5)
        except Exception as e:  # the Lease will expire on its own
            log.warning("event=lease_release_failed lease=%s/%s error=%r", self.namespace, self.name, _first_line(e))
            return False
        finally:
            self._set_leading(False)
        return True

    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            self._on_change(leading)


def _first_line(e: BaseException) -> str:
    return first_line(e)[:300]
